"""Request parameters as Bitrix24 (PHP) sees them: GET query strings and form bodies in PHP bracket form
(``fields[PHONE][0][VALUE]=..``, ``select[]=ID``, ``filter[>=DATE_CREATE]=..``, positional ``0=..&1[X]=..``),
multipart/form-data, and JSON bodies.

A PHP array is modelled as a ``dict`` with string keys in insertion order; JSON arrays stay ``list``. Method code
reads parameters through :func:`get` (top-level names case-insensitively, as legacy CRM does) and normalises
containers with :func:`as_list` / :func:`as_map`, so that a form body and a JSON body mean the same thing.
"""

from __future__ import annotations

import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Iterable
from urllib.parse import unquote_plus

_INT_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")


class ParamsError(ValueError):
    """The body cannot be read (broken JSON, for instance)."""


def _next_index(arr: dict) -> str:
    """PHP's next free integer key of an array (``$a[] = x``)."""
    top = -1
    for k in arr:
        if _INT_KEY.match(k):
            top = max(top, int(k))
    return str(top + 1)


def _split_key(raw: str) -> tuple[str, list[str | None]] | None:
    """``a[b][][c]`` -> ("a", ["b", None, "c"]); PHP rules: spaces and dots of the base become '_';
    a '[' without its ']' is kept as text ('_' in the base); text after the last ']' is dropped."""
    raw = raw.lstrip(" ")
    i = raw.find("[")
    if i <= 0:
        if i == 0:
            return None  # PHP ignores a key that starts with '['
        base, rest = raw, ""
    else:
        base, rest = raw[:i], raw[i:]
    if rest and "]" not in rest:  # "a[b" -> "a_b"
        base, rest = raw.replace("[", "_", 1), ""
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return None
    path: list[str | None] = []
    while rest.startswith("["):
        j = rest.find("]")
        if j < 0:
            break
        seg = rest[1:j]
        path.append(None if seg == "" else seg)
        rest = rest[j + 1:]
    return base, path


def _assign(root: dict, base: str, path: list[str | None], value: str) -> None:
    if not path:
        root[base] = value
        return
    node = root.get(base)
    if not isinstance(node, dict):
        node = {}
        root[base] = node
    for n, seg in enumerate(path):
        key = _next_index(node) if seg is None else seg
        if n == len(path) - 1:
            node[key] = value
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child


def from_pairs(pairs: Iterable[tuple[str, str]]) -> dict:
    """Build PHP arrays from decoded (key, value) pairs, as PHP's parse_str does."""
    out: dict = {}
    for key, value in pairs:
        parsed = _split_key(key)
        if parsed is None:
            continue
        _assign(out, parsed[0], parsed[1], value)
    return out


def parse_query(qs: str) -> dict:
    """A query string or x-www-form-urlencoded body in PHP bracket form."""
    if not qs:
        return {}
    pairs = []
    for part in qs.split("&"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        pairs.append((unquote_plus(k), unquote_plus(v)))
    return from_pairs(pairs)


def parse_multipart(body: bytes, content_type: str) -> dict:
    """multipart/form-data: each part's name in bracket form; a file part's value is its file name."""
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    pairs = []
    if msg.is_multipart():
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            filename = part.get_filename()
            if filename is not None:
                pairs.append((name, filename))
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            pairs.append((name, payload.decode(charset, errors="replace")))
    return from_pairs(pairs)


def parse_body(body: bytes, content_type: str | None) -> dict:
    """The parameters of a request body, by its content type (JSON, form, multipart; a body without a type is
    read as a form, as PHP does)."""
    if not body:
        return {}
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json" or (ctype in ("", "text/plain") and body.lstrip()[:1] in (b"{", b"[")):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ParamsError(f"the JSON body cannot be read: {e}") from e
        return data if isinstance(data, dict) else {}
    if ctype == "multipart/form-data":
        return parse_multipart(body, content_type or "")
    return parse_query(body.decode("utf-8", errors="replace"))


# ------------------------------------------------------------------ reading parameters
_MISSING = object()


def get(params: dict, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present in ``params``, top-level names compared case-insensitively."""
    if not isinstance(params, dict):
        return default
    for name in names:
        if name in params:
            return params[name]
    lowered = {k.lower(): k for k in params}
    for name in names:
        k = lowered.get(name.lower())
        if k is not None:
            return params[k]
    return default


def has(params: dict, *names: str) -> bool:
    return get(params, *names, default=_MISSING) is not _MISSING


def as_list(v: Any) -> list:
    """A PHP array or JSON list as a list of its values (keys in order); a scalar as a one-element list."""
    if v is None:
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        return list(v.values())
    if v == "":
        return []
    return [v]


def as_map(v: Any) -> dict | None:
    """A PHP array or JSON object as a dict (a JSON list becomes {"0": .., "1": ..}); anything else None."""
    if isinstance(v, dict):
        return v
    if isinstance(v, list):
        return {str(i): x for i, x in enumerate(v)}
    return None


def to_int(v: Any) -> int | None:
    """An integer from a JSON number or a form string; None when it is not one."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        s = v.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(float(s))
    return None


def to_bool(v: Any, default: bool = False) -> bool:
    """PHP-ish truth of Y/N, 1/0, true/false (JSON or text)."""
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    s = str(v).strip().lower()
    if s in ("y", "yes", "1", "true", "on"):
        return True
    if s in ("n", "no", "0", "false", "off", ""):
        return False
    return default
