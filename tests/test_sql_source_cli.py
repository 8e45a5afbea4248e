"""The nightly sync from a customer's SQL database, through the `etl` command: the first run loads everything, a
run cut short resumes where it stopped, and every later run reads exactly the rows changed since the last one —
updated rows are updated, new rows (on the very same timestamp) are created, untouched rows are not even read."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import sqlalchemy as sa

from etl import exitcodes
from tests.test_sql_source import insert_contacts, maria_odbc_connect, odbc_drivers

T0 = datetime(2024, 5, 1, 8, 0, 0)

PROJECT = """\
version: 1
name: nightly-sql
state: {url: "sqlite:///.etl/state.db"}
defaults: {batch_size: 40, max_reject_rate: 0.5}
sources:
  crm: {type: sql, url: "${CRM_URL}", fetch_size: 37, page_rows: 90}
targets:
  warehouse: {type: sql, url: "sqlite:///.etl/warehouse.db"}
target: warehouse
pipelines: [contacts]
"""

PIPELINE = """\
entity: contact
source:
  use: crm
  table: contacts
  key: id
  watermark: updated_at
key: id
mapping:
  full_name: full_name
  name: full_name
  email: email
  modified_at: updated_at
"""


def project(tmp_path: Path, url: str, pipeline: str = PIPELINE) -> Path:
    p = tmp_path / "project"
    (p / "pipelines").mkdir(parents=True)
    (p / "pipelines.yaml").write_text(PROJECT, encoding="utf-8")
    (p / "pipelines" / "contacts.yaml").write_text(pipeline, encoding="utf-8")
    (p / ".env").write_text(f"CRM_URL={url}\n", encoding="utf-8")
    return p


def finished(output: str) -> dict:
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    (done,) = [e for e in events if e["event"] == "pipeline_finished"]
    return done


def counts(report: dict) -> tuple:
    return report["read"], report["created"], report["updated"], report["unchanged"], report["rejected"]


def warehouse(p: Path) -> dict[str, tuple]:
    eng = sa.create_engine(f"sqlite:///{p / '.etl' / 'warehouse.db'}")
    with eng.connect() as c:
        rows = {sid: (name, modified) for sid, name, modified in
                c.execute(sa.text("SELECT source_id, full_name, modified_at FROM contacts"))}
    eng.dispose()
    return rows


@pytest.fixture(params=["postgresql", "mariadb", "mysql+pyodbc"])
def crm(request):
    """(engine to change the customer's data with, URL the pipeline reads through)."""
    if request.param == "mysql+pyodbc" and "MariaDB Unicode" not in odbc_drivers():
        pytest.skip("ODBC driver 'MariaDB Unicode' is not registered")
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "maria_url")
    eng = sa.create_engine(url)
    ts = "TIMESTAMP" if eng.dialect.name == "postgresql" else "DATETIME(6)"
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE TABLE contacts (id INTEGER PRIMARY KEY, code VARCHAR(20), full_name VARCHAR(200), "
                          f"email VARCHAR(200), amount NUMERIC(12,2), active BOOLEAN, updated_at {ts})"))
    read = url if request.param != "mysql+pyodbc" else \
        "mysql+pyodbc:///?odbc_connect=" + quote_plus(maria_odbc_connect(url))
    yield eng, read
    eng.dispose()


def test_nightly_sync_reads_exactly_the_rows_changed_since_the_last_run(tmp_path, cli, crm):
    eng, url = crm
    # 500 people on 5 timestamps (100 rows each), ids with gaps
    _insert(eng, range(10, 5010, 10), lambda i: T0 + timedelta(seconds=i % 5))
    p = project(tmp_path, url)

    res = cli("validate", "-C", p)
    assert res.exit_code == 0, res.output

    # the first run is cut short after 130 records; the next one resumes right there
    res = cli("run", "--limit", "130", "--json", "-C", p)
    assert res.exit_code == 0, res.output
    assert counts(finished(res.output)) == (130, 130, 0, 0, 0)
    res = cli("run", "--json", "-C", p)
    assert res.exit_code == 0, res.output
    r = finished(res.output)
    assert r["resumed"] and r["pass_complete"] and counts(r) == (370, 370, 0, 0, 0)
    assert len(warehouse(p)) == 500

    # during the day: 30 people change and 20 arrive, all on one timestamp; some new ids fall between old ones
    t1 = T0 + timedelta(days=1, seconds=7)
    changed = list(range(100, 3100, 100))
    new = [1, 2, 3, 15, 25, 4995, *range(6000, 6014)]
    with eng.begin() as c:
        c.execute(sa.text("UPDATE contacts SET full_name = 'Сменила фамилию ' || id, updated_at = :t WHERE id IN :ids"
                          if eng.dialect.name == "postgresql" else
                          "UPDATE contacts SET full_name = CONCAT('Сменила фамилию ', id), updated_at = :t "
                          "WHERE id IN :ids").bindparams(sa.bindparam("ids", expanding=True)),
                  {"t": t1, "ids": changed})
        insert_contacts(c, new, lambda i: t1)
    res = cli("run", "--json", "-C", p)
    assert res.exit_code == 0, res.output
    assert counts(finished(res.output)) == (50, 20, 30, 0, 0)
    rows = warehouse(p)
    assert len(rows) == 520
    assert {sid for sid, (name, _) in rows.items() if name.startswith("Сменила")} == {str(i) for i in changed}
    assert rows["100"] == ("Сменила фамилию 100", t1.strftime("%Y-%m-%d %H:%M:%S.000000"))

    # a night without changes reads nothing at all
    res = cli("run", "--json", "-C", p)
    assert counts(finished(res.output)) == (0, 0, 0, 0, 0)

    # rows touched in a column the pipeline does not map are read again; only modified_at moves on
    with eng.begin() as c:
        c.execute(sa.text("UPDATE contacts SET amount = amount + 1, updated_at = :t WHERE id IN (20, 30, 40)"),
                  {"t": t1 + timedelta(hours=1)})
    res = cli("run", "--json", "-C", p)
    assert counts(finished(res.output)) == (3, 0, 3, 0, 0)
    assert warehouse(p)["30"][1].startswith((t1 + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"))

    res = cli("status", "-C", p)
    assert "updated_at" in res.output and "id 40" in res.output


def _insert(eng, ids, stamp):
    with eng.begin() as c:
        insert_contacts(c, ids, stamp)


def test_the_source_block_is_checked_with_file_line_and_key(tmp_path, cli, pg_url):
    both = PIPELINE.replace("  table: contacts\n", "  table: contacts\n  query: SELECT * FROM contacts\n")
    res = cli("validate", "--offline", "-C", project(tmp_path / "a", pg_url, both))
    assert res.exit_code == exitcodes.CONFIG, res.output
    assert re.search(r"pipelines/contacts\.yaml:\d+: source: .*exactly one of `table` and `query`", res.output)

    typo = PIPELINE.replace("watermark:", "wattermark:")
    res = cli("validate", "--offline", "-C", project(tmp_path / "b", pg_url, typo))
    assert res.exit_code == exitcodes.CONFIG
    assert "unknown key 'wattermark'" in res.output and "did you mean 'watermark'" in res.output

    no_wm = PIPELINE.replace("  watermark: updated_at\n", "  mode: incremental\n")
    res = cli("validate", "--offline", "-C", project(tmp_path / "c", pg_url, no_wm))
    assert res.exit_code == exitcodes.CONFIG and "needs a `watermark` column" in res.output


def test_a_wrong_column_or_password_fails_validate_without_showing_the_password(tmp_path, cli, maria_url):
    eng = sa.create_engine(maria_url)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE contacts (id INT PRIMARY KEY, full_name TEXT, email TEXT, updated DATETIME)"))
    eng.dispose()
    res = cli("validate", "-C", project(tmp_path / "a", maria_url))
    assert res.exit_code == exitcodes.CONFIG
    assert "no watermark column 'updated_at'" in res.output and "it has id, full_name, email, updated" in res.output

    secret = "Qw3rty-n0t-shown"
    odbc = "mysql+pyodbc:///?odbc_connect=" + quote_plus(maria_odbc_connect(maria_url, PWD=secret))
    for url in (maria_url.replace("root@", f"root:{secret}@"), odbc):
        for cmd in (("validate",), ("run", "--json")):
            res = cli(*cmd, "-C", project(tmp_path / f"p{abs(hash((url, cmd)))}", url))
            assert res.exit_code in (exitcodes.CONFIG, exitcodes.RUNTIME), res.output
            assert "Access denied" in res.output and secret not in res.output


RETRY_PROJECT = """\
version: 1
name: nightly-sql
state: {url: "sqlite:///.etl/state.db"}
defaults: {batch_size: 40, max_reject_rate: 1.0}
sources:
  crm: {type: sql, url: "${CRM_URL}"}
targets:
  warehouse: {type: sql, url: "sqlite:///.etl/warehouse.db"}
target: warehouse
pipelines: [companies, contacts]
"""

RETRY_COMPANIES = """\
entity: company
source: {use: crm, table: firms, key: code, watermark: updated_at}
key: code
mapping: {title: title}
"""

RETRY_CONTACTS = """\
entity: contact
source: {use: crm, table: people, key: id, watermark: updated_at}
key: id
mapping: {name: full_name}
links:
  company: {pipeline: companies, column: firm}
"""


@pytest.mark.parametrize("server", ["pg_url", "maria_url"])
def test_a_contact_whose_company_came_late_is_loaded_by_the_next_nightly_run(tmp_path, cli, request, server):
    """An incremental pass never reads an unchanged row again, so the rows it rejected because their company was
    not loaded yet (or the target refused them) are read again by key at the end of each pass."""
    url = request.getfixturevalue(server)
    eng = sa.create_engine(url)
    ts = "TIMESTAMP" if eng.dialect.name == "postgresql" else "DATETIME(6)"
    with eng.begin() as c:
        c.execute(sa.text(f"CREATE TABLE firms (code VARCHAR(20) PRIMARY KEY, title VARCHAR(200), updated_at {ts})"))
        c.execute(sa.text(f"CREATE TABLE people (id INTEGER PRIMARY KEY, full_name VARCHAR(200), firm VARCHAR(20), "
                          f"updated_at {ts})"))
        c.execute(sa.text("INSERT INTO firms VALUES ('Ф-1', 'ООО «Ромашка»', :t)"), {"t": T0})
        c.execute(sa.text("INSERT INTO people VALUES (1, 'Иван', 'Ф-1', :t), (2, 'Пётр', 'Ф-2', :t), "
                          "(3, 'Анна', 'Ф-2', :t), (4, 'Олег', NULL, :t)"), {"t": T0})
    p = tmp_path / "project"
    (p / "pipelines").mkdir(parents=True)
    (p / "pipelines.yaml").write_text(RETRY_PROJECT, encoding="utf-8")
    (p / "pipelines" / "companies.yaml").write_text(RETRY_COMPANIES, encoding="utf-8")
    (p / "pipelines" / "contacts.yaml").write_text(RETRY_CONTACTS, encoding="utf-8")
    (p / ".env").write_text(f"CRM_URL={url}\n", encoding="utf-8")

    def run() -> dict[str, dict]:
        res = cli("run", "--json", "-C", p)
        assert res.exit_code == 0, res.output
        events = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
        return {e["pipeline"]: e for e in events if e["event"] == "pipeline_finished"}

    first = run()
    assert counts(first["contacts"]) == (4, 2, 0, 0, 2)
    assert first["contacts"]["reasons"] == {"unresolved_link": 2}

    # a night without the company: the two are read again by key, and rejected again (still open, once each)
    again = run()
    assert counts(again["contacts"]) == (2, 0, 0, 0, 2)
    dl = cli("dlq", "list", "contacts", "--json", "-C", p)
    open_letters = [json.loads(x) for x in dl.output.splitlines() if '"dead_letter"' in x]
    assert sorted(d["source_id"] for d in open_letters) == ["2", "3"]

    # the company arrives; Анна also changes (the watermark brings her): both load, nobody is read twice
    with eng.begin() as c:
        c.execute(sa.text("INSERT INTO firms VALUES ('Ф-2', 'АО «Вектор»', :t)"), {"t": T0 + timedelta(days=1)})
        c.execute(sa.text("UPDATE people SET full_name = 'Анна Петровна', updated_at = :t WHERE id = 3"),
                  {"t": T0 + timedelta(days=1)})
    third = run()
    assert counts(third["companies"]) == (1, 1, 0, 0, 0)
    assert counts(third["contacts"]) == (2, 2, 0, 0, 0)
    dl = cli("dlq", "list", "contacts", "--json", "-C", p)
    assert not [x for x in dl.output.splitlines() if '"dead_letter"' in x]
    wh = sa.create_engine(f"sqlite:///{p / '.etl' / 'warehouse.db'}")
    with wh.connect() as c:
        got = dict(c.execute(sa.text("SELECT source_id, name FROM contacts")).all())
    wh.dispose()
    assert got == {"1": "Иван", "2": "Пётр", "3": "Анна Петровна", "4": "Олег"}

    # and then the nights are quiet again
    assert counts(run()["contacts"]) == (0, 0, 0, 0, 0)
    eng.dispose()
