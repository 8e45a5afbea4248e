"""The field mapping: canonical entity fields made from source columns, vectorised over a batch."""

from __future__ import annotations

import string
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from etl.config import FieldSpec
from etl.stages.base import ROW, StageResult, no_rejects, rejects_where
from schemas import Entity

LINK_PREFIX = "_link_"  # the source id of the linked record, before the crosswalk resolves it


def _as_text(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    return arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())


def _empty_to_null(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_string(arr.type):
        return arr
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def concat_skip_nulls(parts: list[pa.ChunkedArray], sep: str) -> pa.ChunkedArray:
    """Join text columns row-wise, leaving out nulls; all-null rows stay null.

    (pyarrow's binary_join_element_wise with null_handling="skip" drops all-null rows in pyarrow 26.)
    """
    out = parts[0]
    for part in parts[1:]:
        joined = pc.binary_join_element_wise(out, part, sep)  # null where either is null
        out = pc.if_else(pc.is_null(out), part, pc.if_else(pc.is_null(part), out, joined))
    return out


def cast_column(arr: pa.ChunkedArray, type_: pa.DataType) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """Cast to the field type. Returns the cast column and a mask of values that could not be cast (or None)."""
    if arr.type == type_:
        return arr, None
    if pa.types.is_null(arr.type):
        return pa.chunked_array([pa.nulls(len(arr), type_)]), None
    if pa.types.is_string(type_):
        return pc.cast(arr, type_), None
    try:
        return pc.cast(arr, type_), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # per distinct value: find the ones that do not cast, null them, report them
    uniq = pc.unique(arr).drop_null()
    bad = []
    for v in uniq.to_pylist():
        try:
            pc.cast(pa.array([v], arr.type), type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad.append(v)
    bad_mask = pc.is_in(arr, value_set=pa.array(bad, arr.type))
    cleaned = pc.if_else(bad_mask, pa.scalar(None, arr.type), arr)
    return pc.cast(cleaned, type_), bad_mask


class Mapper:
    """Builds the canonical table of one entity from a batch of source rows."""

    def __init__(self, entity: Entity, mapping: dict[str, str | FieldSpec], links: dict[str, Any]):
        self.entity = entity
        self.mapping = {k: (FieldSpec(column=v) if isinstance(v, str) else v) for k, v in mapping.items()}
        self.links = links

    def _value(self, table: pa.Table, spec: FieldSpec) -> pa.ChunkedArray:
        n = table.num_rows
        if spec.column is not None:
            arr = table.column(spec.column)
        elif spec.const is not None:
            arr = pa.chunked_array([pa.array([spec.const] * n, pa.scalar(spec.const).type)])
        elif spec.concat is not None:
            parts = [_empty_to_null(_as_text(table.column(c))) for c in spec.concat]
            arr = concat_skip_nulls(parts, spec.sep)
        else:  # template
            pieces: list = []
            for literal, fname, _, _ in string.Formatter().parse(spec.template or ""):
                if literal:
                    pieces.append(pa.scalar(literal))
                if fname:
                    pieces.append(pc.fill_null(_as_text(table.column(fname)), ""))
            arr = pc.binary_join_element_wise(*pieces, "") if pieces else pa.chunked_array([pa.array([""] * n, pa.string())])
            arr = pc.utf8_trim_whitespace(arr)
        arr = _empty_to_null(arr)
        if spec.map is not None:
            arr = self._value_map(arr, spec)
        elif spec.default is not None:
            arr = pc.fill_null(arr, pa.scalar(spec.default).cast(arr.type) if arr.type != pa.null() else spec.default)
        return arr

    @staticmethod
    def _value_map(arr: pa.ChunkedArray, spec: FieldSpec) -> pa.ChunkedArray:
        keys = pc.unique(_as_text(arr)).drop_null().to_pylist()
        table = {str(k): v for k, v in (spec.map or {}).items()}
        targets = [table.get(k, spec.default) for k in keys]
        text = _as_text(arr)
        idx = pc.index_in(text, value_set=pa.array(keys, pa.string()))
        values = pa.array(targets)
        out = pc.take(values, idx) if len(keys) else pa.chunked_array([pa.nulls(len(arr), values.type)])
        return out

    def unmapped(self, table: pa.Table) -> dict[str, pa.ChunkedArray]:
        """Per value-mapped field, a mask of source values that have no entry and no default."""
        out = {}
        for target, spec in self.mapping.items():
            if spec.map is not None and spec.default is None and spec.column is not None:
                text = _empty_to_null(_as_text(table.column(spec.column)))
                known = pa.array([str(k) for k in spec.map], pa.string())
                out[target] = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=known)))
        return out

    def apply(self, table: pa.Table) -> StageResult:
        """Map a batch. Rejects: values with no entry in a value map, values that do not fit the field's type,
        empty required fields."""
        rejects = []
        for target, mask in self.unmapped(table).items():
            col = self.mapping[target].column
            res = rejects_where(table, mask, "unmapped_value", col,
                                f"value {{value!r}} of column «{{field}}» has no entry in the map of {target!r}")
            table, _ = res.kept, rejects.append(res.rejects)
        cols: dict[str, pa.ChunkedArray] = {}
        bad_masks = []
        for f in self.entity.fields:
            spec = self.mapping.get(f.name)
            if spec is None:
                cols[f.name] = pa.chunked_array([pa.nulls(table.num_rows, f.type)])
                continue
            value, bad = cast_column(self._value(table, spec), f.type)
            cols[f.name] = value
            if bad is not None:
                bad_masks.append((f.name, spec.column, bad))
        out = pa.table(cols)
        for name in (ROW, "_file", "_line", "_source_id"):
            if name in table.column_names:
                out = out.append_column(name, table.column(name))
        for lname, link in self.links.items():
            out = out.append_column(LINK_PREFIX + lname, _empty_to_null(_as_text(table.column(link.column))))
        for i, (fname, col, bad) in enumerate(bad_masks):
            out = out.append_column(f"_bad{i}", bad).append_column(f"_raw{i}", table.column(col) if col else cols[fname])
        for i, (fname, col, _) in enumerate(bad_masks):
            res = rejects_where(out, out.column(f"_bad{i}"), "bad_value", f"_raw{i}",
                                f"value {{value!r}} does not fit field {fname!r}")
            out = res.kept
            rej = res.rejects
            rejects.append(rej.set_column(3, "field", pa.array([col or fname] * rej.num_rows, pa.string())))
        if bad_masks:
            out = out.drop_columns([c for c in out.column_names if c.startswith(("_bad", "_raw"))])
        for req in self.entity.required:
            res = rejects_where(out, pc.is_null(out.column(req)), "missing_required", req,
                                f"required field {req!r} is empty")
            out, _ = res.kept, rejects.append(res.rejects)
        return StageResult(out, pa.concat_tables(rejects) if rejects else no_rejects())
