"""How a request proves who it is: an incoming webhook URL, or an OAuth access token refreshed on expired_token.

Webhook: ``https://<portal>/rest/<user>/<code>/`` + method; the code is a secret (masked everywhere).
OAuth: ``<client_endpoint>`` + method with ``auth=<access_token>``; the token lives an hour. On 401 ``expired_token``
the client asks the token server (``https://oauth.bitrix.info/oauth/token/``) for a new pair with the refresh
token; the refresh token rotates, so the new pair is kept in ``token_file`` when one is given (mode 0600), and read
from there first on the next start.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.bitrix24.errors import AuthError, TokenRefreshFailed
from etl import secrets

_WEBHOOK_PATH = re.compile(r"/rest/(?P<user>\d+)/(?P<code>[^/]+)/?$")


class WebhookAuth:
    kind = "webhook"

    def __init__(self, url: str):
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthError(f"webhook URL {secrets.mask(url)!r} is not an http(s) URL")
        m = _WEBHOOK_PATH.search(parts.path)
        if not m:
            raise AuthError("webhook URL must look like https://<portal>/rest/<user id>/<code>/ "
                            f"(got {secrets.mask(url)!r})")
        secrets.register(m["code"])
        secrets.register(url)
        self.base = url.rstrip("/") + "/"
        self.user_id = int(m["user"])

    def url_for(self, method: str) -> str:
        return self.base + method

    def body_params(self) -> dict[str, Any]:
        return {}

    def moved(self, new_netloc: str) -> None:
        p = urlsplit(self.base)
        self.base = p._replace(netloc=new_netloc).geturl()
        secrets.register(self.base)

    @property
    def can_refresh(self) -> bool:
        return False


@dataclass
class OAuthTokens:
    access_token: str
    refresh_token: str
    client_endpoint: str
    expires: float | None = None


class OAuthAuth:
    kind = "oauth"

    def __init__(self, client_endpoint: str, access_token: str, refresh_token: str, client_id: str,
                 client_secret: str, *, token_url: str = "https://oauth.bitrix.info/oauth/token/",
                 token_file: str | Path | None = None):
        for s in (access_token, refresh_token, client_secret):
            secrets.register(s)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_url = token_url
        self.token_file = Path(token_file) if token_file else None
        self._lock = threading.Lock()
        self.tokens = OAuthTokens(access_token, refresh_token, client_endpoint.rstrip("/") + "/")
        if self.token_file and self.token_file.is_file():
            try:
                saved = json.loads(self.token_file.read_text(encoding="utf-8"))
                self.tokens = OAuthTokens(saved["access_token"], saved["refresh_token"],
                                          saved.get("client_endpoint") or self.tokens.client_endpoint,
                                          saved.get("expires"))
                secrets.register(self.tokens.access_token)
                secrets.register(self.tokens.refresh_token)
            except (OSError, ValueError, KeyError) as e:
                raise AuthError(f"token file {self.token_file} is unreadable: {type(e).__name__}") from None
        self.refreshes = 0

    def url_for(self, method: str) -> str:
        return self.tokens.client_endpoint + method

    def body_params(self) -> dict[str, Any]:
        return {"auth": self.tokens.access_token}

    def moved(self, new_netloc: str) -> None:
        p = urlsplit(self.tokens.client_endpoint)
        self.tokens.client_endpoint = p._replace(netloc=new_netloc).geturl()

    @property
    def can_refresh(self) -> bool:
        return True

    def refresh(self, http: httpx.Client, used_token: str) -> None:
        """Get a new token pair (once, even when several requests saw expired_token with the same token)."""
        with self._lock:
            if self.tokens.access_token != used_token:
                return  # another thread refreshed already
            params = {"grant_type": "refresh_token", "client_id": self.client_id,
                      "client_secret": self.client_secret, "refresh_token": self.tokens.refresh_token}
            try:
                r = http.get(self.token_url, params=params)
            except httpx.HTTPError as e:
                raise TokenRefreshFailed(f"token refresh at {self.token_url} failed: {type(e).__name__}: "
                                         f"{secrets.mask(str(e))}") from None
            try:
                data = r.json()
            except ValueError:
                raise TokenRefreshFailed(f"token refresh: HTTP {r.status_code}, not JSON") from None
            if not isinstance(data, dict) or data.get("error") or not data.get("access_token"):
                code = data.get("error", "") if isinstance(data, dict) else ""
                desc = data.get("error_description", "") if isinstance(data, dict) else ""
                raise TokenRefreshFailed(f"token refresh refused: {code or r.status_code}"
                                         + (f": {desc}" if desc else ""), code=str(code).upper(),
                                         description=str(desc), status=r.status_code, method="oauth/token")
            secrets.register(data["access_token"])
            secrets.register(data.get("refresh_token"))
            endpoint = data.get("client_endpoint") or self.tokens.client_endpoint
            self.tokens = OAuthTokens(data["access_token"], data.get("refresh_token") or self.tokens.refresh_token,
                                      endpoint.rstrip("/") + "/",
                                      time.time() + float(data.get("expires_in") or 3600))
            self.refreshes += 1
            self._save()

    def _save(self) -> None:
        if not self.token_file:
            return
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.token_file.with_suffix(self.token_file.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"access_token": self.tokens.access_token, "refresh_token": self.tokens.refresh_token,
                       "client_endpoint": self.tokens.client_endpoint, "expires": self.tokens.expires}, fh)
        os.replace(tmp, self.token_file)


__all__ = ["WebhookAuth", "OAuthAuth", "OAuthTokens"]
