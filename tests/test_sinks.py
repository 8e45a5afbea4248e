"""SqlTableSink (SQLite, PostgreSQL, MariaDB), ParquetSink and CsvSink: types, upserts, crash and resume."""

from __future__ import annotations

import csv
import json
import os
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from connectors.base import HASH, REJECT_SCHEMA, SOURCE_ID, TARGET_ID, StreamInfo, TerminalError, TransientError
from connectors.files import CsvSink, ParquetSink
from connectors.sql import SqlTableSink
from schemas.entities import COMPANY

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_URL = "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"
SECRET = "S3cr3t-Pa55"

SCHEMA = COMPANY.arrow_schema()
ENTITY_COLUMNS = SCHEMA.names
TS = datetime(2024, 1, 2, 3, 4, 5)


def stream(pass_id: str = "p1", *, pipeline: str = "companies", schema: pa.Schema = SCHEMA) -> StreamInfo:
    return StreamInfo(pipeline=pipeline, entity="company", origin="1c-erp", schema=schema,
                      key_fields=("inn",), pass_id=pass_id)


def company(i: int, **over) -> dict:
    row = {
        "id": f"C{i:04d}",
        "title": f"ООО «Ромашка-{i}»",
        "inn": f"77{i:08d}",
        "phone": "+7 495 123-45-67",
        "address": "г. Москва, ул. Льва Толстого, д. 16",
        "revenue": 1234567.891 + i,
        "is_active": i % 2 == 0,
        "created_at": TS,
        "comments": None,
        "responsible_id": f"U{i}",
    }
    row.update(over)
    return row


def batch(rows: list[dict], *, update: bool = False, schema: pa.Schema = SCHEMA) -> pa.Table:
    cols = {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema}
    cols[SOURCE_ID] = pa.array([r["id"] for r in rows], pa.string())
    cols[HASH] = pa.array([r.get("hash", f"h-{r['id']}-{r.get('title')}") for r in rows], pa.string())
    if update:
        cols[TARGET_ID] = pa.array([r["id"] for r in rows], pa.string())
    return pa.table(cols)


EMPTY = batch([])


# ------------------------------------------------------------------------------------------------ SQL backends

_reach: dict[str, str | None] = {}


def _unreachable(url: str) -> str | None:
    """Why the server cannot be reached, or None."""
    if url not in _reach:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reach[url] = None
        except sa.exc.OperationalError as exc:
            _reach[url] = str(exc.orig).splitlines()[0]
        finally:
            engine.dispose()
    return _reach[url]


@dataclass
class Backend:
    name: str
    url: str
    engine: sa.Engine
    table: str
    schema: str | None = None
    sinks: list = field(default_factory=list)

    def sink(self, **kw) -> SqlTableSink:
        kw.setdefault("table", self.table)
        kw.setdefault("schema", self.schema)
        s = SqlTableSink(self.url, **kw)
        self.sinks.append(s)
        return s

    def reflect(self, table: str | None = None) -> sa.Table:
        t = sa.Table(table or self.table, sa.MetaData(schema=self.schema), autoload_with=self.engine)
        for col in t.columns:  # MySQL's reflected DOUBLE returns Decimals rounded to 10 places
            if isinstance(col.type, sa.Float):
                col.type = sa.Double()
        return t

    def rows(self, table: str | None = None) -> list[dict]:
        t = self.reflect(table)
        with self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.source_id))]
        for r in out:  # MariaDB reflects BOOL as TINYINT(1)
            if r.get("is_active") is not None:
                r["is_active"] = bool(r["is_active"])
        return out

    def count(self, table: str | None = None) -> tuple[int, int]:
        """(rows, distinct source ids)"""
        t = self.reflect(table)
        with self.engine.connect() as conn:
            return tuple(conn.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(t.c.source_id)))).one())

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql))

    def qualified(self, table: str | None = None) -> str:
        prep = self.engine.dialect.identifier_preparer
        name = prep.quote(table or self.table)
        return f"{prep.quote(self.schema)}.{name}" if self.schema else name


def _make_backend(kind: str, tmp_path: Path):
    suffix = uuid.uuid4().hex[:10]
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'sink.db'}"
        engine = sa.create_engine(url)
        b = Backend(kind, url, engine, table=f"companies_{suffix}")
        return b, lambda: None
    if kind == "postgres":
        why = _unreachable(PG_URL)
        if why:
            pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {why}")
        engine = sa.create_engine(PG_URL)
        schema = f"sink_test_{suffix}"
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
        b = Backend(kind, PG_URL, engine, table="companies", schema=schema)

        def drop():
            with engine.begin() as conn:
                conn.execute(sa.schema.DropSchema(schema, cascade=True))
        return b, drop
    if kind == "mariadb":
        why = _unreachable(MY_URL)
        if why:
            pytest.skip(f"MariaDB at 127.0.0.1:3306 is unreachable: {why}")
        engine = sa.create_engine(MY_URL)
        b = Backend(kind, MY_URL, engine, table=f"companies_{suffix}")

        def drop():
            with engine.begin() as conn:
                for name in sa.inspect(engine).get_table_names():
                    if name.endswith(suffix):
                        conn.execute(sa.text(f"DROP TABLE IF EXISTS `{name}`"))
        return b, drop
    raise ValueError(kind)


ALL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=ALL_BACKENDS)
def backend(request, tmp_path):
    b, drop = _make_backend(request.param, tmp_path)
    yield b
    for s in b.sinks:
        s.close()
    try:
        drop()
    finally:
        b.engine.dispose()


def _backend_fixture(kind: str):
    @pytest.fixture
    def fixture(tmp_path):
        b, drop = _make_backend(kind, tmp_path)
        yield b
        for s in b.sinks:
            s.close()
        try:
            drop()
        finally:
            b.engine.dispose()
    return fixture


mariadb = _backend_fixture("mariadb")
postgres = _backend_fixture("postgres")


# ------------------------------------------------------------------------------------------------ SQL tests


def test_sql_roundtrip_types(backend):
    sink = backend.sink()
    sink.open(stream())
    rows = [
        company(1, comments="Звонить после 15:00; спросить «Ивана»\nвторая строка", revenue=0.1 + 0.2),
        company(2, title="ИП Щукин Ёж", inn=None, phone=None, revenue=None, is_active=None, created_at=None,
                responsible_id=None),
        company(3, revenue=-1e-12, is_active=True, modified_at=datetime(1999, 12, 31, 23, 59, 59)),
    ]
    result = sink.write(batch(rows), EMPTY)
    assert result.ids == {r["id"]: r["id"] for r in rows}
    assert result.rejects.num_rows == 0 and result.rejects.schema.equals(REJECT_SCHEMA)

    got = backend.rows()
    assert [g["source_id"] for g in got] == ["C0001", "C0002", "C0003"]
    for g, r in zip(got, rows):
        for name in ENTITY_COLUMNS:
            assert g[name] == r.get(name), (r["id"], name)
        assert g["origin"] == "1c-erp"
        assert g["content_hash"] == f"h-{r['id']}-{r['title']}"
        assert isinstance(g["loaded_at"], datetime)
    assert got[0]["revenue"] == 0.1 + 0.2  # a double, not a single-precision FLOAT
    assert got[1]["inn"] is None and got[1]["is_active"] is None and got[1]["created_at"] is None
    cols = [c["name"] for c in sa.inspect(backend.engine).get_columns(backend.table, schema=backend.schema)]
    assert cols == ["source_id", "origin", *ENTITY_COLUMNS, "content_hash", "loaded_at"]


def test_sql_upsert_twice_keeps_one_row_with_newer_values(backend):
    sink = backend.sink(chunk_rows=2)
    sink.open(stream())
    sink.write(batch([company(i) for i in range(1, 6)]), EMPTY)
    newer = [company(i, title=f"АО «Новое имя {i}»", revenue=float(i), is_active=None) for i in (2, 4)]
    result = sink.write(batch([company(6)]), batch(newer, update=True))
    assert result.ids == {"C0006": "C0006", "C0002": "C0002", "C0004": "C0004"}
    assert backend.count() == (6, 6)
    by_id = {r["source_id"]: r for r in backend.rows()}
    assert by_id["C0002"]["title"] == "АО «Новое имя 2»" and by_id["C0002"]["revenue"] == 2.0
    assert by_id["C0002"]["is_active"] is None
    assert by_id["C0002"]["content_hash"] == "h-C0002-АО «Новое имя 2»"
    assert by_id["C0003"]["title"] == "ООО «Ромашка-3»"


def test_sql_same_id_twice_in_one_write_last_wins(backend):
    sink = backend.sink()
    sink.open(stream())
    result = sink.write(batch([company(1, title="старое")]), batch([company(1, title="новое")], update=True))
    assert result.ids == {"C0001": "C0001"}
    assert [(r["source_id"], r["title"]) for r in backend.rows()] == [("C0001", "новое")]


def test_sql_crash_and_replay_leaves_each_key_once(backend):
    first = backend.sink(chunk_rows=3)
    first.open(stream())
    b1 = batch([company(i) for i in range(1, 8)])
    first.write(b1, EMPTY)
    # the engine dies before committing its state: a new process opens, looks up and writes the same batch
    second = backend.sink(chunk_rows=3)
    second.open(stream())
    ids = [f"C{i:04d}" for i in range(1, 10)]
    assert second.lookup(ids) == {i: i for i in ids[:7]}
    second.write(b1, EMPTY)
    second.write(batch([company(i) for i in range(5, 10)]), EMPTY)  # overlapping batch from another instance
    assert backend.count() == (9, 9)


def test_sql_two_instances_overlapping_batches(backend):
    a, b = backend.sink(), backend.sink()
    a.open(stream())
    b.open(stream())
    a.write(batch([company(i) for i in range(1, 7)]), EMPTY)
    b.write(batch([company(i, title=f"B{i}") for i in range(4, 11)]), EMPTY)
    assert backend.count() == (10, 10)
    titles = {r["source_id"]: r["title"] for r in backend.rows()}
    assert titles["C0004"] == "B4" and titles["C0003"] == "ООО «Ромашка-3»"


def test_sql_lookup_in_chunks(backend):
    sink = backend.sink(chunk_rows=400)
    sink.open(stream())
    rows = [company(i) for i in range(1200)]
    result = sink.write(batch(rows), EMPTY)
    assert len(result.ids) == 1200
    wanted = [r["id"] for r in rows] + [f"X{i}" for i in range(150)]
    found = sink.lookup(wanted)
    assert found == {r["id"]: r["id"] for r in rows}
    assert sink.lookup([]) == {}


def test_sql_schema_growth_adds_columns(backend):
    small = pa.schema([f for f in SCHEMA if f.name not in ("web", "revenue")])
    sink = backend.sink()
    sink.open(stream(schema=small))
    sink.write(batch([company(1, web="x", revenue=5.0)], schema=small), EMPTY)
    sink.close()

    grown = backend.sink()
    grown.open(stream())  # the full schema: web and revenue are added to the table
    grown.write(batch([company(2, web="https://ромашка.рф", revenue=7.5)]), EMPTY)
    got = {r["source_id"]: r for r in backend.rows()}
    assert got["C0001"]["web"] is None and got["C0001"]["revenue"] is None
    assert got["C0002"]["web"] == "https://ромашка.рф" and got["C0002"]["revenue"] == 7.5


def _precreate_with_short_inn(backend: Backend) -> None:
    key = "VARCHAR(255)" if backend.name == "mariadb" else "TEXT"
    check = "CHECK (length(inn) <= 12)" if backend.name == "sqlite" else ""  # SQLite ignores VARCHAR lengths
    backend.execute(f"CREATE TABLE {backend.qualified()} (source_id {key} PRIMARY KEY, "
                    f"inn VARCHAR(12) {check}, title TEXT)")


def test_sql_bad_value_is_a_reject_and_the_rest_lands(backend):
    _precreate_with_short_inn(backend)
    sink = backend.sink(chunk_rows=2)
    sink.open(stream())
    rows = [company(1), company(2, inn="7" * 40), company(3), company(4), company(5, inn="8" * 13)]
    result = sink.write(batch(rows[:3]), batch(rows[3:], update=True))
    assert result.ids == {i: i for i in ("C0001", "C0003", "C0004")}
    rej = result.rejects.to_pylist()
    assert [r["source_id"] for r in rej] == ["C0002", "C0005"]
    for r in rej:
        assert r["stage"] == "load" and r["reason"] == "sink_error"
        assert json.loads(r["record"])[SOURCE_ID] == r["source_id"]
        if backend.name == "mariadb":
            assert "Data too long for column 'inn'" in r["message"]
            assert r["field"] == "inn"
        elif backend.name == "postgres":
            assert "value too long for type character varying(12)" in r["message"]
        else:
            assert "CHECK constraint failed" in r["message"]
        assert "INSERT" not in r["message"]  # the database's text, not our SQL
    assert [r["source_id"] for r in backend.rows()] == ["C0001", "C0003", "C0004"]
    assert sink.lookup(["C0001", "C0002"]) == {"C0001": "C0001"}


def test_sql_statement_failure_is_terminal(backend):
    sink = backend.sink()
    sink.open(stream())
    backend.execute(f"DROP TABLE {backend.qualified()}")
    with pytest.raises(TerminalError):
        sink.write(batch([company(1)]), EMPTY)


def test_sql_existing_table_without_key_is_refused(backend):
    backend.execute(f"CREATE TABLE {backend.qualified()} (source_id VARCHAR(255), title TEXT)")
    with pytest.raises(TerminalError, match="primary key or unique index"):
        backend.sink().open(stream())


# -- SQLite only


def test_sqlite_table_defaults_to_pipeline_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    sink = SqlTableSink(url)
    sink.open(stream(pipeline="crm_companies"))
    sink.write(batch([company(1)]), EMPTY)
    sink.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT source_id, title FROM crm_companies")).all() == [
            ("C0001", "ООО «Ромашка-1»")]
    engine.dispose()


def test_sqlite_generic_delete_then_insert(tmp_path):
    """The path for dialects without a native upsert, exercised on SQLite."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    sink = SqlTableSink(url, table="g", chunk_rows=2)
    sink.open(stream())
    sink._upsert = None  # as for a dialect without INSERT ... ON CONFLICT
    sink.write(batch([company(i) for i in range(5)]), EMPTY)
    sink.write(batch([company(i, title=f"v2-{i}") for i in range(3, 8)]), EMPTY)
    sink.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT source_id, title FROM g")).all())
    engine.dispose()
    assert len(got) == 8 and got["C0004"] == "v2-4" and got["C0001"] == "ООО «Ромашка-1»"


def test_sqlite_locked_database_is_transient(tmp_path):
    path = tmp_path / "locked.db"
    sink = SqlTableSink(f"sqlite:///{path}?timeout=0.05", table="t")
    sink.open(stream())
    import sqlite3
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError, match="locked"):
            sink.write(batch([company(1)]), EMPTY)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sink.write(batch([company(1)]), EMPTY).ids == {"C0001": "C0001"}
    sink.close()


# -- the password


def _assert_masked(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    assert SECRET not in str(exc)
    assert SECRET not in text


def test_password_masked_when_server_unreachable():
    sink = SqlTableSink(f"postgresql+psycopg://etl:{SECRET}@127.0.0.1:1/test")
    with pytest.raises(TransientError) as info:
        sink.open(stream())
    assert "etl:***@127.0.0.1:1" in str(info.value)
    _assert_masked(info.value)
    sink.close()


@pytest.mark.parametrize("url", [f"postgresql://etl:{SECRET}@host:notaport/db", f"nonsense {SECRET}",
                                 f"nosuchdb://etl:{SECRET}@host/db"])
def test_password_masked_in_bad_urls(url):
    with pytest.raises(TerminalError) as info:
        SqlTableSink(url)
    _assert_masked(info.value)


@pytest.mark.mariadb
def test_password_masked_on_access_denied():
    if why := _unreachable(MY_URL):
        pytest.skip(f"MariaDB at 127.0.0.1:3306 is unreachable: {why}")
    sink = SqlTableSink(f"mysql+pymysql://no_such_etl_user:{SECRET}@127.0.0.1:3306/test?charset=utf8mb4")
    with pytest.raises(TerminalError, match="Access denied") as info:
        sink.open(stream())
    assert "no_such_etl_user:***@" in str(info.value)
    _assert_masked(info.value)
    sink.close()


# -- connection loss, for real: the server kills the sink's session just before its INSERT


def _kill_before_insert(sink: SqlTableSink, kill) -> list:
    killed = []

    @sa.event.listens_for(sink.engine, "before_cursor_execute")
    def before(conn, cursor, statement, params, context, executemany):
        if not killed and statement.lstrip().upper().startswith("INSERT"):
            killed.append(kill(conn.connection.dbapi_connection))
    return killed


def _assert_connection_loss_is_transient(b: Backend, kill) -> None:
    sink = b.sink()
    sink.open(stream())
    killed = _kill_before_insert(sink, kill)
    with pytest.raises(TransientError):
        sink.write(batch([company(1), company(2)]), EMPTY)
    assert killed
    assert b.count() == (0, 0)  # the transaction is gone as a whole
    # the engine retries: the pool replaces the dead connection and the same batch goes in once
    assert sink.write(batch([company(1), company(2)]), EMPTY).ids == {"C0001": "C0001", "C0002": "C0002"}
    assert b.count() == (2, 2)


@pytest.mark.postgres
def test_postgres_connection_loss_is_transient(postgres):
    def kill(dbapi_conn):
        pid = dbapi_conn.info.backend_pid
        with postgres.engine.begin() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return pid
    _assert_connection_loss_is_transient(postgres, kill)


@pytest.mark.mariadb
def test_mariadb_connection_loss_is_transient(mariadb):
    def kill(dbapi_conn):
        tid = dbapi_conn.thread_id()
        with mariadb.engine.begin() as admin:
            admin.execute(sa.text(f"KILL CONNECTION {int(tid)}"))
        return tid
    _assert_connection_loss_is_transient(mariadb, kill)


@pytest.mark.postgres
def test_postgres_lock_timeout_is_transient(postgres):
    sink = SqlTableSink(PG_URL + "?options=-c%20lock_timeout%3D100", table=postgres.table, schema=postgres.schema)
    postgres.sinks.append(sink)
    sink.open(stream())
    with postgres.engine.connect() as holder:
        holder.execute(sa.text(f"LOCK TABLE {postgres.qualified()} IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(TransientError, match="lock timeout"):
            sink.write(batch([company(1)]), EMPTY)
        holder.rollback()
    assert sink.write(batch([company(1)]), EMPTY).ids == {"C0001": "C0001"}


# -- MariaDB only


@pytest.mark.mariadb
def test_mariadb_too_long_source_id_is_a_reject(mariadb):
    sink = mariadb.sink()
    sink.open(stream())
    long_id = "Z" * 300
    result = sink.write(batch([company(1), company(2, id=long_id)]), EMPTY)
    assert result.ids == {"C0001": "C0001"}
    (rej,) = result.rejects.to_pylist()
    assert rej["source_id"] == long_id and "Data too long for column 'source_id'" in rej["message"]
    assert mariadb.count() == (1, 1)


@pytest.mark.mariadb
def test_mariadb_source_ids_are_case_and_space_sensitive(mariadb):
    sink = mariadb.sink()
    sink.open(stream())
    ids = ["abc", "ABC", "abc ", "ёж", "ЁЖ"]
    sink.write(batch([company(1, id=i) for i in ids]), EMPTY)
    assert mariadb.count() == (5, 5)
    assert sink.lookup(["abc", "ЁЖ", "Abc"]) == {"abc": "abc", "ЁЖ": "ЁЖ"}


# ------------------------------------------------------------------------------------------------ file sinks


def read_output(sink, root: Path, pipeline: str = "companies") -> pd.DataFrame:
    if isinstance(sink, ParquetSink):
        return pd.read_parquet(root / pipeline)
    return pd.read_csv(root / f"{pipeline}.csv", sep=";", encoding="utf-8-sig", dtype=str, keep_default_na=False)


def output_path(sink, root: Path, pipeline: str = "companies") -> Path:
    return root / pipeline if isinstance(sink, ParquetSink) else root / f"{pipeline}.csv"


def leftovers(root: Path) -> list[str]:
    """What is in the output directory, but the CSV sink's marker of the published pass."""
    return sorted(p.name for p in root.iterdir() if p.name != ".companies.csv.pass")


@pytest.fixture(params=[ParquetSink, CsvSink], ids=["parquet", "csv"])
def file_sink(request, tmp_path):
    root = tmp_path / "out"
    return lambda: request.param(root), root


def test_files_publish_a_pass(file_sink):
    make, root = file_sink
    sink = make()
    assert sink.snapshot is True
    sink.open(stream())
    r1 = sink.write(batch([company(1, comments="строка 1\nстрока 2; «кавычки» \"да\""), company(2)]), EMPTY)
    r2 = sink.write(EMPTY, batch([company(3, revenue=None, is_active=None)], update=True))
    assert r1.ids == {"C0001": "C0001", "C0002": "C0002"} and r2.ids == {"C0003": "C0003"}
    assert not output_path(sink, root).exists()  # nothing is published before the pass is complete
    assert sink.lookup(["C0001", "C0003", "C0009"]) == {"C0001": "C0001", "C0003": "C0003"}
    sink.finish_pass()
    sink.close()
    df = read_output(sink, root)
    assert list(df.columns) == ["source_id", *ENTITY_COLUMNS, "content_hash"]
    assert sorted(df["source_id"]) == ["C0001", "C0002", "C0003"]
    row = df.set_index("source_id").loc["C0001"]
    assert row["comments"] == "строка 1\nстрока 2; «кавычки» \"да\""
    assert row["title"] == "ООО «Ромашка-1»"
    assert row["content_hash"] == "h-C0001-ООО «Ромашка-1»"
    assert leftovers(root) == [output_path(sink, root).name]


def test_files_rerun_with_changed_data_replaces_output(file_sink):
    make, root = file_sink
    first = make()
    first.open(stream("p1"))
    first.write(batch([company(i) for i in range(1, 6)]), EMPTY)
    first.finish_pass()
    second = make()
    second.open(stream("p2"))
    second.write(EMPTY, batch([company(i, title=f"Новое {i}") for i in range(3, 8)], update=True))
    second.finish_pass()
    df = read_output(second, root)
    assert sorted(df["source_id"]) == [f"C{i:04d}" for i in range(3, 8)]
    assert set(df["title"]) == {f"Новое {i}" for i in range(3, 8)}
    assert leftovers(root) == [output_path(second, root).name]


def test_files_crash_mid_pass_then_resume(file_sink):
    make, root = file_sink
    b1 = batch([company(i) for i in range(0, 4)])
    b2 = batch([company(i) for i in range(4, 8)])
    b3 = batch([company(i) for i in range(8, 12)])
    b4 = batch([company(i) for i in range(12, 15)])
    crashed = make()
    crashed.open(stream("p1"))
    for b in (b1, b2, b3):  # b3 written, then the engine dies before committing it
        crashed.write(b, EMPTY)
    resumed = make()
    resumed.open(stream("p1"))
    ids = [f"C{i:04d}" for i in range(15)]
    assert resumed.lookup(ids) == {i: i for i in ids[:12]}
    resumed.write(b3, EMPTY)  # replayed: it overwrites its own part, it does not add one
    assert len(list((root / "companies.staging-p1").glob("part-*"))) == 3
    resumed.write(b4, EMPTY)
    resumed.finish_pass()
    df = read_output(resumed, root)
    assert len(df) == 15 and sorted(df["source_id"]) == ids


def test_files_crash_after_publish_before_commit(file_sink):
    make, root = file_sink
    first = make()
    first.open(stream("p1"))
    first.write(batch([company(i) for i in range(0, 5)]), EMPTY)
    first.write(batch([company(i) for i in range(5, 9)]), EMPTY)
    first.finish_pass()  # published; the engine dies before it records the end of the pass
    resumed = make()
    resumed.open(stream("p1"))
    ids = [f"C{i:04d}" for i in range(9)]
    assert resumed.lookup(ids) == {i: i for i in ids}
    resumed.write(batch([company(i, title=f"v2-{i}") for i in range(5, 9)]), EMPTY)  # may be written again
    resumed.finish_pass()  # must not publish an empty or partial output
    df = read_output(resumed, root)
    assert sorted(df["source_id"]) == ids
    titles = dict(zip(df["source_id"], df["title"]))
    assert titles["C0001"] == "ООО «Ромашка-1»" and titles["C0008"] == "v2-8"
    assert leftovers(root) == [output_path(resumed, root).name]
    # a new pass does not inherit the old output
    new = make()
    new.open(stream("p2"))
    assert new.lookup(ids) == {}
    new.write(batch([company(1)]), EMPTY)
    new.finish_pass()
    assert list(read_output(new, root)["source_id"]) == ["C0001"]


def test_files_resume_with_shifted_batches_dedupes_last_wins(file_sink):
    make, root = file_sink
    crashed = make()
    crashed.open(stream("p1"))
    crashed.write(batch([company(i) for i in range(0, 8)]), EMPTY)
    resumed = make()
    resumed.open(stream("p1"))
    # the source changed meanwhile: the replayed batch overlaps the part already written, with newer values
    resumed.write(batch([company(i, title=f"v2-{i}") for i in range(5, 12)]), EMPTY)
    resumed.finish_pass()
    df = read_output(resumed, root)
    assert len(df) == 12 and df["source_id"].is_unique
    titles = dict(zip(df["source_id"], df["title"]))
    assert titles["C0004"] == "ООО «Ромашка-4»" and titles["C0005"] == "v2-5" and titles["C0011"] == "v2-11"


def test_files_abandoned_pass_is_cleaned_and_empty_pass_publishes(file_sink):
    make, root = file_sink
    old = make()
    old.open(stream("p1"))
    old.write(batch([company(1)]), EMPTY)
    new = make()
    new.open(stream("p2"))
    assert not (root / "companies.staging-p1").exists()
    assert new.lookup(["C0001"]) == {}
    new.finish_pass()
    df = read_output(new, root)
    assert len(df) == 0 and list(df.columns) == ["source_id", *ENTITY_COLUMNS, "content_hash"]


def test_files_bad_value_is_a_reject(file_sink):
    make, root = file_sink
    sink = make()
    sink.open(stream())
    tbl = batch([company(1), company(2), company(3)])
    tbl = tbl.set_column(tbl.schema.get_field_index("revenue"), "revenue", pa.array(["12.5", "много", None]))
    tbl = tbl.set_column(tbl.schema.get_field_index(SOURCE_ID), SOURCE_ID, pa.array(["C0001", "C0002", None]))
    result = sink.write(tbl, EMPTY)
    assert result.ids == {"C0001": "C0001"}
    rej = result.rejects.to_pylist()
    assert [(r["source_id"], r["field"], r["stage"], r["reason"]) for r in rej] == [
        ("C0002", "revenue", "load", "sink_error"), (None, SOURCE_ID, "load", "sink_error")]
    assert "много" in rej[0]["message"]
    sink.finish_pass()
    assert list(read_output(sink, root)["source_id"]) == ["C0001"]


def test_parquet_types_and_dataset(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.open(stream())
    sink.write(batch([company(1), company(2, revenue=None, is_active=None, created_at=None)]), EMPTY)
    sink.write(batch([company(3)]), EMPTY)
    sink.finish_pass()
    table = ds.dataset(tmp_path / "companies", format="parquet").to_table().sort_by("source_id")
    assert table.num_rows == 3
    assert table.schema.field("revenue").type == pa.float64()
    assert table.schema.field("is_active").type == pa.bool_()
    assert pa.types.is_timestamp(table.schema.field("created_at").type)
    rows = table.to_pylist()
    assert rows[0]["revenue"] == 1234568.891 and rows[0]["is_active"] is False and rows[0]["created_at"] == TS
    assert rows[1]["revenue"] is None and rows[1]["created_at"] is None


def test_parquet_crash_between_renames_keeps_old_output(tmp_path):
    first = ParquetSink(tmp_path)
    first.open(stream("p1"))
    first.write(batch([company(1)]), EMPTY)
    first.finish_pass()
    os.rename(tmp_path / "companies", tmp_path / "companies.old-p2")  # publish of p2 died after step one
    resumed = ParquetSink(tmp_path)
    resumed.open(stream("p2"))
    assert list(pd.read_parquet(tmp_path / "companies")["source_id"]) == ["C0001"]  # the old output is back
    resumed.write(batch([company(2)]), EMPTY)
    resumed.finish_pass()
    assert list(pd.read_parquet(tmp_path / "companies")["source_id"]) == ["C0002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["companies"]


def test_csv_single_header_bom_and_values(tmp_path):
    sink = CsvSink(tmp_path)
    sink.open(stream())
    for i in range(3):
        sink.write(batch([company(2 * i, comments="a;b\nc"), company(2 * i + 1, revenue=None)]), EMPTY)
    sink.finish_pass()
    raw = (tmp_path / "companies.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and raw.count(b"\xef\xbb\xbf") == 1
    with open(tmp_path / "companies.csv", encoding="utf-8-sig", newline="") as f:
        records = list(csv.reader(f, delimiter=";"))
    header = ["source_id", *ENTITY_COLUMNS, "content_hash"]
    assert records[0] == header and sum(r == header for r in records) == 1
    assert len(records) == 7
    df = pd.read_csv(tmp_path / "companies.csv", sep=";", encoding="utf-8-sig")
    row = df.set_index("source_id").loc["C0002"]
    assert row["comments"] == "a;b\nc" and row["revenue"] == 1234569.891 and bool(row["is_active"]) is True
    assert row["created_at"] == "2024-01-02 03:04:05" and row["title"] == "ООО «Ромашка-2»"
    assert pd.isna(df.set_index("source_id").loc["C0001", "revenue"])


def test_csv_other_encoding_rejects_what_it_cannot_hold(tmp_path):
    sink = CsvSink(tmp_path, encoding="cp1251", delimiter=",")
    sink.open(stream())
    result = sink.write(batch([company(1), company(2, comments="🙂 смайлик")]), EMPTY)
    assert result.ids == {"C0001": "C0001"}
    assert [(r["source_id"], r["field"]) for r in result.rejects.to_pylist()] == [("C0002", "comments")]
    sink.finish_pass()
    text = (tmp_path / "companies.csv").read_bytes().decode("cp1251")
    assert text.startswith("source_id,title,") and "ООО «Ромашка-1»" in text and "C0002" not in text
