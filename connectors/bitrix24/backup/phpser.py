"""A small, safe PHP ``unserialize`` for the values Bitrix keeps serialized (multiple user-field values, iblock
``prop_s`` caches, SETTINGS): null, booleans, integers, floats, strings and arrays. Objects, references and enums
are refused; nothing is ever instantiated or evaluated.

PHP string lengths count bytes, so the parser works on the raw bytes of the value (encoded in the dump's charset)
and decodes strings at the end.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PhpSerializeError", "unserialize", "flatten_values", "looks_serialized"]

_MAX_DEPTH = 64
_INT = re.compile(rb"[-+]?\d+")
_FLOAT = re.compile(rb"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|INF|NAN)")
_SERIALIZED = re.compile(rb"^(?:a:\d+:\{|s:\d+:\"|i:-?\d+;|d:|b:[01];|N;)")


class PhpSerializeError(ValueError):
    """The bytes are not a PHP-serialized value we accept."""


def looks_serialized(data: bytes | str | None) -> bool:
    if data is None:
        return False
    if isinstance(data, str):
        data = data[:32].encode("utf-8", "surrogateescape")
    return bool(_SERIALIZED.match(data))


class _Parser:
    def __init__(self, data: bytes, encoding: str):
        self.data = data
        self.pos = 0
        self.encoding = encoding

    def fail(self, what: str) -> PhpSerializeError:
        return PhpSerializeError(f"{what} at byte {self.pos}")

    def expect(self, token: bytes) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.fail(f"expected {token.decode()!r}")
        self.pos += len(token)

    def until(self, stop: bytes) -> bytes:
        end = self.data.find(stop, self.pos)
        if end < 0:
            raise self.fail(f"missing {stop.decode()!r}")
        out = self.data[self.pos:end]
        self.pos = end + len(stop)
        return out

    def integer(self, stop: bytes) -> int:
        raw = self.until(stop)
        if not _INT.fullmatch(raw):
            raise self.fail(f"bad integer {raw[:20]!r}")
        return int(raw)

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail("nesting too deep")
        if self.pos + 2 > len(self.data):
            raise self.fail("unexpected end")
        tag = self.data[self.pos:self.pos + 1]
        if tag == b"N":
            self.expect(b"N;")
            return None
        self.pos += 1
        self.expect(b":")
        if tag == b"b":
            v = self.integer(b";")
            if v not in (0, 1):
                raise self.fail("bad boolean")
            return bool(v)
        if tag == b"i":
            return self.integer(b";")
        if tag == b"d":
            raw = self.until(b";")
            if not _FLOAT.fullmatch(raw):
                raise self.fail(f"bad float {raw[:20]!r}")
            text = raw.decode("ascii")
            return float({"INF": "inf", "-INF": "-inf", "NAN": "nan"}.get(text, text))
        if tag == b"s":
            n = self.integer(b":")
            if n < 0 or self.pos + n + 2 > len(self.data) + 0:
                raise self.fail("string length past the end")
            self.expect(b'"')
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            self.expect(b'";')
            return raw.decode(self.encoding, "replace")
        if tag == b"a":
            n = self.integer(b":")
            if n < 0 or n > len(self.data):
                raise self.fail("bad array size")
            self.expect(b"{")
            out: dict = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if not isinstance(key, (int, str)) or isinstance(key, bool):
                    raise self.fail("array key must be an integer or a string")
                out[key] = self.value(depth + 1)
            self.expect(b"}")
            if list(out) == list(range(len(out))):
                return list(out.values())
            return out
        raise self.fail(f"unsupported type {tag.decode('latin-1')!r} (objects and references are refused)")


def unserialize(data: bytes | str, encoding: str = "utf-8") -> Any:
    """Decode one PHP-serialized value. Arrays with keys 0..n-1 become lists, other arrays dicts.

    ``data`` as str is encoded with ``encoding`` first (the byte lengths PHP wrote are those of that encoding).
    """
    if isinstance(data, str):
        data = data.encode(encoding, "replace")
    p = _Parser(data, encoding)
    v = p.value()
    if p.pos != len(data):
        raise p.fail("trailing bytes")
    return v


def flatten_values(v: Any) -> list[str]:
    """The scalar values of a decoded value, in order, as text (nested arrays flattened, nulls dropped)."""
    out: list[str] = []

    def walk(x: Any) -> None:
        if x is None:
            return
        if isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)
        elif isinstance(x, bool):
            out.append("1" if x else "0")
        elif isinstance(x, float) and x.is_integer():
            out.append(str(int(x)))
        else:
            out.append(str(x))

    walk(v)
    return out
