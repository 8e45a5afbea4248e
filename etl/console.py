"""One Console interface, three renderers: rich (a terminal), JSON lines (cron, CI, other programs), silent."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from etl import secrets

if TYPE_CHECKING:
    from etl.runner import PipelineReport


class Console:
    """Events of a run. The base class prints nothing."""

    def run_started(self, run_id: str, pipelines: list[str], dry_run: bool) -> None: ...
    def pipeline_started(self, pipeline: str, total: int | None, unit: str, resumed: bool, target: str) -> None: ...
    def batch_done(self, pipeline: str, counts: Counter, progress: int | None) -> None: ...
    def pipeline_finished(self, report: "PipelineReport") -> None: ...
    def dead_letters(self, pipeline: str, rejects: pa.Table) -> None: ...
    def run_finished(self, reports: list["PipelineReport"]) -> None: ...
    def info(self, text: str) -> None: ...
    def error(self, text: str) -> None:
        print(secrets.mask(text), file=sys.stderr)
    def emit(self, kind: str, payload: Any) -> None:
        """Command output that is not a run event (status, dlq list): the renderer decides the form."""


class QuietConsole(Console):
    """Errors only (for cron: the exit code and the run history say the rest)."""


class JsonConsole(Console):
    """One JSON object per line on stdout."""

    def __init__(self, out: IO[str] | None = None, progress_every: float = 1.0):
        self.out = out or sys.stdout
        self.progress_every = progress_every
        self._last = 0.0

    def _write(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, **data}, ensure_ascii=False, default=str)
        self.out.write(secrets.mask(line) + "\n")
        self.out.flush()

    def run_started(self, run_id, pipelines, dry_run):
        self._write("run_started", run_id=run_id, pipelines=pipelines, dry_run=dry_run)

    def pipeline_started(self, pipeline, total, unit, resumed, target):
        self._write("pipeline_started", pipeline=pipeline, total=total, unit=unit, resumed=resumed, target=target)

    def batch_done(self, pipeline, counts, progress):
        now = time.monotonic()
        if now - self._last >= self.progress_every:
            self._last = now
            self._write("progress", pipeline=pipeline, progress=progress, **dict(counts))

    def pipeline_finished(self, report):
        self._write("pipeline_finished", **report.as_dict())

    def dead_letters(self, pipeline, rejects):
        for r in rejects.to_pylist():
            self._write("reject", pipeline=pipeline, **{k: v for k, v in r.items() if k != "record"})

    def run_finished(self, reports):
        totals: Counter = Counter()
        for r in reports:
            totals.update(r.counts)
        self._write("run_finished", status=_overall(reports), **dict(totals))

    def info(self, text):
        self._write("info", message=text)

    def error(self, text):
        self._write("error", message=text)

    def emit(self, kind, payload):
        self._write(kind, **payload) if isinstance(payload, dict) else self._write(kind, items=payload)


def _overall(reports: list["PipelineReport"]) -> str:
    statuses = {r.status for r in reports}
    for s in ("failed", "interrupted"):
        if s in statuses:
            return s
    return "planned" if statuses == {"planned"} else "ok"


class RichConsole(Console):
    """A progress bar per pipeline (rows, rows/s, ETA where the total is known) and a summary table."""

    def __init__(self, file: IO[str] | None = None):
        from rich.console import Console as RConsole

        self.rc = RConsole(file=file, highlight=False, soft_wrap=True)
        self.err = RConsole(file=file, stderr=file is None, highlight=False, soft_wrap=True)
        self.progress = None
        self.task = None
        self._unit = "rows"
        self._dry = False
        self._rejects_shown = 0

    def run_started(self, run_id, pipelines, dry_run):
        self._dry = dry_run
        mode = "dry run (nothing is written)" if dry_run else "run"
        self.rc.print(f"[bold]crm-etl[/] {mode} [dim]{run_id}[/]: {', '.join(pipelines)}")

    def pipeline_started(self, pipeline, total, unit, resumed, target):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._unit = unit
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[rows]:>9,} rows  {task.fields[rate]:>8,.0f} rows/s"),
                TextColumn("[red]{task.fields[rejected]:,} rejected"), TimeElapsedColumn(), TimeRemainingColumn()]
        if unit == "rows":
            cols.insert(3, MofNCompleteColumn())
        self.progress = Progress(*cols, console=self.rc, transient=False)
        self.progress.start()
        note = " (resuming)" if resumed else ""
        self.task = self.progress.add_task(f"{pipeline}{note} -> {target}", total=total, rows=0, rate=0.0,
                                           rejected=0)
        self._t0 = time.monotonic()

    def batch_done(self, pipeline, counts, progress):
        if self.progress is None:
            return
        rows = counts["read"]
        rate = rows / max(time.monotonic() - self._t0, 1e-6)
        completed = progress if progress is not None else rows
        self.progress.update(self.task, completed=completed, rows=rows, rate=rate, rejected=counts["rejected"])

    def pipeline_finished(self, report):
        if self.progress is not None:
            if report.pass_complete and self.progress.tasks[0].total:
                self.progress.update(self.task, completed=self.progress.tasks[0].total)
            self.progress.stop()
            self.progress = None
        if report.message:
            style = "red" if report.status == "failed" else "yellow"
            self.rc.print(f"[{style}]{report.pipeline}: {secrets.mask(report.message)}[/]")

    def dead_letters(self, pipeline, rejects):
        for r in rejects.to_pylist():
            if self._rejects_shown >= 20:
                return
            self._rejects_shown += 1
            self.rc.print(f"reject {pipeline} {r['reason']}: {secrets.mask(r['message'] or '')}", markup=False)

    def run_finished(self, reports):
        from rich.table import Table

        title = "Plan (dry run)" if self._dry else "Summary"
        t = Table(title=title)
        for col in ("pipeline", "status", "read", "created", "updated", "unchanged", "rejected", "rows/s"):
            t.add_column(col, justify="right" if col not in ("pipeline", "status") else "left")
        for r in reports:
            rate = r.read / r.seconds if r.seconds > 0 else 0
            t.add_row(r.pipeline, r.status + (" (resumed)" if r.resumed else ""),
                      *(f"{r.counts[k]:,}" for k in ("read", "created", "updated", "unchanged", "rejected")),
                      f"{rate:,.0f}")
        self.rc.print(t)
        merged = [(r.pipeline, r.counts["merged"]) for r in reports if r.counts.get("merged")]
        if merged:
            self.rc.print("Merged as duplicates (counted as updated into their survivor): "
                          + ", ".join(f"{p} {n:,}" for p, n in merged)
                          + (". See them with [bold]etl dedupe report[/]." if not self._dry else "."))
        reasons: Counter = Counter()
        for r in reports:
            for reason, n in r.reasons.items():
                reasons[(r.pipeline, reason)] += n
        if reasons:
            rt = Table(title="Rejects by reason")
            for col in ("pipeline", "reason", "count"):
                rt.add_column(col)
            for (p, reason), n in reasons.most_common():
                rt.add_row(p, reason, f"{n:,}")
            self.rc.print(rt)
            if not self._dry:
                self.rc.print("See them with [bold]etl dlq list[/] and [bold]etl dlq export[/].")

    def info(self, text):
        self.rc.print(secrets.mask(text), markup=False)

    def error(self, text):
        self.err.print("error: " + secrets.mask(text), markup=False, style="red")

    def emit(self, kind, payload):
        if hasattr(payload, "__rich_console__"):
            self.rc.print(payload)
        else:
            self.rc.print(secrets.mask(json.dumps(payload, ensure_ascii=False, indent=2, default=str)), markup=False)


def make_console(json_mode: bool = False, quiet: bool = False) -> Console:
    if json_mode:
        return JsonConsole()
    if quiet:
        return QuietConsole()
    return RichConsole()
