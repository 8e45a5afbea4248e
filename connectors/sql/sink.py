"""A sink that upserts records into a table of a SQL database (PostgreSQL, MySQL/MariaDB, SQLite, others).

The table holds one row per source id: ``source_id`` (the primary key, and the record's target id), ``origin``,
the entity's columns, ``content_hash`` and ``loaded_at``. Every write is an upsert keyed by source id, done in one
transaction, so writing the same batch twice (a crash and a resume) leaves each source id in the table once.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateColumn

from connectors.base import (
    FILE_COLUMN,
    HASH,
    LINE_COLUMN,
    SOURCE_ID,
    ConnectorError,
    Sink,
    StreamInfo,
    TerminalError,
    TransientError,
    WriteResult,
    empty_rejects,
    make_rejects,
    record_json,
)

KEY_COLUMN = "source_id"
ORIGIN_COLUMN = "origin"
HASH_COLUMN = "content_hash"
LOADED_AT_COLUMN = "loaded_at"
SERVICE_COLUMNS = (KEY_COLUMN, ORIGIN_COLUMN, HASH_COLUMN, LOADED_AT_COLUMN)

LOOKUP_CHUNK = 500  # ids per SELECT ... IN (...) and per DELETE ... IN (...)

# MySQL/MariaDB error numbers that pymysql reports as OperationalError although they concern one row's data.
_MYSQL_ROW_ERRNOS = frozenset({
    1048,  # column cannot be null
    1264,  # out of range value
    1265,  # data truncated
    1292,  # incorrect datetime/date value
    1364,  # field doesn't have a default value
    1366,  # incorrect string/integer value
    1367,  # illegal value during parsing
    1406,  # data too long for column
    1411,  # incorrect value for function
    1452,  # foreign key: no referenced row
    3819,  # MySQL: check constraint violated
    4025,  # MariaDB: CONSTRAINT failed
})
# ... and those that will not heal by retrying: access denied, unknown database.
_MYSQL_TERMINAL_ERRNOS = frozenset({1044, 1045, 1049, 1142, 1143, 1227, 1698})
_PG_TERMINAL_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501"})
_PG_TERMINAL_TEXT = ("password authentication failed", "no password supplied", "does not exist",
                     "authentication")
_SQLITE_TRANSIENT_TEXT = ("locked", "busy", "disk i/o")

_MYSQL_COLUMN_RE = re.compile(r"column '([^']+)'", re.IGNORECASE)
_URL_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _mask_url_text(text: str) -> str:
    """Hide the password of any URL written in a text."""
    return _URL_PASSWORD_RE.sub(r"\1***@", text)


def arrow_to_sql_type(t: pa.DataType) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a column for an Arrow type (anything unknown is stored as text)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return sa.Text()
    if pa.types.is_timestamp(t):
        tz = t.tz is not None
        dt = sa.DateTime(timezone=tz)
        if t.unit != "s":  # MySQL DATETIME drops fractions unless told
            dt = dt.with_variant(mysql_dialect.DATETIME(timezone=tz, fsp=6), "mysql", "mariadb")
        return dt
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_floating(t):
        return sa.Double()  # a Float that is 8 bytes on MySQL too (its FLOAT is single precision)
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    return sa.Text()


def _chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _mysql_errno(orig: Any) -> int | None:
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def db_error_text(exc: BaseException) -> str:
    """The database's own message for an error, without SQL text and parameters."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return str(exc).strip() or type(exc).__name__
    args = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int) and isinstance(args[1], str):  # pymysql: (errno, text)
        return f"{args[1]} (error {args[0]})"
    text = str(orig).strip()
    return text or type(orig).__name__


class SqlTableSink(Sink):
    """Upserts records into one table, keyed by source id; the target id of a record is its source id."""

    def __init__(self, url: str, *, table: str | None = None, schema: str | None = None, chunk_rows: int = 1000):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        try:
            parsed = make_url(url)
        except Exception:  # neither the URL nor the parser's message (which quotes it) is shown: either may
            scheme = str(url).split("://", 1)[0] if "://" in str(url) else ""  # hold a password
            shown = f" of scheme {scheme!r}" if re.fullmatch(r"[\w+.\-]+", scheme) else ""
            raise TerminalError(f"invalid database URL{shown} (the URL is not shown: it may hold a password)") \
                from None
        self.url = parsed.render_as_string(hide_password=True)
        self._password = parsed.password
        self.table_name = table
        self.schema = schema
        self.chunk_rows = chunk_rows
        self._stream: StreamInfo | None = None
        self._table: sa.Table | None = None
        self._entity_columns: list[str] = []
        self._tz_columns: set[str] = set()
        self._upsert: sa.sql.Executable | None = None
        try:
            self.engine = sa.create_engine(parsed, pool_pre_ping=True)
        except Exception as exc:
            raise TerminalError(self._message(f"cannot create an engine for {self.url}", exc)) from exc
        self.dialect = self.engine.dialect.name
        if self.dialect in ("mysql", "mariadb"):
            sa.event.listen(self.engine, "connect", _mysql_strict_mode)

    # -- messages and errors -------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(str(self._password), "***")
        return _mask_url_text(text)

    def _message(self, what: str, exc: BaseException | None = None) -> str:
        text = what if exc is None else f"{what}: {db_error_text(exc)}"
        return self._scrub(text)

    def _classify(self, exc: BaseException) -> str:
        """'row' (this record's data), 'transient' (connection, locks) or 'terminal' (the statement itself)."""
        if isinstance(exc, (sa.exc.DisconnectionError, sa.exc.TimeoutError)):
            return "transient"
        if isinstance(exc, sa.exc.DBAPIError):
            if exc.connection_invalidated:
                return "transient"
            orig = exc.orig
            if isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)):
                return "row"
            errno = _mysql_errno(orig) if self.dialect in ("mysql", "mariadb") else None
            if errno in _MYSQL_ROW_ERRNOS:
                return "row"
            if isinstance(exc, sa.exc.OperationalError):
                if errno in _MYSQL_TERMINAL_ERRNOS:
                    return "terminal"
                if self.dialect == "postgresql":
                    sqlstate = getattr(orig, "sqlstate", None)
                    text = str(orig).lower()
                    if sqlstate in _PG_TERMINAL_SQLSTATES or any(t in text for t in _PG_TERMINAL_TEXT):
                        return "terminal"
                if self.dialect == "sqlite":
                    text = str(orig).lower()
                    return "transient" if any(t in text for t in _SQLITE_TRANSIENT_TEXT) else "terminal"
                return "transient"
            return "terminal"
        if isinstance(exc, sa.exc.StatementError):  # a value the type could not bind
            return "row"
        return "terminal"

    def _translate(self, exc: BaseException, what: str) -> ConnectorError:
        if isinstance(exc, ConnectorError):
            return exc
        kind = self._classify(exc)
        where = f"{what} on {self.url}"
        if self._table is not None:
            where += f" table {self._table.fullname}"
        cls = TransientError if kind == "transient" else TerminalError
        return cls(self._message(where, exc))

    # -- open --------------------------------------------------------------------------------------------

    def _key_type(self) -> sa.types.TypeEngine:
        if self.dialect in ("postgresql", "sqlite"):
            return sa.Text()
        if self.dialect in ("mysql", "mariadb"):
            # a binary, no-pad collation: 'ABC', 'abc' and 'abc ' are three source ids, not one
            if getattr(self.engine.dialect, "is_mariadb", False) or self.dialect == "mariadb":
                collation = "utf8mb4_nopad_bin"
            elif (getattr(self.engine.dialect, "server_version_info", None) or (0,)) >= (8, 0, 17):
                collation = "utf8mb4_0900_bin"
            else:
                collation = "utf8mb4_bin"
            return sa.String(255, collation=collation)
        return sa.String(255)

    def open(self, stream: StreamInfo) -> None:
        self._stream = stream
        name = self.table_name or stream.pipeline
        fields = [f for f in stream.schema]
        clash = [f.name for f in fields if f.name.lower() in SERVICE_COLUMNS]
        if clash:
            raise TerminalError(f"entity columns {clash} clash with the sink's own columns {list(SERVICE_COLUMNS)}")
        self._entity_columns = [f.name for f in fields]
        self._tz_columns = {f.name for f in fields
                            if pa.types.is_timestamp(f.type) and f.type.tz is not None}
        try:
            with self.engine.connect():  # initialises the dialect (server version, MariaDB or not)
                pass
            columns = [
                sa.Column(KEY_COLUMN, self._key_type(), primary_key=True),
                sa.Column(ORIGIN_COLUMN, sa.Text()),
                *[sa.Column(f.name, arrow_to_sql_type(f.type)) for f in fields],
                sa.Column(HASH_COLUMN, sa.Text()),
                sa.Column(LOADED_AT_COLUMN, sa.DateTime()),
            ]
            table = sa.Table(name, sa.MetaData(schema=self.schema), *columns,
                             mysql_charset="utf8mb4", mariadb_charset="utf8mb4",
                             mysql_engine="InnoDB", mariadb_engine="InnoDB")
            self._table = table
            if not sa.inspect(self.engine).has_table(name, schema=self.schema):
                try:
                    table.create(self.engine, checkfirst=True)
                except sa.exc.DBAPIError:
                    if not sa.inspect(self.engine).has_table(name, schema=self.schema):  # not a race: a failure
                        raise
                    self._alter(table)
            else:
                self._alter(table)
        except Exception as exc:
            raise self._translate(exc, "cannot open") from exc
        self._upsert = self._build_upsert(table)

    def _alter(self, table: sa.Table) -> None:
        """Add the columns the table lacks; check that source_id is a key, or upserts would duplicate rows."""
        for attempt in range(2):
            insp = sa.inspect(self.engine)
            existing = {c["name"].lower() for c in insp.get_columns(table.name, schema=self.schema)}
            if KEY_COLUMN not in existing:
                raise TerminalError(self._message(f"table {table.fullname} on {self.url} has no {KEY_COLUMN} column"))
            missing = [c for c in table.columns if c.name.lower() not in existing]
            if not missing:
                break
            preparer = self.engine.dialect.identifier_preparer
            add = "ADD" if self.dialect in ("mssql", "oracle") else "ADD COLUMN"
            try:
                with self.engine.begin() as conn:
                    for col in missing:
                        spec = str(CreateColumn(col).compile(dialect=self.engine.dialect)).strip()
                        conn.execute(sa.text(f"ALTER TABLE {preparer.format_table(table)} {add} {spec}"))
                break
            except sa.exc.DBAPIError:
                if attempt:  # another loader may have added the same column meanwhile: look again once
                    raise
        if self.dialect in ("postgresql", "sqlite", "mysql", "mariadb") and not self._key_is_unique(table):
            raise TerminalError(self._message(
                f"table {table.fullname} on {self.url} has no primary key or unique index on {KEY_COLUMN}: "
                "an upsert by source id needs one"))

    def _key_is_unique(self, table: sa.Table) -> bool:
        insp = sa.inspect(self.engine)
        key = [KEY_COLUMN]
        pk = insp.get_pk_constraint(table.name, schema=self.schema).get("constrained_columns") or []
        if [c.lower() for c in pk] == key:
            return True
        for uc in insp.get_unique_constraints(table.name, schema=self.schema):
            if [c.lower() for c in uc.get("column_names") or []] == key:
                return True
        for ix in insp.get_indexes(table.name, schema=self.schema):
            if ix.get("unique") and [str(c).lower() for c in ix.get("column_names") or []] == key:
                return True
        return False

    def _build_upsert(self, table: sa.Table) -> sa.sql.Executable | None:
        set_cols = [c.name for c in table.columns if c.name != KEY_COLUMN]
        if self.dialect in ("postgresql", "sqlite"):
            ins = (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)
            return ins.on_conflict_do_update(index_elements=[table.c[KEY_COLUMN]],
                                             set_={c: ins.excluded[c] for c in set_cols})
        if self.dialect in ("mysql", "mariadb"):
            ins = mysql_dialect.insert(table)
            return ins.on_duplicate_key_update({c: ins.inserted[c] for c in set_cols})
        return None  # any other dialect: delete-then-insert by key

    # -- write -------------------------------------------------------------------------------------------

    def _require_open(self) -> sa.Table:
        if self._table is None or self._stream is None:
            raise TerminalError("SqlTableSink: open() must be called before write() or lookup()")
        return self._table

    def _value(self, name: str, value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if name in self._tz_columns and isinstance(value, datetime) and value.tzinfo is not None \
                and self.dialect != "postgresql":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def _prepare(self, creates: pa.Table | None, updates: pa.Table | None):
        """Rows for the table, last one winning per source id, and rejects for records without a source id."""
        assert self._stream is not None
        loaded_at = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
        rows: dict[str, tuple[dict, dict]] = {}
        rejects: list[dict] = []
        for tbl in (creates, updates):
            if tbl is None or tbl.num_rows == 0:
                continue
            if SOURCE_ID not in tbl.column_names:
                raise TerminalError(f"SqlTableSink: a batch without the {SOURCE_ID} column")
            for rec in tbl.to_pylist():
                sid = rec.get(SOURCE_ID)
                if sid is None or str(sid) == "":
                    rejects.append(self._reject(rec, "the record has no source id"))
                    continue
                sid = str(sid)
                row = {KEY_COLUMN: sid, ORIGIN_COLUMN: self._stream.origin}
                for name in self._entity_columns:
                    row[name] = self._value(name, rec.get(name))
                row[HASH_COLUMN] = rec.get(HASH)
                row[LOADED_AT_COLUMN] = loaded_at
                rows.pop(sid, None)
                rows[sid] = (row, rec)
        return list(rows.items()), rejects

    def _reject(self, rec: Mapping[str, Any], message: str) -> dict:
        field = value = None
        m = _MYSQL_COLUMN_RE.search(message)
        if m and m.group(1) in rec:
            field = m.group(1)
        elif m and m.group(1) == KEY_COLUMN:
            field = SOURCE_ID
        if field is not None and rec.get(field) is not None:
            value = str(rec[field])
        line = rec.get(LINE_COLUMN)
        return {
            "stage": "load",
            "reason": "sink_error",
            "message": self._scrub(message),
            "file": rec.get(FILE_COLUMN),
            "line": line if isinstance(line, int) else None,
            "field": field,
            "value": value,
            "source_id": None if rec.get(SOURCE_ID) is None else str(rec.get(SOURCE_ID)),
            "record": record_json(rec),
        }

    def _execute(self, conn: sa.Connection, rows: list[dict]) -> None:
        table = self._table
        assert table is not None
        if self._upsert is not None:
            conn.execute(self._upsert, rows)
            return
        key = table.c[KEY_COLUMN]
        for ids in _chunks([r[KEY_COLUMN] for r in rows], LOOKUP_CHUNK):
            conn.execute(sa.delete(table).where(key.in_(list(ids))))
        conn.execute(sa.insert(table), rows)

    def _write_chunk(self, conn: sa.Connection, chunk) -> tuple[list[str], list[dict]]:
        try:
            with conn.begin_nested():
                self._execute(conn, [row for _, (row, _) in chunk])
            return [sid for sid, _ in chunk], []
        except sa.exc.SQLAlchemyError as exc:
            if self._classify(exc) != "row":
                raise
            if len(chunk) == 1:
                return [], [self._reject(chunk[0][1][1], db_error_text(exc))]
        written: list[str] = []
        rejects: list[dict] = []
        for sid, (row, rec) in chunk:  # find the bad rows; the others go in
            try:
                with conn.begin_nested():
                    self._execute(conn, [row])
                written.append(sid)
            except sa.exc.SQLAlchemyError as exc:
                if self._classify(exc) != "row":
                    raise
                rejects.append(self._reject(rec, db_error_text(exc)))
        return written, rejects

    def write(self, creates: pa.Table, updates: pa.Table) -> WriteResult:
        self._require_open()
        rows, rejects = self._prepare(creates, updates)
        written: list[str] = []
        if rows:
            try:
                with self.engine.begin() as conn:
                    for chunk in _chunks(rows, self.chunk_rows):
                        ok, bad = self._write_chunk(conn, chunk)
                        written += ok
                        rejects += bad
            except Exception as exc:
                raise self._translate(exc, "write failed") from exc
        return WriteResult(ids={sid: sid for sid in written},
                           rejects=make_rejects(rejects) if rejects else empty_rejects())

    # -- lookup, close -----------------------------------------------------------------------------------

    def lookup(self, source_ids: list[str]) -> dict[str, str]:
        table = self._require_open()
        wanted = list(dict.fromkeys(str(s) for s in source_ids if s is not None))
        found: dict[str, str] = {}
        if not wanted:
            return found
        wanted_set = set(wanted)
        key = table.c[KEY_COLUMN]
        try:
            with self.engine.connect() as conn:
                for ids in _chunks(wanted, LOOKUP_CHUNK):
                    for (sid,) in conn.execute(sa.select(key).where(key.in_(list(ids)))):
                        if sid in wanted_set:
                            found[sid] = sid
        except Exception as exc:
            raise self._translate(exc, "lookup failed") from exc
        return found

    def close(self) -> None:
        self.engine.dispose()


def _mysql_strict_mode(dbapi_connection, connection_record) -> None:
    """Make MySQL/MariaDB refuse too long or malformed values instead of truncating them silently."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(
            "SET SESSION sql_mode = IF(@@SESSION.sql_mode LIKE '%STRICT_%', @@SESSION.sql_mode, "
            "CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_TRANS_TABLES'))"
        )
    finally:
        cursor.close()
