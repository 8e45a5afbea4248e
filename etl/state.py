"""The state store: checkpoints, the crosswalk, dead letters and run history, on any SQLAlchemy database.

After each batch the runner commits, in ONE transaction: the source cursor, the crosswalk rows (source id -> target
id, content hash), the dead letters and the run's counters. SQLite by default; PostgreSQL for shared or big runs.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event

from etl import secrets

metadata = sa.MetaData()
KEY = sa.String(255)

checkpoints = sa.Table(
    "etl_checkpoints", metadata,
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("pass_id", sa.String(36), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # in_progress | complete
    sa.Column("cursor", sa.Text),  # JSON
    sa.Column("batches_committed", sa.Integer, nullable=False, default=0),
    # how far into the pass (in records) a batch may have reached the target; a resume looks up every record
    # before this position in the target before creating it again, whatever the batch size of the rerun
    sa.Column("records_sent", sa.BigInteger, nullable=False, default=0),
    sa.Column("records_committed", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("run_id", sa.String(36)),
)

crosswalk = sa.Table(
    "etl_crosswalk", metadata,
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("source_id", KEY, primary_key=True),
    sa.Column("target_id", KEY, nullable=False),
    sa.Column("content_hash", sa.String(32), nullable=False),
    sa.Column("pass_id", sa.String(36), nullable=False),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

dead_letters = sa.Table(
    "etl_dead_letters", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), nullable=False, index=True),
    sa.Column("pipeline", KEY, nullable=False, index=True),
    sa.Column("pass_id", sa.String(36)),
    sa.Column("stage", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("file", sa.Text),
    sa.Column("line", sa.BigInteger),
    sa.Column("field", sa.Text),
    sa.Column("value", sa.Text),
    sa.Column("source_id", KEY),
    sa.Column("record", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # open: the record is still rejected; superseded: a later pass read the record again (from the top, or a retry)
    sa.Column("status", sa.String(16), nullable=False, default="open", index=True),
    sa.Index("ix_etl_dead_letters_key", "pipeline", "source_id"),
)

runs = sa.Table(
    "etl_runs", metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("pass_id", sa.String(36)),
    sa.Column("status", sa.String(16), nullable=False),  # running | ok | failed | interrupted | crashed
    sa.Column("resumed", sa.Boolean, nullable=False, default=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("read", sa.BigInteger, nullable=False, default=0),
    sa.Column("created", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated", sa.BigInteger, nullable=False, default=0),
    sa.Column("unchanged", sa.BigInteger, nullable=False, default=0),
    sa.Column("rejected", sa.BigInteger, nullable=False, default=0),
    sa.Column("batches", sa.Integer, nullable=False, default=0),
    sa.Column("message", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
)

# dedupe: match key -> group; group -> its target record; record -> the group it was merged into (the merge report)
dedupe_keys = sa.Table(
    "etl_dedupe_keys", metadata,
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("match_key", KEY, primary_key=True),
    sa.Column("group_id", KEY, primary_key=True),  # a key may lead to several groups that distinct_by keeps apart
)

dedupe_groups = sa.Table(
    "etl_dedupe_groups", metadata,
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("group_id", KEY, primary_key=True),  # the survivor's source id (its key in the target)
    sa.Column("target_id", KEY, nullable=False),
    sa.Column("foreign_entity", sa.Boolean, nullable=False, default=False),  # found in the target, not loaded by us
    sa.Column("record", sa.Text),  # the merged record as written (JSON), kept for the fill_empty/newest policies
    sa.Column("record_hash", sa.String(32)),
    sa.Column("rank", sa.Text),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_etl_dedupe_groups_target", "pipeline", "target_id"),
)

dedupe_members = sa.Table(
    "etl_dedupe_members", metadata,
    sa.Column("pipeline", KEY, primary_key=True),
    sa.Column("source_id", KEY, primary_key=True),
    sa.Column("group_id", KEY, nullable=False),
    sa.Column("match_key", sa.Text),  # the key that joined it to the group (None for the survivor)
    sa.Column("note", sa.Text),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("merged_at", sa.DateTime, nullable=False),
    sa.Index("ix_etl_dedupe_members_group", "pipeline", "group_id"),
)

COUNTERS = ("read", "created", "updated", "unchanged", "rejected")
_CHUNK = 900  # keys per IN (...) clause (SQLite allows 999 parameters in old builds)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


@dataclass
class Checkpoint:
    pipeline: str
    pass_id: str
    status: str
    cursor: dict | None
    batches_committed: int
    records_sent: int
    records_committed: int

    @property
    def in_progress(self) -> bool:
        return self.status == "in_progress"


@dataclass
class XwalkRow:
    target_id: str
    content_hash: str
    pass_id: str


@dataclass
class BatchCommit:
    """Everything one batch changes in the state, committed together."""

    pipeline: str
    run_id: str
    pass_id: str
    seq: int
    cursor: dict | None
    crosswalk: list[tuple[str, str, str]] = field(default_factory=list)  # (source id, target id, content hash)
    dead_letters: pa.Table | None = None  # connectors.base.REJECT_SCHEMA
    counts: dict[str, int] = field(default_factory=dict)
    dedupe: "DedupeCommit | None" = None
    supersede: list[int] = field(default_factory=list)  # dead letters of earlier passes this batch read again


@dataclass
class DedupeGroup:
    group_id: str
    target_id: str
    foreign: bool = False
    record: str | None = None  # JSON
    record_hash: str | None = None
    rank: str | None = None


@dataclass
class DedupeCommit:
    """What a batch changes in the dedupe tables."""

    keys: list[tuple[str, str]] = field(default_factory=list)  # (match key, group id): added where absent
    groups: list[DedupeGroup] = field(default_factory=list)  # upserted
    members: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)  # sid, group, key, note


class StateStore:
    def __init__(self, url: str):
        self.url = url
        secrets.register(url)
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _):  # WAL: readers (etl status) do not block the writer
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()
        metadata.create_all(self.engine)

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self, pipeline: str) -> Checkpoint | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(checkpoints).where(checkpoints.c.pipeline == pipeline)).mappings().first()
        if row is None:
            return None
        return Checkpoint(row["pipeline"], row["pass_id"], row["status"],
                          json.loads(row["cursor"]) if row["cursor"] else None,
                          row["batches_committed"], row["records_sent"], row["records_committed"])

    def checkpoints(self) -> dict[str, Checkpoint]:
        with self.engine.connect() as c:
            names = [r[0] for r in c.execute(sa.select(checkpoints.c.pipeline))]
        return {n: self.checkpoint(n) for n in names}  # type: ignore[misc]

    def begin_pass(self, pipeline: str, run_id: str, cursor: dict | None) -> Checkpoint:
        """Start a new pass over the source from ``cursor``."""
        pass_id = str(uuid.uuid4())
        values = dict(pass_id=pass_id, status="in_progress", cursor=json.dumps(cursor) if cursor else None,
                      batches_committed=0, records_sent=0, records_committed=0, updated_at=now(), run_id=run_id)
        with self.engine.begin() as c:
            if cursor is None:  # the source is read again from the top: its earlier rejects will come again
                c.execute(dead_letters.update().where(dead_letters.c.pipeline == pipeline)
                          .where(dead_letters.c.status == "open").values(status="superseded"))
            done = c.execute(checkpoints.update().where(checkpoints.c.pipeline == pipeline).values(**values)).rowcount
            if not done:
                c.execute(checkpoints.insert().values(pipeline=pipeline, **values))
        return Checkpoint(pipeline, pass_id, "in_progress", cursor, 0, 0, 0)

    def mark_sent(self, pipeline: str, through: int) -> None:
        """Record that the records of the pass up to position ``through`` are about to be written to the target,
        so that a resume looks them up there first."""
        with self.engine.begin() as c:
            c.execute(checkpoints.update().where(checkpoints.c.pipeline == pipeline)
                      .where(checkpoints.c.records_sent < through).values(records_sent=through))

    def complete_pass(self, pipeline: str, cursor: dict | None) -> None:
        with self.engine.begin() as c:
            c.execute(checkpoints.update().where(checkpoints.c.pipeline == pipeline).values(
                status="complete", cursor=json.dumps(cursor) if cursor else None, updated_at=now()))

    def reset(self, pipeline: str) -> None:
        """Forget the checkpoint (the crosswalk stays, so a rerun still creates no duplicates)."""
        with self.engine.begin() as c:
            c.execute(checkpoints.delete().where(checkpoints.c.pipeline == pipeline))

    # ------------------------------------------------------------ the per-batch commit
    def commit_batch(self, b: BatchCommit) -> None:
        ts = now()
        with self.engine.begin() as c:
            if b.crosswalk:
                stamp = ts.isoformat(sep=" ") if c.dialect.name == "sqlite" else ts
                self._upsert_crosswalk(c, [(b.pipeline, sid, tid, h, b.pass_id, b.run_id, stamp)
                                           for sid, tid, h in b.crosswalk])
            if b.dead_letters is not None and b.dead_letters.num_rows:
                rows = b.dead_letters.to_pylist()
                for r in rows:
                    r.update(run_id=b.run_id, pipeline=b.pipeline, pass_id=b.pass_id, created_at=ts, status="open")
                    r["message"] = secrets.mask(r["message"] or "")
                c.execute(dead_letters.insert(), rows)
            if b.dedupe is not None:
                self._commit_dedupe(c, b, ts)
            _supersede(c, b.supersede)
            read = b.counts.get("read", 0)
            c.execute(checkpoints.update().where(checkpoints.c.pipeline == b.pipeline).values(
                cursor=json.dumps(b.cursor) if b.cursor else None, batches_committed=b.seq,
                records_committed=checkpoints.c.records_committed + read, updated_at=ts, run_id=b.run_id))
            c.execute(runs.update().where(runs.c.run_id == b.run_id).where(runs.c.pipeline == b.pipeline).values(
                batches=runs.c.batches + 1,
                **{k: getattr(runs.c, k) + b.counts.get(k, 0) for k in COUNTERS}))

    def _upsert_crosswalk(self, c: sa.Connection, rows: list[tuple]) -> None:
        cols = ("pipeline", "source_id", "target_id", "content_hash", "pass_id", "run_id", "updated_at")
        _upsert(c, crosswalk, cols, 2, rows)

    def _commit_dedupe(self, c: sa.Connection, b: BatchCommit, ts: datetime) -> None:
        d = b.dedupe
        stamp = ts.isoformat(sep=" ") if c.dialect.name == "sqlite" else ts
        if d.keys:
            _upsert(c, dedupe_keys, ("pipeline", "match_key", "group_id"), 3,
                    [(b.pipeline, k, g) for k, g in dict.fromkeys(d.keys)], update=False)
        if d.groups:
            _upsert(c, dedupe_groups, ("pipeline", "group_id", "target_id", "foreign_entity", "record", "record_hash",
                                       "rank", "updated_at"), 2,
                    [(b.pipeline, g.group_id, g.target_id, g.foreign, g.record, g.record_hash, g.rank, stamp)
                     for g in {g.group_id: g for g in d.groups}.values()])
        if d.members:
            _upsert(c, dedupe_members, ("pipeline", "source_id", "group_id", "match_key", "note", "run_id",
                                        "merged_at"), 2,
                    [(b.pipeline, sid, g, k, note, b.run_id, stamp)
                     for sid, (g, k, note) in {m[0]: m[1:] for m in d.members}.items()])

    # ------------------------------------------------------------ retrying dead letters
    def open_dead_letters_before(self, pipeline: str, pass_id: str) -> list[tuple[int, str, str, str]]:
        """(id, source id, stage, reason) of the open dead letters that earlier passes left (with a source id)."""
        d = dead_letters
        q = (sa.select(d.c.id, d.c.source_id, d.c.stage, d.c.reason)
             .where(d.c.pipeline == pipeline, d.c.status == "open", d.c.source_id.is_not(None),
                    sa.or_(d.c.pass_id.is_(None), d.c.pass_id != pass_id)).order_by(d.c.id))
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(q)]

    def supersede(self, ids: list[int]) -> None:
        """These dead letters have a newer outcome (the record was read again)."""
        with self.engine.begin() as c:
            _supersede(c, ids)

    # ------------------------------------------------------------ dedupe
    def _select_in(self, sql: str, pipeline: str, ids: list[str]) -> Iterator[tuple]:
        """Rows of ``sql`` (its WHERE ends with ``IN ({in})``) for ``ids``, in chunks."""
        if not ids:
            return
        with self.engine.connect() as c:
            ph = "?" if c.dialect.paramstyle == "qmark" else "%s"
            for part in _chunks(list(dict.fromkeys(ids))):
                yield from c.exec_driver_sql(sql.format(ph=ph, inlist=", ".join([ph] * len(part))),
                                             (pipeline, *part))

    def dedupe_key_groups(self, pipeline: str, keys: list[str]) -> dict[str, list[str]]:
        """match key -> the groups it leads to (oldest first), for the keys already known."""
        out: dict[str, list[str]] = {}
        for k, g in self._select_in("SELECT match_key, group_id FROM etl_dedupe_keys WHERE pipeline = {ph} "
                                    "AND match_key IN ({inlist})", pipeline, keys):
            out.setdefault(k, []).append(g)
        return out

    def dedupe_member_groups(self, pipeline: str, source_ids: list[str]) -> dict[str, str]:
        """source id -> the group it belongs to (survivors belong to their own group)."""
        return dict(self._select_in("SELECT source_id, group_id FROM etl_dedupe_members WHERE pipeline = {ph} "
                                    "AND source_id IN ({inlist})", pipeline, source_ids))

    def dedupe_groups(self, pipeline: str, group_ids: list[str]) -> dict[str, DedupeGroup]:
        return {r[0]: DedupeGroup(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in self._select_in(
            "SELECT group_id, target_id, foreign_entity, record, record_hash, rank FROM etl_dedupe_groups "
            "WHERE pipeline = {ph} AND group_id IN ({inlist})", pipeline, group_ids)}

    def merged_count(self, pipeline: str) -> int:
        """Records of this pipeline merged into another record (dedupe)."""
        m = dedupe_members
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(m).where(
                m.c.pipeline == pipeline, m.c.source_id != m.c.group_id)).scalar_one()

    def dedupe_targets(self, pipeline: str, target_ids: list[str]) -> set[str]:
        """Which of these target ids are entities of our own groups."""
        return {r[0] for r in self._select_in("SELECT target_id FROM etl_dedupe_groups WHERE pipeline = {ph} "
                                              "AND target_id IN ({inlist})", pipeline, target_ids)}

    def merge_report(self, pipeline: str | None = None) -> Iterator[dict]:
        """Every merged group (more than one record, or a record matched to an entity found in the target): one row
        per member, the survivor first."""
        m, g = dedupe_members, dedupe_groups
        sizes = sa.select(m.c.pipeline, m.c.group_id, sa.func.count().label("size")).group_by(
            m.c.pipeline, m.c.group_id).subquery()
        q = (sa.select(m.c.pipeline, m.c.group_id, g.c.target_id, g.c.foreign_entity, sizes.c.size, m.c.source_id,
                       m.c.match_key, m.c.note, m.c.run_id, m.c.merged_at)
             .join(sizes, sa.and_(sizes.c.pipeline == m.c.pipeline, sizes.c.group_id == m.c.group_id))
             .join(g, sa.and_(g.c.pipeline == m.c.pipeline, g.c.group_id == m.c.group_id))
             .where(sa.or_(sizes.c.size > 1, g.c.foreign_entity.is_(True)))
             .order_by(m.c.pipeline, m.c.group_id, (m.c.source_id != m.c.group_id), m.c.merged_at, m.c.source_id))
        if pipeline:
            q = q.where(m.c.pipeline == pipeline)
        with self.engine.connect() as c:
            for r in c.execution_options(stream_results=True, yield_per=1000).execute(q).mappings():
                yield dict(r)

    # ------------------------------------------------------------ crosswalk
    def lookup(self, pipeline: str, source_ids: Iterable[str]) -> dict[str, XwalkRow]:
        """Crosswalk rows of these source ids (plain DBAPI IN-lists: a lookup per batch is on the hot path)."""
        out: dict[str, XwalkRow] = {}
        ids = list(source_ids)
        if not ids:
            return out
        with self.engine.connect() as c:
            ph = "?" if c.dialect.paramstyle == "qmark" else "%s"
            for part in _chunks(ids):
                sql = ("SELECT source_id, target_id, content_hash, pass_id FROM etl_crosswalk "
                       f"WHERE pipeline = {ph} AND source_id IN ({', '.join([ph] * len(part))})")
                for sid, tid, h, p in c.exec_driver_sql(sql, (pipeline, *part)):
                    out[sid] = XwalkRow(tid, h, p)
        return out

    def seen_in_pass(self, pipeline: str, pass_id: str, source_ids: Iterable[str]) -> set[str]:
        """The ids already read in this pass: loaded or unchanged (crosswalk) or rejected (dead letters)."""
        ids = [i for i in source_ids if i is not None]
        out: set[str] = set()
        if not ids:
            return out
        with self.engine.connect() as c:
            ph = "?" if c.dialect.paramstyle == "qmark" else "%s"
            for part in _chunks(ids):
                inlist = ", ".join([ph] * len(part))
                sql = (f"SELECT source_id FROM etl_crosswalk WHERE pipeline = {ph} AND pass_id = {ph} "
                       f"AND source_id IN ({inlist}) UNION SELECT source_id FROM etl_dead_letters "
                       f"WHERE pipeline = {ph} AND pass_id = {ph} AND source_id IN ({inlist})")
                out.update(r[0] for r in c.exec_driver_sql(sql, (pipeline, pass_id, *part, pipeline, pass_id, *part)))
        return out

    def crosswalk_count(self, pipeline: str) -> int:
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.count()).select_from(crosswalk)
                             .where(crosswalk.c.pipeline == pipeline)).scalar_one()

    # ------------------------------------------------------------ runs
    def start_run(self, run_id: str, pipeline: str, pass_id: str, resumed: bool) -> None:
        with self.engine.begin() as c:
            c.execute(runs.insert().values(run_id=run_id, pipeline=pipeline, pass_id=pass_id, status="running",
                                           resumed=resumed, started_at=now(), host=socket.gethostname(),
                                           pid=os.getpid(), batches=0, **{k: 0 for k in COUNTERS}))

    def finish_run(self, run_id: str, pipeline: str, status: str, message: str | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.pipeline == pipeline).values(
                status=status, finished_at=now(), message=secrets.mask(message) if message else None))

    def mark_crashed(self) -> int:
        """Runs left 'running' by a process that is gone (killed, power loss) become 'crashed'."""
        host = socket.gethostname()
        n = 0
        with self.engine.begin() as c:
            for run_id, pipeline, pid, rhost in c.execute(
                    sa.select(runs.c.run_id, runs.c.pipeline, runs.c.pid, runs.c.host).where(runs.c.status == "running")):
                if rhost == host and pid and _alive(pid) and pid != os.getpid():
                    continue
                c.execute(runs.update().where(runs.c.run_id == run_id).where(runs.c.pipeline == pipeline)
                          .values(status="crashed", message="the process ended before the run finished"))
                n += 1
        return n

    def run_rows(self, pipeline: str | None = None, limit: int = 10) -> list[dict]:
        q = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
        if pipeline:
            q = q.where(runs.c.pipeline == pipeline)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def run_counts(self, run_id: str, pipeline: str) -> dict[str, int]:
        with self.engine.connect() as c:
            r = c.execute(sa.select(runs).where(runs.c.run_id == run_id).where(runs.c.pipeline == pipeline)) \
                .mappings().first()
        return {k: int(r[k]) for k in COUNTERS} if r else {}

    # ------------------------------------------------------------ dead letters
    def dead_letter_summary(self, pipeline: str | None = None, run_id: str | None = None,
                            include_superseded: bool = False) -> list[dict]:
        q = sa.select(dead_letters.c.pipeline, dead_letters.c.stage, dead_letters.c.reason,
                      sa.func.count().label("count")).group_by(
            dead_letters.c.pipeline, dead_letters.c.stage, dead_letters.c.reason).order_by(
            dead_letters.c.pipeline, sa.desc("count"))
        q = _dl_filter(q, pipeline, run_id, None, include_superseded)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def dead_letter_rows(self, pipeline: str | None = None, run_id: str | None = None, reason: str | None = None,
                         limit: int | None = None, offset: int = 0, include_superseded: bool = False) -> Iterator[dict]:
        q = _dl_filter(sa.select(dead_letters).order_by(dead_letters.c.id), pipeline, run_id, reason,
                       include_superseded)
        if limit is not None:
            q = q.limit(limit)
        if offset:
            q = q.offset(offset)
        with self.engine.connect() as c:
            for r in c.execution_options(stream_results=True, yield_per=1000).execute(q).mappings():
                yield dict(r)

    def dead_letter(self, dl_id: int) -> dict | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(dead_letters).where(dead_letters.c.id == dl_id)).mappings().first()
        return dict(r) if r else None

    def last_run_id(self) -> str | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(runs.c.run_id).order_by(runs.c.started_at.desc()).limit(1)).scalar()


def _upsert(c: sa.Connection, table: sa.Table, cols: tuple[str, ...], nkey: int, rows: list[tuple],
            update: bool = True) -> None:
    """Insert rows (the first ``nkey`` columns are the primary key); on a clash update the rest, or keep what is
    there (``update=False``). One DBAPI executemany: SQLAlchemy's per-row parameter handling costs more than the
    database does at a million rows."""
    if not rows:
        return
    ph = "?" if c.dialect.paramstyle == "qmark" else "%s"
    values = ", ".join([ph] * len(cols))
    keys, rest = cols[:nkey], cols[nkey:]
    dialect = c.dialect.name
    insert = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({values})"
    if dialect in ("sqlite", "postgresql"):
        conflict = f" ON CONFLICT ({', '.join(keys)}) DO "
        sql = insert + conflict + ("UPDATE SET " + ", ".join(f"{k} = excluded.{k}" for k in rest)
                                   if update and rest else "NOTHING")
    elif dialect in ("mysql", "mariadb"):
        sql = (insert + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{k} = VALUES({k})" for k in rest)) \
            if update and rest else insert.replace("INSERT INTO", "INSERT IGNORE INTO", 1)
    else:  # any other database: delete what clashes (or skip it), then insert
        by_key = {r[:nkey]: r for r in rows}
        cond = sa.and_(*(table.c[k] == sa.bindparam(f"k_{k}") for k in keys))
        if update:
            c.execute(table.delete().where(cond), [{f"k_{k}": r[i] for i, k in enumerate(keys)} for r in by_key])
            todo = list(by_key.values())
        else:
            q = sa.select(*(table.c[k] for k in keys)).where(cond)
            todo = [r for kk, r in by_key.items()
                    if c.execute(q, {f"k_{k}": kk[i] for i, k in enumerate(keys)}).first() is None]
        if todo:
            c.execute(table.insert(), [dict(zip(cols, r)) for r in todo])
        return
    c.exec_driver_sql(sql, rows)


def _supersede(c: sa.Connection, ids: list[int]) -> None:
    for part in _chunks(ids):
        c.execute(dead_letters.update().where(dead_letters.c.id.in_(part)).values(status="superseded"))


def _dl_filter(q, pipeline, run_id, reason, include_superseded=False):
    if not include_superseded and not run_id:
        q = q.where(dead_letters.c.status == "open")
    if pipeline:
        q = q.where(dead_letters.c.pipeline == pipeline)
    if run_id:
        q = q.where(dead_letters.c.run_id == run_id)
    if reason:
        q = q.where(dead_letters.c.reason == reason)
    return q


def _chunks(items: list, n: int = _CHUNK) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
