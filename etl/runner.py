"""The runner: source -> transform -> plan -> sink, one state-store transaction per batch.

A run first finishes what an earlier run left pending (resume from the checkpoint, looking up in the target the
batches that were sent but not committed), then takes new work. For every pipeline it asserts
read = created + updated + unchanged + rejected.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import (HASH, SOURCE_ID, TARGET_ID, ConnectorError, Sink, Source, SourceBatch, StreamInfo,
                             TerminalError)
from etl import secrets
from etl.config import Pipeline, Project
from etl.console import Console
from etl.dedupe import DedupePlan, Deduper
from etl.factory import build_sink, build_source
from etl.stages import StageContext
from etl.state import COUNTERS, BatchCommit, StateStore
from etl.transform import Transformed, Transformer
from schemas import get_entity


class AccountingError(RuntimeError):
    """read != created + updated + unchanged + rejected: a bug, never a data problem. The run fails loudly."""


class RunFailed(RuntimeError):
    """A pipeline could not go on (a terminal connector error); exit code 3."""


@dataclass
class RunOptions:
    dry_run: bool = False
    limit: int | None = None
    batch_size: int | None = None
    restart: bool = False


@dataclass
class PipelineReport:
    pipeline: str
    entity: str
    run_id: str
    status: str = "running"  # ok | failed | interrupted | planned
    resumed: bool = False
    pass_complete: bool = False
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    message: str | None = None
    batches: int = 0

    @property
    def read(self) -> int:
        return self.counts["read"]

    @property
    def rejected_for_quality(self) -> int:
        """Rejects that count against the quality thresholds (records a filter excluded do not)."""
        return self.counts["rejected"] - self.reasons.get("filtered", 0)

    def balanced(self) -> bool:
        c = self.counts
        return c["read"] == c["created"] + c["updated"] + c["unchanged"] + c["rejected"]

    def as_dict(self) -> dict:
        return {"pipeline": self.pipeline, "entity": self.entity, "run_id": self.run_id, "status": self.status,
                "resumed": self.resumed, "pass_complete": self.pass_complete,
                **{k: self.counts[k] for k in COUNTERS}, "merged": self.counts["merged"], "reasons": dict(self.reasons),
                "seconds": round(self.seconds, 3), "message": self.message, "batches": self.batches}


class _Stop:
    """Set by SIGTERM/SIGINT: the runner stops after the batch in hand is committed."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.requested = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _limited(source: Source, cursor: dict | None, batch_size: int, limit: int | None) -> Iterator[SourceBatch]:
    """Batches from ``cursor``; with a limit, exactly ``limit`` records are read (the last batch asked smaller)."""
    remaining = limit
    while True:
        size = batch_size if remaining is None else min(batch_size, remaining)
        if size <= 0:
            return
        reopened = False
        for batch in source.read(cursor, size):
            cursor = batch.cursor
            yield batch
            if remaining is not None:
                remaining -= batch.read_count
                if remaining <= 0:
                    return
                if remaining < size:
                    reopened = True
                    break
        if not reopened:
            return


class Runner:
    def __init__(self, project: Project, store: StateStore, console: Console, options: RunOptions | None = None):
        self.project = project
        self.store = store
        self.console = console
        self.options = options or RunOptions()
        self.run_id = str(uuid.uuid4())
        self._planned: dict[str, dict[str, str]] = {}  # dry run: ids a pipeline would create, for links
        self._dedupers: dict[str, Deduper] = {}

    # links resolve through the crosswalk (and, in a dry run, through what earlier pipelines would create)
    def _resolve(self, pipeline: str, ids: list[str]) -> dict[str, str]:
        found = {k: v.target_id for k, v in self.store.lookup(pipeline, ids).items()}
        planned = self._planned.get(pipeline)
        if planned:
            for k in ids:
                if k not in found and k in planned:
                    found[k] = planned[k]
        return found

    def run(self, names: list[str] | None = None) -> list[PipelineReport]:
        names = names or self.project.order
        self.store.mark_crashed()
        reports = []
        self.console.run_started(self.run_id, names, dry_run=self.options.dry_run)
        with _Stop() as stop:
            for name in names:
                report = self.run_pipeline(self.project.pipelines[name], stop)
                reports.append(report)
                if report.status in ("failed", "interrupted"):
                    break
        self.console.run_finished(reports)
        return reports

    def run_pipeline(self, pipeline: Pipeline, stop: _Stop | None = None) -> PipelineReport:
        opts = self.options
        entity = get_entity(pipeline.config.entity)
        report = PipelineReport(pipeline.name, entity.name, self.run_id)
        started = time.monotonic()
        source = build_source(self.project, pipeline)
        target_name, target_cfg = self.project.target_of(pipeline)
        sink: Sink | None = None
        batch_size = opts.batch_size or pipeline.config.batch_size or self.project.config.defaults.batch_size
        transformer = Transformer(pipeline, self._resolve, StageContext(
            pipeline=pipeline.name, project_dir=self.project.dir, state_engine=self.store.engine,
            settings=self.project.config, dry_run=opts.dry_run, console=self.console))
        store = self.store
        if pipeline.config.dedupe is not None:
            self._dedupers[pipeline.name] = Deduper(pipeline.name, pipeline.config.dedupe, entity, store)
        try:
            source.check()
            cp = store.checkpoint(pipeline.name)
            if opts.restart and not opts.dry_run and cp is not None:
                store.reset(pipeline.name)
                cp = None
            if cp is not None and cp.in_progress:
                report.resumed = True
                cursor, pass_id = cp.cursor, cp.pass_id
                seq, sent, position = cp.batches_committed, cp.records_sent, cp.records_committed
            else:
                cursor = source.next_pass(cp.cursor if cp else None)
                seq, sent, position = 0, 0, 0
                pass_id = str(uuid.uuid4()) if opts.dry_run else store.begin_pass(pipeline.name, self.run_id, cursor).pass_id
            if not opts.dry_run:
                store.start_run(self.run_id, pipeline.name, pass_id, report.resumed)
                sink = build_sink(self.project, target_cfg, pipeline)
                sink.open(StreamInfo(pipeline.name, entity.name, pipeline.origin, entity.arrow_schema(),
                                     tuple(pipeline.config.key), pass_id, dict(pipeline.config.target_options)))
            self.console.pipeline_started(pipeline.name, source.total(), source.progress_unit, report.resumed,
                                          target_name)
            planned = self._planned.setdefault(pipeline.name, {}) if opts.dry_run else None
            if opts.dry_run:
                dry_seen: set[str] = set()
                transformer.seen = lambda ids: {i for i in ids if i in dry_seen}
            else:
                transformer.seen = lambda ids: store.seen_in_pass(pipeline.name, pass_id, ids)
            exhausted = True

            def step(batch: SourceBatch, maybe_sent: bool, supersede: list[int] | None = None) -> bool:
                """One batch through transform and load; False when a stop was asked for."""
                nonlocal seq, position
                seq += 1
                t = transformer.transform(batch.table, batch.rejects)
                if opts.dry_run:
                    dry_seen.update(x for x in t.rejects.ids.to_pylist() if x is not None)
                end = position + batch.read_count
                counts, reasons = self._load(pipeline, t, batch, sink, pass_id, seq, end, maybe_sent, planned,
                                             supersede or [])
                position = end
                report.counts.update(counts)
                report.reasons.update(reasons)
                report.batches += 1
                if not sum(counts[k] for k in ("created", "updated", "unchanged", "rejected")) == counts["read"]:
                    raise AccountingError(f"{pipeline.name}: batch {seq}: {dict(counts)} does not add up")
                self.console.batch_done(pipeline.name, report.counts, batch.progress)
                return not (stop is not None and stop.requested)

            for batch in _limited(source, cursor, batch_size, opts.limit):
                cursor = batch.cursor
                if not step(batch, position < sent):
                    exhausted = False
                    report.status = "interrupted"
                    break
            if opts.limit is not None and report.read >= opts.limit:
                exhausted = False  # stopped by --limit: the pass stays open, the next run goes on from here
            if exhausted and not opts.dry_run and source.retries_dead_letters:
                # rows an incremental pass will not read again: retry what the outside world refused (a link
                # not loaded yet, a record the target refused), looked up in the target first
                exhausted = self._retry(pipeline, source, transformer, pass_id, batch_size, cursor, step)
                if not exhausted:
                    report.status = "interrupted"
            if opts.dry_run:
                report.status = "planned"
            elif report.status != "interrupted":
                if exhausted:
                    sink.finish_pass()
                    store.complete_pass(pipeline.name, cursor)
                    report.pass_complete = True
                report.status = "ok"
        except ConnectorError as e:
            report.status = "failed"
            report.message = secrets.mask(f"{type(e).__name__}: {e}")
        except AccountingError as e:
            report.status = "failed"
            report.message = str(e)
            raise
        except KeyboardInterrupt:
            report.status = "interrupted"
            report.message = "interrupted"
        finally:
            report.seconds = time.monotonic() - started
            transformer.close()
            if sink is not None:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - closing must not hide the real error
                    pass
            if not opts.dry_run and report.status != "running":
                try:
                    store.finish_run(self.run_id, pipeline.name, report.status, report.message)
                except Exception:  # noqa: BLE001
                    pass
        if report.status != "failed" and not report.balanced():
            raise AccountingError(f"{pipeline.name}: read {report.read} != created + updated + unchanged + rejected "
                                  f"({dict(report.counts)})")
        if not opts.dry_run and report.status == "ok":
            stored = store.run_counts(self.run_id, pipeline.name)
            if stored and any(stored[k] != report.counts[k] for k in COUNTERS):
                raise AccountingError(f"{pipeline.name}: state store counts {stored} differ from the run's "
                                      f"{dict(report.counts)}")
        self.console.pipeline_finished(report)
        return report

    def _retry(self, pipeline: Pipeline, source: Source, transformer: Transformer, pass_id: str, batch_size: int,
               cursor: dict | None, step) -> bool:
        """Read again, by key, the rows of open dead letters of earlier passes rejected at the link or load step;
        the dead letters of rows this pass read anyway are superseded. False when a stop was asked for."""
        store = self.store
        letters = store.open_dead_letters_before(pipeline.name, pass_id)
        if not letters:
            return True
        seen = store.seen_in_pass(pipeline.name, pass_id, [sid for _, sid, _, _ in letters])
        stale = [i for i, sid, _, _ in letters if sid in seen]
        retry: dict[str, list[int]] = {}
        for i, sid, stage, reason in letters:
            if sid not in seen and stage in ("link", "load") and reason != "missing_link":
                retry.setdefault(sid, []).append(i)
        if stale:
            store.supersede(stale)
        key = list(pipeline.config.key)
        if not retry or any(k not in source.columns() for k in key):
            return True  # nothing to retry, or a key made by the pipeline, not read: nothing to look rows up by
        self.console.info(f"{pipeline.name}: retrying {len(retry):,} records rejected by earlier passes "
                          "(links, target)")
        for batch in source.read_keys(key, list(retry), batch_size):
            sids = transformer.source_ids(batch.table)
            wanted = pc.fill_null(pc.is_in(sids, value_set=pa.array(list(retry), pa.string())), False)
            batch.table = batch.table.filter(wanted)  # the database compared text: keep exact matches only
            batch.cursor = cursor  # a retry does not move the pass
            if not batch.table.num_rows and not batch.rejects.num_rows:
                continue
            ids = [i for sid in sids.filter(wanted).to_pylist() for i in retry.pop(sid, ())]
            if not step(batch, True, ids):
                return False
        return True

    def _load(self, pipeline: Pipeline, t: Transformed, batch: SourceBatch, sink: Sink | None, pass_id: str,
              seq: int, end: int, maybe_sent: bool, planned: dict | None,
              supersede: list[int]) -> tuple[Counter, Counter]:
        records = t.records
        ids = records.column(SOURCE_ID)
        existing = self.store.lookup(pipeline.name, ids.to_pylist())
        counts: Counter = Counter(read=batch.read_count)

        # classify against the crosswalk
        known = list(existing)
        idx = pc.index_in(ids, value_set=pa.array(known, pa.string()))
        found = pc.is_valid(idx)
        ex_hash = pa.array([existing[k].content_hash for k in known], pa.string())
        ex_pass = pa.array([existing[k].pass_id for k in known], pa.string())
        ex_target = pa.array([existing[k].target_id for k in known], pa.string())
        hashes = pc.take(ex_hash, idx) if known else pa.nulls(len(ids), pa.string())
        passes = pc.take(ex_pass, idx) if known else pa.nulls(len(ids), pa.string())
        targets = pc.take(ex_target, idx) if known else pa.nulls(len(ids), pa.string())
        same = pc.fill_null(pc.equal(hashes, records.column(HASH)), False)
        records = records.append_column(TARGET_ID, targets)
        live = pc.fill_null(pc.not_equal(passes, pass_id), True)  # duplicates were rejected in transform
        creates = records.filter(pc.and_(live, pc.invert(found)))
        updates = records.filter(pc.and_(pc.and_(live, found), pc.invert(same)))
        unchanged = records.filter(pc.and_(pc.and_(live, found), same))

        deduper = self._dedupers.get(pipeline.name)
        plan = None
        if deduper is not None and (creates.num_rows or updates.num_rows):
            find = sink.find_matches if sink is not None else None
            plan = deduper.plan(creates, updates, find)
            creates, updates = plan.creates, plan.updates
        silent = plan.silent if plan is not None else set()

        xwalk: list[tuple[str, str, str]] = []  # source id, target id, content hash
        tids: dict[str, str] = {}  # write id -> target id, for the records that follow a write (dedupe)
        write_rejects: dict[str, dict] = {}
        if planned is not None:  # dry run: plan only
            for sid in creates.column(SOURCE_ID).to_pylist():
                planned[sid] = tids[sid] = f"planned:{sid}"
            tids.update(zip(updates.column(SOURCE_ID).to_pylist(), updates.column(TARGET_ID).to_pylist()))
            counts.update(created=creates.num_rows, updated=updates.num_rows - len(silent),
                          unchanged=unchanged.num_rows)
        else:
            assert sink is not None
            if maybe_sent and creates.num_rows:
                # this batch may have reached the target before a crash: adopt what is there, create the rest
                there = sink.lookup(creates.column(SOURCE_ID).to_pylist())
                if there:
                    mask = pc.is_in(creates.column(SOURCE_ID), value_set=pa.array(list(there), pa.string()))
                    adopted = creates.filter(mask)
                    creates = creates.filter(pc.invert(mask))
                    for sid, h in zip(adopted.column(SOURCE_ID).to_pylist(), adopted.column(HASH).to_pylist()):
                        xwalk.append((sid, there[sid], h))
                    counts["created"] += adopted.num_rows
                    tids.update(there)
            to_update = pa.concat_tables([updates, unchanged]) if sink.snapshot else updates
            if creates.num_rows or to_update.num_rows:
                self.store.mark_sent(pipeline.name, end)
                result = self._write(sink, creates, to_update)
            else:
                result = None
            rejected_ids = set()
            if result is not None:
                tids.update(result.ids)
                sink_rej = result.rejects
                if sink_rej.num_rows:
                    rejected_ids = set(sink_rej.column("source_id").to_pylist())
                    rows = records.filter(pc.is_in(records.column(SOURCE_ID), value_set=pa.array(
                        list(rejected_ids - silent), pa.string())))
                    write_rejects = {r["source_id"]: r for r in sink_rej.to_pylist()}
                    sids = rows.column(SOURCE_ID).to_pylist()
                    t.reject(rows, "load", [write_rejects[s]["reason"] or "sink_error" for s in sids],
                             [write_rejects[s]["message"] for s in sids], [write_rejects[s]["field"] for s in sids],
                             [write_rejects[s]["value"] for s in sids])
                get = result.ids.get
                for part, label in ((creates, "created"), (updates, "updated")):
                    missing = []
                    written = 0
                    for sid, h in zip(part.column(SOURCE_ID).to_pylist(), part.column(HASH).to_pylist()):
                        if (rejected_ids and sid in rejected_ids) or sid in silent:
                            continue
                        tid = get(sid)
                        if tid is not None:
                            xwalk.append((sid, tid, h))
                            written += 1
                        else:
                            missing.append(sid)
                    counts[label] += written
                    if missing:
                        t.reject(part.filter(pc.is_in(part.column(SOURCE_ID), value_set=pa.array(missing, pa.string()))),
                                 "load", "not_written",
                                 [f"the target answered neither an id nor an error for {sid!r}" for sid in missing])
                if sink.snapshot:
                    unchanged_ids = unchanged.column(SOURCE_ID).to_pylist()
                    ok = [s for s in unchanged_ids if s not in rejected_ids]
                    counts["unchanged"] += len(ok)
                    keep = pc.is_in(unchanged.column(SOURCE_ID), value_set=pa.array(ok, pa.string()))
                    unchanged = unchanged.filter(keep)
                else:
                    counts["unchanged"] += unchanged.num_rows
            else:
                counts["unchanged"] += unchanged.num_rows
            # unchanged records are stamped with this pass, so a duplicate later in the pass is still caught
            xwalk.extend(zip(unchanged.column(SOURCE_ID).to_pylist(), unchanged.column(TARGET_ID).to_pylist(),
                             unchanged.column(HASH).to_pylist()))
        dedupe_commit = None
        if plan is not None:
            self._follow(plan, records, t, tids, write_rejects, xwalk, counts, planned)
            dedupe_commit = plan.commit(tids)
            if planned is not None:
                self._dedupers[pipeline.name].remember(dedupe_commit)

        all_rejects = t.rejects.table()
        counts["rejected"] = all_rejects.num_rows
        reasons = Counter(all_rejects.column("reason").to_pylist())
        if planned is None:
            self.store.commit_batch(BatchCommit(pipeline.name, self.run_id, pass_id, seq, batch.cursor, xwalk,
                                                all_rejects, dict(counts), dedupe_commit, supersede))
        else:
            self.console.dead_letters(pipeline.name, all_rejects)
        return counts, reasons

    @staticmethod
    def _follow(plan: DedupePlan, records: pa.Table, t: Transformed, tids: dict[str, str],
                write_rejects: dict[str, dict], xwalk: list, counts: Counter, planned: dict | None) -> None:
        """Records merged into a group take the target id of the group's write (or of the entity found)."""
        bad: list[tuple[str, dict | None]] = []
        for f in plan.followers:
            tid = f.target_id if f.write_id is None else tids.get(f.write_id)
            if tid is None:
                bad.append((f.source_id, write_rejects.get(f.write_id)))
                continue
            if planned is not None:
                planned[f.source_id] = tid
            else:
                xwalk.append((f.source_id, tid, f.content_hash))
            counts[f.label] += 1
            counts["merged"] += f.merged
        if bad:
            why = dict(bad)
            rows = records.filter(pc.is_in(records.column(SOURCE_ID), value_set=pa.array(list(why), pa.string())))
            sids = rows.column(SOURCE_ID).to_pylist()
            t.reject(rows, "load", [(why[s] or {}).get("reason") or "not_written" for s in sids],
                     [f"merged into a record the target did not take: {(why[s] or {}).get('message') or 'no answer'}"
                      for s in sids])

    @staticmethod
    def _write(sink: Sink, creates: pa.Table, updates: pa.Table):
        try:
            return sink.write(creates, updates)
        except ConnectorError:
            raise
        except Exception as e:  # a sink bug or an unexpected library error: stop the pipeline, keep the state
            raise TerminalError(f"writing to the target failed: {type(e).__name__}: {e}") from e


__all__ = ["Runner", "RunOptions", "PipelineReport", "AccountingError", "RunFailed"]
