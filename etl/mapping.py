"""The field mapping: canonical entity fields made from source columns, vectorised over a batch."""

from __future__ import annotations

import re
import string
from pathlib import Path
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
    if pa.types.is_timestamp(arr.type) and pa.types.is_timestamp(type_):
        return pc.cast(arr, type_, safe=False), None  # finer units are truncated to the field's (whole seconds)
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


def _zero_stripped(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Leading zeros of every digit group dropped and lower case: how a date's text and its round trip compare."""
    return pc.utf8_lower(pc.replace_substring_regex(text, pattern=r"(^|\D)0+(\d)", replacement=r"\1\2"))


def parse_dates(text: pa.ChunkedArray, formats: list[str]) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Text in any of the strptime ``formats`` (first that fits wins) -> timestamp[s]; and a mask of the values
    present that fit none. A date that exists in no calendar (31/02) does not fit: it must come back the same."""
    text = _empty_to_null(pc.utf8_trim_whitespace(text))
    out = pa.chunked_array([pa.nulls(len(text), pa.timestamp("s"))])
    rest = text
    for fmt in formats:  # each later format only over what the earlier ones left
        ts = pc.strptime(rest, format=fmt, unit="s", error_is_null=True)
        back = pc.strftime(ts, format=fmt)
        same = pc.equal(_zero_stripped(back), _zero_stripped(rest))
        ok = pc.fill_null(pc.and_(pc.fill_null(same, False), pc.greater_equal(pc.year(ts), 1000)), False)
        out = pc.if_else(ok, ts, out)
        rest = pc.if_else(ok, pa.scalar(None, pa.string()), rest)
    bad = pc.and_(pc.is_valid(text), pc.is_null(out))
    return out, bad


def parse_numbers(text: pa.ChunkedArray, decimal: str = ".", thousands: str | None = None
                  ) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Text with the given decimal mark and grouping -> float64; and a mask of the values present that are no
    number in that format."""
    text = _empty_to_null(pc.utf8_trim_whitespace(text))
    s = text
    if thousands:
        seps = {thousands} | ({"\u00a0", "\u202f"} if thousands == " " else set())
        for sep in seps:
            s = pc.replace_substring(s, pattern=sep, replacement="")
    dec = re.escape(decimal)
    ok = pc.fill_null(pc.match_substring_regex(s, pattern=rf"^[-+]?(?:\d+(?:{dec}\d*)?|{dec}\d+)$"), False)
    s = pc.replace_substring(pc.if_else(ok, s, pa.scalar(None, pa.string())), pattern=decimal, replacement=".")
    values = pc.cast(pc.replace_substring_regex(s, pattern=r"^\+", replacement=""), pa.float64())
    return values, pc.and_(pc.is_valid(text), pc.invert(ok))


_NAME_SPLIT = re.compile(r"[\s.,]+")


def _name_tokens(v: str) -> list[str]:
    return [t for t in _NAME_SPLIT.split(v.casefold().replace("ё", "е")) if t]


def name_key(v: str) -> str:
    """The key a person's name is matched by: case, ё, spacing and word order do not count; initials match the
    first letters of the first and middle name."""
    tokens = _name_tokens(v)
    longs = sorted(t for t in tokens if len(t) > 1)
    inits = "".join(t for t in tokens if len(t) == 1)
    return f"i:{' '.join(longs)}|{inits}" if inits else f"f:{' '.join(longs)}"


def name_keys(fio: str) -> list[str]:
    """Every key a full name written «Фамилия Имя Отчество» is known by (see name_key)."""
    t = _name_tokens(fio)
    keys = [f"f:{' '.join(sorted(t))}"]
    if len(t) >= 2:
        keys += [f"f:{' '.join(sorted(t[:2]))}", f"i:{t[0]}|{t[1][0]}"]
    if len(t) >= 3:
        keys.append(f"i:{t[0]}|{t[1][0]}{t[2][0]}")
    return keys


def _lower_key(v: str) -> str:
    return " ".join(v.casefold().replace("ё", "е").split())


class LookupTable:
    """A lookup file read once (through the 1C flat source: the same encoding and delimiter detection)."""

    def __init__(self, spec: Any, base_dir: Path):
        from connectors.onec.flat import FlatFileSource

        src = FlatFileSource(spec.file, base_dir=base_dir, encoding=spec.encoding, delimiter=spec.delimiter,
                             name=f"lookup {spec.file}")
        self.normalise = spec.normalise
        table: dict[str, Any] = {}
        ambiguous: set[str] = set()
        for batch in src.read(None, 100_000):
            for k, v in zip(batch.table.column(spec.key).to_pylist(), batch.table.column(spec.value).to_pylist()):
                if k is None:
                    continue
                keys = name_keys(k) if self.normalise == "name" else [self.key(k)]
                for key in dict.fromkeys(keys):
                    if key in table and table[key] != v:
                        ambiguous.add(key)  # two people known by this key: it matches neither
                    table.setdefault(key, v)
        for key in ambiguous:
            del table[key]
        self.table = table

    def key(self, v: str) -> str:
        if self.normalise == "name":
            return name_key(v)
        if self.normalise == "lower":
            return _lower_key(v)
        return v

    def get(self, v: str) -> Any:
        return self.table.get(self.key(v))


class Mapper:
    """Builds the canonical table of one entity from a batch of source rows."""

    def __init__(self, entity: Entity, mapping: dict[str, str | FieldSpec], links: dict[str, Any],
                 base_dir: Path | str | None = None):
        self.entity = entity
        self.mapping = {k: (FieldSpec(column=v) if isinstance(v, str) else v) for k, v in mapping.items()}
        self.links = links
        self.base_dir = Path(base_dir) if base_dir is not None else Path(".")
        self._lookups: dict[str, LookupTable] = {}

    def lookup_table(self, target: str, spec: FieldSpec) -> LookupTable:
        if target not in self._lookups:
            self._lookups[target] = LookupTable(spec.lookup, self.base_dir)
        return self._lookups[target]

    def _source(self, table: pa.Table, spec: Any) -> pa.ChunkedArray:
        """The value of column / const / concat / template / cases, before formats, lookups and maps."""
        n = table.num_rows
        if getattr(spec, "cases", None) is not None:
            from etl.transform import _filter_mask

            values = [_empty_to_null(self._source(table, case)) for case in spec.cases]
            if len({v.type for v in values}) > 1:
                values = [_as_text(v) for v in values]
            out = pa.chunked_array([pa.nulls(n, values[0].type)]) if values else pa.chunked_array(
                [pa.nulls(n, pa.string())])
            for case, value in reversed(list(zip(spec.cases, values))):
                out = pc.if_else(_filter_mask(table, case.when), value, out)
            return out
        if spec.column is not None:
            arr = table.column(spec.column)
        elif spec.const is not None:
            arr = pa.chunked_array([pa.array([spec.const] * n, pa.scalar(spec.const).type)])
        elif getattr(spec, "concat", None) is not None:
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
        return arr

    def _premap(self, table: pa.Table, target: str, spec: FieldSpec
                ) -> tuple[pa.ChunkedArray, list[tuple[str, pa.ChunkedArray, pa.ChunkedArray, str]]]:
        """The value before the value map and default, and its problems: (reason, mask, raw value, message)."""
        arr = _empty_to_null(self._source(table, spec))
        problems = []
        src = f"column «{spec.column}»" if spec.column else f"field {target!r}"
        if spec.date is not None:
            raw = _as_text(arr)
            arr, bad = parse_dates(raw, spec.date.format)
            problems.append(("bad_date", bad, raw, f"value {{value!r}} of {src} is not a date in format "
                             + " or ".join(repr(f) for f in spec.date.format) + f" (field {target!r})"))
        elif spec.number is not None:
            raw = _as_text(arr)
            arr, bad = parse_numbers(raw, spec.number.decimal, spec.number.thousands)
            problems.append(("bad_number", bad, raw, f"value {{value!r}} of {src} is not a number with decimal "
                             f"mark {spec.number.decimal!r} (field {target!r})"))
        if spec.lookup is not None:
            lk = self.lookup_table(target, spec)
            text = _as_text(arr)
            uniq = pc.unique(text).drop_null().to_pylist()
            found = [lk.get(u) for u in uniq]
            default = spec.lookup.default
            vals = [f if f is not None else (None if default is None else str(default)) for f in found]
            idx = pc.index_in(text, value_set=pa.array(uniq, pa.string()))
            arr = pc.take(pa.array(vals, pa.string()), idx) if uniq else pa.chunked_array(
                [pa.nulls(len(text), pa.string())])
            if default is None:
                missing = [u for u, f in zip(uniq, found) if f is None]
                bad = pc.is_in(text, value_set=pa.array(missing, pa.string()))
                problems.append(("unmatched_lookup", bad, text,
                                 f"value {{value!r}} of {src} has no match in column «{spec.lookup.key}» of "
                                 f"{spec.lookup.file} (field {target!r})"))
        return arr, problems

    def _value(self, table: pa.Table, spec: FieldSpec, target: str = "") -> pa.ChunkedArray:
        arr, _ = self._premap(table, target, spec)
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

    def unmapped(self, table: pa.Table, only: str | None = None) -> dict[str, pa.ChunkedArray]:
        """Per value-mapped field (or the one named), a mask of source values that have no entry and no default."""
        out = {}
        for target, spec in self.mapping.items():
            if only is not None and target != only:
                continue
            if spec.map is not None and spec.default is None:
                text = _empty_to_null(_as_text(self._premap(table, target, spec)[0]))
                known = pa.array([str(k) for k in spec.map], pa.string())
                out[target] = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=known)))
        return out

    def constructor_rejects(self, table: pa.Table) -> StageResult:
        """Rows whose value does not parse in the field's date/number format, or has no match in its lookup."""
        rejects = []
        for target, spec in self.mapping.items():
            if spec.date is None and spec.number is None and spec.lookup is None:
                continue
            _, problems = self._premap(table, target, spec)
            names = []
            for i, (_, mask, raw, _) in enumerate(problems):
                table = table.append_column(f"_cmask{i}", mask).append_column(f"_craw{i}", raw)
                names += [f"_cmask{i}", f"_craw{i}"]
            for i, (reason, _, _, msg) in enumerate(problems):
                res = rejects_where(table, table.column(f"_cmask{i}"), reason, f"_craw{i}", msg)
                table, rej = res.kept, res.rejects
                rejects.append(rej.set_column(3, "field", pa.array([spec.column or target] * rej.num_rows,
                                                                      pa.string())))
            table = table.drop_columns(names)
        return StageResult(table, pa.concat_tables(rejects) if rejects else no_rejects())

    def apply(self, table: pa.Table) -> StageResult:
        """Map a batch. Rejects: values with no entry in a value map, values that do not fit the field's type,
        empty required fields."""
        rejects = []
        res = self.constructor_rejects(table)
        table, _ = res.kept, rejects.append(res.rejects)
        for target in [t for t, sp in self.mapping.items() if sp.map is not None and sp.default is None]:
            mask = self.unmapped(table, target)[target]  # on the table as it is now: earlier fields may have rejected
            col = self.mapping[target].column
            if col is None:  # the mapped value is made (cases, lookup): report the value the map was given
                value = _as_text(self._premap(table, target, self.mapping[target])[0])
                table = table.append_column("_cvalue", value)
                res = rejects_where(table, mask, "unmapped_value", "_cvalue",
                                    f"value {{value!r}} of field {target!r} has no entry in its map")
                table = res.kept.drop_columns(["_cvalue"])
                rejects.append(res.rejects.set_column(3, "field", pa.array([target] * res.rejects.num_rows,
                                                                             pa.string())))
                continue
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
            value, bad = cast_column(self._value(table, spec, f.name), f.type)
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
