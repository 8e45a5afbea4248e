"""Secrets we must never print: a registry of known secret values and a masker for every text we emit."""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
# credentials inside URLs: scheme://user:password@host, and Bitrix24 webhook tokens /rest/<user>/<token>/
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?P<post>@)")
_WEBHOOK = re.compile(r"(?P<pre>/rest/\d+/)(?P<pw>[A-Za-z0-9_]{6,})(?P<post>/)")


def register(value: str | None) -> None:
    """Remember a secret value (a token, a key, a password) so that mask() hides it."""
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.add(value)
        try:
            parts = urlsplit(value)
            if parts.password:
                _secrets.add(parts.password)
        except ValueError:
            pass


def mask(text: str) -> str:
    """Hide every known secret and every credential in a URL."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m["pre"] + MASK + m["post"], text)
    text = _WEBHOOK.sub(lambda m: m["pre"] + MASK + m["post"], text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for s in known:
        if s in text:
            text = text.replace(s, MASK)
    return text


class MaskingFilter(logging.Filter):
    """A logging filter that masks secrets in every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = ()
        return True
