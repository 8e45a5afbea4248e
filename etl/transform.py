"""One batch from source rows to canonical records: key, filter, stages, mapping, duplicate keys, links, hash.

Pure transformation: it reads the crosswalk (to resolve links) but writes nothing. Every row that leaves the batch
leaves as a reject with a stage, a reason and a message naming file, line, field and value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import FILE_COLUMN, HASH, KEY_SEP, LINE_COLUMN, REJECT_SCHEMA, SOURCE_ID, record_json
from etl.config import ColumnRule, Pipeline
from etl.mapping import LINK_PREFIX, Mapper
from etl.stages import ROW, STAGE_REJECT_SCHEMA, STAGES, Stage, StageContext, StageResult, no_rejects, rejects_where
from schemas import Entity, get_entity

# resolve(pipeline, source ids) -> {source id: target id}
Resolver = Callable[[str, list[str]], dict[str, str]]


@dataclass
class Transformed:
    records: pa.Table  # canonical fields + link id fields + _row, _file, _line, _source_id, _hash
    rejects: "Rejects"  # every row of the batch that did not make it, with its original row

    def reject(self, rows: pa.Table, stage: str, reason: str | list[str], messages: list[str], fields: list | None = None,
               values: list | None = None) -> None:
        """Reject canonical ``rows`` (they carry _row) at a later step: load, plan."""
        n = rows.num_rows
        if not n:
            return
        self.rejects.add_stage(stage, pa.table({
            ROW: rows.column(ROW), "reason": [reason] * n if isinstance(reason, str) else reason, "message": messages,
            "field": fields or [None] * n,
            "value": values if values is not None else rows.column(SOURCE_ID).to_pylist()}, schema=STAGE_REJECT_SCHEMA))


class Rejects:
    """Collects rejects of one batch, in REJECT_SCHEMA, with the original row of each."""

    def __init__(self, originals: pa.Table, ids: pa.ChunkedArray | None, key_cols: list[str]):
        self.originals = originals
        self.ids = ids
        self.key_cols = key_cols
        self.parts: list[pa.Table] = []

    def add_stage(self, stage: str, rej: pa.Table) -> None:
        if rej.num_rows == 0:
            return
        rows = rej.column(ROW).to_pylist()
        orig = self.originals.take(pa.array(rows, pa.int64())).to_pylist()
        ids = self.ids.take(pa.array(rows, pa.int64())).to_pylist() if self.ids is not None else [None] * len(rows)
        out = []
        for o, sid, reason, msg, fld, val in zip(orig, ids, rej.column("reason").to_pylist(),
                                                 rej.column("message").to_pylist(), rej.column("field").to_pylist(),
                                                 rej.column("value").to_pylist()):
            f, line = o.get(FILE_COLUMN), o.get(LINE_COLUMN)
            where = ", ".join(x for x in (f, f"line {line}" if line is not None else None) if x)
            out.append(dict(stage=stage, reason=reason, message=f"{where}: {msg}" if where else msg, file=f,
                            line=line, field=fld, value=val, source_id=sid,
                            record=record_json({k: v for k, v in o.items() if k != ROW})))
        self.parts.append(pa.Table.from_pylist(out, schema=REJECT_SCHEMA))

    def add_source(self, rej: pa.Table) -> None:
        """Rejects the source made itself: fill in the source id from the record where the key columns are there."""
        if rej.num_rows == 0:
            return
        ids = []
        for rec, sid in zip(rej.column("record").to_pylist(), rej.column("source_id").to_pylist()):
            if sid is None and rec:
                try:
                    d = json.loads(rec)
                    vals = [d.get(k) for k in self.key_cols]
                    sid = KEY_SEP.join(str(v).strip() for v in vals) if all(vals) else None
                except (ValueError, AttributeError):
                    sid = None
            ids.append(sid)
        self.parts.append(rej.set_column(rej.schema.get_field_index("source_id"), "source_id",
                                         pa.array(ids, pa.string())).cast(REJECT_SCHEMA))

    def add_table(self, rej: pa.Table) -> None:
        if rej.num_rows:
            self.parts.append(rej.cast(REJECT_SCHEMA))

    def table(self) -> pa.Table:
        return pa.concat_tables(self.parts) if self.parts else REJECT_SCHEMA.empty_table()


def _as_text(v) -> str:
    """A YAML value as Arrow writes the same value in text (booleans are true/false)."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _filter_mask(table: pa.Table, rule: ColumnRule) -> pa.ChunkedArray:
    """True where a row passes the rule."""
    col = table.column(rule.column)
    text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
    masks = []
    if rule.equals is not None:
        masks.append(pc.equal(text, _as_text(rule.equals)))
    if rule.not_equals is not None:
        masks.append(pc.or_kleene(pc.not_equal(text, _as_text(rule.not_equals)), pc.is_null(text)))
    if rule.in_ is not None:
        masks.append(pc.is_in(text, value_set=pa.array([_as_text(v) for v in rule.in_], pa.string())))
    if rule.not_in is not None:
        masks.append(pc.invert(pc.is_in(text, value_set=pa.array([_as_text(v) for v in rule.not_in], pa.string()))))
    if rule.not_empty:
        masks.append(pc.and_(pc.is_valid(text), pc.not_equal(pc.fill_null(text, ""), "")))
    if rule.matches is not None:
        masks.append(pc.match_substring_regex(text, rule.matches))
    out = pa.chunked_array([pa.array([True] * table.num_rows, pa.bool_())])
    for m in masks:
        out = pc.and_(out, pc.fill_null(m, False))
    return out


def content_hash(table: pa.Table, columns: list[str]) -> pa.Array:
    """A 64-bit content hash per row over the given columns, as its decimal text."""
    parts = []
    for c in columns:
        col = table.column(c)
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        parts.append(pc.fill_null(text, "\x00"))
    joined = pc.binary_join_element_wise(*parts, "\x1f") if parts else pa.array([""] * table.num_rows, pa.string())
    series = joined.to_pandas() if isinstance(joined, (pa.Array, pa.ChunkedArray)) else pd.Series(joined)
    hashes = pd.util.hash_pandas_object(series, index=False).to_numpy()
    return pc.cast(pa.array(hashes, pa.uint64()), pa.string())


class Transformer:
    """Turns a source batch of one pipeline into canonical records and rejects."""

    def __init__(self, pipeline: Pipeline, resolve: Resolver, context: StageContext | None = None):
        self.pipeline = pipeline
        self.cfg = pipeline.config
        self.entity: Entity = get_entity(self.cfg.entity)
        context = context or StageContext(pipeline=pipeline.name)
        self.stages: list[tuple[str, Stage]] = [
            (s.type, STAGES[s.type](dict(s.model_extra or {}), context)) for s in self.cfg.stages]
        self.mapper = Mapper(self.entity, self.cfg.mapping, self.cfg.links, base_dir=context.project_dir)
        self.resolve = resolve
        # seen(ids) -> the ids already read earlier in this pass; set by the runner once it knows the pass
        self.seen: Callable[[list[str]], set[str]] | None = None
        self.link_required = {
            name: (spec.required if spec.required is not None else bool(getattr(self.entity.link(name), "required", False)))
            for name, spec in self.cfg.links.items()}
        self.hash_columns = self.entity.field_names + [self.entity.link(n).id_field for n in self.cfg.links]

    def close(self) -> None:
        for _, stage in self.stages:
            stage.close()

    def source_ids(self, table: pa.Table) -> pa.ChunkedArray:
        parts = []
        for k in self.cfg.key:
            col = table.column(k)
            text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
            text = pc.utf8_trim_whitespace(text)
            parts.append(pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text))
        if len(parts) == 1:
            return parts[0]
        return pc.binary_join_element_wise(*parts, KEY_SEP, null_handling="emit_null")

    def transform(self, source_table: pa.Table, source_rejects: pa.Table) -> Transformed:
        n = source_table.num_rows
        table = source_table.append_column(ROW, pa.array(range(n), pa.int64()))
        ids = self.source_ids(table)
        rejects = Rejects(table, ids, self.cfg.key)
        rejects.add_source(source_rejects)
        table = table.append_column(SOURCE_ID, ids)

        res = rejects_where(table, pc.is_null(ids), "missing_key", self.cfg.key[0],
                            f"key column(s) {', '.join('«' + k + '»' for k in self.cfg.key)} empty")
        table = res.kept
        rejects.add_stage("key", res.rejects)

        # duplicate keys: a key already seen earlier in this pass (in this batch or an earlier one, accepted or
        # rejected) is a duplicate, whatever happens to its first row and wherever the batches end
        table = self._drop_duplicates(table, source_rejects, rejects)

        if self.cfg.filter:
            keep = None
            for rule in self.cfg.filter:
                m = _filter_mask(table, rule)
                keep = m if keep is None else pc.and_(keep, m)
            res = rejects_where(table, pc.invert(keep), "filtered", None, "excluded by the pipeline's filter")
            table = res.kept
            rejects.add_stage("filter", res.rejects)

        for name, stage in self.stages:
            res = stage.process(table)
            table = res.kept
            rejects.add_stage(name, res.rejects)

        res = self.mapper.apply(table)
        records = res.kept
        rejects.add_stage("map", res.rejects)

        records, link_rejects = self._resolve_links(records)
        rejects.add_stage("link", link_rejects)

        records = records.append_column(HASH, content_hash(records, self.hash_columns))
        return Transformed(records, rejects)

    def _drop_duplicates(self, table: pa.Table, source_rejects: pa.Table, rejects: Rejects) -> pa.Table:
        sids = table.column(SOURCE_ID).to_pylist()
        dup = pd.Series(sids, dtype=object).duplicated(keep="first").to_numpy(copy=True)
        # rows the source could not read still took their key: a later row with it is a duplicate
        src_ids = rejects.parts[0].column("source_id").to_pylist() if source_rejects.num_rows and rejects.parts \
            else []
        src_lines = rejects.parts[0].column("line").to_pylist() if src_ids else []
        first_line: dict[str, int] = {}
        for sid, line in zip(src_ids, src_lines):
            if sid is not None:
                first_line[sid] = min(first_line.get(sid, line or 0), line or 0)
        earlier = self.seen(list(dict.fromkeys([*sids, *first_line]))) if self.seen else set()
        if first_line or earlier:
            lines = table.column(LINE_COLUMN).to_pylist() if LINE_COLUMN in table.column_names else [None] * len(sids)
            for i, (sid, line) in enumerate(zip(sids, lines)):
                if sid in earlier or (sid in first_line and (line is None or first_line[sid] < line)):
                    dup[i] = True
        res = rejects_where(table, pa.array(dup, pa.bool_()), "duplicate_key", SOURCE_ID,
                            "key {value!r} appears more than once in this pass (the first one is kept)")
        rejects.add_stage("dedupe", res.rejects)
        return res.kept

    def _resolve_links(self, records: pa.Table) -> tuple[pa.Table, pa.Table]:
        all_rejects = []
        for lname, spec in self.cfg.links.items():
            link = self.entity.link(lname)
            col = LINK_PREFIX + lname
            keys = records.column(col)
            distinct = [k for k in pc.unique(keys).to_pylist() if k is not None]
            found = self.resolve(spec.pipeline, distinct) if distinct else {}
            known = pa.array(list(found), pa.string())
            targets = pa.array(list(found.values()), pa.string())
            idx = pc.index_in(keys, value_set=known)
            ids = pc.take(targets, idx) if len(known) else pa.nulls(records.num_rows, pa.string())
            records = records.append_column(link.id_field, ids)
            missing = pc.and_(pc.is_valid(keys), pc.is_null(ids))
            res = rejects_where(records, missing, "unresolved_link", col,
                                f"{link.entity} {{value!r}} (column «{spec.column}») is not loaded by pipeline "
                                f"{spec.pipeline!r}")
            records = res.kept
            all_rejects.append(_field(res.rejects, spec.column))
            if self.link_required[lname]:
                res = rejects_where(records, pc.is_null(records.column(col)), "missing_link", col,
                                    f"required link {lname!r} is empty (column «{spec.column}»)")
                records = res.kept
                all_rejects.append(_field(res.rejects, spec.column))
        return records, (pa.concat_tables(all_rejects) if all_rejects else no_rejects())


def _field(rej: pa.Table, name: str) -> pa.Table:
    return rej.set_column(3, "field", pa.array([name] * rej.num_rows, pa.string()))


__all__ = ["Transformer", "Transformed", "content_hash", "KEY_SEP", "StageResult"]
