"""Answers as Bitrix24 writes them: the success envelope ``{"result", "time", "total", "next"}``, the error
envelope ``{"error", "error_description"}`` with its HTTP status, PHP's JSON quirks (an empty array is ``[]``, an
array with keys 0..n-1 is a list; ``\\/`` and ``\\u0022`` escapes; non-ASCII as ``\\uXXXX``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# The sandbox portal's time zone: a Russian portal (Moscow, UTC+3, no DST).
PORTAL_TZ = timezone(timedelta(hours=3))


class ApiError(Exception):
    """A Bitrix24 error: code (may be empty), description, HTTP status."""

    def __init__(self, code: str, description: str, status: int = 400):
        super().__init__(f"{code or '(no code)'}: {description}")
        self.code = code
        self.description = description
        self.status = status

    def body(self) -> dict:
        return {"error": self.code, "error_description": self.description}


# System errors (reference 1.4). Texts the reference leaves open (NO_AUTH_FOUND, ERROR_METHOD_NOT_FOUND) are
# the tables' meanings, a guess at the real wording.
def query_limit() -> ApiError:
    return ApiError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> ApiError:
    return ApiError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)


def method_not_found(method: str) -> ApiError:
    return ApiError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def internal_error() -> ApiError:
    return ApiError("INTERNAL_SERVER_ERROR", "Internal server error", 500)


def batch_length_exceeded() -> ApiError:
    return ApiError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)


def batch_method_not_allowed() -> ApiError:
    return ApiError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)


def no_auth() -> ApiError:
    return ApiError("NO_AUTH_FOUND", "Wrong authorization data", 401)


def invalid_credentials() -> ApiError:
    # 403 in the docs, 401 observed (and in the crm.item.import page): we answer what was observed.
    return ApiError("INVALID_CREDENTIALS", "Invalid request credentials", 401)


def expired_token() -> ApiError:
    return ApiError("expired_token", "The access token provided has expired.", 401)


def invalid_token() -> ApiError:
    return ApiError("invalid_token", "The access token provided is invalid.", 401)


@dataclass
class Result:
    """What a method returns: the payload and, for lists, total and next."""

    result: Any
    total: int | None = None
    next: int | None = None


def iso(dt: datetime | None) -> str | None:
    """A stored naive-UTC datetime in the portal's ISO form, ``2024-08-15T10:38:21+03:00``."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(PORTAL_TZ).replace(microsecond=0).isoformat()


def time_block(start: float, finish: float, processing: float, operating: float | None = None,
               reset_at: int | None = None) -> dict:
    """The ``time`` object: start/finish (float unix s), duration, processing, date_start/date_finish (ISO with
    offset) and, where the operating budget is on, ``operating`` (float s) and ``operating_reset_at`` (int)."""
    t = {
        "start": round(start, 6),
        "finish": round(finish, 6),
        "duration": round(finish - start, 6),
        "processing": round(processing, 6),
        "date_start": datetime.fromtimestamp(int(start), PORTAL_TZ).isoformat(),
        "date_finish": datetime.fromtimestamp(int(finish), PORTAL_TZ).isoformat(),
    }
    if operating is not None:
        t["operating_reset_at"] = int(reset_at) if reset_at is not None else int(finish) + 600
        t["operating"] = round(operating, 6)
    return t


def php_array(d: dict) -> Any:
    """How PHP's json_encode writes an array: ``[]`` when empty, a list when its keys are 0..n-1 in order."""
    if not d:
        return []
    keys = list(d.keys())
    if all(str(k) == str(i) for i, k in enumerate(keys)):
        return list(d.values())
    return d


_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|.)')
_HEX = {"<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "'": "\\u0027"}


def _escape_pair(m: re.Match) -> str:
    return "\\u0022" if m.group(1) == '"' else m.group(0)


def dumps(obj: Any) -> bytes:
    """JSON as Bitrix24's PHP writes it: ASCII only (``\\uXXXX``), ``\\/`` for '/', ``\\u0022`` for a quote inside a
    string, and ``< > & '`` hex-escaped."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), default=str)
    if "\\" in text:
        text = _ESCAPE.sub(_escape_pair, text)
    text = text.replace("/", "\\/")
    for ch, rep in _HEX.items():
        if ch in text:
            text = text.replace(ch, rep)
    return text.encode("ascii")


HTML_PAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
             b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
REDIRECT_PAGE = (b"<html><head><title>302 Found</title></head><body><h1>Found</h1><p>The portal is not available: "
                 b"the licence has expired.</p></body></html>")
