"""The HTTP side: routes, authentication, limits, faults, envelopes; a ThreadingHTTPServer in a background thread.

Routes:
  ``/rest/<user>/<token>/<method>[.json]``  incoming webhook (``/`` at the end accepted);
  ``/rest/<method>`` with ``auth=<access_token>`` in the query or the body: OAuth;
  ``/oauth/token/?grant_type=refresh_token&client_id=..&client_secret=..&refresh_token=..``: the token server.

Order of checks for a request: leaky bucket (503, nothing runs) -> credentials (401) -> injected 503/drop before
-> the method exists (404) -> operating budget of (credential, method) (429) -> run -> injected 500/drop/html/slow.
"""

from __future__ import annotations

import logging
import re
import secrets as pysecrets
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import envelope
from .crm import Crm, Ctx
from .envelope import ApiError, Result, dumps, time_block
from .faults import BEFORE, FaultInjector, parse_faults
from .limits import LeakyBucket, LimitsConfig, OperatingBudget, limits_config
from .methods import REGISTRY, Call, load_all
from .params import ParamsError, parse_body, parse_query
from .storage import Store

log = logging.getLogger("crm_etl.sandbox")
DROP = object()
ACCESS_TTL = 3600
REFRESH_TTL = 180 * 86400


class SandboxStats:
    """Counters for tests and benchmarks (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0
            self.by_status: Counter = Counter()
            self.by_error: Counter = Counter()
            self.by_method: Counter = Counter()  # top-level methods of the requests
            self.commands: Counter = Counter()  # every command run, batch contents included
            self.command_errors: Counter = Counter()
            self.faults: Counter = Counter()
            self.bucket_rejections = 0

    def request(self, method: str | None) -> None:
        with self._lock:
            self.requests += 1
            if method:
                self.by_method[method] += 1

    def answer(self, status: int, error: str | None = None) -> None:
        with self._lock:
            self.by_status[status] += 1
            if error is not None:
                self.by_error[error] += 1

    def command(self, method: str, err: ApiError | None) -> None:
        with self._lock:
            self.commands[method] += 1
            if err is not None:
                self.command_errors[err.code or "(empty)"] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def bucket_rejected(self) -> None:
        with self._lock:
            self.bucket_rejections += 1

    @property
    def http_503(self) -> int:
        return self.by_status[503]

    @property
    def http_429(self) -> int:
        return self.by_status[429]

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "by_status": dict(self.by_status), "by_error": dict(self.by_error),
                    "by_method": dict(self.by_method), "commands": dict(self.commands),
                    "command_errors": dict(self.command_errors), "faults": dict(self.faults),
                    "bucket_rejections": self.bucket_rejections, "http_503": self.by_status[503],
                    "http_429": self.by_status[429]}


@dataclass
class Outcome:
    result: Any
    error: ApiError | None
    started: float
    finished: float
    processing: float
    billed: float


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    delay: float = 0.0
    headers: dict | None = None


class Sandbox:
    """A running Bitrix24 sandbox portal. Use :func:`start_sandbox`."""

    def __init__(self, db_url: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 limits: str | LimitsConfig = "cloud", op_cost_ms: float = 0, op_sleep: bool = True,
                 operating_limit: float | None | bool = False, batch_billing: str = "nested",
                 faults: str | None = None, fault_seed: int | None = None, webhook_user: int = 1,
                 webhook_token: str | None = None, quiet: bool = True):
        load_all()
        if batch_billing not in ("nested", "batch"):
            raise ValueError("batch_billing is 'nested' (the docs: nested calls bill their own methods) or 'batch' "
                             "(a 2026 self-hosted portal: the batch is billed to `batch`)")
        self.limits = limits_config(limits, operating_limit)
        self.op_cost = max(float(op_cost_ms), 0.0) / 1000.0
        self.op_sleep = op_sleep
        self.batch_billing = batch_billing
        self.fault_spec = parse_faults(faults, fault_seed)
        self.faults = FaultInjector(self.fault_spec)
        self.bucket = LeakyBucket(self.limits.bucket_capacity, self.limits.bucket_rate)
        self.budget = OperatingBudget(self.limits.operating_limit, self.limits.window, self.limits.bucket_seconds)
        self.webhook_user = int(webhook_user)
        self.webhook_token = webhook_token or pysecrets.token_hex(8)
        self.oauth_client_id = "local." + pysecrets.token_hex(7)
        self.oauth_client_secret = pysecrets.token_urlsafe(24)
        self.member_id = pysecrets.token_hex(16)
        self._tokens: dict[str, tuple[int, float]] = {}
        self._refresh: dict[str, tuple[int, float]] = {}
        self._tok_lock = threading.Lock()
        self.quiet = quiet
        self.stats = SandboxStats()
        self.store = Store(db_url)
        self.crm = Crm(self.store)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.sandbox = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "Sandbox":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"b24-sandbox-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
        self.store.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- addresses and credentials
    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The incoming-webhook base URL: ``http://127.0.0.1:PORT/rest/<user>/<token>/``."""
        return f"{self.base}/rest/{self.webhook_user}/{self.webhook_token}/"

    @property
    def oauth_base(self) -> str:
        """OAuth calls go to ``<oauth_base><method>`` with ``auth=<access_token>`` (the token's client_endpoint)."""
        return f"{self.base}/rest/"

    @property
    def token_url(self) -> str:
        """The token server: ``?grant_type=refresh_token&client_id=..&client_secret=..&refresh_token=..``."""
        return f"{self.base}/oauth/token/"

    @property
    def domain(self) -> str:
        return f"{self.host}:{self.port}"

    def issue_token(self, user_id: int = 1, expires_in: int = ACCESS_TTL) -> dict:
        """A new OAuth access/refresh token pair, as the token server answers it."""
        now = time.time()
        access, refresh = pysecrets.token_hex(24), pysecrets.token_hex(24)
        with self._tok_lock:
            self._tokens[access] = (user_id, now + expires_in)
            self._refresh[refresh] = (user_id, now + REFRESH_TTL)
        return {"access_token": access, "expires": int(now + expires_in), "expires_in": expires_in,
                "scope": "crm,lists,user", "domain": self.domain, "server_endpoint": f"{self.base}/oauth/rest/",
                "status": "L", "client_endpoint": self.oauth_base, "member_id": self.member_id, "user_id": user_id,
                "refresh_token": refresh}

    def expire_tokens(self) -> None:
        """Make every access token expired (the next call with one gets 401 expired_token)."""
        with self._tok_lock:
            self._tokens = {k: (u, 0.0) for k, (u, _) in self._tokens.items()}

    def add_user(self, name: str, last_name: str, email: str, *, active: bool = True, position: str = "",
                 xml_id: str | None = None) -> int:
        import json

        import sqlalchemy as sa

        from .storage import utcnow

        with self.store.tx() as conn:
            res = conn.execute(sa.insert(self.store.t["user"]).values(
                ACTIVE="Y" if active else "N", NAME=name, LAST_NAME=last_name, SECOND_NAME="", EMAIL=email,
                WORK_POSITION=position, UF_DEPARTMENT=json.dumps([1]), USER_TYPE="employee", XML_ID=xml_id,
                DATE_REGISTER=utcnow()))
            return int(res.inserted_primary_key[0])

    # -------------------------------------------------------------- running a command
    def run_command(self, name: str, params: dict, user_id: int, cred: str, *, nested: bool = False,
                    bill: bool = True) -> Outcome:
        spec = REGISTRY[name]
        call = Call(self, user_id, cred, nested=nested)
        t0 = time.time()
        result, error = None, None
        try:
            if spec.tx:
                with self.store.tx() as conn:
                    call.ctx = Ctx(self.store, conn, user_id)
                    result = spec.fn(call, params)
            else:
                result = spec.fn(call, params)
            for cb in call.after_commit:
                cb()
        except ApiError as e:
            error = e
            if spec.tx:
                self.crm.invalidate()
        except Exception:  # noqa: BLE001 - a bug or a database error: the portal answers 500
            log.error("sandbox: %s failed:\n%s", name, traceback.format_exc())
            error = envelope.internal_error()
            self.crm.invalidate()
        t1 = time.time()
        processing = t1 - t0
        billable = name != "batch"  # a batch's commands bill themselves
        if self.op_cost and billable and self.op_sleep:
            time.sleep(self.op_cost)
        cost = (processing + self.op_cost) if billable else 0.0
        t2 = time.time()
        if bill and billable and self.budget.enabled:
            self.budget.bill((cred, name), cost, at=t0)
        return Outcome(result, error, t0, t2, processing, cost)

    # -------------------------------------------------------------- HTTP
    def handle(self, http_method: str, target: str, body: bytes, content_type: str | None, client: str):
        t_start = time.time()
        parts = urlsplit(target)
        path = parts.path
        if path.rstrip("/") == "/oauth/token":
            return self._token_endpoint(parts.query, body, content_type)
        segs = [s for s in path.split("/") if s]
        if not segs or segs[0] != "rest" or len(segs) < 2:
            self.stats.request(None)
            return self._error(envelope.method_not_found(""))
        if len(segs) >= 3 and segs[1] == "api":
            self.stats.request(None)
            return self._error(envelope.method_not_found("/".join(segs[1:])))
        if len(segs) == 2:
            kind, user, token, name = "oauth", None, None, segs[1]
        elif len(segs) == 4:
            kind, user, token, name = "webhook", segs[1], segs[2], segs[3]
        else:
            self.stats.request(None)
            return self._error(envelope.method_not_found("/".join(segs[1:])))
        name = name.lower()
        for suffix in (".json", ".xml"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        self.stats.request(name)
        # the leaky bucket: refused before anything runs
        if not self.bucket.acquire(client):
            self.stats.bucket_rejected()
            return self._error(envelope.query_limit())
        try:
            params = parse_query(parts.query)
            params.update(parse_body(body, content_type))
        except ParamsError as e:
            return self._error(ApiError("INVALID_REQUEST", str(e), 400))
        # credentials
        auth = params.pop("auth", None)
        if kind == "webhook":
            if user != str(self.webhook_user) or not pysecrets.compare_digest(token, self.webhook_token):
                return self._error(envelope.invalid_credentials())
            user_id, cred = self.webhook_user, f"webhook:{self.webhook_user}"
        else:
            if not auth:
                return self._error(envelope.no_auth())
            with self._tok_lock:
                entry = self._tokens.get(str(auth))
            if entry is None:
                return self._error(envelope.invalid_token())
            if entry[1] <= time.time():
                return self._error(envelope.expired_token())
            user_id, cred = entry[0], f"app:{self.oauth_client_id}"
        fault = self.faults.request_fault()
        if fault in BEFORE:
            self.stats.fault(fault)
            if fault == "503":
                return self._error(envelope.query_limit())
            if fault == "302":
                self.stats.answer(302)
                return Response(302, envelope.REDIRECT_PAGE, "text/html; charset=utf-8",
                                headers={"Location": f"{self.base}/bitrix/tools/license_expired.php"})
            return DROP
        spec = REGISTRY.get(name)
        if spec is None:
            return self._error(envelope.method_not_found(name))
        is_batch = name == "batch"
        op_key = (cred, name)
        if not is_batch or self.batch_billing == "batch":
            if not self.budget.allowed(op_key):
                return self._error(envelope.operation_time_limit())
        outcome = self.run_command(name, params, user_id, cred, bill=not is_batch)
        if not is_batch:
            self.stats.command(name, outcome.error)
        if fault is not None:
            self.stats.fault(fault)
            if fault == "500":
                return self._error(envelope.internal_error())
            if fault == "drop":
                return DROP
            if fault == "html":
                self.stats.answer(502)
                return Response(502, envelope.HTML_PAGE, "text/html; charset=utf-8")
        if outcome.error is not None:
            resp = self._error(outcome.error)
        else:
            res = outcome.result
            payload, total, nxt = (res.result, res.total, res.next) if isinstance(res, Result) else (res, None, None)
            if payload == {}:
                payload = []  # PHP's empty array
            out: dict[str, Any] = {"result": payload}
            if nxt is not None:
                out["next"] = nxt
            if total is not None:
                out["total"] = total
            finish = time.time()
            if self.budget.enabled:
                if is_batch and self.batch_billing == "nested":
                    operating, reset_at = 0.0, self.budget.status(op_key)[1]
                else:
                    operating, reset_at = self.budget.status(op_key)
                out["time"] = time_block(t_start, finish, outcome.processing, operating, reset_at)
            else:
                out["time"] = time_block(t_start, finish, outcome.processing)
            self.stats.answer(200)
            resp = Response(200, dumps(out))
        if fault == "slow":
            resp.delay = self.fault_spec.slow_seconds
        return resp

    def _error(self, e: ApiError) -> Response:
        self.stats.answer(e.status, e.code)
        return Response(e.status, dumps(e.body()))

    def _token_endpoint(self, query: str, body: bytes, content_type: str | None) -> Response:
        """The OAuth server (oauth.bitrix.info): refresh_token grants only. Error statuses are our guess (400)."""
        try:
            p = parse_query(query)
            p.update(parse_body(body, content_type))
        except ParamsError:
            p = {}

        def err(code: str, text: str, status: int = 400) -> Response:
            return Response(status, dumps({"error": code, "error_description": text}))

        grant = p.get("grant_type")
        if grant != "refresh_token" or not p.get("refresh_token") or not p.get("client_id"):
            return err("invalid_request", "grant_type=refresh_token, client_id, client_secret and refresh_token "
                                          "are required")
        if p.get("client_id") != self.oauth_client_id or p.get("client_secret") != self.oauth_client_secret:
            return err("invalid_client", "Invalid client", 401)
        with self._tok_lock:
            entry = self._refresh.pop(str(p["refresh_token"]), None)
        if entry is None or entry[1] <= time.time():
            return err("invalid_grant", "Invalid refresh token")
        return Response(200, dumps(self.issue_token(entry[0])))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True
    sandbox: Sandbox


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""

    def setup(self):
        super().setup()
        # one answer is headers + body in two writes: without TCP_NODELAY Nagle and delayed ACKs cost 40 ms each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sb = self.server.sandbox
        if not sb.quiet:
            line = "%s - - [%s] %s\n" % (self.address_string(), self.log_date_time_string(), format % args)
            line = re.sub(r"(auth|refresh_token|client_secret)=[^&\s\"]+", r"\1=***", line)
            sys.stderr.write(line.replace(sb.webhook_token, "***"))

    def _serve(self, with_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if with_body and length > 0 else b""
        sb: Sandbox = self.server.sandbox
        try:
            resp = sb.handle(self.command, self.path, body, self.headers.get("Content-Type"), self.client_address[0])
        except Exception:  # noqa: BLE001
            log.error("sandbox: request failed:\n%s", traceback.format_exc())
            resp = Response(500, dumps(envelope.internal_error().body()))
        if resp is DROP:  # no answer at all: the server closes the connection
            self.close_connection = True
            return
        if resp.delay:
            time.sleep(resp.delay)
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for k, v in (resp.headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self):  # noqa: N802
        self._serve(False)

    def do_POST(self):  # noqa: N802
        self._serve(True)


def start_sandbox(db_url: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                  limits: str = "cloud", op_cost_ms: float = 0, faults: str | None = None, webhook_user: int = 1,
                  webhook_token: str | None = None, **options) -> Sandbox:
    """Start a Bitrix24 sandbox portal in a background thread and return it (``with start_sandbox() as sb:``).

    db_url: SQLAlchemy URL of its database (default: SQLite in memory; a file or MariaDB keeps the portal).
    limits: ``cloud`` (50 burst, 2/s; operating 480 s), ``enterprise`` (250, 5/s; 480 s) or ``off``.
    op_cost_ms: simulated server time of every command, billed to the operating budget (and slept, unless
    ``op_sleep=False``). faults: see :mod:`.faults`. Further options: ``operating_limit`` (seconds, None = off),
    ``batch_billing`` (``nested`` | ``batch``), ``fault_seed``, ``op_sleep``, ``quiet``.
    """
    sb = Sandbox(db_url, host=host, port=port, limits=limits, op_cost_ms=op_cost_ms, faults=faults,
                 webhook_user=webhook_user, webhook_token=webhook_token, **options)
    return sb.start()
