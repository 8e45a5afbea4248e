"""Any SQL database as a Source: a table or a query, streamed in bounded Arrow batches, full or incremental.

* Any SQLAlchemy URL: PostgreSQL (psycopg), MySQL/MariaDB (pymysql), MS SQL / PostgreSQL / MySQL over pyodbc and
  unixODBC (``mssql+pyodbc``, ``postgresql+pyodbc`` from connectors/sql/odbc.py, ``mysql+pyodbc``), others.
* Never a full fetch. Rows are read in pages of ``page_rows`` (keyset paging: each page is one query starting just
  past the last row read), and each page is streamed through a server-side cursor (SQLAlchemy ``yield_per``:
  psycopg named cursors, pymysql's SSCursor) ``fetch_size`` rows per round trip. ODBC drivers are told to stream
  too (odbc.streaming_connect_options). Memory holds one batch plus one fetch.
* Full mode reads the rows in key order, ``WHERE key > :last_key ORDER BY key``; every pass starts again from the
  top (a snapshot: the engine sends only what changed).
* Incremental mode reads by a watermark column (a modification time, a rowversion, an increasing number) with the
  key as a tie-break, ``WHERE (wm > :w) OR (wm = :w AND key > :k) ORDER BY wm, key``, so that no row is lost or
  read twice when many rows share a timestamp; the next pass goes on from the last (watermark, key) read, so a
  nightly sync reads only the rows changed since. A pass stops at the highest watermark there was when it began
  (``until`` in the cursor): a row changed while the pass runs is read by the next pass, not twice by this one.
  Rows whose watermark is NULL are read once, first, on the pass that starts from nothing (they cannot be told
  apart as changed later).
* Timestamps are cut to ``timestamp_unit`` (seconds by default, the unit of the canonical schemas); the cursor
  keeps the database's own values, so positions stay exact.
* The key (one or several columns) must be unique and not NULL: it is the position of the cursor.

The cursor after a batch is ``{"source": "sql", "mode", "key_columns", "watermark_column", "phase", "wm", "key",
"row", "position", "until"}``: the position of the batch's last row (values typed for JSON, see ``encode_value``), the rows
read so far in the pass, and the position as text for `etl status`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Literal, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connectors.base import (
    FILE_COLUMN,
    KEY_SEP,
    ConnectorError,
    Source,
    SourceBatch,
    TerminalError,
    TransientError,
    empty_rejects,
    make_rejects,
    record_json,
)
from connectors.sql.odbc import add_odbc_options, streaming_connect_options
from connectors.sql.sink import _mask_url_text, db_error_text

__all__ = ["SqlSource", "encode_value", "decode_value", "Mode"]

Mode = Literal["full", "incremental"]

CURSOR_SOURCE = "sql"
PHASE_NULL = "null"  # incremental: rows whose watermark is NULL, in key order
PHASE_WM = "wm"  # incremental: rows in (watermark, key) order
PHASE_KEY = "key"  # full: rows in key order

_FLOOR = {"s": "second", "ms": "millisecond", "us": "microsecond"}
MYSQL_NET_WRITE_TIMEOUT = 3600  # seconds MySQL waits on a client that reads a streamed result slowly

_ODBC_PWD_RE = re.compile(r"(?:^|;)\s*pwd\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)", re.IGNORECASE)
_ZERO_DATE_RE = re.compile(r"^0000-00-00")  # MySQL's zero date, which drivers hand over as text
_TERMINAL_TEXT = ("authentication", "access denied", "password", "does not exist", "unknown database",
                  "permission denied", "data source name not found", "can't open lib", "no such table",
                  "invalid object name", "unknown column", "doesn't exist", "login failed")


# ------------------------------------------------------------------------------------------ cursor values

def encode_value(v: Any) -> Any:
    """A key or watermark value as JSON (the state store keeps cursors as JSON), decodable by decode_value."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else {"float": repr(v)}
    if isinstance(v, _dt.datetime):
        return {"datetime": v.isoformat()}
    if isinstance(v, _dt.date):
        return {"date": v.isoformat()}
    if isinstance(v, _dt.time):
        return {"time": v.isoformat()}
    if isinstance(v, _dt.timedelta):
        return {"timedelta_us": (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds}
    if isinstance(v, Decimal):
        return {"decimal": str(v)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(v).hex()}
    if isinstance(v, uuid.UUID):
        return {"uuid": str(v)}
    raise TerminalError(f"a {type(v).__name__} value cannot be kept in a cursor (key and watermark columns must be "
                        "numbers, text, dates, times, decimals, binary or UUIDs)")


def decode_value(x: Any) -> Any:
    if not isinstance(x, dict):
        return x
    (kind, v), = x.items()
    if kind == "datetime":
        return _dt.datetime.fromisoformat(v)
    if kind == "date":
        return _dt.date.fromisoformat(v)
    if kind == "time":
        return _dt.time.fromisoformat(v)
    if kind == "timedelta_us":
        return _dt.timedelta(microseconds=v)
    if kind == "decimal":
        return Decimal(v)
    if kind == "bytes":
        return bytes.fromhex(v)
    if kind == "uuid":
        return uuid.UUID(v)
    if kind == "float":
        return float(v)
    raise TerminalError(f"unreadable cursor value {x!r}")


def _short(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        text = "0x" + bytes(v).hex()
    elif isinstance(v, _dt.datetime):
        text = v.isoformat(sep=" ")
    else:
        text = str(v)
    return text if len(text) <= 40 else text[:39] + "…"


def _minus(v: Any, amount: float) -> Any:
    """A watermark moved back by ``amount`` (seconds for dates and times, units for numbers and rowversions)."""
    if isinstance(v, _dt.datetime):
        return v - _dt.timedelta(seconds=amount)
    if isinstance(v, _dt.date):
        return v - _dt.timedelta(days=int(amount // 86400) or (1 if amount else 0))
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v - int(amount)
    if isinstance(v, float):
        return v - amount
    if isinstance(v, Decimal):
        return v - Decimal(str(amount))
    if isinstance(v, (bytes, bytearray)):  # a rowversion: a big-endian counter
        n = max(0, int.from_bytes(v, "big") - int(amount))
        return n.to_bytes(len(v), "big")
    return v


# ------------------------------------------------------------------------------------------ typing

# what a column's values become in Arrow: (kind, type); kinds: "native" (pa.array does it), "text" (str() of
# each value: UUIDs, decimals of unknown scale, anything exotic), "json" (dicts and lists)
_Typing = tuple[str, pa.DataType]


def _typing_for(v: Any, scale: Any) -> _Typing:
    if isinstance(v, bool):
        return "native", pa.bool_()
    if isinstance(v, int):
        return "native", pa.int64()
    if isinstance(v, float):
        return "native", pa.float64()
    if isinstance(v, str):
        return "native", pa.string()
    if isinstance(v, Decimal):
        if isinstance(scale, int) and 0 <= scale <= 38:
            return "native", pa.decimal128(38, scale)
        return "text", pa.string()  # exact and stable: each value as the database wrote it
    if isinstance(v, _dt.datetime):
        return "native", pa.timestamp("us", tz="UTC" if v.tzinfo is not None else None)
    if isinstance(v, _dt.date):
        return "native", pa.date32()
    if isinstance(v, _dt.time):
        return "native", pa.time64("us")
    if isinstance(v, _dt.timedelta):
        return "native", pa.duration("us")
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "native", pa.binary()
    if isinstance(v, (dict, list)):
        return "json", pa.string()
    return "text", pa.string()


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def _json(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


def _fits(v: Any, t: pa.DataType) -> bool:
    try:
        pa.array([v], t)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False


# ------------------------------------------------------------------------------------------ the source

@dataclass
class _Position:
    """Where a read is: the phase, the last (watermark, key) read, the rows read in the pass, and (incremental) the
    highest watermark this pass reads up to."""

    phase: str
    wm: Any = None
    key: list | None = None
    row: int = 0
    until: Any = None
    until_known: bool = False


class SqlSource(Source):
    """Rows of a table or of a query of any SQLAlchemy database, in key or (watermark, key) order."""

    progress_unit = "rows"

    def __init__(
        self,
        url: str,
        *,
        key: str | Sequence[str],
        table: str | None = None,
        schema: str | None = None,
        query: str | None = None,
        columns: Sequence[str] | None = None,
        watermark: str | None = None,
        mode: Mode | None = None,
        fetch_size: int = 5000,
        page_rows: int | None = 50_000,
        lookback: float | None = None,
        name: str = "sql",
        timestamp_unit: Literal["s", "ms", "us"] = "s",
        engine_options: dict | None = None,
    ):
        if (table is None) == (query is None):
            raise TerminalError(f"{name}: give exactly one of `table` and `query`")
        keys = [key] if isinstance(key, str) else list(key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise TerminalError(f"{name}: `key` needs at least one column")
        mode = mode or ("incremental" if watermark else "full")
        if mode not in ("full", "incremental"):
            raise TerminalError(f"{name}: mode must be full or incremental, not {mode!r}")
        if mode == "incremental" and not watermark:
            raise TerminalError(f"{name}: incremental mode needs a `watermark` column")
        if watermark and watermark in keys:
            raise TerminalError(f"{name}: the watermark column {watermark!r} is also a key column")
        if fetch_size < 1:
            raise TerminalError(f"{name}: fetch_size must be >= 1")
        if page_rows is not None and page_rows < 1:
            raise TerminalError(f"{name}: page_rows must be >= 1 (or null: one query per pass)")
        self.name = name
        self.table_name = table
        self.schema = schema
        self.query = query.strip().rstrip(";").strip() if query else None
        self.wanted_columns = list(columns) if columns else None
        self.key = keys
        self.watermark = watermark
        self.mode: Mode = mode
        self.fetch_size = int(fetch_size)
        self.page_rows = int(page_rows) if page_rows is not None else None
        self.lookback = float(lookback) if lookback else None
        if timestamp_unit not in _FLOOR:
            raise TerminalError(f"{name}: timestamp_unit must be s, ms or us, not {timestamp_unit!r}")
        self.timestamp_unit = timestamp_unit

        try:
            parsed = make_url(url)
        except Exception:  # the parser's message quotes the URL, which may hold a password
            raise TerminalError(f"{name}: invalid database URL (not shown: it may hold a password)") from None
        self._secrets = [s for s in (parsed.password,) if s]
        for v in parsed.query.values():
            for part in (v if isinstance(v, tuple) else (v,)):
                for m in _ODBC_PWD_RE.finditer(str(part)):
                    pwd = m.group(1).strip()
                    if pwd.startswith("{") and pwd.endswith("}"):
                        pwd = pwd[1:-1].replace("}}", "}")
                    if pwd:
                        self._secrets.append(pwd)
        # shown in messages: no password, no query string (an odbc_connect string may carry PWD=)
        self.url = parsed.set(query={}).render_as_string(hide_password=True)
        try:
            self.engine = sa.create_engine(parsed, pool_pre_ping=True, **(engine_options or {}))
        except Exception as exc:
            raise TerminalError(self._scrub(f"{name}: cannot create an engine for {self.url}: "
                                            f"{db_error_text(exc)}")) from None
        dialect = self.engine.dialect
        self.dialect = dialect.name
        if dialect.driver == "pyodbc":
            options = streaming_connect_options(dialect.name, self.fetch_size)
            if options:
                @sa.event.listens_for(self.engine, "do_connect")
                def _stream(dialect_, conn_rec, cargs, cparams):  # noqa: ANN001
                    if cargs and isinstance(cargs[0], str):
                        cargs[0] = add_odbc_options(cargs[0], options)
        if self.dialect in ("mysql", "mariadb"):
            sa.event.listen(self.engine, "connect", _mysql_session)
        self._resolved_table: str | None = None
        self._db_columns: list[str] | None = None
        self._typing: dict[int, _Typing] = {}
        self._pass_start: tuple[bool, dict | None] | None = None  # set by next_pass: (known, cursor)

    # -- messages ----------------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        what = f"table {self._table_display()}" if self.table_name else "query"
        return f"{self.name} ({self.url}, {what})"

    def _table_display(self) -> str:
        t = self._resolved_table or self.table_name or ""
        return f"{self.schema}.{t}" if self.schema else t

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return _mask_url_text(text)

    def _error(self, exc: BaseException, what: str) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        text = self._scrub(f"{self.label}: {what}: {db_error_text(exc)}")
        low = text.lower()
        transient = isinstance(exc, (sa.exc.DisconnectionError, sa.exc.TimeoutError)) or (
            isinstance(exc, sa.exc.DBAPIError) and (
                exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))))
        if transient and not any(t in low for t in _TERMINAL_TEXT):
            return TransientError(text)
        return TerminalError(text)

    # -- what is read ------------------------------------------------------------------------------------

    def _from_table(self, name: str) -> sa.TableClause:
        return sa.table(name, schema=self.schema)

    def _probe(self, conn: sa.Connection) -> list[str]:
        """The column names of the table or query (a query that returns no row)."""
        if self.query is not None:
            sub = sa.text(self.query).columns().subquery("_q")
            return list(conn.execute(sa.select(sa.text("*")).select_from(sub).where(sa.false())).keys())
        names = [self.table_name] if self._resolved_table is None else [self._resolved_table]
        if self._resolved_table is None:  # PostgreSQL folds unquoted names to lower case, Oracle to upper
            names += [n for n in (self.table_name.lower(), self.table_name.upper()) if n not in names]
        first_error: BaseException | None = None
        for n in names:
            try:
                keys = list(conn.execute(
                    sa.select(sa.text("*")).select_from(self._from_table(n)).where(sa.false())).keys())
                self._resolved_table = n
                return keys
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated or not _looks_missing(exc):
                    raise
                first_error = first_error or exc
                conn.rollback()
        assert first_error is not None
        raise first_error

    def _columns_of_db(self) -> list[str]:
        if self._db_columns is None:
            try:
                with self.engine.connect() as conn:
                    self._db_columns = self._probe(conn)
            except Exception as exc:
                raise self._error(exc, "cannot read the columns") from exc
        return self._db_columns

    def _selected(self) -> list[str]:
        """The columns read: all, or the wanted ones plus the key and the watermark."""
        have = self._columns_of_db()
        wanted = self.wanted_columns or have
        need = list(dict.fromkeys(wanted + [c for c in self.key + ([self.watermark] if self.watermark else [])
                                             if c not in wanted]))
        missing = [c for c in need if c not in have]
        if missing:
            lower = {c.lower(): c for c in have}
            hints = [f"{c!r} (did you mean {lower[c.lower()]!r}?)" if c.lower() in lower else repr(c)
                     for c in missing]
            role = {c: "key column" for c in self.key}
            if self.watermark:
                role[self.watermark] = "watermark column"
            kinds = sorted({role.get(c, "column") for c in missing})
            raise TerminalError(f"{self.label}: no {'/'.join(kinds)} {', '.join(hints)}; it has {', '.join(have)}")
        return need

    def db_columns(self) -> list[str]:
        """Every column of the table or query, as the database names it."""
        return list(self._columns_of_db())

    def configure(self, *, key: Sequence[str] | None = None, columns: Sequence[str] | None = None,
                  watermark: str | None = None) -> None:
        """Set the key, the columns read and the watermark after looking at db_columns() (used by readers built
        on this one that name columns the way their system does)."""
        if key is not None:
            self.key = list(key)
        if columns is not None:
            self.wanted_columns = list(columns)
        if watermark is not None:
            self.watermark = watermark
        self._typing = {}

    def check(self) -> None:
        self._db_columns = None
        self._selected()

    def columns(self) -> list[str]:
        return self._selected()

    # -- statements --------------------------------------------------------------------------------------

    def _from(self, cols: list[str]):
        if self.query is not None:
            return sa.text(self.query).columns(*[sa.column(c) for c in cols]).subquery("_q")
        return sa.table(self._resolved_table or self.table_name, *[sa.column(c) for c in cols], schema=self.schema)

    @staticmethod
    def _after(keys: list, values: list) -> sa.ColumnElement:
        """(k1, k2, ...) > (v1, v2, ...), spelled out for databases without row-value comparison (MS SQL)."""
        ors = []
        for i in range(len(keys)):
            ands = [keys[j] == values[j] for j in range(i)] + [keys[i] > values[i]]
            ors.append(sa.and_(*ands) if len(ands) > 1 else ands[0])
        return sa.or_(*ors) if len(ors) > 1 else ors[0]

    def _conditions(self, src, pos: "_Position", *, bounded: bool = True) -> list:
        keys = [src.c[k] for k in self.key]
        conds = []
        if pos.phase == PHASE_NULL:
            conds.append(src.c[self.watermark].is_(None))
        elif pos.phase == PHASE_WM:
            col = src.c[self.watermark]
            conds.append(col.is_not(None))
            if pos.wm is not None:
                conds.append(col >= pos.wm)  # lets the database use an index range on the watermark
                if pos.key is not None:
                    conds.append(sa.or_(col > pos.wm, sa.and_(col == pos.wm, self._after(keys, pos.key))))
            if bounded and pos.until is not None:
                conds.append(col <= pos.until)
        if pos.key is not None and pos.phase != PHASE_WM:
            conds.append(self._after(keys, pos.key))
        return conds

    def _statement(self, cols: list[str], pos: "_Position", limit: int | None):
        src = self._from(cols)
        order = [src.c[k] for k in self.key]
        if pos.phase == PHASE_WM:
            order = [src.c[self.watermark]] + order
        stmt = sa.select(*[src.c[c] for c in cols]).where(*self._conditions(src, pos)).order_by(*order)
        return stmt.limit(limit) if limit else stmt

    # -- cursor ------------------------------------------------------------------------------------------

    def _identity(self) -> dict:
        return {"source": CURSOR_SOURCE, "mode": self.mode, "key_columns": list(self.key),
                "watermark_column": self.watermark}

    def _matches(self, cursor: dict) -> bool:
        ident = self._identity()
        return all(cursor.get(k) == v for k, v in ident.items())

    def _cursor(self, pos: "_Position") -> dict:
        shown = []  # for `etl status`
        if pos.phase == PHASE_WM and pos.wm is not None:
            shown.append(f"{self.watermark} {_short(pos.wm)}")
        elif pos.phase == PHASE_NULL:
            shown.append(f"{self.watermark} NULL")
        if pos.key is not None:
            shown += [f"{k} {_short(v)}" for k, v in zip(self.key, pos.key)]
        out = {**self._identity(), "phase": pos.phase, "wm": encode_value(pos.wm),
               "key": None if pos.key is None else [encode_value(v) for v in pos.key], "row": pos.row,
               "position": ", ".join(shown) or "start"}
        if pos.until_known:
            out["until"] = encode_value(pos.until)
        return out

    def _start(self, cursor: dict | None) -> "_Position":
        first = PHASE_NULL if self.mode == "incremental" else PHASE_KEY
        if not cursor:
            return _Position(first)
        if not self._matches(cursor):
            was = {k: cursor.get(k) for k in ("mode", "key_columns", "watermark_column")}
            now = {k: v for k, v in self._identity().items() if k != "source"}
            raise TerminalError(f"{self.label}: the checkpoint was made for {was}, the source is now {now}; "
                                "run `etl run --restart` to read it again from the top")
        phase = cursor.get("phase") or first
        if phase not in ((PHASE_NULL, PHASE_WM) if self.mode == "incremental" else (PHASE_KEY,)):
            raise TerminalError(f"{self.label}: unreadable checkpoint phase {phase!r}")
        key = cursor.get("key")
        return _Position(phase, decode_value(cursor.get("wm")), None if key is None else [decode_value(v) for v in key],
                         int(cursor.get("row") or 0), decode_value(cursor.get("until")), "until" in cursor)

    def next_pass(self, finished: dict | None) -> dict | None:
        start: dict | None = None
        if self.mode == "incremental" and finished and self._matches(finished):
            last = self._start(finished)
            if last.phase == PHASE_NULL:  # the last pass saw no row with a watermark: all of them are new
                start = self._cursor(_Position(PHASE_WM))
            else:
                wm, key = last.wm, last.key
                if self.lookback and wm is not None:
                    wm, key = _minus(wm, self.lookback), None
                start = self._cursor(_Position(PHASE_WM, wm, key))
        self._pass_start = (True, start)
        return start

    def _max_watermark(self, cols: list[str]) -> Any:
        """The highest watermark now: a pass reads up to it, so a row changed while the pass runs is read by the
        next pass, not twice in this one."""
        src = self._from(cols)
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.max(src.c[self.watermark]))).scalar()
        except Exception as exc:
            raise self._error(exc, "cannot read the highest watermark") from exc

    def total(self) -> int | None:
        if self.mode == "incremental" and self._pass_start is None:
            return None  # a resumed incremental pass: its size is unknown
        start = self._pass_start[1] if self._pass_start else None
        try:
            cols = self._selected()
            pos = self._start(start)
            with self.engine.connect() as conn:
                src = self._from(cols)
                conds = self._conditions(src, pos, bounded=False) if pos.phase == PHASE_WM else []
                return int(conn.execute(sa.select(sa.func.count()).select_from(src).where(*conds)).scalar_one())
        except Exception:  # noqa: BLE001 - a progress bar without a total is no failure
            return None

    def explain(self, cursor: dict | None = None) -> str:
        """The SQL of the first page read from ``cursor``, in the database's dialect (for logs and checks). With
        ``columns`` given it needs no connection (the pass's highest watermark then shows as a parameter)."""
        if self.wanted_columns:
            cols = list(dict.fromkeys(self.wanted_columns + self.key + ([self.watermark] if self.watermark else [])))
        else:
            cols = self._selected()
        pos = self._start(cursor)
        if self.mode == "incremental" and not pos.until_known:
            pos.until, pos.until_known = sa.bindparam("until"), True
        if pos.phase == PHASE_NULL and cursor is None:
            pos.phase = PHASE_WM
        return str(self._statement(cols, pos, self.page_rows).compile(dialect=self.engine.dialect))

    # -- reading -----------------------------------------------------------------------------------------

    def _pages(self, cols: list[str], start: "_Position") -> Iterator[tuple[str, list, Any]]:
        """(phase, rows, description) chunks of at most fetch_size rows, page after page, phase after phase."""
        key_idx = [cols.index(k) for k in self.key]
        wm_idx = cols.index(self.watermark) if self.watermark else None
        if self.mode == "full":
            phases = [PHASE_KEY]
        else:
            phases = [PHASE_NULL, PHASE_WM] if start.phase == PHASE_NULL else [PHASE_WM]
        pos = start
        for i, ph in enumerate(phases):
            if i > 0:
                pos = _Position(ph, until=start.until, until_known=start.until_known)
            while True:
                stmt = self._statement(cols, pos, self.page_rows)
                got = 0
                try:
                    with self.engine.connect() as conn:
                        result = conn.execution_options(yield_per=self.fetch_size).execute(stmt)
                        description = getattr(getattr(result, "cursor", None), "description", None)
                        try:
                            for part in result.partitions(self.fetch_size):
                                if not part:
                                    continue
                                got += len(part)
                                last = part[-1]
                                pos = _Position(ph, last[wm_idx] if ph == PHASE_WM else None,
                                                [last[j] for j in key_idx], until=pos.until,
                                                until_known=pos.until_known)
                                yield ph, part, description
                        finally:  # also when the reader stops early: a streamed result must end first
                            result.close()
                except GeneratorExit:
                    raise
                except Exception as exc:
                    raise self._error(exc, "read failed") from exc
                if self.page_rows is None or got < self.page_rows:
                    break

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        cols = self._selected()
        start = self._start(cursor)
        if self.mode == "incremental" and not start.until_known:
            start.until, start.until_known = self._max_watermark(cols), True
        key_idx = [cols.index(k) for k in self.key]
        wm_idx = cols.index(self.watermark) if self.watermark else None
        done = start.row
        buf: list = []
        buf_phase = start.phase
        description = None

        def flush(rows: list, ph: str) -> SourceBatch:
            nonlocal done
            table, rejects = self._build(rows, cols, description)
            done += len(rows)
            last = rows[-1]
            pos = _Position(ph, last[wm_idx] if ph == PHASE_WM else None, [last[j] for j in key_idx], done,
                            start.until, start.until_known)
            return SourceBatch(table=table, rejects=rejects, progress=done, cursor=self._cursor(pos))

        for ph, part, description in self._pages(cols, start):
            if buf and ph != buf_phase:
                yield flush(buf, buf_phase)
                buf = []
            buf_phase = ph
            buf.extend(part)
            while len(buf) >= batch_size:
                rows, buf = buf[:batch_size], buf[batch_size:]
                yield flush(rows, ph)
        if buf:
            yield flush(buf, buf_phase)

    @property
    def retries_dead_letters(self) -> bool:  # type: ignore[override]
        return self.mode == "incremental"

    def read_keys(self, columns: list[str], source_ids: list[str], batch_size: int) -> Iterator[SourceBatch]:
        """The rows whose ``columns`` (compared as trimmed text, as the engine makes source ids) hold one of
        ``source_ids``."""
        cols = self._selected()
        src = self._from(cols)
        text = [sa.func.trim(sa.cast(src.c[k], sa.String)) for k in columns]
        chunk = 500 if len(columns) == 1 else 100
        for i in range(0, len(source_ids), chunk):
            part = source_ids[i:i + chunk]
            if len(columns) == 1:
                cond = text[0].in_(part)
            else:
                tuples = [sid.split(KEY_SEP) for sid in part]
                cond = sa.or_(*[sa.and_(*[t == v for t, v in zip(text, vals)]) for vals in tuples
                                if len(vals) == len(text)])
            stmt = sa.select(*[src.c[c] for c in cols]).where(cond).order_by(*[src.c[k] for k in columns])
            try:
                with self.engine.connect() as conn:
                    result = conn.execute(stmt)
                    description = getattr(getattr(result, "cursor", None), "description", None)
                    rows = result.fetchall()
            except Exception as exc:
                raise self._error(exc, "reading rows by key failed") from exc
            for j in range(0, len(rows), batch_size):
                table, rejects = self._build(rows[j:j + batch_size], cols, description)
                yield SourceBatch(table=table, rejects=rejects, cursor={})

    # -- batches -----------------------------------------------------------------------------------------

    def _build(self, rows: list, cols: list[str], description) -> tuple[pa.Table, pa.Table]:
        n = len(rows)
        by_col = list(zip(*rows)) if n else [() for _ in cols]
        arrays: list[pa.Array] = []
        bad: dict[int, tuple[str, Any, str]] = {}  # row -> (column, value, expected type)
        for i, name in enumerate(cols):
            values = by_col[i]
            typing = self._typing.get(i)
            if typing is None:
                first = next((v for v in values if v is not None), None)
                if first is None:
                    arrays.append(pa.nulls(n))
                    continue
                scale = description[i][5] if description and len(description[i]) > 5 else None
                typing = self._typing[i] = _typing_for(first, scale)
            kind, type_ = typing
            if kind == "text":
                values = [_text(v) for v in values]
            elif kind == "json":
                values = [_json(v) for v in values]
            try:
                arrays.append(self._unit(pa.array(values, type_)))
                continue
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                pass
            fixed = list(values)
            for r, v in enumerate(values):  # only when a value did not fit: find which ones
                if v is None or _fits(v, type_):
                    continue
                if isinstance(v, str) and (pa.types.is_timestamp(type_) or pa.types.is_date(type_)) \
                        and _ZERO_DATE_RE.match(v):
                    fixed[r] = None  # MySQL's zero date is its empty date
                    continue
                fixed[r] = None
                bad.setdefault(r, (name, v, str(type_)))
            arrays.append(self._unit(pa.array(fixed, type_)))
        label = self._table_display() if self.table_name else f"{self.name} query"
        rejects = empty_rejects()
        if bad:
            keep = pa.array([r not in bad for r in range(n)])
            arrays = [a.filter(keep) for a in arrays]
            out = []
            for r in sorted(bad):
                col, v, t = bad[r]
                rec = dict(zip(cols, rows[r]))
                at = ", ".join(f"{k}={rec[k]!r}" for k in self.key)
                out.append({"stage": "read", "reason": "bad_value", "file": label, "field": col, "value": _text(v),
                            "message": f"{label}, row {at}: column «{col}»: value {_text(v)!r} does not fit the "
                                       f"column's type {t}",
                            "record": record_json(rec)})
            rejects = make_rejects(out)
        names = list(cols)
        if FILE_COLUMN not in names:
            arrays.append(pa.repeat(pa.scalar(label, pa.string()), len(arrays[0]) if arrays else 0))
            names.append(FILE_COLUMN)
        return pa.Table.from_arrays(arrays, names=names), rejects

    def _unit(self, arr: pa.Array) -> pa.Array:
        """Timestamps to the configured unit (the canonical schemas keep seconds), cut down, never rounded up."""
        if self.timestamp_unit == "us" or not pa.types.is_timestamp(arr.type):
            return arr
        floored = pc.floor_temporal(arr, unit=_FLOOR[self.timestamp_unit])
        return floored.cast(pa.timestamp(self.timestamp_unit, tz=arr.type.tz), safe=False)

    def close(self) -> None:
        self.engine.dispose()


def _looks_missing(exc: BaseException) -> bool:
    text = db_error_text(exc).lower()
    return any(t in text for t in ("does not exist", "doesn't exist", "no such table", "invalid object name",
                                   "undefined table", "unknown table"))


def _mysql_session(dbapi_connection, connection_record) -> None:
    """A streamed result waits while the engine works on a batch: let MySQL wait for the reader that long."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SET SESSION net_write_timeout = {MYSQL_NET_WRITE_TIMEOUT}")
    finally:
        cursor.close()
