"""The state store on SQLite, PostgreSQL and MariaDB: what a run leaves in it (seen through `etl status` and
`etl dlq list`), the one-transaction batch commit, and the run lock."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.base import REJECT_SCHEMA, make_rejects
from etl.lock import RunLock
from etl.state import BatchCommit, StateStore, dead_letters, runs

PIPELINES = ["companies", "contacts", "deals", "sites", "tickets"]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        d = tmp_path / "state"
        d.mkdir()
        return f"sqlite:///{d / 'state.db'}"
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "maria_url")


# ----------------------------------------------------------------------------------------------- helpers
def _events(output: str, kind: str) -> list[dict]:
    out = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            ev = json.loads(line)
            if ev.get("event") == kind:
                out.append(ev)
    return out


def _expected(project: Path) -> dict:
    return json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))["expected"]


def _exit_for(project: Path, report: dict) -> int:
    from etl.config import load_project

    d = load_project(project).config.defaults
    read = sum(p["read"] for p in report["pipelines"])
    rejected = sum(p["rejected"] - p["reasons"].get("filtered", 0) for p in report["pipelines"])
    if d.max_rejects is not None and rejected > d.max_rejects:
        return 1
    return 1 if read and rejected / read > d.max_reject_rate else 0


def _run(cli, project: Path, url: str, name: str) -> dict:
    report = project / f"{name}.json"
    r = cli("run", "-C", project, "--json", "--report", report, env={"ETL_STATE_URL": url})
    assert report.exists(), r.output
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert r.exit_code == _exit_for(project, rep), r.output[-3000:]
    assert r.exit_code in (0, 1)
    return rep


def _status(cli, project: Path, url: str) -> dict[str, dict]:
    r = cli("status", "--json", "-C", project, "--runs", "10", env={"ETL_STATE_URL": url})
    assert r.exit_code == 0, r.output
    return {e["pipeline"]: e for e in _events(r.output, "status")}


def _dlq(cli, project: Path, url: str, *args: str) -> tuple[list[dict], list[dict]]:
    r = cli("dlq", "list", "--json", "--limit", "100000", "-C", project, *args, env={"ETL_STATE_URL": url})
    assert r.exit_code == 0, r.output
    (summary,) = _events(r.output, "dlq_summary")
    return summary["items"], _events(r.output, "dead_letter")


def _by_pipeline(items: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in items:
        out[s["pipeline"]] = out.get(s["pipeline"], 0) + s["count"]
    return out


def _balanced(run: dict) -> bool:
    return run["read"] == run["created"] + run["updated"] + run["unchanged"] + run["rejected"]


# ----------------------------------------------------------------------------------------------- the CLI
def test_run_twice_state_through_status_and_dlq(project, cli, state_url):
    expected = _expected(project)
    first = _run(cli, project, state_url, "first")
    run1 = first["run_id"]

    # the state went to the backend asked for, not to the default SQLite file of the project
    if not state_url.startswith("sqlite"):
        assert not (project / ".etl" / "state.db").exists()
    eng = sa.create_engine(state_url)
    try:
        with eng.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == len(PIPELINES)
    finally:
        eng.dispose()

    st = _status(cli, project, state_url)
    assert list(st) == PIPELINES
    for name in PIPELINES:
        e, x = st[name], expected[name]
        assert e["pass"] == "complete", name
        assert e["batches_committed"] >= 1
        assert e["records_in_pass"] == x["accepted"] + x["rejected"], name
        assert e["crosswalk"] == x["accepted"], name
        assert e["dead_letters"] == x["rejected"], name
        (r,) = e["runs"]
        assert r["run_id"] == run1 and r["status"] == "ok" and r["resumed"] is False
        assert _balanced(r), r
        assert (r["read"], r["created"], r["updated"], r["unchanged"], r["rejected"]) == \
            (x["accepted"] + x["rejected"], x["accepted"], 0, 0, x["rejected"]), (name, r)
        assert r["batches"] == e["batches_committed"]

    summary, rows = _dlq(cli, project, state_url)
    assert _by_pipeline(summary) == {n: expected[n]["rejected"] for n in PIPELINES if expected[n]["rejected"]}
    assert len(rows) == sum(expected[n]["rejected"] for n in PIPELINES)
    for d in rows:
        assert d["run_id"] == run1 and d["status"] == "open"
        assert d["stage"] and d["reason"] and d["message"], d
        assert d["source_id"], d  # every reject of the sample names its record
        assert d["pass_id"] == next(x for x in st[d["pipeline"]]["runs"])["pass_id"]

    # the second run over the same data: nothing to send, every record unchanged
    second = _run(cli, project, state_url, "second")
    run2 = second["run_id"]
    assert run2 != run1
    st2 = _status(cli, project, state_url)
    for name in PIPELINES:
        e, x = st2[name], expected[name]
        assert e["pass"] == "complete"
        assert e["crosswalk"] == x["accepted"]
        assert e["dead_letters"] == x["rejected"], f"{name}: open dead letters after the second pass"
        assert sorted(r["run_id"] for r in e["runs"]) == sorted([run1, run2])
        r = next(r for r in e["runs"] if r["run_id"] == run2)
        assert r["status"] == "ok" and _balanced(r), r
        assert (r["created"], r["updated"], r["unchanged"], r["rejected"]) == \
            (0, 0, x["accepted"], x["rejected"]), (name, r)
        assert r["pass_id"] != next(q for q in e["runs"] if q["run_id"] == run1)["pass_id"]

    summary, rows = _dlq(cli, project, state_url)  # open ones: this pass only
    assert {d["run_id"] for d in rows} == {run2}
    assert _by_pipeline(summary) == {n: expected[n]["rejected"] for n in PIPELINES if expected[n]["rejected"]}
    summary_all, rows_all = _dlq(cli, project, state_url, "--all")
    assert _by_pipeline(summary_all) == {n: 2 * expected[n]["rejected"] for n in PIPELINES if expected[n]["rejected"]}
    assert {d["run_id"] for d in rows_all} == {run1, run2}
    _, rows_first = _dlq(cli, project, state_url, "--run", run1)
    assert len(rows_first) == sum(expected[n]["rejected"] for n in PIPELINES)
    assert {d["status"] for d in rows_first} == {"superseded"}


# ----------------------------------------------------------------------------------------------- commit_batch
def _dead(n: int, *, null_stage_at: int | None = None) -> pa.Table:
    return make_rejects([
        {"stage": None if i == null_stage_at else "read", "reason": "bad_date", "message": f"row {i}: bad date",
         "file": "x.csv", "line": i + 2, "field": "Дата", "value": "31.02.2020", "source_id": f"r{i}",
         "record": json.dumps({"Код": f"r{i}"})}
        for i in range(n)])


def _snapshot(store: StateStore, pipeline: str, run_id: str) -> dict:
    cp = store.checkpoint(pipeline)
    with store.engine.connect() as c:
        dl = c.execute(sa.select(sa.func.count()).select_from(dead_letters)
                       .where(dead_letters.c.pipeline == pipeline)).scalar_one()
        batches = c.execute(sa.select(runs.c.batches).where(runs.c.run_id == run_id)
                            .where(runs.c.pipeline == pipeline)).scalar_one()
    xw = {k: (v.target_id, v.content_hash, v.pass_id) for k, v in store.lookup(pipeline, ["a", "b", "c"]).items()}
    return {"cursor": cp.cursor, "batches_committed": cp.batches_committed, "records": cp.records_committed,
            "crosswalk": xw, "xwalk_count": store.crosswalk_count(pipeline), "dead_letters": dl,
            "run": store.run_counts(run_id, pipeline), "run_batches": batches}


def test_commit_batch_is_one_transaction(state_url):
    store = StateStore(state_url)
    try:
        run_id = str(uuid.uuid4())
        cp = store.begin_pass("companies", run_id, None)
        store.start_run(run_id, "companies", cp.pass_id, False)
        store.commit_batch(BatchCommit("companies", run_id, cp.pass_id, 1, {"row": 3}, [("a", "A", "h-a1")],
                                       _dead(2), {"read": 3, "created": 1, "rejected": 2}))
        before = _snapshot(store, "companies", run_id)
        assert before == {"cursor": {"row": 3}, "batches_committed": 1, "records": 3,
                          "crosswalk": {"a": ("A", "h-a1", cp.pass_id)}, "xwalk_count": 1, "dead_letters": 2,
                          "run": {"read": 3, "created": 1, "updated": 0, "unchanged": 0, "rejected": 2},
                          "run_batches": 1}

        # batch 2 updates a, creates b and c; its third dead letter has no stage (NOT NULL): the insert fails
        bad = BatchCommit("companies", run_id, cp.pass_id, 2, {"row": 9},
                          [("a", "A", "h-a2"), ("b", "B", "h-b"), ("c", "C", "h-c")], _dead(3, null_stage_at=2),
                          {"read": 6, "created": 2, "updated": 1, "rejected": 3})
        with pytest.raises(sa.exc.DBAPIError):
            store.commit_batch(bad)
        assert _snapshot(store, "companies", run_id) == before, "a failed batch commit left part of itself behind"

        # the same batch, well formed, moves all of it together
        good = BatchCommit("companies", run_id, cp.pass_id, 2, {"row": 9},
                           [("a", "A", "h-a2"), ("b", "B", "h-b"), ("c", "C", "h-c")], _dead(3),
                           {"read": 6, "created": 2, "updated": 1, "rejected": 3})
        store.commit_batch(good)
        after = _snapshot(store, "companies", run_id)
        assert after == {"cursor": {"row": 9}, "batches_committed": 2, "records": 9,
                         "crosswalk": {"a": ("A", "h-a2", cp.pass_id), "b": ("B", "h-b", cp.pass_id),
                                       "c": ("C", "h-c", cp.pass_id)},
                         "xwalk_count": 3, "dead_letters": 5,
                         "run": {"read": 9, "created": 3, "updated": 1, "unchanged": 0, "rejected": 5},
                         "run_batches": 2}
    finally:
        store.close()


def test_reject_schema_columns_are_the_dead_letter_columns():
    """commit_batch inserts REJECT_SCHEMA rows as they are: every reject column must exist in etl_dead_letters."""
    assert set(REJECT_SCHEMA.names) <= set(dead_letters.c.keys())


# ----------------------------------------------------------------------------------------------- the run lock
def _output(result) -> str:
    text = result.output
    try:
        err = result.stderr
    except ValueError:
        err = ""
    return text + ("" if err and err in text else err)


def test_run_refused_while_the_lock_is_held(project, cli, state_url):
    with RunLock(project):
        r = cli("run", "-C", project, env={"ETL_STATE_URL": state_url})
        out = _output(r)
        assert r.exit_code == 4, out
        assert "lock" in out and "run.lock" in out, out
        assert f"pid {os.getpid()}" in out, f"the message does not name the holder: {out}"
    store = StateStore(state_url)
    try:
        assert store.run_rows() == [] and store.checkpoints() == {}, "a refused run touched the state"
    finally:
        store.close()
    assert not (project / ".etl" / "warehouse.db").exists()

    # released: the same command runs
    _run(cli, project, state_url, "after-lock")


@pytest.mark.postgres
def test_shared_postgres_state_locks_runs_of_other_checkouts(project, cli, pg_url, tmp_path):
    """Two machines (here: two checkouts of the project) share one PostgreSQL state store: while one runs,
    the other is refused, although its own lock file is free."""
    other = tmp_path / "other-machine"
    other.mkdir()
    store = StateStore(pg_url)
    try:
        with RunLock(other, store.engine):
            r = cli("run", "-C", project, env={"ETL_STATE_URL": pg_url})
            out = _output(r)
            assert r.exit_code == 4, out
            assert "lock" in out and "shared state store" in out, out
            assert store.run_rows() == []
        _run(cli, project, pg_url, "after-lock")
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_lock_is_per_state_store(project, cli, pg_url, tmp_path):
    """Another project, with its state in another schema of the same database, is running: ours is not
    concerned and must run."""
    base, _, _ = pg_url.partition("?")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    eng = sa.create_engine(base)
    with eng.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    other_url = f"{base}?options=-csearch_path%3D{schema}"
    other_dir = tmp_path / "another-project"
    other_dir.mkdir()
    other = StateStore(other_url)
    try:
        with RunLock(other_dir, other.engine):
            r = cli("run", "-C", project, env={"ETL_STATE_URL": pg_url})
            assert r.exit_code in (0, 1), _output(r)
    finally:
        other.close()
        with eng.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        eng.dispose()
