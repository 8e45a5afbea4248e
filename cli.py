"""The `etl` command: thin typed commands over the engine (etl/). Exit codes: see etl/exitcodes.py and the README."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from etl import exitcodes, secrets
from etl.config import ConfigError, load_project
from etl.console import Console, make_console

app = typer.Typer(help="crm-etl: move customer data from 1C exports and SQL databases into a CRM, resumably.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
dlq_app = typer.Typer(help="Dead letters: the records that were rejected, with their reasons.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
dedupe_app = typer.Typer(help="Duplicates merged by the pipelines' `dedupe:` rules.", no_args_is_help=True)
app.add_typer(dedupe_app, name="dedupe")
sandbox_app = typer.Typer(help="The local Bitrix24 sandbox: a server that speaks Bitrix24 REST (limits, paging, "
                               "batch, faults), for rehearsals and tests.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")

ProjectOpt = Annotated[Path, typer.Option("--project", "-C", envvar="ETL_PROJECT",
                                          help="project directory (holds pipelines.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line on stdout (cron, CI)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print errors only")]


class Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def _handled(fn: Callable) -> Callable:
    """Turn known failures into a clear message and a documented exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from connectors.base import ConnectorError
        from etl.lock import LockHeld
        from etl.runner import AccountingError

        console: Console = make_console(kwargs.get("json_out", False), kwargs.get("quiet", False))
        try:
            return fn(*args, **kwargs)
        except Exit as e:
            raise typer.Exit(e.code)
        except ConfigError as e:
            for issue in e.issues:
                console.error(str(issue))
            raise typer.Exit(exitcodes.CONFIG)
        except LockHeld as e:
            console.error(str(e))
            raise typer.Exit(exitcodes.LOCKED)
        except AccountingError as e:
            console.error(f"accounting does not add up, the run is stopped: {e}")
            raise typer.Exit(exitcodes.RUNTIME)
        except ConnectorError as e:
            console.error(f"{type(e).__name__}: {e}")
            raise typer.Exit(exitcodes.RUNTIME)
        except KeyboardInterrupt:
            console.error("interrupted")
            raise typer.Exit(exitcodes.INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence: a message, not a traceback
            console.error(f"unexpected {type(e).__name__}: {secrets.mask(str(e))} (set ETL_DEBUG=1 for a traceback)")
            import os

            if os.environ.get("ETL_DEBUG"):
                raise
            raise typer.Exit(exitcodes.RUNTIME)

    return wrapper


def _store(project):
    from etl.state import StateStore

    return StateStore(project.state_url())


# ------------------------------------------------------------------ init
@app.command()
@_handled
def init(
    directory: Annotated[Path, typer.Argument(help="where to create the project")] = Path("."),
    companies: Annotated[int, typer.Option(help="size of the sample data set (contacts ~2x, tickets ~3x)")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the sample data generator")] = 42,
    force: Annotated[bool, typer.Option("--force", help="overwrite existing project files")] = False,
    no_data: Annotated[bool, typer.Option("--no-data", help="write the config only")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a working project: pipelines.yaml, pipelines/*.yaml and generated sample 1C exports in data/.

    Existing config files are kept unless --force; the sample data is (re)generated.
    """
    from etl.scaffold import write_project

    console = make_console(json_out, quiet)
    written = write_project(directory, force=force)
    result = {"project": str(directory.resolve()), "written": written}
    if not no_data:
        from etl.sample import generate

        truth = generate(directory / "data", companies=companies, seed=seed)
        result["data"] = {k: v.get("rows") for k, v in truth.items() if isinstance(v, dict) and "rows" in v}
    if json_out:
        console.emit("init", result)
    elif not quiet:
        console.info(f"project in {result['project']}: wrote {', '.join(written) or 'no config (kept existing)'}")
        if "data" in result:
            console.info("sample data: " + ", ".join(f"{k} {v}" for k, v in result["data"].items()))
        console.info("next: etl validate && etl run")


# ------------------------------------------------------------------ validate
@app.command()
@_handled
def validate(
    project_dir: ProjectOpt = Path("."),
    offline: Annotated[bool, typer.Option("--offline", help="check the config only, do not open the sources")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check pipelines.yaml, every pipeline, the mappings against the schemas, and that the sources exist and have
    the columns the pipelines use. Exit code 2 on any problem."""
    from connectors.base import ConnectorError
    from etl.checks import check_columns
    from etl.config import ConfigIssue
    from etl.factory import build_source

    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    issues: list[ConfigIssue] = []
    checked = {}
    if not offline:
        for name in project.order:
            p = project.pipelines[name]
            source = build_source(project, p)
            try:
                source.check()
                cols = source.columns()
            except ConnectorError as e:
                issues.append(ConfigIssue(p.doc.file, p.doc.line(("source",)), "source", str(e)))
                continue
            issues += check_columns(p, cols)
            checked[name] = len(cols)
        from etl.factory import check_targets  # targets that can be asked (Bitrix24): reads only

        for p, msg in check_targets(project):
            issues.append(ConfigIssue(p.doc.file, p.doc.line(("target_options",)) or p.doc.line(("entity",)),
                                      "target", msg))
    if issues:
        raise ConfigError(issues)
    summary = {"ok": True, "pipelines": project.order, "columns_checked": checked}
    if json_out:
        console.emit("validate", summary)
    elif not quiet:
        console.info(f"ok: {len(project.order)} pipelines ({', '.join(project.order)})"
                     + ("" if offline else "; sources found, mapped columns present"))


# ------------------------------------------------------------------ run
@app.command()
@_handled
def run(
    pipelines: Annotated[Optional[list[str]], typer.Argument(help="pipelines to run (default: all, in order)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="read, transform and plan; write nothing")] = False,
    limit: Annotated[Optional[int], typer.Option(min=1, help="read at most N records per pipeline")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="records per batch (default from config)")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="start the pass over from the top (the crosswalk "
                                                            "is kept, so nothing is duplicated)")] = False,
    report: Annotated[Optional[Path], typer.Option(help="write the run report as JSON to this file")] = None,
    junit: Annotated[Optional[Path], typer.Option(help="write a JUnit XML report (a test case per pipeline, "
                                                       "failed above the reject thresholds) for CI")] = None,
    project_dir: ProjectOpt = Path("."),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Load the pipelines into their targets, resuming where an earlier run stopped.

    Unchanged records are not sent again; each batch is checkpointed, so a crash costs one batch and a rerun
    creates no duplicates. Exit codes: 0 ok, 1 rejects above threshold, 2 config, 3 runtime, 4 locked, 130 stopped.
    """
    from etl.lock import RunLock
    from etl.runner import Runner, RunOptions

    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    names = list(pipelines or project.order)
    unknown = [n for n in names if n not in project.pipelines]
    if unknown:
        from etl.config import ConfigIssue, suggest

        raise ConfigError([ConfigIssue("command line", None, "PIPELINE", f"unknown pipeline {n!r}",
                                       suggest(n, project.order)) for n in unknown])
    names = [n for n in project.order if n in names]
    store = _store(project)
    try:
        with RunLock(project.dir, store.engine):
            runner = Runner(project, store, console, RunOptions(dry_run, limit, batch_size, restart))
            reports = runner.run(names)
    finally:
        store.close()
    from etl.reports import json_report, junit_xml

    if report:
        report.write_text(json_report(runner.run_id, dry_run, reports), encoding="utf-8")
    if junit:
        junit.write_text(junit_xml(runner.run_id, dry_run, reports, project.config.defaults), encoding="utf-8")
    raise Exit(_exit_code(project, reports))


def _exit_code(project, reports) -> int:
    statuses = {r.status for r in reports}
    if "interrupted" in statuses:
        return exitcodes.INTERRUPTED
    if "failed" in statuses:
        return exitcodes.RUNTIME
    from etl.reports import quality_problems

    read = sum(r.read for r in reports)
    rejected = sum(r.rejected_for_quality for r in reports)
    return exitcodes.QUALITY if quality_problems(project.config.defaults, read, rejected) else exitcodes.OK


# ------------------------------------------------------------------ status
@app.command()
@_handled
def status(
    project_dir: ProjectOpt = Path("."),
    runs: Annotated[int, typer.Option(help="how many recent runs to show per pipeline")] = 3,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Per pipeline: the checkpoint (pass, cursor, batches), records in the crosswalk (of them merged as
    duplicates into another record), dead letters, last runs."""
    from rich.table import Table

    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    store = _store(project)
    try:
        dl = {}
        for row in store.dead_letter_summary():
            dl[row["pipeline"]] = dl.get(row["pipeline"], 0) + row["count"]
        out = []
        for name in project.order:
            cp = store.checkpoint(name)
            out.append({
                "pipeline": name,
                "pass": None if cp is None else cp.status,
                "cursor": None if cp is None else cp.cursor,
                "batches_committed": None if cp is None else cp.batches_committed,
                "records_in_pass": None if cp is None else cp.records_committed,
                "crosswalk": store.crosswalk_count(name),
                "merged": store.merged_count(name),
                "dead_letters": dl.get(name, 0),
                "runs": store.run_rows(name, runs),
            })
    finally:
        store.close()
    if json_out:
        for item in out:
            console.emit("status", item)
        return
    if quiet:
        return
    t = Table(title=f"crm-etl status: {project.config.name}")
    for col in ("pipeline", "pass", "position", "loaded", "merged", "dead letters"):
        t.add_column(col)
    history = Table(title="Last runs")
    for col in ("pipeline", "started", "status", "read", "created", "updated", "unchanged", "rejected"):
        history.add_column(col)
    for item in out:
        cursor = item["cursor"] or {}
        pos = ", ".join(f"{k} {v}" for k, v in cursor.items() if k in ("file", "row", "position", "watermark"))
        t.add_row(item["pipeline"], item["pass"] or "never run", pos or "-", f"{item['crosswalk']:,}",
                  f"{item['merged']:,}", f"{item['dead_letters']:,}")
        for r in item["runs"]:
            history.add_row(item["pipeline"], f"{r['started_at']:%d.%m %H:%M:%S}", r["status"] + (" (resumed)" if r["resumed"] else ""),
                            *(f"{r[k]:,}" for k in ("read", "created", "updated", "unchanged", "rejected")))
    console.emit("table", t)
    console.emit("table", history)


# ------------------------------------------------------------------ dead letters
@dlq_app.command("list")
@_handled
def dlq_list(
    pipeline: Annotated[Optional[str], typer.Argument(help="only this pipeline")] = None,
    reason: Annotated[Optional[str], typer.Option(help="only this reason code")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run", help="only this run ('last' for the latest)")] = None,
    limit: Annotated[int, typer.Option(help="rows to show")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="include dead letters of earlier passes over the source")] = False,
    project_dir: ProjectOpt = Path("."),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Dead letters by pipeline and reason, then the latest of them with their messages."""
    from rich.table import Table

    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    store = _store(project)
    try:
        if run_id == "last":
            run_id = store.last_run_id()
        summary = [s for s in store.dead_letter_summary(pipeline, run_id, all_) if not reason or s["reason"] == reason]
        rows = list(store.dead_letter_rows(pipeline, run_id, reason, limit=limit, include_superseded=all_))
    finally:
        store.close()
    if json_out:
        console.emit("dlq_summary", summary)
        for r in rows:
            console.emit("dead_letter", {k: v for k, v in r.items() if k != "record"})
        return
    if quiet:
        return
    t = Table(title="Dead letters by reason")
    for col in ("pipeline", "stage", "reason", "count"):
        t.add_column(col)
    for s in summary:
        t.add_row(s["pipeline"], s["stage"], s["reason"], f"{s['count']:,}")
    console.emit("table", t)
    d = Table(title=f"First {len(rows)} dead letters")
    for col in ("id", "pipeline", "reason", "source id", "message"):
        d.add_column(col)
    for r in rows:
        d.add_row(str(r["id"]), r["pipeline"], r["reason"], r["source_id"] or "-", r["message"] or "")
    console.emit("table", d)


@dlq_app.command("show")
@_handled
def dlq_show(
    dead_letter_id: Annotated[int, typer.Argument(help="the id shown by `etl dlq list`")],
    project_dir: ProjectOpt = Path("."),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One dead letter, whole: where it came from, why, and the original record."""
    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    store = _store(project)
    try:
        row = store.dead_letter(dead_letter_id)
    finally:
        store.close()
    if row is None:
        console.error(f"no dead letter {dead_letter_id}")
        raise Exit(exitcodes.CONFIG)
    row["record"] = json.loads(row["record"]) if row.get("record") else None
    console.emit("dead_letter", row)


@dlq_app.command("export")
@_handled
def dlq_export(
    output: Annotated[Path, typer.Argument(help="file to write (.csv or .jsonl)")],
    pipeline: Annotated[Optional[str], typer.Option(help="only this pipeline")] = None,
    reason: Annotated[Optional[str], typer.Option(help="only this reason code")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run", help="only this run ('last' for the latest)")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="csv or jsonl (default: by the file's suffix)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include dead letters of earlier passes over the source")] = False,
    project_dir: ProjectOpt = Path("."),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write dead letters to a file for the people who fix the source data (CSV opens in Excel: UTF-8 with BOM, ';')."""
    from etl.reports import row_file, row_format

    console = make_console(json_out, quiet)
    fmt = row_format(output, fmt)
    if fmt not in ("csv", "jsonl"):
        console.error(f"unknown format {fmt!r}: use csv or jsonl")
        raise Exit(exitcodes.CONFIG)
    project = load_project(project_dir)
    store = _store(project)
    n = 0
    cols = ["id", "run_id", "pipeline", "stage", "reason", "message", "file", "line", "field", "value", "source_id",
            "record", "created_at", "status"]
    try:
        if run_id == "last":
            run_id = store.last_run_id()
        with row_file(output, cols, fmt) as write:
            for row in store.dead_letter_rows(pipeline, run_id, reason, include_superseded=all_):
                n += 1
                write(row)
    finally:
        store.close()
    if json_out:
        console.emit("dlq_export", {"file": str(output), "rows": n, "format": fmt})
    elif not quiet:
        console.info(f"wrote {n} dead letters to {output}")


# ------------------------------------------------------------------ dedupe
@dedupe_app.command("report")
@_handled
def dedupe_report(
    pipeline: Annotated[Optional[str], typer.Argument(help="only this pipeline")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="also write every row to this file "
                                                                          "(.csv or .jsonl)")] = None,
    limit: Annotated[int, typer.Option(help="groups to show")] = 20,
    project_dir: ProjectOpt = Path("."),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The merged groups: for each, the survivor (its target id) and every record merged into it, with the key that
    matched (CSV opens in Excel: UTF-8 with BOM, ';')."""
    from contextlib import nullcontext

    from rich.table import Table

    from etl.reports import row_file

    console = make_console(json_out, quiet)
    project = load_project(project_dir)
    store = _store(project)
    cols = ["pipeline", "group_id", "target_id", "foreign_entity", "size", "role", "source_id", "match_key", "note",
            "run_id", "merged_at"]
    groups: dict[tuple, list[dict]] = {}
    merged = 0
    try:
        with row_file(output, cols) if output is not None else nullcontext(None) as write:
            for row in store.merge_report(pipeline):
                row["role"] = "survivor" if row["source_id"] == row["group_id"] else "merged"
                merged += row["role"] == "merged"
                key = (row["pipeline"], row["group_id"])
                if key in groups or len(groups) < limit:
                    groups.setdefault(key, []).append(row)
                if write is not None:
                    write(row)
    finally:
        store.close()
    summary = {"merged": merged, "groups_shown": len(groups), "file": str(output) if output else None}
    if json_out:
        console.emit("dedupe_summary", summary)
        for rows in groups.values():
            console.emit("dedupe_group", {"pipeline": rows[0]["pipeline"], "group_id": rows[0]["group_id"],
                                          "target_id": rows[0]["target_id"], "foreign": rows[0]["foreign_entity"],
                                          "members": [{k: r[k] for k in ("source_id", "role", "match_key", "note")}
                                                      for r in rows]})
        return
    if quiet:
        return
    t = Table(title=f"Merged groups (first {len(groups)}); records merged: {merged:,}")
    for col in ("pipeline", "target id", "survivor", "merged records (matched by)"):
        t.add_column(col)
    for (pname, gid), rows in groups.items():
        members = ", ".join(f"{r['source_id']} ({r['match_key']})" for r in rows if r["role"] == "merged")
        foreign = rows[0]["foreign_entity"]
        t.add_row(pname, str(rows[0]["target_id"]) + (" (already in the target)" if foreign else ""),
                  "-" if foreign else gid, members)
    console.emit("table", t)
    if output is not None:
        console.info(f"wrote the report to {output}")


# ------------------------------------------------------------------ sandbox
@sandbox_app.command("serve")
@_handled
def sandbox_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free port)")] = 0,
    db: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL of the portal's database (default: SQLite in "
                                                   "memory; e.g. sqlite:///portal.db, mysql+pymysql://..)")] = None,
    limits: Annotated[str, typer.Option(help="cloud (50 burst, 2/s, 480 s operating), enterprise (250, 5/s) "
                                             "or off")] = "cloud",
    op_cost_ms: Annotated[float, typer.Option(min=0, help="simulated server time of every command, billed to "
                                                          "the operating budget")] = 0,
    faults: Annotated[Optional[str], typer.Option(help='fault injection, e.g. "503=0.1,500=0.02,drop=0.01,'
                                                       'slow=0.05:2.0,html=0.01,cmd_error=0.01,seed=7"')] = None,
    token: Annotated[Optional[str], typer.Option(help="the webhook token (default: a random one)")] = None,
    user: Annotated[int, typer.Option(min=1, help="the webhook's user id")] = 1,
    batch_billing: Annotated[str, typer.Option(help="nested (the docs: nested calls bill their methods) or batch "
                                                    "(2026 self-hosted: billed to `batch`)")] = "nested",
    op_sleep: Annotated[bool, typer.Option("--op-sleep/--no-op-sleep",
                                           help="spend the simulated cost as real time (default), or only bill it")] = True,
    operating_limit: Annotated[Optional[float], typer.Option(min=0, help="operating budget in seconds per method "
                                                                         "(default: the plan's, 480)")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Serve a local Bitrix24 portal until Ctrl-C: prints its incoming-webhook URL (use it as the target's
    webhook) and the OAuth base."""
    import signal
    import time

    from connectors.bitrix24.sandbox import start_sandbox
    from etl.config import ConfigIssue

    console = make_console(json_out, quiet)
    try:
        sb = start_sandbox(db, host=host, port=port, limits=limits, op_cost_ms=op_cost_ms, faults=faults,
                           webhook_user=user, webhook_token=token, batch_billing=batch_billing, op_sleep=op_sleep,
                           operating_limit=operating_limit if operating_limit is not None else False)
    except ValueError as e:
        raise ConfigError([ConfigIssue("command line", None, "sandbox serve", str(e))])
    info = {"url": sb.url, "oauth_base": sb.oauth_base, "token_url": sb.token_url, "limits": sb.limits.name,
            "op_cost_ms": op_cost_ms, "faults": sb.fault_spec.describe() if sb.fault_spec.active else None,
            "db": db or "sqlite:// (in memory)"}
    if json_out:
        # the sandbox's own URL is what this command is for: printed whole, not masked
        print(json.dumps({"event": "sandbox", **info}), flush=True)
    else:
        print(sb.url, flush=True)
        if not quiet:
            print(f"Bitrix24 sandbox: limits {info['limits']}, op cost {op_cost_ms:g} ms, faults "
                  f"{info['faults'] or 'none'}, db {info['db']}; OAuth base {sb.oauth_base}. Ctrl-C stops it.",
                  file=sys.stderr, flush=True)

    def _stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sb.stop()
        if not quiet and not json_out:
            print("sandbox stopped", file=sys.stderr, flush=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
