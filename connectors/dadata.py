"""DaData's clean API (addresses): a client on the `dadata` package, and a persistent cache of what was paid for.

Facts this module is built on (../shared/reference/1c-dadata.md, sections 5-6):

- ``POST <base>/clean/address`` with a JSON array of ONE string; the answer is an array of one object whose
  ``geo_lat``/``geo_lon`` are strings and whose ``qc``/``qc_geo`` may come as ints or strings. One record per
  request, paid per record from the balance.
- Limits: <= 20 requests/s and <= 60 new connections/min per IP. Without keep-alive the connection cap binds first,
  so every request goes over a small pool of kept-alive connections, requests are spaced evenly, and new
  connections are counted and held back when the minute's allowance is spent.
- Errors: 400 bad payload, 401 no key/secret, 403 wrong key / e-mail not confirmed / daily limit / (clean) no money,
  404 wrong URL, 405 wrong method, 413 too long, 429 over the limits, 5xx server. Only 429, 5xx, timeouts and
  dropped connections are retried (tenacity, exponential back-off with jitter, ``Retry-After`` honoured).

The `dadata` package (hflabs/dadata-py) has no base-URL or transport parameter: ``CleanClient`` reads its class
constant ``BASE_URL`` in its constructor and builds a bare ``httpx.Client`` (no limits, 5 s keep-alive, no hooks).
``_CleanClient`` below subclasses it: it sets ``BASE_URL`` on the instance before the package's constructor runs
(so the package itself builds the headers and the client for our URL: DaData's cloud, the self-hosted edition or a
test fake), then swaps that not-yet-connected client for one with the same base URL, headers and timeout plus a
keep-alive pool, and a request hook that counts (and rate-limits) new connections through httpx's documented
``trace`` request extension. The package's own ``clean()`` then does the request and the response handling. No
global state is patched, so two clients with different URLs can live side by side.

This module knows DaData and nothing of pipelines: secrets it knows (its key and secret) are scrubbed from every
message it builds; the engine masks them once more (etl/secrets.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from dadata.sync import CleanClient
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connectors.base import ConnectorError, TerminalError, TransientError

CLOUD_URL = CleanClient.BASE_URL  # https://cleaner.dadata.ru/api/v1/
HEADROOM = 0.95  # share of requests_per_second actually used
MAX_BACKOFF = 30.0  # seconds between two attempts at most (Retry-After is capped at 60)

# qc codes of the clean API (reference section 5)
QC_MEANING = {0: "confident", 1: "leftovers or too little data", 2: "empty or garbage", 3: "alternatives"}
QC_GEO_MEANING = {0: "house", 1: "nearest house", 2: "street", 3: "settlement", 4: "city", 5: "no coordinates",
                  6: "geo data not loaded"}

# every field of a clean/address answer (reference section 5), for `into:` of the stage and for the fake
_LEVELS = ("region", "area", "city", "city_district", "settlement", "street", "stead", "house")
ADDRESS_FIELDS: tuple[str, ...] = (
    "source", "result", "postal_code", "country", "country_iso_code", "federal_district",
    *(f"{lvl}{suffix}" for lvl in _LEVELS
      for suffix in ("_fias_id", "_kladr_id", "_with_type", "_type", "_type_full", "")),
    "region_iso_code", "city_area", "block", "block_type", "block_type_full", "flat", "flat_type", "flat_type_full",
    "flat_area", "flat_price", "square_meter_price", "postal_box", "fias_id", "fias_code", "fias_level",
    "fias_actuality_state", "kladr_id", "geoname_id", "capital_marker", "okato", "oktmo", "tax_office",
    "tax_office_legal", "timezone", "geo_lat", "geo_lon", "beltway_hit", "beltway_distance", "metro", "entrance",
    "floor", "unparsed_parts", "divisions", "house_cadnum", "flat_cadnum", "stead_cadnum", "history_values",
    "qc_geo", "qc_complete", "qc_house", "qc",
)


# ------------------------------------------------------------------ errors
class DadataAuthError(TerminalError):
    """401/403: the key or the secret is missing or wrong, the e-mail is not confirmed, or the balance is empty."""


class DadataTransientError(TransientError):
    """429, 5xx, a timeout or a dropped connection: the same request may succeed later."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class DadataRecordError(ConnectorError):
    """DaData refused this one record (400 bad payload, 413 too long): the record is rejected, the run goes on."""

    def __init__(self, message: str, reason: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status


class _Cancelled(Exception):
    """Another request of the same call failed terminally: the ones not started yet are not sent."""


# ------------------------------------------------------------------ limits
class Throttle:
    """At most ``rate`` calls per second, evenly spaced (thread-safe). Even spacing rather than bursts: a server
    counting over any one-second window never sees more than ``rate``, whatever the network jitter."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            at = max(now, self._next)
            self._next = at + self.interval
        delay = at - now
        if delay > 0:
            self.waited += delay
            self._sleep(delay)


class WindowLimit:
    """At most ``count`` events in any ``period`` seconds (a sliding window; thread-safe)."""

    def __init__(self, count: int, period: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.count, self.period = count, period
        self._clock, self._sleep = clock, sleep
        self._events: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._events and self._events[0] <= now - self.period:
                    self._events.popleft()
                if len(self._events) < self.count:
                    self._events.append(now)
                    return
                delay = self._events[0] + self.period - now
            self.waited += delay
            self._sleep(delay)


# ------------------------------------------------------------------ the package's client, pointed at our URL
class _CleanClient(CleanClient):
    """dadata's CleanClient with a configurable base URL and our httpx.Client (keep-alive pool, request hook)."""

    def __init__(self, token: str, secret: str | None, *, base_url: str, timeout: float, limits: httpx.Limits,
                 on_request: Callable[[httpx.Request], None]):
        self.BASE_URL = base_url  # read by CleanClient.__init__ through self: the instance value wins
        super().__init__(token, secret=secret, timeout=timeout)
        built = getattr(self, "_client", None)
        if not isinstance(built, httpx.Client):  # the package changed its internals: fail loudly, not oddly
            raise TerminalError("unsupported version of the `dadata` package: CleanClient has no httpx client")
        headers = built.headers
        built.close()  # never used: it has not opened a connection
        self._client = httpx.Client(base_url=built.base_url, headers=headers, timeout=httpx.Timeout(timeout),
                                    limits=limits, event_hooks={"request": [on_request]})


def normalise_base_url(url: str | None) -> str:
    """The URL that ``clean/address`` is appended to: DaData's cloud by default, else the given host and path
    (e.g. ``https://dadata.example.local/api/v1/``), always with a trailing slash."""
    if not url:
        return CLOUD_URL
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise TerminalError(f"dadata.base_url must start with http:// or https:// (got {url!r})")
    return url if url.endswith("/") else url + "/"


@dataclass
class CleanOutcome:
    """What one ``clean_addresses`` call got: answers by source text, per-record refusals, and the error that
    stopped it (raise it after saving the answers: they are paid for)."""

    results: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, DadataRecordError] = field(default_factory=dict)
    error: ConnectorError | None = None
    not_sent: list[str] = field(default_factory=list)


class DadataClient:
    """Cleans addresses one record per request, within DaData's limits, retrying only what is retryable.

    ``requests_per_second`` and ``connections_per_minute`` default to DaData's published limits; ``workers`` requests
    may be in flight at once (each on its own kept-alive connection). ``retries`` is the number of retries of a
    429/5xx/timeout/dropped connection, with back-off starting at ``retry_wait`` seconds.
    """

    def __init__(self, api_key: str, secret: str | None = None, *, base_url: str | None = None,
                 timeout: float = 10.0, requests_per_second: float = 20.0, connections_per_minute: int = 60,
                 workers: int = 4, retries: int = 5, retry_wait: float = 0.5, keepalive: float = 60.0):
        if not api_key:
            raise DadataAuthError("no DaData API key: set dadata.api_key (and dadata.secret: clean needs both)")
        self._secrets = [s for s in (api_key, secret) if s]
        self.base_url = normalise_base_url(base_url)
        self.timeout = timeout
        self.retries = max(0, retries)
        self.retry_wait = retry_wait
        self.workers = max(1, workers)
        # spaced at 95% of the limit: a server counting over any one-second window must never see one request
        # too many because of network jitter (a 429 is retried, but costs a back-off)
        self.throttle = Throttle(requests_per_second * HEADROOM)
        self.connection_limit = WindowLimit(max(1, connections_per_minute), 60.0)
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "paid": 0, "retries": 0, "connections": 0, "errors": 0}
        limits = httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers,
                              keepalive_expiry=keepalive)
        self._clean = _CleanClient(api_key, secret, base_url=self.base_url, timeout=timeout, limits=limits,
                                   on_request=self._on_request)
        self._pool: ThreadPoolExecutor | None = None
        self._proven = False  # a request has succeeded with this key

    # ------------------------------------------------------------ plumbing
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _on_request(self, request: httpx.Request) -> None:
        self._count("requests")
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict) -> None:
        # called by httpcore just before it opens a TCP connection: hold it back while the minute's allowance
        # of new connections is spent; a request on a kept-alive connection never gets here
        if event == "connection.connect_tcp.started":
            self.connection_limit.acquire()
            self._count("connections")

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if len(s) >= 4:
                text = text.replace(s, "***")
        return text

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._clean.close()

    def __enter__(self) -> "DadataClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ one record
    def clean_address(self, source: str, cancelled: threading.Event | None = None) -> dict:
        """DaData's answer for one address (the object of the one-element array), with retries."""
        attempts = self.retries + 1
        retrying = Retrying(retry=retry_if_exception_type(DadataTransientError), stop=stop_after_attempt(attempts),
                            wait=self._wait, reraise=True, before_sleep=lambda rs: self._count("retries"))
        try:
            for attempt in retrying:
                with attempt:
                    if cancelled is not None and cancelled.is_set():
                        raise _Cancelled()
                    return self._once(source)
        except DadataTransientError as e:
            self._count("errors")
            raise DadataTransientError(f"{e} (gave up after {attempts} attempt{'s' if attempts > 1 else ''})",
                                       e.status) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, rs: RetryCallState) -> float:
        # exponential back-off with jitter: retry_wait, 2x, 4x ... (at most MAX_BACKOFF), plus up to retry_wait
        n = max(0, rs.attempt_number - 1)
        backoff = min(MAX_BACKOFF, self.retry_wait * 2 ** n) + random.uniform(0, self.retry_wait) \
            if self.retry_wait else 0.0
        exc = rs.outcome.exception() if rs.outcome else None
        after = getattr(exc, "retry_after", None)
        return max(backoff, min(after, 60.0)) if after else backoff

    def _once(self, source: str) -> dict:
        self.throttle.acquire()
        try:
            answer = self._clean.clean("address", source)
        except httpx.HTTPStatusError as e:
            raise self._status_error(e.response) from None
        except httpx.TimeoutException as e:
            raise DadataTransientError(f"DaData did not answer within {self.timeout:g} s ({type(e).__name__}) "
                                       f"at {self.base_url}") from None
        except httpx.TransportError as e:  # refused, reset, closed while a kept-alive connection was reused
            raise DadataTransientError(self.scrub(f"connection to DaData at {self.base_url} failed: "
                                                  f"{type(e).__name__}: {e}")) from None
        except ValueError as e:  # a 200 whose body is not JSON
            raise TerminalError(f"DaData at {self.base_url} answered something that is not JSON ({e}): "
                                "is dadata.base_url right?") from None
        if not isinstance(answer, dict):
            raise DadataRecordError(f"DaData returned no result for this address (answer: {answer!r})",
                                    "dadata_no_result")
        self._count("paid")
        return answer

    def _status_error(self, response: httpx.Response) -> ConnectorError:
        status = response.status_code
        said = self.scrub(_body_message(response))
        where = f"POST {response.request.url}" if response.request is not None else self.base_url
        detail = f" DaData said: {said}" if said else ""
        if status == 401:
            return DadataAuthError(
                f"DaData refused the request (401 Unauthorized): the API key or the secret is missing. The clean API "
                f"needs both: set dadata.api_key and dadata.secret (e.g. from ${{DADATA_API_KEY}} and "
                f"${{DADATA_SECRET}}).{detail}")
        if status == 403:
            if "disabled for token" in said.lower() or "balance" in said.lower():
                why = ("the clean feature is disabled for this key, which DaData does when the balance is empty: "
                       "top up the balance (clean is paid per record) or use another key")
            else:
                why = ("the API key or the secret is wrong, the account's e-mail is not confirmed, a daily limit "
                       "is reached, or the balance is empty (clean is paid per record)")
            return DadataAuthError(f"DaData refused the request (403 Forbidden): {why}.{detail}")
        if status == 429:
            return DadataTransientError(f"DaData: too many requests (429) at {where}.{detail}", status,
                                        _retry_after(response))
        if status >= 500:
            return DadataTransientError(f"DaData server error {status} at {where}.{detail}", status,
                                        _retry_after(response))
        if status == 413:
            return DadataRecordError(f"DaData refused the address as too long (413).{detail}", "dadata_too_long",
                                     status)
        if status == 400:
            return DadataRecordError(f"DaData refused the request as malformed (400).{detail}",
                                     "dadata_bad_request", status)
        if status in (404, 405):
            return TerminalError(f"DaData answered {status} for {where}: the URL or the method is wrong; check "
                                 f"dadata.base_url (it must end where `clean/address` follows, e.g. "
                                 f"{CLOUD_URL}).{detail}")
        return TerminalError(f"DaData answered {status} for {where}.{detail}")

    # ------------------------------------------------------------ many records
    def clean_addresses(self, sources: Sequence[str]) -> CleanOutcome:
        """Clean distinct addresses, ``workers`` at a time. Never raises for DaData's answers: a terminal or
        exhausted error is in ``outcome.error`` (the answers got before it are paid for: save them, then raise)."""
        out = CleanOutcome()
        if not sources:
            return out
        cancelled = threading.Event()
        lock = threading.Lock()

        def one(src: str) -> None:
            try:
                ans = self.clean_address(src, cancelled)
            except _Cancelled:
                with lock:
                    out.not_sent.append(src)
                return
            except DadataRecordError as e:
                with lock:
                    out.failed[src] = e
                return
            except ConnectorError as e:
                cancelled.set()
                with lock:
                    if out.error is None or (isinstance(e, TerminalError) and not isinstance(out.error, TerminalError)):
                        out.error = e
                    out.not_sent.append(src)
                return
            with lock:
                out.results[src] = ans

        rest = list(sources)
        if not self._proven:  # the first request goes alone: a bad key or an empty balance costs one request
            one(rest.pop(0))
            self._proven = bool(out.results)
            if out.error is not None:
                out.not_sent.extend(rest)
                return out
        if self.workers == 1 or len(rest) <= 1:
            for s in rest:
                one(s)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dadata")
            for f in [self._pool.submit(one, s) for s in rest]:
                f.result()
        return out


def _body_message(response: httpx.Response) -> str:
    """DaData's own words from an error body: Spring-style {"message"} for clean, {"reason","message"} for
    suggestions; anything else (an nginx HTML page) is cut short."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return text[:200]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "reason", "message", "detail") if body.get(k)]
        return ": ".join(dict.fromkeys(parts))[:500]
    return str(body)[:200]


def _retry_after(response: httpx.Response) -> float | None:
    v = response.headers.get("Retry-After")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


# ------------------------------------------------------------------ answers
def as_int(v: Any) -> int | None:
    """qc codes come as ints from clean and as strings elsewhere (and "qc":"0" was seen in clean output too)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        s = str(v).strip()
        return int(float(s)) if s else None
    except ValueError:
        return None


def as_float(v: Any) -> float | None:
    """geo_lat/geo_lon are strings in DaData's answers."""
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------ the cache
_cache_meta = sa.MetaData()
cache_table = sa.Table(
    "etl_dadata_cache", _cache_meta,
    sa.Column("kind", sa.String(32), primary_key=True),  # "address"
    sa.Column("key_hash", sa.String(64), primary_key=True),  # sha256 of the normalised input
    sa.Column("input", sa.Text, nullable=False),  # the normalised input
    sa.Column("response", sa.Text, nullable=False),  # DaData's answer as JSON (null fields left out)
    sa.Column("qc", sa.Integer),
    sa.Column("qc_geo", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
_CACHE_CHUNK = 500


def cache_key(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


class DadataCache:
    """DaData answers kept in the state store, keyed by the normalised input: what was paid for once is never
    paid for again, in this run or any later one. ``create=False`` (dry runs) reads without creating the table."""

    def __init__(self, engine: sa.Engine, kind: str = "address", create: bool = True):
        self.engine = engine
        self.kind = kind
        if create:
            _cache_meta.create_all(engine, checkfirst=True)
            self.available = True
        else:
            self.available = sa.inspect(engine).has_table(cache_table.name)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """Answers for these normalised inputs (those not cached are missing)."""
        keys = list(dict.fromkeys(keys))
        if not keys or not self.available:
            return {}
        by_hash = {cache_key(k): k for k in keys}
        hashes = list(by_hash)
        out: dict[str, dict] = {}
        t = cache_table
        with self.engine.connect() as c:
            for i in range(0, len(hashes), _CACHE_CHUNK):
                part = hashes[i:i + _CACHE_CHUNK]
                q = sa.select(t.c.key_hash, t.c.input, t.c.response).where(t.c.kind == self.kind) \
                    .where(t.c.key_hash.in_(part))
                for h, inp, resp in c.execute(q):
                    k = by_hash.get(h)
                    if k is not None and inp == k:
                        out[k] = json.loads(resp)
        return out

    def put_many(self, answers: dict[str, dict]) -> int:
        """Store answers by normalised input; an input already there (another process got it first) is kept."""
        if not answers:
            return 0
        ts = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        rows = [dict(kind=self.kind, key_hash=cache_key(k), input=k,
                     response=json.dumps({f: v for f, v in a.items() if v is not None}, ensure_ascii=False),
                     qc=as_int(a.get("qc")), qc_geo=as_int(a.get("qc_geo")), created_at=ts)
                for k, a in answers.items()]
        with self.engine.begin() as c:
            c.execute(_insert_ignore(c.dialect.name), rows)
        return len(rows)

    def count(self) -> int:
        if not self.available:
            return 0
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(cache_table)
                             .where(cache_table.c.kind == self.kind)).scalar_one()


def _insert_ignore(dialect: str):
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert(cache_table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert(cache_table).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return cache_table.insert().prefix_with("IGNORE")
    return cache_table.insert()


# ------------------------------------------------------------------ normalisation
def normalise(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """The cache key of each address, vectorised: lower case, ё as е, one space for any run of blanks, no blanks
    before punctuation and one after a comma, no punctuation or blanks at the ends. Null where nothing is left."""
    text = values if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) \
        else pc.cast(values, pa.string())
    text = pc.utf8_lower(text)
    text = pc.replace_substring(text, "ё", "е")
    text = pc.replace_substring_regex(text, r"[\s\x{00A0}]+", " ")
    text = pc.replace_substring_regex(text, r" ([,.;:])", "\\1")
    text = pc.replace_substring_regex(text, r",(\S)", ", \\1")
    text = pc.replace_substring_regex(text, r"^[\s,.;:\-]+|[\s,.;:\-]+$", "")
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def normalise_one(value: str | None) -> str | None:
    if value is None:
        return None
    return normalise(pa.array([value], pa.string()))[0].as_py()


__all__ = [
    "ADDRESS_FIELDS", "CLOUD_URL", "CleanOutcome", "DadataAuthError", "DadataCache", "DadataClient",
    "DadataRecordError", "DadataTransientError", "QC_GEO_MEANING", "QC_MEANING", "Throttle", "WindowLimit",
    "as_float", "as_int", "cache_key", "cache_table", "normalise", "normalise_one", "normalise_base_url",
]
