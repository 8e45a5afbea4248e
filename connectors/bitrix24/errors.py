"""What can go wrong talking to a Bitrix24 portal, sorted by the one question that matters: did the call run?

* refused before execution (``QUERY_LIMIT_EXCEEDED`` 503, ``OPERATION_TIME_LIMIT`` 429, ``expired_token`` 401, a
  connection that was never made): safe to send again;
* ran and failed (a method error: 400 ``Not found``, ``ERROR_CORE``...): sending again gives the same answer;
* may have run (a write that timed out, got an HTML page, a code-less 5xx, a dropped connection): never re-sent
  blindly; the loader reconciles by key (:class:`OutcomeUnknown`).

Every message is masked (webhook tokens, OAuth tokens) before it is stored in an exception.
"""

from __future__ import annotations

from connectors.base import ConnectorError, TerminalError, TransientError
from etl import secrets

# error codes compared ignoring case (the portal sends some in lower case)
QUERY_LIMIT = "QUERY_LIMIT_EXCEEDED"
OPERATION_LIMIT = "OPERATION_TIME_LIMIT"
OVERLOAD = "OVERLOAD_LIMIT"
EXPIRED_TOKEN = "EXPIRED_TOKEN"
AUTH_CODES = {"NO_AUTH_FOUND", "INVALID_CREDENTIALS", "INVALID_TOKEN", "INSUFFICIENT_SCOPE", "ACCESS_DENIED",
              "USER_ACCESS_ERROR", "WRONG_AUTH_TYPE", "INVALID_REQUEST", "PORTAL_DELETED", "PAYMENT_REQUIRED",
              "INVALID_GRANT", "INVALID_CLIENT", "ALLOWED_ONLY_INTRANET_USER"}
# codes that mean "this call was refused before it ran": a command with one of these may be sent again
REFUSED_CODES = {QUERY_LIMIT, OPERATION_LIMIT, OVERLOAD, EXPIRED_TOKEN}


def norm_code(code: object) -> str:
    return str(code or "").strip().upper()


class Bitrix24Error(ConnectorError):
    """An error answer of the portal (or the lack of a proper one)."""

    def __init__(self, message: str, *, code: str = "", description: str = "", status: int | None = None,
                 method: str = ""):
        super().__init__(secrets.mask(message))
        self.code = code
        self.description = secrets.mask(description or "")
        self.status = status
        self.method = method


class MethodError(Bitrix24Error, TerminalError):
    """The method ran and refused the input (validation, not found, access): the same call fails the same way."""


class AuthError(Bitrix24Error, TerminalError):
    """Bad or insufficient credentials, a deleted portal, a plan without REST: fatal for the run."""


class ProtocolError(Bitrix24Error, TerminalError):
    """The portal answered something that is not the Bitrix24 protocol on a read (and retries did not help)."""


class RateLimited(Bitrix24Error, TransientError):
    """Refused before execution by a limit (503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT, OVERLOAD_LIMIT)."""

    def __init__(self, message: str, *, retry_at: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_at = retry_at  # unix time the limit lifts, when the answer says so


class ServerError(Bitrix24Error, TransientError):
    """A 5xx, an HTML page, a timeout or a dropped connection on a call that is safe to repeat (a read)."""


class OutcomeUnknown(Bitrix24Error, TransientError):
    """A write was sent and no trustworthy answer came back: it may or may not have run.

    Never re-send it blindly: look the records up by key (ORIGINATOR_ID/ORIGIN_ID) and create only what is missing.
    """


class TokenRefreshFailed(AuthError):
    """The OAuth server refused to refresh the access token (invalid_grant: the refresh token is spent or revoked)."""


def error_from_answer(code: str, description: str, status: int | None, method: str) -> Bitrix24Error:
    """The exception for an error envelope ``{"error": code, "error_description": description}``."""
    c = norm_code(code)
    text = f"{method}: {code or 'error'}" + (f": {description}" if description else "") + \
           (f" (HTTP {status})" if status else "")
    kw = dict(code=c, description=description, status=status, method=method)
    if c in (QUERY_LIMIT, OPERATION_LIMIT, OVERLOAD):
        return RateLimited(text, **kw)
    if c in AUTH_CODES or c == EXPIRED_TOKEN or status in (401, 403):
        return AuthError(text, **kw)
    if status is not None and status >= 500:
        return ServerError(text, **kw)
    return MethodError(text, **kw)


__all__ = ["Bitrix24Error", "MethodError", "AuthError", "ProtocolError", "RateLimited", "ServerError",
           "OutcomeUnknown", "TokenRefreshFailed", "error_from_answer", "norm_code", "REFUSED_CODES",
           "QUERY_LIMIT", "OPERATION_LIMIT", "OVERLOAD", "EXPIRED_TOKEN"]
