"""Ready-made sources that read the CRM straight out of a Bitrix24 / 1C-Bitrix backup.

Each source streams one main table (``b_crm_company``, ``b_crm_contact``, ``b_crm_deal``,
``b_crm_dynamic_items_<id>``, ``b_iblock_element``) into typed Arrow batches and adds what lives in other tables:
phones and e-mails (``b_crm_field_multi``), user fields (``b_uts_crm_*``, decoded through ``b_user_field`` and
``b_user_field_enum``), bindings (``b_crm_deal_contact``, ``b_crm_contact_company``, ``b_crm_entity_contact``),
pipelines and stages (``b_crm_deal_category``, ``b_crm_item_category``, ``b_crm_status``), requisites, the
responsible user (``b_user``), list properties (``b_iblock_property``...).

Memory: the child tables come *after* the main table in a dump (tables are dumped in name order), so a read is
two streaming passes. The first (the *prepass*) parses only the child and dictionary tables, keeps only the rows
that concern this source (e.g. ``ENTITY_ID='CONTACT'`` multi-fields), and spills them into an on-disk SQLite file
with an index on the join key; everything else is skipped at disk speed. The second pass streams the main table
and joins each bounded batch with range queries on that file (the main table is dumped in key order, so a batch
is one key range); it stops as soon as the main table is done. The SQLite file is kept in ``cache_dir`` keyed by
the backup's identity (path, size, mtime) and the source's parameters, so a resumed run skips the prepass.

Resume: the cursor is ``{"offset": stream offset of the INSERT statement in the dump (its parts concatenated),
"row": rows of it already delivered, "line"/"part": where it is, "charset", "schema": the main table's columns,
"identity": the backup}``. Plain ``.sql`` dumps seek straight there; archives are re-inflated from the start up to
that offset at skip speed (gzip streams cannot be entered in the middle).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import FILE_COLUMN, LINE_COLUMN, Source, SourceBatch, TerminalError, make_rejects, record_json
from connectors.bitrix24.backup.archive import BackupDump
from connectors.bitrix24.backup.dump import (
    DumpReader, Rows, SetNames, StatementError, TableDef, TableSchema, TableStart, charset_codec, typed_table,
)
from connectors.bitrix24.backup.phpser import PhpSerializeError, flatten_values, looks_serialized, unserialize

__all__ = [
    "BackupCompanySource", "BackupContactSource", "BackupDealSource", "BackupListElementSource",
    "BackupSmartProcessSource", "BackupTableSource", "ENTITY_SOURCES", "make_backup_source",
]

CACHE_VERSION = 1
SEP = "; "


@dataclass
class Spill:
    """A table the prepass keeps (filtered) in the SQLite file."""

    table: str
    columns: list[str] | None = None  # None: all
    keep: Callable[[pa.Table, "Prepass"], pa.Array | None] | None = None  # row mask
    index: tuple[str, ...] = ()
    prefix: bool = False  # `table` is a name prefix (e.g. b_iblock_element_prop_s)


def _sqlite_values(col: pa.ChunkedArray) -> list:
    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.strftime(col, format="%Y-%m-%d %H:%M:%S")
    elif pa.types.is_date(t):
        col = pc.strftime(col, format="%Y-%m-%d")
    elif pa.types.is_decimal(t):
        col = pc.cast(col, pa.string())
    return col.to_pylist()


class Prepass:
    """The first pass: child and dictionary tables into a SQLite file (see the module doc)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.created: set[str] = set()
        self.state: dict = {}  # what a keep() learned on the way (e.g. element ids)

    def store(self, name: str, table: pa.Table) -> None:
        if not table.num_rows and name in self.created:
            return
        cols = table.column_names
        if name not in self.created:
            self.db.execute(f'DROP TABLE IF EXISTS "{name}"')
            self.db.execute(f'CREATE TABLE "{name}" ({", ".join(_q(c) for c in cols)})')
            self.created.add(name)
        if table.num_rows:
            values = [_sqlite_values(table.column(c)) for c in cols]
            self.db.executemany(f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(cols))})', zip(*values))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fetch(db: sqlite3.Connection, sql: str, args: tuple = ()) -> pa.Table:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    if not rows:
        return pa.table({n: pa.array([], pa.null()) for n in names})
    cols = list(zip(*rows))
    arrays = []
    for c in cols:
        try:
            arrays.append(pa.array(c))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(pa.array([None if v is None else str(v) for v in c], pa.string()))
    return pa.table(arrays, names=names)


def _has(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({_q(table)})")]


def _text(arr) -> pa.ChunkedArray | pa.Array:
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def _align(keys: pa.Array, values: pa.Array, ids: pa.Array) -> pa.Array:
    """values[i] belongs to keys[i]; the value for each of ``ids`` (null where none)."""
    if len(keys) == 0:
        return pa.nulls(len(ids), values.type if len(values) else pa.string())
    idx = pc.index_in(pc.cast(ids, pa.int64()), value_set=pc.cast(keys, pa.int64()))
    return pc.take(values, idx)


def _group_join(t: pa.Table, key: str, value: str) -> tuple[pa.Array, pa.Array]:
    """(distinct keys, their values joined with '; ' in row order)."""
    if t.num_rows == 0:
        return pa.array([], pa.int64()), pa.array([], pa.string())
    t = t.select([key, value]).set_column(1, value, _text(t.column(value)))
    t = t.filter(pc.is_valid(t.column(value)))
    g = t.group_by(key, use_threads=False).aggregate([(value, "list")])
    return g.column(key).combine_chunks(), pc.binary_join(g.column(f"{value}_list"), SEP).combine_chunks()


class BackupTableSource(Source):
    """One table of the dump, typed by its CREATE TABLE, as is. Subclasses add joins."""

    progress_unit = "bytes"
    entity = "table"

    def __init__(self, path: str | Path, *, table: str | None = None, password: str | None = None,
                 charset: str | None = None, cache_dir: str | Path | None = None, name: str = "bitrix24_backup",
                 fast: bool = True, restart_every: int | None = None):
        self.path = Path(path)
        self.restart_every = restart_every
        self.password = password
        self.charset = charset
        self.name = name
        self.fast = fast
        self._table = table
        if cache_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="etl-backup-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
            cache_dir = self._tmp
        self.cache_dir = Path(cache_dir)
        self._dump: BackupDump | None = None
        self._prepared: dict | None = None

    # --- what to read

    def main_table(self) -> str:
        if not self._table:
            raise TerminalError(f"{self.name}: no table given")
        return self._table

    def spills(self) -> list[Spill]:
        return []

    def params(self) -> dict:
        return {"entity": self.entity, "table": self._table}

    def derived_columns(self, prep: dict) -> list[str]:
        return []

    def keep_rows(self, table: pa.Table) -> pa.Array | None:
        return None

    def enrich(self, table: pa.Table, db: sqlite3.Connection, prep: dict) -> pa.Table:
        return table

    # --- plumbing

    def dump(self) -> BackupDump:
        if self._dump is None:
            self._dump = BackupDump(self.path, password=self.password, restart_every=self.restart_every)
        return self._dump

    def check(self) -> None:
        dump = self.dump()
        it = dump.chunks()
        try:
            next(it)  # opens the volumes, checks the password, finds the dump
        except StopIteration:
            raise TerminalError(f"{self.name}: {self.path}: the dump is empty") from None
        finally:
            it.close()

    def _cache_path(self) -> Path:
        key = json.dumps({"v": CACHE_VERSION, "id": self.dump().identity(), "p": self.params(),
                          "charset": self.charset}, sort_keys=True)
        return self.cache_dir / f"{self.entity}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.sqlite"

    def prepare(self) -> dict:
        """Run (or reuse) the prepass. Returns {"db": path, "schemas": {...}, "charset": ...}."""
        if self._prepared is not None:
            return self._prepared
        path = self._cache_path()
        if path.is_file():
            db = sqlite3.connect(path)
            try:
                row = db.execute("SELECT value FROM meta WHERE key='prep'").fetchone()
            except sqlite3.Error:
                row = None
            db.close()
            if row:
                self._prepared = json.loads(row[0])
                self._prepared["db"] = str(path)
                return self._prepared
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        if tmp.exists():
            tmp.unlink()
        db = sqlite3.connect(tmp)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        try:
            prep = self._prepass(db)
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("INSERT INTO meta VALUES ('prep', ?)", (json.dumps(prep),))
            db.commit()
        finally:
            db.close()
        os.replace(tmp, path)
        prep["db"] = str(path)
        self._prepared = prep
        return prep

    def _prepass(self, db: sqlite3.Connection) -> dict:
        main = self.main_table()
        spills = self.spills()
        exact = {s.table: s for s in spills if not s.prefix}
        prefixed = [s for s in spills if s.prefix]

        def spec_of(table: str) -> Spill | None:
            return exact.get(table) or next((s for s in prefixed if table.startswith(s.table)), None)

        wanted = lambda t: spec_of(t) is not None  # noqa: E731
        reader = DumpReader(self.dump().chunks(), wanted, charset=self.charset, fast=self.fast)
        pre = Prepass(db)
        need = set(exact) | {main}
        seen: set[str] = set()
        schemas: dict[str, list] = {}
        charset = self.charset
        main_start = None
        for ev in reader.events():
            if isinstance(ev, TableStart):
                if need <= seen and ev.table not in need and not prefixed:
                    break
                if ev.table in need:
                    seen.add(ev.table)
                if ev.table == main and main_start is None:
                    main_start = {"offset": ev.offset, "line": ev.line, "part": ev.part}
            elif isinstance(ev, SetNames):
                charset = charset or ev.charset
            elif isinstance(ev, TableDef):
                if ev.schema.name == main or spec_of(ev.schema.name):
                    schemas[ev.schema.name] = ev.schema.to_json()
                    spec = spec_of(ev.schema.name)
                    if spec is not None:
                        cols = [c for c in ev.schema.names if spec.columns is None or c in spec.columns]
                        pre.store(ev.schema.name, pa.table({c: pa.array([], pa.string()) for c in cols}))
            elif isinstance(ev, Rows):
                spec = spec_of(ev.table)
                schema = reader.schemas.get(ev.table)
                if spec is None or schema is None:
                    continue
                table, _ = typed_table(schema, ev.columns, reader.codec, ev.names)
                if spec.keep is not None:
                    mask = spec.keep(table, pre)
                    if mask is not None:
                        table = table.filter(mask)
                if spec.columns is not None:
                    table = table.select([c for c in table.column_names if c in spec.columns])
                pre.store(ev.table, table)
        for s in spills:
            for t in ([s.table] if not s.prefix else [n for n in pre.created if n.startswith(s.table)]):
                if t in pre.created:
                    for col in s.index:
                        if col in _columns(db, t):
                            db.execute(f'CREATE INDEX "ix_{t}_{col}" ON {_q(t)} ({_q(col)})')
        if main not in schemas:
            raise TerminalError(f"{self.name}: {self.path.name}: the dump has no table {main!r}")
        # where the main table starts, and where inflating can start: a pass goes straight there
        return {"schemas": schemas, "charset": charset or reader.charset, "state": pre.state,
                "main_start": main_start, "seek": self.dump().seek_points()}

    def _schema(self, prep: dict) -> TableSchema:
        main = self.main_table()
        return TableSchema.from_json(main, prep["schemas"][main])

    def columns(self) -> list[str]:
        prep = self.prepare()
        cols = self._schema(prep).names
        return cols + [c for c in self.derived_columns(prep) if c not in cols]

    def total(self) -> int | None:
        try:
            return self.dump().total()
        except TerminalError:
            return None

    def next_pass(self, finished: dict | None) -> dict | None:
        return None  # a backup is a snapshot

    # --- reading

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        prep = self.prepare()
        main = self.main_table()
        dump = self.dump()
        identity = dump.identity()
        schema = self._schema(prep)
        start = 0
        kwargs: dict = {"charset": self.charset or prep.get("charset")}
        if cursor and cursor.get("identity") == identity and cursor.get("offset") is not None:
            start = int(cursor["offset"])
            kwargs.update(start_offset=start, start_line=int(cursor.get("line") or 1),
                          start_part=cursor.get("part") or "", skip_rows=int(cursor.get("row") or 0),
                          charset=cursor.get("charset") or kwargs["charset"])
            schema = TableSchema.from_json(main, cursor.get("schema") or prep["schemas"][main])
        elif prep.get("main_start"):  # a new pass starts at the main table's first statement
            ms = prep["main_start"]
            start = int(ms["offset"])
            kwargs.update(start_offset=start, start_line=int(ms.get("line") or 1), start_part=ms.get("part") or "")
        kwargs["schemas"] = {main: schema}
        db = sqlite3.connect(prep["db"])
        try:
            reader = DumpReader(dump.chunks(start, prep.get("seek")), {main}, fast=self.fast, **kwargs)
            yield from self._batches(reader, main, batch_size, db, prep, identity, dump)
        finally:
            db.close()

    def _batches(self, reader: DumpReader, main: str, batch_size: int, db, prep, identity, dump) -> Iterator:
        pending: list[tuple[pa.Table, np.ndarray, Rows]] = []  # (typed rows, their ids, event)
        rejects: list[dict] = []
        count = 0
        seen_main = False
        state = {"offset": None}

        def cursor_at(ev: Rows, next_row: int) -> dict:
            return {"identity": identity, "table": main, "offset": ev.stmt_offset, "row": int(next_row),
                    "line": ev.stmt_line, "part": ev.stmt_part, "charset": reader.charset,
                    "schema": reader.schemas[main].to_json()}

        def emit(upto: int | None) -> SourceBatch:
            """Build a batch from pending rows (all, or the first ``upto``)."""
            nonlocal pending, rejects, count
            parts, take, last = [], 0, None
            rest: list = []
            for i, (t, ids, ev) in enumerate(pending):
                if upto is not None and take + t.num_rows > upto:
                    k = upto - take
                    parts.append(t.slice(0, k))
                    rest = [(t.slice(k), ids[k:], ev)] + pending[i + 1:]
                    last = (ev, int(ids[k]))
                    take = upto
                    break
                parts.append(t)
                take += t.num_rows
                last = (ev, ev.end_row)
            batch_rejects = [r for r in rejects if last is None or not _after(r, last)]
            keep_rejects = [r for r in rejects if last is not None and _after(r, last)]
            table = pa.concat_tables(parts) if parts else None
            pending, rejects = rest, keep_rejects
            count = sum(t.num_rows for t, _, _ in pending)
            if table is not None and table.num_rows:
                table = self.enrich(table, db, prep)
            cur = cursor_at(*last) if last else state["cursor"]
            state["cursor"] = cur
            for r in batch_rejects:
                r.pop("_pos", None)
            return SourceBatch(table=table if table is not None else self._empty(prep),
                               cursor=cur, rejects=make_rejects(batch_rejects), progress=dump.sql_done)

        state["cursor"] = None
        for ev in reader.events():
            if isinstance(ev, TableStart):
                if ev.table != main and seen_main:
                    break
                if ev.table == main:
                    seen_main = True
                continue
            if isinstance(ev, StatementError):
                rejects.append({"stage": "read", "reason": "bad_statement",
                                "message": f"{ev.part}, line {ev.line}: table {ev.table}: {ev.message}; the rest of "
                                           f"this INSERT is skipped (near {ev.snippet[:60]!r})",
                                "file": ev.part, "line": ev.line, "value": ev.snippet[:200],
                                "_pos": (ev.stmt_offset, ev.first_row)})
                continue
            if not isinstance(ev, Rows) or ev.table != main:
                continue
            seen_main = True
            for row_id, line, msg, raw in ev.bad:
                rejects.append({"stage": "read", "reason": "bad_row",
                                "message": f"{ev.part}, line {line}: table {main}, row {row_id + 1} of the INSERT: "
                                           f"{msg}", "file": ev.part, "line": line, "value": raw[:200],
                                "_pos": (ev.stmt_offset, row_id)})
            if not ev.count:
                if not pending and ev.bad:
                    state["cursor"] = cursor_at(ev, ev.end_row)
                    yield emit(None)
                continue
            table, problems = typed_table(reader.schemas[main], ev.columns, reader.codec, ev.names)
            table = table.append_column(FILE_COLUMN, pa.array([ev.part] * table.num_rows, pa.string()))
            table = table.append_column(LINE_COLUMN, pa.array(ev.lines, pa.int64()))
            ids = ev.row_ids
            drop = np.zeros(table.num_rows, dtype=bool)
            if problems:
                rows = table.to_pylist()
                for i, col, reason, value in problems:
                    if drop[i]:
                        continue
                    drop[i] = True
                    line = int(ev.lines[i])
                    rejects.append({"stage": "read", "reason": reason,
                                    "message": f"{ev.part}, line {line}: table {main}, column «{col}»: "
                                               f"bad value {value!r}", "file": ev.part, "line": line,
                                    "field": col, "value": None if value is None else str(value),
                                    "source_id": None if rows[i].get("ID") is None else str(rows[i].get("ID")),
                                    "record": record_json(rows[i]), "_pos": (ev.stmt_offset, int(ids[i]))})
            mask = self.keep_rows(table)
            if mask is not None:
                if isinstance(mask, pa.ChunkedArray):
                    mask = mask.combine_chunks()
                drop |= ~np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            if drop.any():
                table = table.filter(pa.array(~drop))
                ids = ids[~drop]
            if table.num_rows:
                pending.append((table, ids, ev))
                count += table.num_rows
            else:
                # nothing kept from this statement: remember where we are, so that a batch still moves on
                pending.append((table, ids, ev))
            while count >= batch_size:
                yield emit(batch_size)
        if pending or rejects:
            yield emit(None)

    def _empty(self, prep: dict) -> pa.Table:
        names = self.columns() + [FILE_COLUMN, LINE_COLUMN]
        return pa.table({n: pa.array([], pa.string()) for n in names})


def _after(reject: dict, last: tuple[Rows, int]) -> bool:
    """Whether a reject lies past the cursor (statement, next row)."""
    pos = reject.get("_pos")
    if pos is None:
        return False
    ev, next_row = last
    return pos[0] > ev.stmt_offset or (pos[0] == ev.stmt_offset and pos[1] >= next_row)


# ------------------------------------------------------------------------------------------------ helpers


def _eq(col: str, value) -> Callable:
    def keep(t: pa.Table, _pre) -> pa.Array:
        return pc.equal(_text(t.column(col)), str(value)).fill_null(False)

    return keep


def _multi_fields(db, entity: str, ids: pa.Array, lo: int, hi: int) -> dict[str, pa.Array]:
    out = {}
    if not _has(db, "b_crm_field_multi"):
        return {k: pa.nulls(len(ids), pa.string()) for k in ("PHONE", "EMAIL", "WEB", "IM")}
    t = _fetch(db, 'SELECT ELEMENT_ID, TYPE_ID, VALUE FROM b_crm_field_multi WHERE ENTITY_ID = ? AND '
                   'ELEMENT_ID BETWEEN ? AND ? ORDER BY ELEMENT_ID, ID', (entity, lo, hi))
    for kind in ("PHONE", "EMAIL", "WEB", "IM"):
        sub = t.filter(pc.equal(_text(t.column("TYPE_ID")), kind)) if t.num_rows else t
        keys, vals = _group_join(sub, "ELEMENT_ID", "VALUE")
        out[kind] = _align(keys, vals, ids)
    return out


def _bindings(db, table: str, key: str, value: str, ids: pa.Array, lo: int, hi: int,
              where: str = "", args: tuple = ()) -> pa.Array:
    if not _has(db, table):
        return pa.nulls(len(ids), pa.string())
    cols = _columns(db, table)
    order = ", ".join(_q(c) for c in ("SORT", "ID") if c in cols) or _q(value)
    t = _fetch(db, f"SELECT {_q(key)}, {_q(value)} FROM {_q(table)} WHERE {_q(key)} BETWEEN ? AND ? {where} "
                   f"ORDER BY {_q(key)}, {order}", (lo, hi) + args)
    keys, vals = _group_join(t, key, value)
    return _align(keys, vals, ids)


def _user_fields(db, entity_id: str) -> dict[str, dict]:
    """FIELD_NAME -> {"multiple": bool, "type": USER_TYPE_ID, "enum": {id: value}} for one UF ENTITY_ID."""
    if not _has(db, "b_user_field"):
        return {}
    out: dict[str, dict] = {}
    rows = db.execute("SELECT ID, FIELD_NAME, USER_TYPE_ID, MULTIPLE FROM b_user_field WHERE ENTITY_ID = ?",
                      (entity_id,)).fetchall()
    enums: dict = {}
    if _has(db, "b_user_field_enum"):
        for fid, eid, val in db.execute("SELECT USER_FIELD_ID, ID, VALUE FROM b_user_field_enum"):
            enums.setdefault(str(fid), {})[str(eid)] = val
    for fid, fname, utype, multiple in rows:
        out[fname] = {"multiple": multiple == "Y", "type": utype, "enum": enums.get(str(fid), {})}
    return out


def _decode_uf(arr: pa.Array, meta: dict | None, encoding: str) -> pa.Array:
    """A user-field column as text: serialized multiple values flattened and '; '-joined, enumeration ids as
    their labels. Python runs over distinct values only."""
    text = _text(arr)
    if meta is None:
        meta = {"multiple": False, "enum": {}}
    if not meta.get("multiple") and not meta.get("enum"):
        return text
    uniq = pc.unique(text).drop_null()
    mapped = []
    for v in uniq.to_pylist():
        vals = [v]
        if meta.get("multiple") or looks_serialized(v):
            try:
                vals = flatten_values(unserialize(v, encoding))
            except PhpSerializeError:
                vals = [v]
        if meta.get("enum"):
            vals = [meta["enum"].get(x, x) for x in vals]
        mapped.append(SEP.join(vals) if vals else None)
    if not len(uniq):
        return text
    idx = pc.index_in(text, value_set=uniq)
    return pc.take(pa.array(mapped, pa.string()), idx)


def _with(table: pa.Table, name: str, arr) -> pa.Table:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, arr)
    pos = table.column_names.index(FILE_COLUMN) if FILE_COLUMN in table.column_names else table.num_columns
    return table.add_column(pos, name, arr)


def _ids(table: pa.Table, col: str = "ID") -> tuple[pa.Array, int, int]:
    ids = pc.cast(table.column(col), pa.int64()).combine_chunks()
    valid = ids.drop_null()
    if not len(valid):
        return ids, 0, -1
    mm = pc.min_max(valid).as_py()
    return ids, int(mm["min"]), int(mm["max"])


def _uts(db, table: str, entity_id: str, ids: pa.Array, lo: int, hi: int, encoding: str) -> dict[str, pa.Array]:
    if not _has(db, table):
        return {}
    cols = [c for c in _columns(db, table) if c != "VALUE_ID"]
    if not cols:
        return {}
    t = _fetch(db, f"SELECT * FROM {_q(table)} WHERE VALUE_ID BETWEEN ? AND ?", (lo, hi))
    meta = _user_fields(db, entity_id)
    out = {}
    for c in cols:
        if t.num_rows == 0:
            out[c] = pa.nulls(len(ids), pa.string())
            continue
        vals = _decode_uf(t.column(c).combine_chunks(), meta.get(c), encoding)
        out[c] = _align(t.column("VALUE_ID").combine_chunks(), _text(vals), ids)
    return out


def _user_columns(db, table: pa.Table, col: str, prefix: str) -> pa.Table:
    if col not in table.column_names or not _has(db, "b_user"):
        return table
    ids, lo, hi = _ids(table, col)
    u = _fetch(db, "SELECT ID, LOGIN, EMAIL, NAME, LAST_NAME FROM b_user")
    if not u.num_rows:
        return table
    name = pc.utf8_trim_whitespace(pc.binary_join_element_wise(
        pc.fill_null(_text(u.column("NAME")), ""), pc.fill_null(_text(u.column("LAST_NAME")), ""), " "))
    name = pc.if_else(pc.equal(name, ""), pa.scalar(None, pa.string()), name)
    keys = u.column("ID").combine_chunks()
    table = _with(table, f"{prefix}_LOGIN", _align(keys, _text(u.column("LOGIN")).combine_chunks(), ids))
    table = _with(table, f"{prefix}_EMAIL", _align(keys, _text(u.column("EMAIL")).combine_chunks(), ids))
    return _with(table, f"{prefix}_NAME", _align(keys, name.combine_chunks(), ids))


_USER_SPILL = Spill("b_user", ["ID", "LOGIN", "EMAIL", "NAME", "LAST_NAME"], index=("ID",))
_USER_COLUMNS = ["ASSIGNED_BY_LOGIN", "ASSIGNED_BY_EMAIL", "ASSIGNED_BY_NAME"]


def _uf_spills(entity_id: str) -> list[Spill]:
    return [Spill("b_user_field", ["ID", "ENTITY_ID", "FIELD_NAME", "USER_TYPE_ID", "MULTIPLE"],
                  keep=_eq("ENTITY_ID", entity_id)),
            Spill("b_user_field_enum", ["ID", "USER_FIELD_ID", "VALUE", "SORT"])]


def _uts_columns(prep: dict, table: str) -> list[str]:
    return [c for c, _ in prep["schemas"].get(table, []) if c != "VALUE_ID"]


# ------------------------------------------------------------------------------------------------ entities


class BackupCompanySource(BackupTableSource):
    """Companies (``b_crm_company``) with phones/e-mails, requisites (INN, KPP, OGRN), user fields and the
    responsible user; own legal entities (``IS_MY_COMPANY='Y'``) are left out unless asked for."""

    entity = "company"

    def __init__(self, path, *, include_my_companies: bool = False, **kw):
        super().__init__(path, **kw)
        self.include_my_companies = include_my_companies

    def main_table(self) -> str:
        return "b_crm_company"

    def params(self) -> dict:
        return {"entity": self.entity}

    def spills(self) -> list[Spill]:
        return [Spill("b_crm_field_multi", ["ID", "ENTITY_ID", "ELEMENT_ID", "TYPE_ID", "VALUE_TYPE", "VALUE"],
                      keep=_eq("ENTITY_ID", "COMPANY"), index=("ELEMENT_ID",)),
                Spill("b_crm_requisite", None, keep=_eq("ENTITY_TYPE_ID", 4), index=("ENTITY_ID",)),
                Spill("b_uts_crm_company", index=("VALUE_ID",)), _USER_SPILL, *_uf_spills("CRM_COMPANY")]

    def derived_columns(self, prep: dict) -> list[str]:
        return ["PHONE", "EMAIL", "WEB", "IM", "RQ_INN", "RQ_KPP", "RQ_OGRN", "RQ_COMPANY_FULL_NAME",
                *_USER_COLUMNS, *_uts_columns(prep, "b_uts_crm_company")]

    def keep_rows(self, table: pa.Table) -> pa.Array | None:
        if self.include_my_companies or "IS_MY_COMPANY" not in table.column_names:
            return None
        return pc.invert(pc.equal(table.column("IS_MY_COMPANY"), "Y").fill_null(False)).combine_chunks()

    def enrich(self, table, db, prep):
        ids, lo, hi = _ids(table)
        for k, v in _multi_fields(db, "COMPANY", ids, lo, hi).items():
            table = _with(table, k, v)
        if _has(db, "b_crm_requisite"):
            cols = _columns(db, "b_crm_requisite")
            want = [c for c in ("RQ_INN", "RQ_KPP", "RQ_OGRN", "RQ_COMPANY_FULL_NAME") if c in cols]
            order = ", ".join(_q(c) for c in ("SORT", "ID") if c in cols) or "rowid"
            r = _fetch(db, f"SELECT ENTITY_ID, {', '.join(_q(c) for c in want) or 'NULL AS X'} FROM b_crm_requisite "
                           f"WHERE ENTITY_ID BETWEEN ? AND ? ORDER BY ENTITY_ID, {order}", (lo, hi))
            if r.num_rows:
                keyc = pc.cast(r.column("ENTITY_ID"), pa.int64()).to_numpy()
                first = np.concatenate([[True], keyc[1:] != keyc[:-1]])
                r = r.filter(pa.array(first))
            for c in ("RQ_INN", "RQ_KPP", "RQ_OGRN", "RQ_COMPANY_FULL_NAME"):
                if r.num_rows and c in r.column_names:
                    table = _with(table, c, _align(r.column("ENTITY_ID").combine_chunks(),
                                                   _text(r.column(c)).combine_chunks(), ids))
                else:
                    table = _with(table, c, pa.nulls(table.num_rows, pa.string()))
        else:
            for c in ("RQ_INN", "RQ_KPP", "RQ_OGRN", "RQ_COMPANY_FULL_NAME"):
                table = _with(table, c, pa.nulls(table.num_rows, pa.string()))
        table = _user_columns(db, table, "ASSIGNED_BY_ID", "ASSIGNED_BY")
        for k, v in _uts(db, "b_uts_crm_company", "CRM_COMPANY", ids, lo, hi, _enc(prep)).items():
            table = _with(table, k, v)
        return table


def _enc(prep: dict) -> str:
    return charset_codec(prep.get("charset"))


class BackupContactSource(BackupTableSource):
    """Contacts (``b_crm_contact``) with phones/e-mails, their companies (``b_crm_contact_company``: COMPANY_IDS,
    and COMPANY_ID filled from the primary binding where the legacy column is empty), user fields and the
    responsible user."""

    entity = "contact"

    def main_table(self) -> str:
        return "b_crm_contact"

    def params(self) -> dict:
        return {"entity": self.entity}

    def spills(self) -> list[Spill]:
        return [Spill("b_crm_field_multi", ["ID", "ENTITY_ID", "ELEMENT_ID", "TYPE_ID", "VALUE_TYPE", "VALUE"],
                      keep=_eq("ENTITY_ID", "CONTACT"), index=("ELEMENT_ID",)),
                Spill("b_crm_contact_company", None, index=("CONTACT_ID",)),
                Spill("b_uts_crm_contact", index=("VALUE_ID",)), _USER_SPILL, *_uf_spills("CRM_CONTACT")]

    def derived_columns(self, prep: dict) -> list[str]:
        return ["PHONE", "EMAIL", "WEB", "IM", "COMPANY_ID", "COMPANY_IDS", *_USER_COLUMNS,
                *_uts_columns(prep, "b_uts_crm_contact")]

    def enrich(self, table, db, prep):
        ids, lo, hi = _ids(table)
        for k, v in _multi_fields(db, "CONTACT", ids, lo, hi).items():
            table = _with(table, k, v)
        companies = _bindings(db, "b_crm_contact_company", "CONTACT_ID", "COMPANY_ID", ids, lo, hi)
        table = _with(table, "COMPANY_IDS", companies)
        if _has(db, "b_crm_contact_company"):
            cols = _columns(db, "b_crm_contact_company")
            prim = "AND IS_PRIMARY = 'Y'" if "IS_PRIMARY" in cols else ""
            p = _fetch(db, f"SELECT CONTACT_ID, COMPANY_ID FROM b_crm_contact_company WHERE CONTACT_ID BETWEEN ? AND ? "
                           f"{prim} ORDER BY CONTACT_ID", (lo, hi))
            primary = _align(p.column("CONTACT_ID").combine_chunks(), pc.cast(p.column("COMPANY_ID"), pa.int64())
                             .combine_chunks(), ids) if p.num_rows else pa.nulls(len(ids), pa.int64())
            legacy = table.column("COMPANY_ID") if "COMPANY_ID" in table.column_names else None
            if legacy is not None:
                legacy = pc.cast(legacy, pa.int64())
                legacy = pc.if_else(pc.equal(legacy, 0), pa.scalar(None, pa.int64()), legacy)
                table = _with(table, "COMPANY_ID", pc.coalesce(legacy, primary))
            else:
                table = _with(table, "COMPANY_ID", primary)
        table = _user_columns(db, table, "ASSIGNED_BY_ID", "ASSIGNED_BY")
        for k, v in _uts(db, "b_uts_crm_contact", "CRM_CONTACT", ids, lo, hi, _enc(prep)).items():
            table = _with(table, k, v)
        return table


def _stage_names(db, entity_ids: pa.Array, status_ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(NAME, SEMANTICS) from b_crm_status for each (ENTITY_ID, STATUS_ID) pair."""
    n = len(status_ids)
    if not _has(db, "b_crm_status"):
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    cols = _columns(db, "b_crm_status")
    sem = "SEMANTICS" if "SEMANTICS" in cols else "NULL"
    s = _fetch(db, f"SELECT ENTITY_ID, STATUS_ID, NAME, {sem} AS SEMANTICS FROM b_crm_status")
    if not s.num_rows:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    skey = pc.binary_join_element_wise(_text(s.column("ENTITY_ID")), _text(s.column("STATUS_ID")), "\x1f")
    key = pc.binary_join_element_wise(_text(entity_ids), _text(status_ids), "\x1f")
    idx = pc.index_in(key, value_set=skey.combine_chunks())
    return (pc.take(_text(s.column("NAME")).combine_chunks(), idx),
            pc.take(_text(s.column("SEMANTICS")).combine_chunks(), idx))


class BackupDealSource(BackupTableSource):
    """Deals (``b_crm_deal``) with their pipeline (CATEGORY_NAME; pipeline 0 has no row: its name is the
    ``crm`` option ``default_deal_category_name``), stage name and semantics (``b_crm_status``: DEAL_STAGE,
    DEAL_STAGE_<n>), contacts (``b_crm_deal_contact``: CONTACT_IDS), user fields and the responsible user."""

    entity = "deal"

    def __init__(self, path, *, default_category_name: str | None = None, **kw):
        super().__init__(path, **kw)
        self.default_category_name = default_category_name

    def main_table(self) -> str:
        return "b_crm_deal"

    def params(self) -> dict:
        return {"entity": self.entity}

    def spills(self) -> list[Spill]:
        return [Spill("b_crm_deal_category", ["ID", "NAME", "SORT"]),
                Spill("b_crm_deal_contact", None, index=("DEAL_ID",)),
                Spill("b_crm_status", ["ENTITY_ID", "STATUS_ID", "NAME", "SORT", "SEMANTICS", "CATEGORY_ID"]),
                Spill("b_option", ["MODULE_ID", "NAME", "VALUE"], keep=_eq("MODULE_ID", "crm")),
                Spill("b_uts_crm_deal", index=("VALUE_ID",)), _USER_SPILL, *_uf_spills("CRM_DEAL")]

    def derived_columns(self, prep: dict) -> list[str]:
        return ["CATEGORY_NAME", "STAGE_NAME", "STAGE_SEMANTICS", "CONTACT_IDS", *_USER_COLUMNS,
                *_uts_columns(prep, "b_uts_crm_deal")]

    def enrich(self, table, db, prep):
        ids, lo, hi = _ids(table)
        cat = pc.fill_null(pc.cast(table.column("CATEGORY_ID"), pa.int64()), 0) \
            if "CATEGORY_ID" in table.column_names else pa.repeat(pa.scalar(0, pa.int64()), table.num_rows)
        default = self.default_category_name
        if default is None and _has(db, "b_option"):
            row = db.execute("SELECT VALUE FROM b_option WHERE MODULE_ID='crm' AND NAME='default_deal_category_name'"
                             ).fetchone()
            default = row[0] if row and row[0] else None
        names = pa.nulls(table.num_rows, pa.string())
        if _has(db, "b_crm_deal_category"):
            c = _fetch(db, "SELECT ID, NAME FROM b_crm_deal_category")
            if c.num_rows:
                names = _align(c.column("ID").combine_chunks(), _text(c.column("NAME")).combine_chunks(),
                               pc.cast(cat, pa.int64()))
        names = pc.if_else(pc.equal(cat, 0), pa.scalar(default, pa.string()), names)
        table = _with(table, "CATEGORY_NAME", names)
        ent = pc.if_else(pc.equal(cat, 0), "DEAL_STAGE",
                         pc.binary_join_element_wise("DEAL_STAGE", pc.cast(cat, pa.string()), "_"))
        stage = table.column("STAGE_ID") if "STAGE_ID" in table.column_names else pa.nulls(table.num_rows, pa.string())
        sname, ssem = _stage_names(db, ent, stage)
        table = _with(table, "STAGE_NAME", sname)
        if "STAGE_SEMANTIC_ID" in table.column_names:
            ssem = pc.coalesce(ssem, table.column("STAGE_SEMANTIC_ID"))
        table = _with(table, "STAGE_SEMANTICS", ssem)
        table = _with(table, "CONTACT_IDS", _bindings(db, "b_crm_deal_contact", "DEAL_ID", "CONTACT_ID", ids, lo, hi))
        table = _user_columns(db, table, "ASSIGNED_BY_ID", "ASSIGNED_BY")
        for k, v in _uts(db, "b_uts_crm_deal", "CRM_DEAL", ids, lo, hi, _enc(prep)).items():
            table = _with(table, k, v)
        return table


class BackupSmartProcessSource(BackupTableSource):
    """Smart-process items of one type (``entity_type_id``): the table named in ``b_crm_dynamic_type.TABLE_NAME``
    (``b_crm_dynamic_items_<id>``), with pipeline and stage names (``b_crm_item_category``, ``b_crm_status``
    DYNAMIC_<id>_STAGE_<cat>), contacts (``b_crm_entity_contact``) and user fields decoded (their columns live in
    the item table; UF ENTITY_ID is ``CRM_<type row ID>``)."""

    entity = "smart_process"

    def __init__(self, path, *, entity_type_id: int, table: str | None = None, **kw):
        super().__init__(path, **kw)
        self.entity_type_id = int(entity_type_id)
        self._item_table = table

    def main_table(self) -> str:
        return self._item_table or f"b_crm_dynamic_items_{self.entity_type_id}"

    def params(self) -> dict:
        return {"entity": self.entity, "type": self.entity_type_id, "table": self._item_table}

    def spills(self) -> list[Spill]:
        et = self.entity_type_id
        return [Spill("b_crm_dynamic_type", None, keep=_eq("ENTITY_TYPE_ID", et)),
                Spill("b_crm_item_category", ["ID", "ENTITY_TYPE_ID", "NAME", "IS_DEFAULT", "SORT"],
                      keep=_eq("ENTITY_TYPE_ID", et)),
                Spill("b_crm_status", ["ENTITY_ID", "STATUS_ID", "NAME", "SORT", "SEMANTICS", "CATEGORY_ID"]),
                Spill("b_crm_entity_contact", None, keep=_eq("ENTITY_TYPE_ID", et), index=("ENTITY_ID",)),
                Spill("b_user_field", ["ID", "ENTITY_ID", "FIELD_NAME", "USER_TYPE_ID", "MULTIPLE"]),
                Spill("b_user_field_enum", ["ID", "USER_FIELD_ID", "VALUE", "SORT"]), _USER_SPILL]

    def derived_columns(self, prep: dict) -> list[str]:
        return ["CATEGORY_NAME", "STAGE_NAME", "STAGE_SEMANTICS", "CONTACT_IDS", *_USER_COLUMNS]

    def enrich(self, table, db, prep):
        et = self.entity_type_id
        ids, lo, hi = _ids(table)
        cat = pc.fill_null(pc.cast(table.column("CATEGORY_ID"), pa.int64()), 0) \
            if "CATEGORY_ID" in table.column_names else pa.repeat(pa.scalar(0, pa.int64()), table.num_rows)
        names = pa.nulls(table.num_rows, pa.string())
        if _has(db, "b_crm_item_category"):
            c = _fetch(db, "SELECT ID, NAME FROM b_crm_item_category")
            if c.num_rows:
                names = _align(c.column("ID").combine_chunks(), _text(c.column("NAME")).combine_chunks(), cat)
        table = _with(table, "CATEGORY_NAME", names)
        ent = pc.binary_join_element_wise(f"DYNAMIC_{et}_STAGE", pc.cast(cat, pa.string()), "_")
        stage = table.column("STAGE_ID") if "STAGE_ID" in table.column_names else pa.nulls(table.num_rows, pa.string())
        sname, ssem = _stage_names(db, ent, stage)
        table = _with(table, "STAGE_NAME", sname)
        table = _with(table, "STAGE_SEMANTICS", ssem)
        table = _with(table, "CONTACT_IDS", _bindings(db, "b_crm_entity_contact", "ENTITY_ID", "CONTACT_ID", ids, lo, hi))
        table = _user_columns(db, table, "ASSIGNED_BY_ID", "ASSIGNED_BY")
        # user fields are columns of the item table; ENTITY_ID CRM_<b_crm_dynamic_type.ID>
        type_row = db.execute("SELECT ID FROM b_crm_dynamic_type").fetchone() if _has(db, "b_crm_dynamic_type") else None
        if type_row is not None:
            meta = _user_fields(db, f"CRM_{type_row[0]}")
            for c in table.column_names:
                if c.startswith("UF_") and c in meta:
                    table = _with(table, c, _decode_uf(table.column(c).combine_chunks(), meta[c], _enc(prep)))
        return table


class BackupListElementSource(BackupTableSource):
    """Universal-list elements of one iblock (``iblock_id``): ``b_iblock_element`` rows of that iblock that are
    not workflow copies (``WF_PARENT_ELEMENT_ID`` empty, ``WF_STATUS_ID`` 1), with one column per property,
    named by its CODE (else ``PROPERTY_<id>``): list values as their labels, multiple values '; '-joined. Both
    value layouts: VERSION 1 (``b_iblock_element_property``) and 2 (``b_iblock_element_prop_s<id>``/``_m<id>``)."""

    entity = "list_element"

    def __init__(self, path, *, iblock_id: int, **kw):
        super().__init__(path, **kw)
        self.iblock_id = int(iblock_id)

    def main_table(self) -> str:
        return "b_iblock_element"

    def params(self) -> dict:
        return {"entity": self.entity, "iblock": self.iblock_id}

    def spills(self) -> list[Spill]:
        ib = self.iblock_id

        def elements(t: pa.Table, pre: Prepass) -> pa.Array:
            mask = self._element_mask(t)
            ids = pc.cast(t.filter(mask).column("ID"), pa.int64()).to_numpy()
            pre.state.setdefault("_ids", []).append(ids)
            return pa.array(np.zeros(t.num_rows, dtype=bool))  # nothing stored: the main pass reads them

        def of_elements(t: pa.Table, pre: Prepass) -> pa.Array | None:
            chunks = pre.state.get("_ids")
            if chunks is None:
                return None
            if not isinstance(chunks, np.ndarray):
                chunks = np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
                pre.state["_ids"] = chunks
            col = pc.cast(t.column("IBLOCK_ELEMENT_ID"), pa.int64()).to_numpy(zero_copy_only=False)
            return pa.array(np.isin(col, chunks))

        return [Spill("b_iblock", ["ID", "IBLOCK_TYPE_ID", "CODE", "NAME", "VERSION"], keep=_eq("ID", ib)),
                Spill("b_iblock_element", ["ID"], keep=elements),
                Spill(f"b_iblock_element_prop_s{ib}", None, index=("IBLOCK_ELEMENT_ID",)),
                Spill(f"b_iblock_element_prop_m{ib}", None, index=("IBLOCK_ELEMENT_ID",)),
                Spill("b_iblock_element_property", None, keep=of_elements, index=("IBLOCK_ELEMENT_ID",)),
                Spill("b_iblock_property", ["ID", "IBLOCK_ID", "NAME", "CODE", "PROPERTY_TYPE", "MULTIPLE",
                                            "USER_TYPE", "SORT"], keep=_eq("IBLOCK_ID", ib)),
                Spill("b_iblock_property_enum", ["ID", "PROPERTY_ID", "VALUE", "SORT", "XML_ID"]), _USER_SPILL]

    def _prepass(self, db):
        prep = super()._prepass(db)
        prep["state"].pop("_ids", None)
        return prep

    def _element_mask(self, t: pa.Table) -> pa.Array:
        mask = pc.equal(pc.cast(t.column("IBLOCK_ID"), pa.int64()), self.iblock_id).fill_null(False)
        if "WF_PARENT_ELEMENT_ID" in t.column_names:
            mask = pc.and_(mask, pc.is_null(t.column("WF_PARENT_ELEMENT_ID")))
        if "WF_STATUS_ID" in t.column_names:
            mask = pc.and_(mask, pc.equal(pc.fill_null(pc.cast(t.column("WF_STATUS_ID"), pa.int64()), 1), 1))
        return mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask

    def keep_rows(self, table):
        return self._element_mask(table)

    def _properties(self, db) -> list[tuple]:
        if not _has(db, "b_iblock_property"):
            return []
        return db.execute("SELECT ID, CODE, PROPERTY_TYPE, MULTIPLE, NAME FROM b_iblock_property ORDER BY SORT, ID"
                          ).fetchall()

    @staticmethod
    def _prop_column(pid, code) -> str:
        return str(code) if code else f"PROPERTY_{pid}"

    def derived_columns(self, prep):
        db = sqlite3.connect(prep["db"])
        try:
            return [self._prop_column(p[0], p[1]) for p in self._properties(db)] + [
                "CREATED_BY_LOGIN", "CREATED_BY_EMAIL", "CREATED_BY_NAME"]
        finally:
            db.close()

    def enrich(self, table, db, prep):
        ids, lo, hi = _ids(table)
        props = self._properties(db)
        enums: dict[str, str] = {}
        if _has(db, "b_iblock_property_enum"):
            enums = {str(i): v for i, v in db.execute("SELECT ID, VALUE FROM b_iblock_property_enum")}
        version = db.execute("SELECT VERSION FROM b_iblock").fetchone() if _has(db, "b_iblock") else None
        v2 = version is not None and str(version[0]) == "2"
        s_table, m_table = f"b_iblock_element_prop_s{self.iblock_id}", f"b_iblock_element_prop_m{self.iblock_id}"
        single = _fetch(db, f"SELECT * FROM {_q(s_table)} WHERE IBLOCK_ELEMENT_ID BETWEEN ? AND ?", (lo, hi)) \
            if v2 and _has(db, s_table) else None
        for pid, code, ptype, multiple, _name in props:
            name = self._prop_column(pid, code)
            if v2 and multiple != "Y" and single is not None and f"PROPERTY_{pid}" in single.column_names:
                keys = single.column("IBLOCK_ELEMENT_ID").combine_chunks()
                vals = _text(single.column(f"PROPERTY_{pid}")).combine_chunks()
                if single.num_rows == 0:
                    vals = pa.array([], pa.string())
            else:
                src = m_table if v2 else "b_iblock_element_property"
                if not _has(db, src):
                    table = _with(table, name, pa.nulls(table.num_rows, pa.string()))
                    continue
                cols = _columns(db, src)
                val = "VALUE_ENUM" if ptype == "L" and "VALUE_ENUM" in cols else "VALUE"
                t = _fetch(db, f"SELECT IBLOCK_ELEMENT_ID, {_q(val)} AS V FROM {_q(src)} WHERE IBLOCK_PROPERTY_ID = ? "
                               f"AND IBLOCK_ELEMENT_ID BETWEEN ? AND ? ORDER BY IBLOCK_ELEMENT_ID, ID", (pid, lo, hi))
                keys, vals = _group_join(t, "IBLOCK_ELEMENT_ID", "V")
            if ptype == "L" and enums and len(vals):
                parts = pc.split_pattern(vals, SEP)
                flat = pc.list_flatten(parts)
                labels = pc.take(pa.array(list(enums.values()), pa.string()),
                                 pc.index_in(flat, value_set=pa.array(list(enums.keys()), pa.string())))
                labels = pc.coalesce(labels, flat)
                vals = pc.binary_join(pa.ListArray.from_arrays(parts.offsets, labels), SEP)
            table = _with(table, name, _align(keys, vals, ids))
        return _user_columns(db, table, "CREATED_BY", "CREATED_BY")


ENTITY_SOURCES: dict[str, type[BackupTableSource]] = {
    "company": BackupCompanySource,
    "contact": BackupContactSource,
    "deal": BackupDealSource,
    "smart_process": BackupSmartProcessSource,
    "list_element": BackupListElementSource,
    "table": BackupTableSource,
}


def make_backup_source(entity: str, path: str | Path, **kw) -> BackupTableSource:
    cls = ENTITY_SOURCES.get(entity)
    if cls is None:
        raise TerminalError(f"unknown backup entity {entity!r} (one of {', '.join(ENTITY_SOURCES)})")
    import inspect

    accepted = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    return cls(path, **{k: v for k, v in kw.items() if v is not None and k in accepted})
