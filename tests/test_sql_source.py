"""An integrator reads a customer database: a table or a query of PostgreSQL or MariaDB, straight or through ODBC,
in bounded batches; the first pass takes everything, a nightly pass takes only what changed since, and neither
loses a row nor reads one twice, even when thousands of rows share a timestamp.

Every test talks to this machine's PostgreSQL and MariaDB; the ODBC ones go through pyodbc, unixODBC and Debian's
psqlODBC ("PostgreSQL Unicode") and MariaDB Connector/ODBC ("MariaDB Unicode") drivers, which is the code path
an MS SQL server reached through mssql+pyodbc runs.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connectors.base import FILE_COLUMN, TerminalError
from connectors.sql import SqlSource, decode_value, encode_value

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 3, 1, 9, 0, 0)


# ------------------------------------------------------------------------------------------ helpers

def odbc_drivers() -> set[str]:
    try:
        import pyodbc

        return set(pyodbc.drivers())
    except Exception:  # noqa: BLE001
        return set()


def pg_schema(pg_url: str) -> str:
    return re.search(r"search_path%3D(\w+)", pg_url).group(1)


def pg_odbc_connect(pg_url: str, **extra) -> str:
    u = make_url(pg_url)
    parts = {"DRIVER": "{PostgreSQL Unicode}", "Server": u.host, "Port": u.port or 5432, "Database": u.database,
             "UID": u.username, "ConnSettings": "{SET search_path TO %s}" % pg_schema(pg_url), **extra}
    return ";".join(f"{k}={v}" for k, v in parts.items())


def maria_odbc_connect(maria_url: str, **extra) -> str:
    u = make_url(maria_url)
    parts = {"DRIVER": "{MariaDB Unicode}", "Server": u.host, "Port": u.port or 3306, "Database": u.database,
             "UID": u.username, "CHARSET": "utf8mb4", **extra}
    if u.password:
        parts["PWD"] = u.password
    return ";".join(f"{k}={v}" for k, v in parts.items())


@pytest.fixture(params=["postgresql", "mariadb", "postgresql+pyodbc", "mysql+pyodbc"])
def db(request):
    """(URL the test writes through, URL the source reads through) for each database and driver."""
    kind = request.param
    if "pyodbc" in kind:
        need = "PostgreSQL Unicode" if kind.startswith("postgresql") else "MariaDB Unicode"
        if need not in odbc_drivers():
            pytest.skip(f"ODBC driver {need!r} is not registered (odbcinst -q -d)")
    if kind.startswith("postgresql"):
        write = request.getfixturevalue("pg_url")
        read = write if kind == "postgresql" else \
            "postgresql+pyodbc:///?odbc_connect=" + quote_plus(pg_odbc_connect(write))
    else:
        write = request.getfixturevalue("maria_url")
        read = write if kind == "mariadb" else \
            "mysql+pyodbc:///?odbc_connect=" + quote_plus(maria_odbc_connect(write))
    return write, read


CONTACTS = """
CREATE TABLE contacts (
    id INTEGER NOT NULL PRIMARY KEY,
    code VARCHAR(20) NOT NULL,
    full_name VARCHAR(200),
    email VARCHAR(200),
    amount NUMERIC(12, 2),
    active BOOLEAN,
    updated_at TIMESTAMP NULL
)
"""


def create_contacts(url: str, ids, stamp) -> sa.Engine:
    """A contacts table with the given ids; ``stamp(id)`` is the row's updated_at (many share one)."""
    eng = sa.create_engine(url)
    ddl = CONTACTS if eng.dialect.name == "postgresql" else CONTACTS.replace("TIMESTAMP NULL", "DATETIME(6) NULL")
    with eng.begin() as c:
        c.execute(sa.text(ddl))
        insert_contacts(c, ids, stamp)
    return eng


def insert_contacts(conn, ids, stamp) -> None:
    rows = [{"id": i, "code": f"К-{i:06d}", "full_name": f"Иванова Мария {i}", "email": f"m{i}@example.ru",
             "amount": Decimal(i) / 4, "active": i % 3 != 0, "updated_at": stamp(i)} for i in ids]
    if rows:
        conn.execute(sa.text("INSERT INTO contacts (id, code, full_name, email, amount, active, updated_at) "
                             "VALUES (:id, :code, :full_name, :email, :amount, :active, :updated_at)"), rows)


def read_all(source, cursor=None, batch_size=50):
    """Every batch of a pass, each cursor sent through JSON as the state store keeps it."""
    ids, cursors = [], []
    for b in source.read(cursor, batch_size):
        assert b.table.num_rows <= batch_size
        ids += b.table.column("id").to_pylist()
        cursors.append(json.loads(json.dumps(b.cursor)))
    return ids, cursors


# ------------------------------------------------------------------------------------------ full mode

def test_a_full_pass_reads_every_row_once_in_key_order_and_resumes_from_any_batch(db):
    write, read = db
    ids = random.Random(3).sample(range(1, 100_000), 1000)
    create_contacts(write, ids, lambda i: T0).dispose()
    src = SqlSource(read, table="contacts", key="id", fetch_size=17, page_rows=130)
    assert src.columns() == ["id", "code", "full_name", "email", "amount", "active", "updated_at"]
    assert src.total() == 1000

    got, cursors = read_all(src, batch_size=50)
    assert got == sorted(ids)  # keyset pages of 130 rows, fetched 17 at a time, cut into batches of 50
    assert [c["row"] for c in cursors] == list(range(50, 1001, 50))

    # a crash after any batch: the next run starts from its cursor and reads exactly the rest
    for k in (0, 7, 12, 19):
        rest, _ = read_all(src, cursors[k], batch_size=64)
        assert rest == sorted(ids)[50 * (k + 1):]

    # the next pass of a full read starts again from the top
    assert src.next_pass(cursors[-1]) is None
    b = next(iter(src.read(None, 3)))
    row = b.table.slice(0, 1).to_pylist()[0]
    first = min(ids)
    assert row["code"] == f"К-{first:06d}" and row["full_name"] == f"Иванова Мария {first}"
    assert row["amount"] == Decimal(first) / 4 and row["active"] in (first % 3 != 0, int(first % 3 != 0))
    assert row["updated_at"] == T0 and row[FILE_COLUMN] == "contacts"


def test_a_composite_key_pages_through_duplicates_of_its_first_column(pg_url):
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE lines (doc TEXT NOT NULL, line INT NOT NULL, item TEXT, "
                          "PRIMARY KEY (doc, line))"))
        c.execute(sa.text("INSERT INTO lines SELECT 'Д-' || (g % 7), g, 'товар ' || g FROM generate_series(1, 700) g"))
    eng.dispose()
    src = SqlSource(pg_url, table="lines", key=["doc", "line"], page_rows=33, fetch_size=10)
    seen = []
    for b in src.read(None, 25):
        seen += list(zip(b.table.column("doc").to_pylist(), b.table.column("line").to_pylist()))
    assert len(seen) == 700 and seen == sorted(seen) and len(set(seen)) == 700


def test_a_query_source_reads_a_join_by_its_own_key(pg_url):
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE firms (id INT PRIMARY KEY, title TEXT)"))
        c.execute(sa.text("CREATE TABLE people (id INT PRIMARY KEY, firm_id INT, name TEXT, changed TIMESTAMP)"))
        c.execute(sa.text("INSERT INTO firms SELECT g, 'ООО Фирма ' || g FROM generate_series(1, 10) g"))
        c.execute(sa.text("INSERT INTO people SELECT g, g % 10 + 1, 'Сотрудник ' || g, "
                          "TIMESTAMP '2024-01-01' + (g % 4) * INTERVAL '1 hour' FROM generate_series(1, 300) g"))
    eng.dispose()
    src = SqlSource(pg_url, query="""
        SELECT p.id AS person_id, p.name, f.title AS firm, p.changed
        FROM people p JOIN firms f ON f.id = p.firm_id
        WHERE p.id % 2 = 0;
    """, key="person_id", watermark="changed", page_rows=40)
    assert src.columns() == ["person_id", "name", "firm", "changed"]
    rows = [r for b in src.read(None, 32) for r in b.table.to_pylist()]
    assert len(rows) == 150 and {r["person_id"] for r in rows} == set(range(2, 301, 2))
    assert [(r["changed"], r["person_id"]) for r in rows] == sorted((r["changed"], r["person_id"]) for r in rows)
    assert rows[0]["firm"].startswith("ООО Фирма") and rows[0][FILE_COLUMN] == "sql query"


# ------------------------------------------------------------------------------------------ incremental

def test_incremental_reads_exactly_the_changed_rows_when_many_share_a_timestamp(db):
    write, read = db
    stamps = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(minutes=5)]
    eng = create_contacts(write, range(1, 1201, 1), lambda i: stamps[i % 4])  # 300 rows on each timestamp
    src = SqlSource(read, table="contacts", key="id", watermark="updated_at", fetch_size=23, page_rows=70)
    assert src.mode == "incremental"

    start = src.next_pass(None)
    assert start is None and src.total() == 1200
    got, cursors = read_all(src, start, batch_size=45)
    assert sorted(got) == list(range(1, 1201)) and len(got) == 1200  # nothing lost, nothing twice
    # resuming in the middle of a run of equal timestamps goes on right after the last key read
    rest, _ = read_all(src, cursors[9], batch_size=45)
    assert rest == got[450:]

    # overnight: 40 rows change, 25 arrive, all on one timestamp; new keys fall before and after old ones
    t_new = T0 + timedelta(days=1)
    changed = sorted(random.Random(5).sample(range(1, 1201), 40))
    new = [0, -3, 1201, 1500, *range(2000, 2021)]
    with eng.begin() as c:
        c.execute(sa.text("UPDATE contacts SET updated_at = :t, full_name = 'Изменено' WHERE id IN :ids")
                  .bindparams(sa.bindparam("ids", expanding=True)), {"t": t_new, "ids": changed})
        insert_contacts(c, new, lambda i: t_new)
    nxt = src.next_pass(json.loads(json.dumps(cursors[-1])))
    assert decode_value(nxt["wm"]) == stamps[3] and nxt["key"] == [1199]
    assert src.total() == 65
    got2, cursors2 = read_all(src, nxt, batch_size=7)
    assert got2 == sorted(changed + new)
    assert cursors2[-1]["position"] == f"updated_at {t_new.isoformat(sep=' ')}, id 2020"

    # and a night with no change reads nothing
    assert read_all(src, src.next_pass(cursors2[-1]))[0] == []
    eng.dispose()


def test_a_row_changed_while_a_pass_runs_is_read_by_the_next_pass_not_twice(pg_url):
    eng = create_contacts(pg_url, range(1, 101), lambda i: T0 + timedelta(seconds=i))
    src = SqlSource(pg_url, table="contacts", key="id", watermark="updated_at", page_rows=10)
    seen, last = [], None
    for n, b in enumerate(src.read(None, 10)):
        seen += b.table.column("id").to_pylist()
        last = b.cursor
        if n == 0:  # while the engine works on the first batch, two rows change: one read, one not yet read
            with eng.begin() as c:
                c.execute(sa.text("UPDATE contacts SET updated_at = :t WHERE id IN (5, 50)"),
                          {"t": T0 + timedelta(days=1)})
    assert len(seen) == len(set(seen)) == 99 and 50 not in seen
    assert read_all(src, src.next_pass(last))[0] == [5, 50]
    eng.dispose()


def test_rows_without_a_watermark_are_read_once_on_the_first_pass(maria_url):
    eng = create_contacts(maria_url, range(1, 61), lambda i: None if i % 3 == 0 else T0 + timedelta(hours=i % 2))
    src = SqlSource(maria_url, table="contacts", key="id", watermark="updated_at", page_rows=8)
    got, cursors = read_all(src, None, batch_size=6)
    nulls = list(range(3, 61, 3))
    assert got[:20] == nulls and sorted(got) == list(range(1, 61))
    assert cursors[0]["position"] == "updated_at NULL, id 18"
    # the pass resumed inside the NULL rows goes on with them, then with the rest
    assert read_all(src, cursors[1], batch_size=6)[0] == got[12:]
    assert read_all(src, src.next_pass(cursors[-1]))[0] == []
    eng.dispose()


def test_lookback_rereads_a_window_before_the_last_watermark(pg_url):
    eng = create_contacts(pg_url, range(1, 31), lambda i: T0 + timedelta(minutes=i))
    src = SqlSource(pg_url, table="contacts", key="id", watermark="updated_at", lookback=300)
    _, cursors = read_all(src)
    assert read_all(src, src.next_pass(cursors[-1]))[0] == [25, 26, 27, 28, 29, 30]
    eng.dispose()


def test_a_checkpoint_of_another_key_or_watermark_is_refused(pg_url):
    create_contacts(pg_url, range(1, 11), lambda i: T0).dispose()
    by_id = SqlSource(pg_url, table="contacts", key="id", watermark="updated_at")
    _, cursors = read_all(by_id, batch_size=4)
    by_code = SqlSource(pg_url, table="contacts", key="code", watermark="updated_at")
    with pytest.raises(TerminalError, match=r"etl run --restart"):
        list(by_code.read(cursors[0], 4))
    assert by_code.next_pass(cursors[-1]) is None  # a new pass starts from the top


def test_cursor_values_survive_json():
    from uuid import UUID

    values = [None, True, 7, 2**62, 1.5, "Ёж", Decimal("12.30"), datetime(2024, 2, 29, 23, 59, 59, 999999),
              datetime.fromisoformat("2024-01-01T10:00:00+03:00"), datetime(1, 1, 1).date(), b"\x00\xff",
              UUID("4b9f6867-7668-11eb-b762-b13668d09050"), timedelta(seconds=1.5)]
    for v in values:
        back = decode_value(json.loads(json.dumps(encode_value(v))))
        assert back == v and type(back) is type(v)


# ------------------------------------------------------------------------------------------ MS SQL, errors

def test_the_mssql_statement_spells_the_keyset_out_and_pages_with_top():
    src = SqlSource("mssql+pyodbc://etl:pw@sql.example.local/crm?driver=ODBC+Driver+18+for+SQL+Server",
                    table="Contacts", schema="dbo", columns=["Name"], key=["Region", "Id"], watermark="Modified",
                    page_rows=1000)
    from connectors.sql.source import PHASE_WM, _Position

    cursor = src._cursor(_Position(PHASE_WM, T0, ["Msk", 5], 10, T0 + timedelta(days=1), True))
    sql = " ".join(src.explain(cursor).split())
    assert sql.startswith("SELECT TOP ")
    assert "ORDER BY dbo.[Contacts].[Modified], dbo.[Contacts].[Region], dbo.[Contacts].[Id]" in sql
    # no row-value comparison (MS SQL has none): (wm > :w) OR (wm = :w AND (region > :r OR region = :r AND id > :i))
    assert "[Modified] > ? OR dbo.[Contacts].[Modified] = ? AND (dbo.[Contacts].[Region] > ? OR " \
           "dbo.[Contacts].[Region] = ? AND dbo.[Contacts].[Id] > ?)" in sql
    assert "[Modified] <= ?" in sql  # the pass stops at the highest watermark it saw when it started


def test_values_that_do_not_fit_become_rejects_and_zero_dates_null(maria_url):
    eng = sa.create_engine(maria_url)
    with eng.begin() as c:
        c.execute(sa.text("SET SESSION sql_mode = ''"))
        c.execute(sa.text("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT UNSIGNED, opened DATETIME)"))
        c.execute(sa.text("INSERT INTO accounts VALUES (1, 10, '2024-01-02 03:04:05'), "
                          "(2, 18446744073709551615, '2024-01-02 03:04:05'), (3, 30, '0000-00-00 00:00:00')"))
    eng.dispose()
    src = SqlSource(maria_url, table="accounts", key="id")
    (b,) = list(src.read(None, 100))
    assert b.table.column("id").to_pylist() == [1, 3]
    assert b.table.column("opened").to_pylist() == [datetime(2024, 1, 2, 3, 4, 5), None]
    (rej,) = b.rejects.to_pylist()
    assert rej["reason"] == "bad_value" and rej["field"] == "balance" and rej["value"] == "18446744073709551615"
    assert rej["message"].startswith("accounts, row id=2: column «balance»")
    assert json.loads(rej["record"])["id"] == 2


def test_errors_name_the_table_and_column_and_never_the_password(maria_url):
    create_contacts(maria_url, [1], lambda i: T0).dispose()
    with pytest.raises(TerminalError, match=r"no watermark column 'updated'; it has id, code"):
        SqlSource(maria_url, table="contacts", key="id", watermark="updated").check()
    with pytest.raises(TerminalError, match=r"no key column 'ID' \(did you mean 'id'\?\)"):
        SqlSource(maria_url, table="contacts", key="ID").check()
    with pytest.raises(TerminalError, match=r"doesn't exist"):
        SqlSource(maria_url, table="no_such_table", key="id").check()

    secret = "Zx9-very-secret"
    bad = maria_url.replace("root@", f"root:{secret}@")
    urls = [bad]
    if "MariaDB Unicode" in odbc_drivers():
        urls.append("mysql+pyodbc:///?odbc_connect=" + quote_plus(maria_odbc_connect(bad)))
    for url in urls:
        with pytest.raises(TerminalError) as err:
            SqlSource(url, table="contacts", key="id").check()
        assert secret not in str(err.value) and "Access denied" in str(err.value)


# ------------------------------------------------------------------------------------------ memory

RSS_SCRIPT = textwrap.dedent("""\
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from connectors.sql import SqlSource
    src = SqlSource(sys.argv[2], table=sys.argv[3], key="id", watermark=sys.argv[4] or None,
                    page_rows=int(sys.argv[5]) if sys.argv[5] != "none" else None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = ids = 0
    last = None
    for b in src.read(None, 5000):
        rows += b.table.num_rows
        col = b.table.column("id")
        ids += sum(col.to_pylist()) if col.null_count == 0 else 0
        last = b.cursor
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "ids": ids, "base_mib": base / 1024, "peak_mib": peak / 1024,
                      "last": last["position"]}))
""")


def rss_read(url: str, table: str, watermark: str = "", page_rows: str = "50000") -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(ROOT), url, table, watermark, page_rows],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_million_row_table_is_read_in_bounded_memory(pg_url):
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:  # ~170 MB of rows, generated by the server
        c.execute(sa.text("CREATE TABLE big (id BIGINT PRIMARY KEY, code TEXT, full_name TEXT, email TEXT, "
                          "phone TEXT, amount NUMERIC(12,2), updated_at TIMESTAMP)"))
        c.execute(sa.text(
            "INSERT INTO big SELECT g, 'К-' || lpad(g::text, 8, '0'), 'Петров Пётр Петрович ' || g, "
            "'p' || g || '@example.ru', '+7 (900) ' || lpad((g % 10000000)::text, 7, '0'), g * 1.25, "
            "TIMESTAMP '2024-01-01' + (g / 1000) * INTERVAL '1 second' FROM generate_series(1, 1000000) g"))
    eng.dispose()
    r = rss_read(pg_url, "big", page_rows="200000")  # 5 keyset pages, each streamed 5000 rows a round trip
    assert r["rows"] == 1_000_000 and r["ids"] == 1_000_000 * 1_000_001 // 2
    assert r["last"] == "id 1000000"
    # fetchall() of these rows grows a process by ~900 MiB; the stream grew it by ~60 MiB when this was written
    assert r["peak_mib"] - r["base_mib"] < 150, r


@pytest.mark.parametrize("driver", ["postgresql+pyodbc", "mysql+pyodbc"])
def test_odbc_reads_are_bounded_too(driver, request):
    need = "PostgreSQL Unicode" if driver.startswith("postgresql") else "MariaDB Unicode"
    if need not in odbc_drivers():
        pytest.skip(f"ODBC driver {need!r} is not registered")
    pad = "REPEAT('ж', 400)"  # ~800 bytes a row: 200,000 rows are ~160 MB
    if driver.startswith("postgresql"):
        write = request.getfixturevalue("pg_url")
        gen = f"INSERT INTO wide SELECT g, {pad} FROM generate_series(1, 200000) g"
        read = "postgresql+pyodbc:///?odbc_connect=" + quote_plus(pg_odbc_connect(write))
        page_rows = "none"  # psqlODBC streams through a server-side cursor (UseDeclareFetch, set by the source)
    else:
        write = request.getfixturevalue("maria_url")
        gen = f"INSERT INTO wide SELECT seq, {pad} FROM seq_1_to_200000"
        read = "mysql+pyodbc:///?odbc_connect=" + quote_plus(maria_odbc_connect(write))
        page_rows = "20000"  # MariaDB Connector/ODBC 3.1.15 holds each result: the keyset pages bound it
    eng = sa.create_engine(write)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE wide (id INTEGER PRIMARY KEY, payload TEXT)"))
        c.execute(sa.text(gen))
    eng.dispose()
    r = rss_read(read, "wide", page_rows=page_rows)
    assert r["rows"] == 200_000 and r["ids"] == 200_000 * 200_001 // 2
    # held whole, these rows grow the process by ~270 MiB (measured with UseDeclareFetch=0, or one page for all);
    # streamed, by ~85 MiB whatever the row count
    assert r["peak_mib"] - r["base_mib"] < 150, r
