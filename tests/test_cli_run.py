"""A migration engineer's first day: init a project, validate it, run it, look at what was rejected, run again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from etl import exitcodes

PIPELINES = ["companies", "contacts", "deals", "sites", "tickets"]


def truth(project: Path) -> dict:
    return json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))


def warehouse(project: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{project / '.etl' / 'warehouse.db'}")


def json_events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def finished(output: str) -> dict[str, dict]:
    return {e["pipeline"]: e for e in json_events(output) if e["event"] == "pipeline_finished"}


def test_init_writes_a_project_that_validates_and_runs(tmp_path, cli):
    res = cli("init", tmp_path / "p", "--companies", "30")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "pipelines.yaml").is_file()
    assert (tmp_path / "p" / "data" / "companies.csv").read_bytes()[:3] != b"\xef\xbb\xbf"  # cp1251, no BOM
    assert (tmp_path / "p" / "data" / "contacts.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    res = cli("validate", "-C", tmp_path / "p")
    assert res.exit_code == 0, res.output
    assert "ok: 5 pipelines" in res.output
    res = cli("run", "-C", tmp_path / "p")
    assert res.exit_code == 0, res.output
    assert "Summary" in res.output and "Rejects by reason" in res.output


def test_run_loads_exactly_the_accepted_records_and_accounts_for_every_one(project, cli):
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    reports = finished(res.output)
    expected = truth(project)["expected"]
    eng = warehouse(project)
    with eng.connect() as c:
        for name in PIPELINES:
            r = reports[name]
            assert r["status"] == "ok" and r["pass_complete"]
            assert r["read"] == expected[name]["accepted"] + expected[name]["rejected"]
            assert r["created"] == expected[name]["accepted"]
            assert r["rejected"] == expected[name]["rejected"]
            assert r["read"] == r["created"] + r["updated"] + r["unchanged"] + r["rejected"]
            rows, distinct = c.execute(sa.text(f"SELECT count(*), count(DISTINCT source_id) FROM {name}")).one()
            assert rows == distinct == expected[name]["accepted"]
        # links are resolved into the ids of loaded records
        orphans = c.execute(sa.text(
            "SELECT count(*) FROM contacts WHERE company_id IS NOT NULL "
            "AND company_id NOT IN (SELECT source_id FROM companies)")).scalar()
        assert orphans == 0
        linked = c.execute(sa.text("SELECT count(*) FROM tickets WHERE site_id IS NOT NULL")).scalar()
        assert linked == expected["tickets"]["accepted"]  # a ticket's site is required
    eng.dispose()


def test_values_are_typed_as_1c_wrote_them(project, cli):
    assert cli("run", "companies", "contacts", "-C", project).exit_code == 0
    eng = warehouse(project)
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT revenue, is_active, created_at, phone FROM companies")).all()
        births = c.execute(sa.text("SELECT birthdate FROM contacts WHERE birthdate IS NOT NULL")).all()
    eng.dispose()
    revenues = [r[0] for r in rows if r[0] is not None]
    assert revenues and all(isinstance(v, float) for v in revenues)
    assert any(v != int(v) for v in revenues)  # decimal comma kept its kopecks
    assert {r[1] for r in rows} <= {0, 1, None} and {0, 1} <= {r[1] for r in rows}
    assert all(str(b[0]) > "1900" for b in births)  # 01.01.0001 became NULL, not year 1
    assert any(r[3] and "; " in r[3] for r in rows)  # the two Телефон columns were joined


def test_second_run_sends_nothing_and_a_changed_record_is_updated(project, cli):
    assert cli("run", "-C", project).exit_code == 0
    res = cli("run", "--json", "-C", project)
    assert res.exit_code == 0
    for name, r in finished(res.output).items():
        assert r["created"] == 0 and r["updated"] == 0, name
        assert r["unchanged"] == truth(project)["expected"][name]["accepted"]
    # the rejects of the first pass were superseded by the second pass's: the open dead letters are one pass's worth
    status = {s["pipeline"]: s for s in json_events(cli("status", "--json", "-C", project).output)}
    assert status["contacts"]["dead_letters"] == truth(project)["expected"]["contacts"]["rejected"]
    res = cli("dlq", "list", "contacts", "--all", "--json", "-C", project)
    summary = next(e for e in json_events(res.output) if e["event"] == "dlq_summary")
    assert sum(x["count"] for x in summary["items"]) == 2 * truth(project)["expected"]["contacts"]["rejected"]
    # the 1C export is made again with one company renamed
    path = project / "data" / "companies.csv"
    with open(path, encoding="cp1251", newline="") as fh:
        text = fh.read()
    first_data_line = text.split("\r\n")[1]
    key, name = first_data_line.split(";")[0], first_data_line.split(";")[1]
    path.write_text(text.replace(first_data_line, first_data_line.replace(name, "ООО «Переименованная»", 1), 1),
                    encoding="cp1251", newline="")
    res = cli("run", "companies", "--json", "-C", project)
    r = finished(res.output)["companies"]
    assert r["updated"] == 1 and r["created"] == 0
    eng = warehouse(project)
    with eng.connect() as c:
        title = c.execute(sa.text("SELECT title FROM companies WHERE source_id = :k"), {"k": key}).scalar()
    eng.dispose()
    assert title == "ООО «Переименованная»"


def test_dead_letters_name_file_line_field_and_value(project, cli):
    assert cli("run", "-C", project).exit_code == 0
    t = truth(project)
    bad_list = t["files"]["contacts"]["bad_values"]
    bad = {(b["key"], b["column"]): b for b in bad_list}
    res = cli("dlq", "list", "contacts", "--reason", "bad_date", "--json", "--limit", "1000", "-C", project)
    assert res.exit_code == 0
    letters = [e for e in json_events(res.output) if e["event"] == "dead_letter"]
    assert len(letters) == sum(1 for b in bad_list if b["reason"] == "bad_date")
    for dl in letters:
        b = bad[(dl["source_id"], dl["field"])]
        assert dl["file"] == "contacts.csv" and dl["value"] == b["value"]
        assert dl["message"].startswith(f"contacts.csv, line {dl['line']}, column «{dl['field']}»")
        assert repr(b["value"]) in dl["message"]
    # orphans name the link column and the missing company
    res = cli("dlq", "list", "contacts", "--reason", "unresolved_link", "--json", "-C", project)
    orphan = next(e for e in json_events(res.output) if e["event"] == "dead_letter")
    assert orphan["field"] == "КодКонтрагента" and "is not loaded by pipeline 'companies'" in orphan["message"]
    # show gives the original record back
    res = cli("dlq", "show", str(orphan["id"]), "--json", "-C", project)
    shown = json_events(res.output)[0]
    assert shown["record"]["КодКонтрагента"] == orphan["value"]
    assert shown["record"]["Код"] == orphan["source_id"]


def test_dlq_export_csv_and_jsonl(project, cli, tmp_path):
    assert cli("run", "-C", project).exit_code == 0
    expected_rejects = sum(v["rejected"] for k, v in truth(project)["expected"].items() if k in PIPELINES)
    out = tmp_path / "rejects.csv"
    res = cli("dlq", "export", out, "-C", project)
    assert res.exit_code == 0, res.output
    with open(out, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert len(rows) == expected_rejects
    assert {r["reason"] for r in rows} >= {"duplicate_key", "unresolved_link", "bad_date", "bad_number"}
    out = tmp_path / "rejects.jsonl"
    assert cli("dlq", "export", out, "--pipeline", "tickets", "-C", project).exit_code == 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == truth(project)["expected"]["tickets"]["rejected"]
    assert all(x["pipeline"] == "tickets" and x["reason"] for x in lines)


def test_dry_run_plans_and_writes_nothing(project, cli):
    res = cli("run", "--dry-run", "--json", "-C", project)
    assert res.exit_code == 0, res.output
    plan = finished(res.output)
    for name in PIPELINES:
        assert plan[name]["status"] == "planned"
        assert plan[name]["created"] == truth(project)["expected"][name]["accepted"]  # links resolve in the plan
    rejects = [e for e in json_events(res.output) if e["event"] == "reject"]
    assert len(rejects) == sum(v["rejected"] for k, v in truth(project)["expected"].items() if k in PIPELINES)
    assert not (project / ".etl" / "warehouse.db").exists()
    status = json_events(cli("status", "--json", "-C", project).output)
    assert all(s["pass"] is None and s["crosswalk"] == 0 for s in status)


def test_limit_reads_exactly_n_and_the_next_run_goes_on(project, cli):
    res = cli("run", "companies", "--limit", "70", "--batch-size", "30", "--json", "-C", project)
    r = finished(res.output)["companies"]
    assert r["read"] == 70 and not r["pass_complete"]
    res = cli("run", "companies", "--json", "-C", project)
    r2 = finished(res.output)["companies"]
    assert r2["resumed"] and r2["pass_complete"]
    total = truth(project)["expected"]["companies"]
    assert r["read"] + r2["read"] == total["accepted"] + total["rejected"]
    assert r["created"] + r2["created"] == total["accepted"]


def test_restart_reads_again_from_the_top_without_duplicates(project, cli):
    cli("run", "companies", "--limit", "50", "-C", project)
    res = cli("run", "companies", "--restart", "--json", "-C", project)
    r = finished(res.output)["companies"]
    total = truth(project)["expected"]["companies"]
    assert not r["resumed"] and r["read"] == total["accepted"] + total["rejected"]
    assert r["unchanged"] > 0 and r["created"] + r["unchanged"] == total["accepted"]


def test_status_shows_checkpoints_counts_and_runs(project, cli):
    cli("run", "-C", project)
    res = cli("status", "--json", "-C", project)
    assert res.exit_code == 0
    items = {s["pipeline"]: s for s in json_events(res.output)}
    for name in PIPELINES:
        s = items[name]
        assert s["pass"] == "complete"
        assert s["crosswalk"] == truth(project)["expected"][name]["accepted"]
        assert s["dead_letters"] == truth(project)["expected"][name]["rejected"]
        assert s["runs"][0]["status"] == "ok"
        assert s["cursor"]["file"].startswith(name[:4])
    res = cli("status", "-C", project)
    assert res.exit_code == 0 and "contacts" in res.output and "complete" in res.output


def test_quality_threshold_gives_exit_code_1(project, cli):
    f = project / "pipelines.yaml"
    f.write_text(f.read_text(encoding="utf-8").replace("max_reject_rate: 0.2", "max_reject_rate: 0.01"),
                 encoding="utf-8")
    res = cli("run", "-C", project, "--quiet")
    assert res.exit_code == exitcodes.QUALITY
    assert res.output == ""  # quiet: nothing but errors


def test_missing_source_file_is_a_runtime_error_naming_it(project, cli):
    (project / "data" / "sites.csv").unlink()
    res = cli("validate", "-C", project)
    assert res.exit_code == 2 and "sites.csv" in res.output
    res = cli("run", "sites", "-C", project)
    assert res.exit_code == exitcodes.RUNTIME and "sites.csv" in res.output


def test_a_mapped_column_missing_from_the_file_fails_validate(project, cli):
    f = project / "pipelines" / "contacts.yaml"
    f.write_text(f.read_text(encoding="utf-8").replace("post: Должность", "post: Должностъ"), encoding="utf-8")
    res = cli("validate", "-C", project)
    assert res.exit_code == 2
    assert "mapping.post: source has no column 'Должностъ'; did you mean 'Должность'?" in res.output


def test_undecodable_file_fails_with_its_byte_offset_and_keeps_state(project, cli):
    assert cli("run", "companies", "-C", project).exit_code == 0
    path = project / "data" / "contacts.csv"
    data = path.read_bytes()
    pos = len(data) // 2
    path.write_bytes(data[:pos] + b"\x98\xff" + data[pos:])  # invalid in UTF-8 and 0x98 undefined in cp1251
    res = cli("run", "contacts", "-C", project)
    assert res.exit_code == exitcodes.RUNTIME
    assert "contacts.csv" in res.output and "byte" in res.output
    status = {s["pipeline"]: s for s in json_events(cli("status", "--json", "-C", project).output)}
    assert status["companies"]["pass"] == "complete"


def test_unknown_pipeline_on_the_command_line(project, cli):
    res = cli("run", "contcts", "-C", project)
    assert res.exit_code == 2 and "did you mean 'contacts'" in res.output


def test_parquet_target_for_bi(project, cli):
    staging = {"ETL_TARGET": "staging"}  # the project's target is ${ETL_TARGET:-crm}
    assert cli("run", "companies", "contacts", "-C", project, env=staging).exit_code == 0
    table = pq.read_table(project / "out" / "parquet" / "contacts")
    assert table.num_rows == truth(project)["expected"]["contacts"]["accepted"]
    assert len(set(table.column("source_id").to_pylist())) == table.num_rows
    assert table.schema.field("birthdate").type.__str__() == "date32[day]"
    # a second run re-publishes the same snapshot
    assert cli("run", "contacts", "-C", project, env=staging).exit_code == 0
    assert pq.read_table(project / "out" / "parquet" / "contacts").num_rows == table.num_rows


@pytest.mark.postgres
def test_sql_target_on_postgresql(project, cli, pg_url):
    res = cli("run", "companies", "contacts", "-C", project, env={"ETL_WAREHOUSE_URL": pg_url})
    assert res.exit_code == 0, res.output
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        n = c.execute(sa.text("SELECT count(DISTINCT source_id), count(*) FROM contacts")).one()
    eng.dispose()
    assert n[0] == n[1] == truth(project)["expected"]["contacts"]["accepted"]


@pytest.mark.mariadb
def test_sql_target_on_mariadb(project, cli, maria_url):
    res = cli("run", "companies", "-C", project, env={"ETL_WAREHOUSE_URL": maria_url})
    assert res.exit_code == 0, res.output
    eng = sa.create_engine(maria_url)
    with eng.connect() as c:
        titles = [r[0] for r in c.execute(sa.text("SELECT title FROM companies"))]
    eng.dispose()
    assert len(titles) == truth(project)["expected"]["companies"]["accepted"]
    assert any("«" in t for t in titles)  # Cyrillic and typographic quotes survive utf8mb4


def test_secrets_never_reach_the_output_or_the_dead_letters(project, cli, tmp_path):
    secret_url = "postgresql+psycopg://etl:Sup3rS3cretPw@127.0.0.1:1/nowhere"
    res = cli("run", "companies", "-C", project, env={"ETL_WAREHOUSE_URL": secret_url})
    assert res.exit_code == exitcodes.RUNTIME
    assert "Sup3rS3cretPw" not in res.output
    out = tmp_path / "dl.jsonl"
    cli("dlq", "export", out, "-C", project, env={"ETL_WAREHOUSE_URL": secret_url})
    assert "Sup3rS3cretPw" not in out.read_text(encoding="utf-8")
    for f in (project / ".etl").glob("*"):
        if f.is_file():
            assert b"Sup3rS3cretPw" not in f.read_bytes(), f


def test_json_mode_is_one_object_per_line(project, cli):
    res = cli("run", "companies", "--json", "-C", project)
    lines = [x for x in res.output.splitlines() if x.strip()]
    events = [json.loads(x) for x in lines]  # every line parses
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    assert events[-1]["status"] == "ok"
