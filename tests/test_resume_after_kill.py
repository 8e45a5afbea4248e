"""A run killed at 3 a.m. (SIGKILL, no chance to clean up) and the rerun that finishes it.

The engineer's promise (DESIGN.md, Guarantees): after any crash and resume, zero duplicates and zero lost records,
and for every run read = created + updated + unchanged + rejected.

Every `etl` process here is a real subprocess. It runs through a thin test-side launcher (``_LAUNCHER``) that is
`etl` itself plus two optional instruments, switched on by environment variables:

* ``ETLTEST_WRITE_LOG``: after each successful ``SqlTableSink.write`` the source ids it created are appended to a
  file, so a test can see whether a record was ever *sent as a create* twice (the SQL sink's upsert would hide a
  second create in the table; a CRM would not);
* ``ETLTEST_KILL_IN_COMMIT=<pipeline>:<seq>``: the process SIGKILLs itself at the top of
  ``StateStore.commit_batch`` for that batch, i.e. after the sink wrote the batch and before the state store
  committed it: the dangerous window, hit deterministically.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

BATCH = "50"
PIPELINES = ["companies", "contacts", "deals", "sites", "tickets"]

_LAUNCHER = r"""
import json, os, signal, sys

kill_at = os.environ.get("ETLTEST_KILL_IN_COMMIT")
if kill_at:
    from etl import state
    _pipe, _seq = kill_at.rsplit(":", 1)
    _orig_commit = state.StateStore.commit_batch

    def commit_batch(self, b):
        if b.pipeline == _pipe and b.seq == int(_seq):
            os.kill(os.getpid(), signal.SIGKILL)
        return _orig_commit(self, b)

    state.StateStore.commit_batch = commit_batch

log = os.environ.get("ETLTEST_WRITE_LOG")
if log:
    from connectors.sql import SqlTableSink  # where etl/factory.py takes it from
    _orig_write = SqlTableSink.write

    def write(self, creates, updates):
        result = _orig_write(self, creates, updates)
        created = set(creates.column("_source_id").to_pylist()) if creates.num_rows else set()
        with open(log, "a", encoding="utf-8") as fh:
            for sid in created:
                if sid in result.ids:
                    fh.write(json.dumps([os.getpid(), self._stream.pipeline, sid]) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return result

    SqlTableSink.write = write

import cli
cli.main()
"""


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def big_data(tmp_path_factory, sample_template):
    """~1500 companies, ~3100 contacts, ~3100 deals, ~1560 sites, ~4600 tickets (seed 11), generated once.

    An uninterrupted run of it (the reference) starts at once in the background, on the second core, while the
    first tests kill and resume theirs."""
    from etl.sample import generate

    d = tmp_path_factory.mktemp("big") / "data"
    generate(d, companies=1500, seed=11)
    ref = tmp_path_factory.mktemp("ref") / "project"
    shutil.copytree(sample_template, ref)
    _use_data(ref, d)
    proc = _spawn(ref, "run", "--batch-size", BATCH)  # dead letter reasons depend on the batch boundaries
    yield d, ref, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def reference(big_data) -> dict:
    """What one uninterrupted run produces on the big data: per table the (source_id, content_hash) rows, per
    pipeline the multiset of open dead letters (source_id, reason)."""
    _, proj, proc = big_data
    proc.wait(timeout=180)
    assert proc.returncode in (0, 1), _output(proc)
    ref = {"rows": _warehouse_rows(proj, PIPELINES), "dead": {}}
    with _state(proj) as db:
        for name in PIPELINES:
            ref["dead"][name] = Counter(db.execute(
                "SELECT source_id, reason FROM etl_dead_letters WHERE pipeline=? AND status='open'",
                (name,)).fetchall())
    return ref


@pytest.fixture
def big_project(project, big_data) -> Path:
    _use_data(project, big_data[0])
    return project


# ----------------------------------------------------------------------------------------------- helpers
def _use_data(project: Path, data: Path) -> None:
    shutil.rmtree(project / "data")
    shutil.copytree(data, project / "data")


def _truth(project: Path) -> dict:
    return json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))


def _env(project: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ETL_STATE_URL", "ETL_WAREHOUSE_URL", "ETL_PROJECT") and not k.startswith("ETLTEST_")}
    env["ETLTEST_WRITE_LOG"] = str(project / "writes.log")
    env["ETL_TARGET"] = "warehouse"  # these runs are checked in the SQL warehouse
    env.update(extra)
    return env


def _spawn(project: Path, *args: str, **env: str) -> subprocess.Popen:
    """`etl <args> -C project` as a subprocess; its stdout and stderr go to a file (``proc.log``), never to a pipe
    nobody reads (a full pipe would stall the run)."""
    log = project / f"etl-{time.monotonic_ns()}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *args, "-C", str(project)], cwd=project,
                                env=_env(project, **env), stdout=fh, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(encoding="utf-8", errors="replace")[-3000:]  # type: ignore[attr-defined]


@contextlib.contextmanager
def _state(project: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(project / ".etl" / "state.db", timeout=30)
    try:
        yield db
    finally:
        db.close()


def _poll(project: Path, pipeline: str, at_least: int) -> int | None:
    """batches_committed of ``pipeline`` if its pass is in progress, else None."""
    path = project / ".etl" / "state.db"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute("SELECT batches_committed FROM etl_checkpoints WHERE pipeline=? AND "
                             "status='in_progress'", (pipeline,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or busy for a moment
        return None
    return row[0] if row else None


def _kill_when(project: Path, proc: subprocess.Popen, pipeline: str, batches: int, timeout: float = 60) -> int:
    """SIGKILL ``proc`` as soon as ``pipeline`` has committed at least ``batches`` batches; returns that count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = _poll(project, pipeline, batches)
        if n is not None and n >= batches:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return n
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {pipeline} committed {batches} batches; "
                        f"too little data or a too big batch size?\n{_output(proc)}")
        time.sleep(0.003)
    proc.kill()
    proc.wait()
    pytest.fail(f"{pipeline} never reached {batches} committed batches in {timeout}s")


def _wait_started(project: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        path = project / ".etl" / "state.db"
        if path.exists():
            try:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
                try:
                    if db.execute("SELECT 1 FROM etl_runs WHERE pid=?", (proc.pid,)).fetchone():
                        return
                finally:
                    db.close()
            except sqlite3.Error:
                pass
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    pytest.fail(f"the run (rc {proc.returncode}) never started a pipeline\n{_output(proc)}")


def _finish(project: Path, *args: str) -> tuple[int, dict, str]:
    """Run `etl run` to completion; returns (exit code, the JSON report, its output)."""
    report = project / f"report-{time.monotonic_ns()}.json"
    p = _spawn(project, "run", *args, "--report", str(report))
    p.wait(timeout=120)
    assert report.exists(), f"no report; rc {p.returncode}\n{_output(p)}"
    return p.returncode, json.loads(report.read_text(encoding="utf-8")), _output(p)


def _expected_exit(project: Path, report: dict) -> int:
    """The exit code the run's own counts call for (0, or 1 above the project's reject thresholds)."""
    from etl.config import load_project

    d = load_project(project).config.defaults
    read = sum(p["read"] for p in report["pipelines"])
    rejected = sum(p["rejected"] - p["reasons"].get("filtered", 0) for p in report["pipelines"])
    if d.max_rejects is not None and rejected > d.max_rejects:
        return 1
    return 1 if read and rejected / read > d.max_reject_rate else 0


def _warehouse_rows(project: Path, pipelines: list[str]) -> dict[str, set]:
    db = sqlite3.connect(project / ".etl" / "warehouse.db")
    try:
        return {name: set(db.execute(f'SELECT source_id, content_hash FROM "{name}"').fetchall())
                for name in pipelines}
    finally:
        db.close()


def _in_window(project: Path, pipeline: str) -> bool:
    """After a kill: did it land between the sink's write and the state commit of a batch of ``pipeline``?"""
    with _state(project) as db:
        cols = {r[1] for r in db.execute("PRAGMA table_info(etl_checkpoints)")}
        sent, done = ("records_sent", "records_committed") if "records_sent" in cols else \
            ("batches_sent", "batches_committed")
        row = db.execute(f"SELECT {sent}, {done}, status FROM etl_checkpoints WHERE pipeline=?",
                         (pipeline,)).fetchone()
        xwalk = db.execute("SELECT count(*) FROM etl_crosswalk WHERE pipeline=?", (pipeline,)).fetchone()[0]
    if row is None or row[2] != "in_progress" or row[0] <= row[1]:
        return False
    wh = sqlite3.connect(project / ".etl" / "warehouse.db")
    try:
        n = wh.execute(f'SELECT count(*) FROM "{pipeline}"').fetchone()[0]
    except sqlite3.OperationalError:
        n = 0
    finally:
        wh.close()
    return n > xwalk


def _in_progress(project: Path) -> str | None:
    with _state(project) as db:
        row = db.execute("SELECT pipeline FROM etl_checkpoints WHERE status='in_progress'").fetchone()
    return row[0] if row else None


def _assert_killed_state_consistent(project: Path, pipeline: str) -> str:
    """Right after the kill, before any rerun: what the state store holds for the killed pass is one consistent
    set of committed batches (cursor, counters, crosswalk and dead letters move together). The pass may have been
    begun by an earlier (killed) run: the runs of the pass add up. Returns the id of the run that was killed."""
    with _state(project) as db:
        pass_id, committed, records = db.execute(
            "SELECT pass_id, batches_committed, records_committed FROM etl_checkpoints "
            "WHERE pipeline=? AND status='in_progress'", (pipeline,)).fetchone()
        runs = db.execute('SELECT run_id, status, "read", created, updated, unchanged, rejected, batches '
                          "FROM etl_runs WHERE pipeline=? AND pass_id=? ORDER BY started_at", (pipeline, pass_id)
                          ).fetchall()
        xwalk = db.execute("SELECT count(*) FROM etl_crosswalk WHERE pipeline=? AND pass_id=?",
                           (pipeline, pass_id)).fetchone()[0]
        dead = db.execute("SELECT count(*) FROM etl_dead_letters WHERE pipeline=? AND pass_id=?",
                          (pipeline, pass_id)).fetchone()[0]
    assert runs, f"no run row for the killed pass of {pipeline}"
    running = [r for r in runs if r[1] == "running"]
    assert len(running) == 1, f"one run of the pass should be left 'running' by the kill: {runs}"
    total = Counter()
    for run_id, status, read, created, updated, unchanged, rejected, batches in runs:
        assert read == created + updated + unchanged + rejected, (run_id, status, read, created, updated,
                                                                  unchanged, rejected)
        total.update(read=read, kept=created + updated + unchanged, rejected=rejected, batches=batches)
    assert total["batches"] == committed and total["read"] == records, (runs, committed, records)
    assert xwalk == total["kept"], (xwalk, runs)
    assert dead == total["rejected"], (dead, runs)
    return running[0][0]


def _assert_never_created_twice(project: Path) -> None:
    """No record was ever sent to the target as a create twice (the SQL sink's upsert would hide it in the table;
    a CRM would hold a duplicate)."""
    log = project / "writes.log"
    sent = Counter(tuple(json.loads(line)[1:]) for line in log.read_text(encoding="utf-8").splitlines())
    twice = sorted(k for k, c in sent.items() if c > 1)
    assert not twice, f"{len(twice)} records created twice in the target, e.g. {twice[:3]}"


def _assert_exactly_once(project: Path, request, killed: dict[str, str], pipelines: list[str] = PIPELINES) -> None:
    """``killed``: run id -> the pipeline each killed run was in when it died."""
    _assert_never_created_twice(project)
    truth = _truth(project)
    expected = truth["expected"]
    wh = sqlite3.connect(project / ".etl" / "warehouse.db")
    try:
        for name in pipelines:
            n, distinct = wh.execute(f'SELECT count(*), count(DISTINCT source_id) FROM "{name}"').fetchone()
            assert n == distinct, f"{name}: {n - distinct} duplicated source ids in the table"
            assert n == expected[name]["accepted"], f"{name}: {n} rows, truth says {expected[name]['accepted']}"
    finally:
        wh.close()
    rows = _warehouse_rows(project, pipelines)

    with _state(project) as db:
        assert db.execute("SELECT count(*) FROM etl_runs WHERE status='running'").fetchone()[0] == 0
        for name in pipelines:
            pass_id, status = db.execute("SELECT pass_id, status FROM etl_checkpoints WHERE pipeline=?",
                                         (name,)).fetchone()
            assert status == "complete", name
            runs = db.execute('SELECT run_id, pass_id, status, "read", created, updated, unchanged, rejected '
                              "FROM etl_runs WHERE pipeline=?", (name,)).fetchall()
            for run_id, _, st, read, created, updated, unchanged, rejected in runs:
                assert read == created + updated + unchanged + rejected, (name, run_id, st, read, created, updated,
                                                                          unchanged, rejected)
            created_total = sum(r[4] for r in runs)
            assert created_total == len(rows[name]), \
                f"{name}: created over all runs {created_total} != {len(rows[name])} rows in the table"
            # each record read exactly once in the pass: over the killed runs' committed batches + the resume
            this_pass = [r for r in runs if r[1] == pass_id]
            read = sum(r[3] for r in this_pass)
            assert read == expected[name]["accepted"] + expected[name]["rejected"], f"{name}: the pass read {read}"
            rejected = sum(r[7] for r in this_pass)
            assert rejected == expected[name]["rejected"], f"{name}: the pass rejected {rejected}"
            # the dead letters of the final state: the pass's own, each faulty row of the file once
            dead = Counter(db.execute("SELECT source_id, reason FROM etl_dead_letters WHERE pipeline=? AND "
                                      "status='open'", (name,)).fetchall())
            assert {p for p, in db.execute("SELECT DISTINCT pass_id FROM etl_dead_letters WHERE pipeline=? AND "
                                           "status='open'", (name,))} <= {pass_id}
            faulty = Counter(r["key"] for r in truth["files"][name]["faulty_rows"])
            assert Counter(sid for sid, _ in dead.elements()) == faulty, f"{name}: dead letters != faulty rows"
            xw = set(db.execute("SELECT source_id, content_hash FROM etl_crosswalk WHERE pipeline=?", (name,)))
            assert xw == rows[name], f"{name}: crosswalk and table disagree on {len(xw ^ rows[name])} records"
        for run_id, pipeline in killed.items():
            (st,) = db.execute("SELECT status FROM etl_runs WHERE run_id=? AND pipeline=?",
                               (run_id, pipeline)).fetchone()
            assert st == "crashed", f"killed run {run_id} ({pipeline}) is {st!r}"

    # the same records with the same content (links included) and the same dead letters as an uninterrupted run
    reference = request.getfixturevalue("reference")
    for name in pipelines:
        assert rows[name] == reference["rows"][name], \
            f"{name}: {len(rows[name] ^ reference['rows'][name])} rows differ from an uninterrupted run"
        with _state(project) as db:
            dead = Counter(db.execute("SELECT source_id, reason FROM etl_dead_letters WHERE pipeline=? AND "
                                      "status='open'", (name,)).fetchall())
        assert dead == reference["dead"][name], f"{name}: dead letters differ from an uninterrupted run"


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("pipeline,batches", [("companies", 5), ("contacts", 12), ("tickets", 10)])
def test_killed_mid_pipeline_then_rerun(big_project, request, pipeline, batches):
    project = big_project
    proc = _spawn(project, "run", "--batch-size", BATCH)
    _kill_when(project, proc, pipeline, batches)
    assert proc.returncode == -signal.SIGKILL
    assert _in_progress(project) == pipeline
    killed_run = _assert_killed_state_consistent(project, pipeline)

    rc, report, err = _finish(project, "--batch-size", BATCH)
    assert rc == _expected_exit(project, report), err
    assert rc in (0, 1)
    by_name = {p["pipeline"]: p for p in report["pipelines"]}
    assert list(by_name) == PIPELINES
    assert by_name[pipeline]["resumed"] is True
    assert all(p["status"] == "ok" and p["pass_complete"] for p in report["pipelines"])
    for done in PIPELINES[:PIPELINES.index(pipeline)]:  # finished before the kill: a new pass, all unchanged
        assert by_name[done]["resumed"] is False
        assert by_name[done]["created"] == 0 and by_name[done]["updated"] == 0
    _assert_exactly_once(project, request, {killed_run: pipeline})


def test_killed_between_sink_write_and_commit(big_project, request):
    """The dangerous window, hit for sure: the batch is in the target, the state store does not know it."""
    project = big_project
    two = ["companies", "contacts"]
    proc = _spawn(project, "run", *two, "--batch-size", BATCH, ETLTEST_KILL_IN_COMMIT="contacts:9")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert _in_window(project, "contacts"), "the kill did not land between the write and the commit"
    killed_run = _assert_killed_state_consistent(project, "contacts")

    rc, report, err = _finish(project, *two, "--batch-size", BATCH)
    assert rc == _expected_exit(project, report), err
    contacts = next(p for p in report["pipelines"] if p["pipeline"] == "contacts")
    assert contacts["resumed"] is True
    _assert_exactly_once(project, request, {killed_run: "contacts"}, two)


def test_killed_in_window_rerun_with_smaller_batches(big_project):
    """The engineer reruns with another --batch-size: the records of the batch that was sent but not committed
    must still be looked up in the target before anything is created again (DESIGN: Idempotency)."""
    project = big_project
    proc = _spawn(project, "run", "companies", "--batch-size", BATCH, ETLTEST_KILL_IN_COMMIT="companies:9")
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert _in_window(project, "companies")
    _assert_killed_state_consistent(project, "companies")

    rc, report, err = _finish(project, "companies", "--batch-size", "10")
    assert rc in (0, 1), err
    wh = sqlite3.connect(project / ".etl" / "warehouse.db")
    n, distinct = wh.execute("SELECT count(*), count(DISTINCT source_id) FROM companies").fetchone()
    wh.close()
    assert n == distinct == _truth(project)["expected"]["companies"]["accepted"]  # the upsert would hide it here,
    _assert_never_created_twice(project)  # so: was any record of the sent batch sent as a create again?


def test_killed_repeatedly_at_random_points(big_project, request):
    """Five SIGKILLs at random short delays, each followed by a restart; then a run to the end."""
    project = big_project
    rng = random.Random(20240303)
    killed: dict[str, str] = {}
    windows = 0
    for _ in range(5):
        proc = _spawn(project, "run", "--batch-size", BATCH)
        _wait_started(project, proc)  # past the imports and the lock: its first pipeline has a run row
        time.sleep(rng.uniform(0.0, 1.2))  # then each batch of 50 takes some 20 ms
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        with _state(project) as db:  # the pipeline the killed process was in (several passes may be open)
            row = db.execute("SELECT run_id, pipeline FROM etl_runs WHERE pid=? AND status='running'",
                             (proc.pid,)).fetchone()
        if row is not None:  # else killed between two pipelines
            run_id, where = row
            windows += _in_window(project, where)
            assert _assert_killed_state_consistent(project, where) == run_id
            killed[run_id] = where
    assert killed, "no kill landed inside a pipeline"

    rc, report, err = _finish(project, "--batch-size", BATCH)
    assert rc == _expected_exit(project, report), err
    print(f"{len(killed)} kills inside a pipeline, {windows} between a sink write and its commit")
    _assert_exactly_once(project, request, killed)


def test_rerun_with_another_batch_size_loads_the_same_records(project, cli):
    """After a kill the engineer may resume with another --batch-size; what gets loaded must not depend on where
    the batches happen to end. Here: a contact whose first row has an orphan company link, and a later row with
    the same key and a good link (a duplicate by the data's rules: the first row of a key is the record)."""
    truth = _truth(project)["files"]["contacts"]
    bad = {b["key"] for b in truth["bad_values"]} | {d["key"] for d in truth["duplicate_rows"]}
    key = next(k for k in truth["orphans"]["КодКонтрагента"] if k not in bad)
    path = project / "data" / "contacts.csv"
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw[3:].decode("utf-8").splitlines(keepends=True)
    header = lines[0].rstrip("\r\n").split(";")
    link = header.index("КодКонтрагента")
    i = next(n for n, line in enumerate(lines) if line.split(";")[0] == key)
    good_company = next(line.split(";")[link] for line in lines[1:] if line.split(";")[link].startswith("00-"))
    cells = lines[i].rstrip("\r\n").split(";")
    cells[link] = good_company
    lines.insert(i + 1, ";".join(cells) + "\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + "".join(lines).encode("utf-8"))

    loaded = {}
    for name, size in (("one-batch", 100000), ("boundary-between", i)):  # row i is the last of batch 1
        env = {"ETL_STATE_URL": f"sqlite:///.etl/{name}-state.db",
               "ETL_WAREHOUSE_URL": f"sqlite:///.etl/{name}-wh.db"}
        r = cli("run", "companies", "contacts", "--batch-size", str(size), "-C", project, env=env)
        assert r.exit_code in (0, 1), r.output
        db = sqlite3.connect(project / ".etl" / f"{name}-wh.db")
        loaded[name] = {sid for (sid,) in db.execute("SELECT source_id FROM contacts")}
        db.close()
    assert key not in loaded["one-batch"]
    assert loaded["boundary-between"] == loaded["one-batch"], \
        f"with a batch boundary between its rows, {key} is loaded: {loaded['boundary-between'] ^ loaded['one-batch']}"
