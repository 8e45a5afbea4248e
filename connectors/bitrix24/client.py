"""A Bitrix24 REST client (classic API) that keeps inside the portal's limits and never repeats a write blindly.

    client = Bitrix24Client("https://portal.example/rest/1/<code>/", limits="cloud")
    client.call("crm.contact.add", {"fields": {"NAME": "Ivan"}}).result          # -> 42
    answer = client.batch({"a": ("crm.contact.add", {"fields": {...}}), "b": ("crm.contact.get", {"id": 7})})
    answer.results["a"], answer.errors.get("b")
    for row in client.list_all("crm.contact.list", {"filter": {"ORIGINATOR_ID": "1c"}, "select": ["ID"]}): ...

* JSON bodies (form encoding cannot carry null and turns false into 0); batch commands are PHP-bracket query strings,
  as the protocol wants them.
* Every answer's ``time`` (and, in a batch, every command's ``result_time``) feeds the :class:`Limiter`.
* Retries (tenacity, growing delays) only for what did not run or is safe to repeat: 503 QUERY_LIMIT_EXCEEDED and
  OVERLOAD_LIMIT, 429 OPERATION_TIME_LIMIT (waits for operating_reset_at), 401 expired_token (after a refresh), a
  connection that was never made; and, on reads only, 5xx, HTML pages, timeouts and dropped connections. The same on
  a write raises :class:`OutcomeUnknown`: the caller reconciles by key.
* Inside a batch, commands refused by a limit (they did not run) are sent again in a follow-up batch; any other
  command error is returned to the caller, and the batch's successes are kept (a batch is partially committed).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote, urlsplit

import httpx
import tenacity

from connectors.bitrix24.auth import OAuthAuth, WebhookAuth
from connectors.bitrix24.errors import (EXPIRED_TOKEN, OPERATION_LIMIT, OVERLOAD, QUERY_LIMIT, REFUSED_CODES,
                                        AuthError, Bitrix24Error, MethodError, OutcomeUnknown, ProtocolError,
                                        RateLimited, ServerError, error_from_answer, norm_code)
from connectors.bitrix24.limiter import DEFAULT_IN_FLIGHT, PROFILES, Limiter, Limits
from etl import secrets

log = logging.getLogger("crm_etl.bitrix24")

BATCH_MAX = 50
PAGE = 50
USER_AGENT = "crm-etl/0.1 (+https://github.com/; Bitrix24 REST client)"

_READ_METHODS = {"user.get", "user.current", "user.search", "profile", "server.time", "methods", "scope",
                 "app.info", "crm.type.list", "crm.type.get", "crm.type.getbyentitytypeid", "crm.type.fields",
                 "crm.category.list", "crm.category.get", "crm.status.list", "crm.status.get",
                 "crm.status.entity.types", "crm.status.entity.items", "lists.get", "lists.element.get",
                 "lists.field.get", "lists.field.types", "crm.duplicate.findbycomm"}
_READ_SUFFIX = (".get", ".list", ".fields", ".items.get")


def is_read(method: str) -> bool:
    """True for methods that change nothing (safe to send again whatever happened)."""
    m = method.lower().strip("/")
    if m.endswith(".json"):
        m = m[:-5]
    return m in _READ_METHODS or m.endswith(_READ_SUFFIX)


# ---------------------------------------------------------------------------------------------- encoding
def _scalar(value: Any) -> str:
    if value is None:
        return ""  # a query string cannot carry null: the empty string clears a legacy field
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def build_query(params: Mapping[str, Any]) -> str:
    """PHP ``http_build_query``: nested maps and lists as ``a[b][0]=v``, values percent-encoded."""
    pairs: list[str] = []

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{key}[{k}]" if key else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{key}[{i}]", v)
        else:
            pairs.append(quote(key, safe="[]") + "=" + quote(_scalar(value), safe=""))

    walk("", params)
    return "&".join(pairs)


def as_map(value: Any) -> dict:
    """PHP JSON quirks: an empty map arrives as [], a map with keys 0..n-1 as a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- answers
@dataclass
class Answer:
    method: str
    result: Any
    total: int | None = None
    next: int | None = None
    time: dict = field(default_factory=dict)


@dataclass
class BatchAnswer:
    results: dict[str, Any] = field(default_factory=dict)  # command id -> its result
    errors: dict[str, MethodError] = field(default_factory=dict)  # command id -> its error (did not succeed)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, dict] = field(default_factory=dict)
    requests: int = 0

    def merge(self, other: "BatchAnswer") -> None:
        self.results.update(other.results)
        for k in other.results:
            self.errors.pop(k, None)
        self.errors.update(other.errors)
        self.totals.update(other.totals)
        self.nexts.update(other.nexts)
        self.times.update(other.times)
        self.requests += other.requests


class BatchOutcomeUnknown(OutcomeUnknown):
    """A batch whose answer was lost. ``pending`` are the ids of the commands that may or may not have run;
    ``partial`` holds what earlier rounds of the same batch answered for sure."""

    def __init__(self, cause: OutcomeUnknown, pending: list[str], partial: BatchAnswer):
        super().__init__(str(cause), code=cause.code, description=cause.description, status=cause.status,
                         method="batch")
        self.pending = pending
        self.partial = partial


class _Expired(Exception):
    def __init__(self, token: str):
        self.token = token


class _Moved(Exception):
    def __init__(self, netloc: str):
        self.netloc = netloc


@dataclass
class ClientStats:
    requests: int = 0
    commands: int = 0
    retries: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    outcome_unknown: int = 0
    refused_commands: int = 0


# ---------------------------------------------------------------------------------------------- the client
class Bitrix24Client:
    def __init__(self, webhook: str | None = None, *, oauth: OAuthAuth | None = None,
                 limits: Limits | str = "cloud", max_in_flight: int | None = None, timeout: float = 90.0,
                 connect_timeout: float = 10.0, retries: int = 8, backoff_max: float = 30.0,
                 user_agent: str = USER_AGENT, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None,
                 share_limiter: bool = True):
        if (webhook is None) == (oauth is None):
            raise AuthError("give exactly one of a webhook URL or OAuth settings")
        self.auth: WebhookAuth | OAuthAuth = WebhookAuth(webhook) if webhook else oauth  # type: ignore[assignment]
        profile = limits if isinstance(limits, str) else None
        if profile is not None and profile not in PROFILES:
            raise ValueError(f"unknown limits profile {profile!r} (known: {', '.join(PROFILES)})")
        in_flight = max_in_flight or (DEFAULT_IN_FLIGHT.get(profile, 1) if profile else
                                      (1 if (limits.burst is not None) else 4))  # type: ignore[union-attr]
        self.limiter = _shared_limiter(self._portal_key(), limits, in_flight, clock) if share_limiter else \
            Limiter(limits, in_flight, clock=clock)
        self.max_in_flight = self.limiter.max_in_flight
        self.retries = max(1, retries)
        self.backoff_max = backoff_max
        self.clock = clock
        self._sleep = sleep
        self.stats = ClientStats()
        self._stats_lock = threading.Lock()
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"Accept": "application/json", "User-Agent": user_agent},
            limits=httpx.Limits(max_connections=self.max_in_flight + 1,
                                max_keepalive_connections=self.max_in_flight + 1),
            follow_redirects=False, transport=transport)
        self._pool: ThreadPoolExecutor | None = None

    def _portal_key(self) -> str:
        """The portal (its bucket) and the credential (its operating budget) this client spends."""
        if isinstance(self.auth, WebhookAuth):
            return self.auth.base
        return f"{self.auth.tokens.client_endpoint}#{self.auth.client_id}"

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def display(self) -> str:
        """Where this client talks to, with the secret part masked."""
        base = self.auth.base if isinstance(self.auth, WebhookAuth) else self.auth.tokens.client_endpoint
        return secrets.mask(base)

    def _count(self, attr: str, key: Any = None, n: int = 1) -> None:
        with self._stats_lock:
            if key is None:
                setattr(self.stats, attr, getattr(self.stats, attr) + n)
            else:
                d = getattr(self.stats, attr)
                d[key] = d.get(key, 0) + n

    # ------------------------------------------------------------------ one HTTP request
    def _send(self, method: str, params: Mapping[str, Any] | None, *, write: bool,
              methods: dict[str, int]) -> dict:
        """POST one method with JSON; returns the envelope. Raises the classified error of this one attempt."""
        body = dict(params or {})
        body.update(self.auth.body_params())
        token = body.get("auth", "")
        url = self.auth.url_for(method)
        started = time.monotonic()
        with self.limiter.slot(methods):
            self._count("requests")
            self._count("commands", n=sum(methods.values()))
            try:
                resp = self.http.post(url, content=json.dumps(body, ensure_ascii=False, default=str).encode(),
                                      headers={"Content-Type": "application/json"})
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                # the request never left: safe to send again, write or not
                raise ServerError(f"{method}: cannot connect to {self.display}: {type(e).__name__}: "
                                  f"{secrets.mask(str(e))}", method=method) from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                what = f"{method}: no answer from {self.display} ({type(e).__name__}: {secrets.mask(str(e))})"
                if write:
                    raise OutcomeUnknown(what + "; the write may have run", method=method) from None
                raise ServerError(what, method=method) from None
        elapsed = time.monotonic() - started
        status = resp.status_code
        self._count("by_status", status)
        log.debug(secrets.mask(f"{method} -> HTTP {status} in {elapsed:.3f}s"))
        if status in (301, 302, 303, 307, 308):
            location = resp.headers.get("location", "")
            new = urlsplit(location).netloc
            if new and new != urlsplit(url).netloc:
                raise _Moved(new)
            raise AuthError(f"{method}: the portal redirects to {secrets.mask(location)!r} on its own domain "
                            "(portal unavailable: expired licence or maintenance)", status=status, method=method)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            kind = resp.headers.get("content-type", "?").split(";")[0]
            what = f"{method}: HTTP {status} with a {kind} body instead of the JSON envelope"
            if write and status not in (401, 403, 404):
                raise OutcomeUnknown(what + "; the write may have run", status=status, method=method)
            if status in (401, 403):
                raise AuthError(what, status=status, method=method)
            raise ServerError(what, status=status, method=method)
        if "error" in data and "result" not in data:
            code = norm_code(data.get("error"))
            desc = str(data.get("error_description") or "")
            self._count("errors", code or f"HTTP {status}")
            if code == EXPIRED_TOKEN and self.auth.can_refresh:
                raise _Expired(token)
            if code == QUERY_LIMIT:
                self.limiter.refused_by_bucket()
            elif code == OPERATION_LIMIT:
                t = data.get("time") if isinstance(data.get("time"), dict) else {}
                retry_at = _float(t.get("operating_reset_at"))
                self.limiter.refused_by_operating(method, retry_at)
                err = error_from_answer(data.get("error"), desc, status, method)
                if isinstance(err, RateLimited):
                    err.retry_at = self.limiter.budget(method)[1]
                raise err
            if status >= 500 and code not in (QUERY_LIMIT, OVERLOAD) and write:
                raise OutcomeUnknown(f"{method}: HTTP {status} {code or '(no code)'}: {desc}; the write may have run",
                                     code=code, description=desc, status=status, method=method)
            raise error_from_answer(data.get("error"), desc, status, method)
        if status >= 500 and write:  # a 5xx that looks like success: do not trust it either way
            raise OutcomeUnknown(f"{method}: HTTP {status} with a result; the write may have run", status=status,
                                 method=method)
        self._observe(method, data.get("time"), sum(methods.values()) if method != "batch" else 0)
        return data

    def _observe(self, method: str, t: Any, commands: int = 1) -> None:
        if isinstance(t, dict):
            op = _float(t.get("operating"))
            if op is not None and (op > 0 or method != "batch"):
                self.limiter.observe(method, op, _float(t.get("operating_reset_at")), max(commands, 1),
                                     at=_float(t.get("start")))

    def _wait_for(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        n = retry_state.attempt_number
        if isinstance(exc, (_Expired, _Moved)):
            return 0.0
        if isinstance(exc, RateLimited):
            if exc.code == OPERATION_LIMIT:
                return 0.0  # the limiter holds the next attempt until operating_reset_at
            if exc.code == QUERY_LIMIT:
                # the limiter has marked the bucket full; grow the delay on repeated refusals
                rate = self.limiter.limits.rate or 2.0
                return min(self.backoff_max, (1.0 / rate) * (2 ** (n - 1)))
            return min(self.backoff_max * 4, 5.0 * (2 ** (n - 1)))  # OVERLOAD_LIMIT: a manual block
        return min(self.backoff_max, 0.25 * (2 ** (n - 1)))

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, (_Expired, _Moved)):
            return True
        if isinstance(exc, OutcomeUnknown):
            return False
        return isinstance(exc, (RateLimited, ServerError))

    def _request(self, method: str, params: Mapping[str, Any] | None, *, write: bool,
                 methods: dict[str, int] | None = None) -> dict:
        methods = methods or {method: 1}
        refreshed = 0

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            nonlocal refreshed
            exc = rs.outcome.exception() if rs.outcome else None
            self._count("retries")
            if isinstance(exc, _Expired):
                refreshed += 1
                if refreshed > 2:
                    raise AuthError(f"{method}: the access token expired again right after a refresh",
                                    method=method)
                assert isinstance(self.auth, OAuthAuth)
                self.auth.refresh(self.http, exc.token)
            elif isinstance(exc, _Moved):
                log.warning(secrets.mask(f"the portal moved to {exc.netloc}: switching"))
                self.auth.moved(exc.netloc)
            else:
                log.info(secrets.mask(f"{method}: {exc}; retry {rs.attempt_number}"))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(self._retryable),
            wait=self._wait_for,
            stop=tenacity.stop_after_attempt(self.retries),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True)
        try:
            return retrying(self._send, method, params, write=write, methods=methods)
        except _Expired:
            raise AuthError(f"{method}: the access token expired and could not be renewed", method=method) from None
        except _Moved as e:
            raise ProtocolError(f"{method}: the portal keeps moving ({e.netloc})", method=method) from None
        except OutcomeUnknown:
            self._count("outcome_unknown")
            raise
        except ServerError as e:
            if write:  # only refusals before execution reach here for writes (connection never made)
                raise
            raise ProtocolError(f"{e} (after {self.retries} attempts)", code=e.code, description=e.description,
                                status=e.status, method=method) from None

    # ------------------------------------------------------------------ public API
    def call(self, method: str, params: Mapping[str, Any] | None = None, *, write: bool | None = None) -> Answer:
        """Call one method. Raises MethodError/AuthError (terminal), OutcomeUnknown (a write), RateLimited or
        ProtocolError after the retries."""
        w = (not is_read(method)) if write is None else write
        data = self._request(method, params, write=w)
        return Answer(method, data.get("result"), _int(data.get("total")), _int(data.get("next")),
                      data.get("time") if isinstance(data.get("time"), dict) else {})

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any] | None]], halt: bool = False, *,
              write: bool | None = None, max_rounds: int = 6) -> BatchAnswer:
        """Run up to 50 commands in one request ({id: (method, params)}). Command errors come back in
        ``errors``; commands refused by a limit (they did not run) are sent again. Raises BatchOutcomeUnknown
        when an answer is lost (``pending``: the commands that may have run)."""
        if len(commands) > BATCH_MAX:
            raise ValueError(f"a batch holds at most {BATCH_MAX} commands (got {len(commands)})")
        out = BatchAnswer()
        pending = dict(commands)
        for _ in range(max_rounds):
            if not pending:
                break
            try:
                ans = self._batch_once(pending, halt, write)
            except OutcomeUnknown as e:
                raise BatchOutcomeUnknown(e, list(pending), out) from None
            out.merge(ans)
            refused = {k: v for k, v in ans.errors.items() if v.code in REFUSED_CODES and not halt}
            for k, err in refused.items():
                if err.code == OPERATION_LIMIT:
                    self.limiter.refused_by_operating(pending[k][0], None)
            self._count("refused_commands", n=len(refused))
            pending = {k: pending[k] for k in refused}
            for k in refused:
                out.errors.pop(k, None)
        for k in pending:  # refused every round
            out.errors[k] = MethodError(f"{commands[k][0]}: refused by the portal's limits {max_rounds} times",
                                        code=QUERY_LIMIT, method=commands[k][0])
        return out

    def _batch_once(self, commands: Mapping[str, tuple[str, Mapping[str, Any] | None]], halt: bool,
                    write: bool | None) -> BatchAnswer:
        cmd = {}
        methods: dict[str, int] = {}
        for k, (m, p) in commands.items():
            q = build_query(p or {})
            cmd[k] = f"{m}?{q}" if q else m
            methods[m] = methods.get(m, 0) + 1
        w = any(not is_read(m) for m in methods) if write is None else write
        data = self._request("batch", {"halt": 1 if halt else 0, "cmd": cmd}, write=w,
                             methods={**methods, "batch": 1})
        res = data.get("result")
        if not isinstance(res, dict):
            res = {}
        results = as_map(res.get("result"))
        errors_raw = as_map(res.get("result_error"))
        times = {k: v for k, v in as_map(res.get("result_time")).items() if isinstance(v, dict)}
        ans = BatchAnswer(results={k: v for k, v in results.items() if k in commands},
                          totals={k: int(v) for k, v in as_map(res.get("result_total")).items() if _int(v) is not None},
                          nexts={k: int(v) for k, v in as_map(res.get("result_next")).items() if _int(v) is not None},
                          times=times, requests=1)
        for k, e in errors_raw.items():
            if k not in commands:
                continue
            m = commands[k][0]
            if isinstance(e, dict):
                code, desc = e.get("error", ""), str(e.get("error_description") or "")
            else:
                code, desc = "", str(e)
            err = error_from_answer(code, desc, None, m)
            if not isinstance(err, MethodError):
                err = MethodError(str(err), code=err.code, description=err.description, method=m)
            ans.errors[k] = err
            self._count("errors", norm_code(code) or "command error")
        # operating figures: each command's own method, in the order the commands ran
        timed = sorted(((_float(t.get("start")) or 0.0, k, t) for k, t in times.items() if k in commands),
                       key=lambda x: x[0])
        for start, k, t in timed:
            op = _float(t.get("operating"))
            if op is not None:
                self.limiter.observe(commands[k][0], op, _float(t.get("operating_reset_at")), 1, at=start or None)
        return ans

    def batch_many(self, batches: Sequence[Mapping[str, tuple[str, Mapping[str, Any] | None]]],
                   halt: bool = False, *, write: bool | None = None) -> list[BatchAnswer | Bitrix24Error]:
        """Several batches, up to ``max_in_flight`` at a time; each item is its answer or its error."""
        def one(cmds):
            try:
                return self.batch(cmds, halt, write=write)
            except Bitrix24Error as e:
                return e

        if self.max_in_flight <= 1 or len(batches) <= 1:
            return [one(b) for b in batches]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="b24")
        return list(self._pool.map(one, batches))

    def list_all(self, method: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Every row of a list method: ``start=-1`` (no COUNT) and keyset paging on the id, 50 rows a page.

        Legacy methods page on ``ID`` (``>ID``); ``crm.item.list`` on ``id`` and unwraps ``items``;
        ``lists.element.get`` on ``ID`` with ``ELEMENT_ORDER``.
        """
        p = dict(params or {})
        item = method.lower().startswith("crm.item.")
        lists = method.lower() == "lists.element.get"
        idf = "id" if item else "ID"
        fkey = "FILTER" if lists else "filter"
        flt = dict(p.pop(fkey, None) or p.pop(fkey.lower() if lists else "FILTER", None) or {})
        sel_key = "SELECT" if lists else "select"
        sel = p.get(sel_key)
        if sel and "*" not in sel and idf not in sel:
            p[sel_key] = [idf, *sel]
        if lists:
            p["ELEMENT_ORDER"] = {"ID": "ASC"}
        else:
            p["order"] = {idf: "ASC"}
        last: Any = None
        while True:
            f = dict(flt)
            if last is not None:
                f[">" + idf] = last
            ans = self.call(method, {**p, fkey: f, "start": -1})
            rows = ans.result
            if item and isinstance(rows, dict):
                rows = rows.get("items", [])
            rows = list(as_map(rows).values()) if isinstance(rows, dict) else (rows or [])
            yield from rows
            if len(rows) < PAGE:
                return
            last = _int(rows[-1].get(idf)) if isinstance(rows[-1], dict) else None
            if last is None:
                return

    def list_pages(self, method: str, params: Mapping[str, Any] | None = None, *,
                   unwrap: str | None = None) -> Iterator[dict]:
        """Every row of a list method by offset paging (``start`` = the answer's ``next``): for methods that do
        not filter on id (user.get, crm.category.list)."""
        p = dict(params or {})
        start = 0
        seen = 0
        while True:
            ans = self.call(method, {**p, "start": start})
            rows = ans.result
            if unwrap and isinstance(rows, dict):
                rows = rows.get(unwrap, [])
            rows = list(as_map(rows).values()) if isinstance(rows, dict) else (rows or [])
            yield from rows
            seen += len(rows)
            if ans.next is None or not rows or ans.next <= start:
                return
            start = ans.next


_LIMITERS: dict[tuple, Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def _shared_limiter(key: str, limits: Limits | str, in_flight: int, clock) -> Limiter:
    """One limiter per portal and credential in a process: the pipelines of a run take turns with one client
    each, and the portal's bucket does not empty between them."""
    k = (key, repr(limits), in_flight, clock)
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(k)
        if lim is None:
            lim = _LIMITERS[k] = Limiter(limits, in_flight, clock=clock)
        return lim


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None and v != "" else None
    except (TypeError, ValueError):
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return None


__all__ = ["Bitrix24Client", "Answer", "BatchAnswer", "BatchOutcomeUnknown", "ClientStats", "build_query",
           "as_map", "is_read", "BATCH_MAX", "PAGE"]
