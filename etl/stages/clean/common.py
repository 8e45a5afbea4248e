"""What the cleaning stages share: option checks, the on_error policy, text normalisation, per-distinct-value maps.

Every cleaning stage reads one or more text columns, writes its result into the column(s) named by `into`
(default: in place), and decides per row whether the value is clean. A value that cannot be cleaned is handled by
`on_error`:

- ``reject`` (default): the record becomes a dead letter with the stage's reason code;
- ``keep``: the value goes on as typed (trimmed), the record is loaded;
- ``null``: the value is dropped (empty), the record is loaded.

``flag: COLUMN`` writes the reason code (or a note such as ``inn_zero_restored``) of every row into a column,
whatever on_error says, so that a `keep` or `null` pipeline can still map or report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import TerminalError
from etl.stages.base import ROW, STAGE_REJECT_SCHEMA, Stage, StageResult, no_rejects

ON_ERROR = ("reject", "keep", "null")

# spaces people and 1C put into values: NBSP, figure space, narrow NBSP, tabs, line breaks
SPACES_RE2 = r"[\s\x{00A0}\x{2007}\x{202F}\x{FEFF}]+"
SPACES_RE = re.compile(r"[\s\u00a0\u2007\u202f\ufeff]+")

# what Excel shows for a long number typed into a General cell: 7,91235E+10 (also 7.91235E+10, 7,9E10)
EXCEL_NUMBER_RE2 = r"^[+\-]?[0-9]+(?:[.,][0-9]+)?[eE][+\-]?[0-9]+$"
EXCEL_NUMBER_RE = re.compile(EXCEL_NUMBER_RE2.replace("[0-9]", r"\d"))

# Latin letters that look like Cyrillic ones and the other way round (people switch keyboard layouts mid-word)
_LAT_TO_CYR = str.maketrans("aceopxyABCEHKMOPTX", "асеорхуАВСЕНКМОРТХ")
_CYR_TO_LAT = str.maketrans("асеорхуАВСЕНКМОРТХ", "aceopxyABCEHKMOPTX")
_CYR = re.compile(r"[\u0400-\u04ff]")
_LAT = re.compile(r"[A-Za-z]")


def fix_lookalikes(word: str) -> str:
    """A word mixing Cyrillic and Latin letters is brought to the script most of its letters are in."""
    cyr = len(_CYR.findall(word))
    lat = len(_LAT.findall(word))
    if not cyr or not lat:
        return word
    return word.translate(_LAT_TO_CYR) if cyr >= lat else word.translate(_CYR_TO_LAT)


# ---------------------------------------------------------------- arrays

def text(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A column as text (numbers a source typed are cast)."""
    if pa.types.is_string(arr.type):
        return arr
    return pc.cast(arr, pa.string())  # large_string, dictionary, numbers, null


def where_matches(arr: pa.Array, pattern: str, fn: Callable[[pa.Array], pa.Array], literal: bool = False) -> pa.Array:
    """``fn`` applied only to the values that match ``pattern`` (a regex, or a plain substring with literal=True);
    the others stay as they are. Most cells are already clean, and a regex rewrite of all of them is the cost."""
    find = pc.match_substring if literal else pc.match_substring_regex
    mask = pc.fill_null(find(arr, pattern), False)
    hits = pc.sum(mask).as_py() or 0
    if not hits:
        return arr
    if hits == len(arr):
        return fn(arr)
    return pc.replace_with_mask(arr, mask, fn(arr.filter(mask)))


def squeeze(arr) -> pa.Array:
    """Whitespace of any kind collapsed to one space, trimmed; an empty value becomes null. One contiguous array."""
    arr = as_array(text(arr))
    arr = where_matches(arr, r"\s\s|[\t\n\r\f\v\x{00A0}\x{2007}\x{202F}\x{FEFF}]",
                        lambda a: pc.replace_substring_regex(a, SPACES_RE2, " "))
    return empty_to_null(pc.utf8_trim_whitespace(arr))


def empty_to_null(arr):
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


def as_array(arr) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def distinct_map(arr: pa.Array, fn: Callable[[list[str]], Sequence[Sequence[Any]]], types: Sequence[pa.DataType],
                 mask: pa.Array | None = None) -> list[pa.Array]:
    """Apply ``fn`` once per distinct non-null value of ``arr`` (where ``mask`` is true, if given).

    ``fn`` gets the list of distinct values and returns one sequence of results per output (each as long as the
    list). The results are spread back over the rows; rows outside the mask or null get null.
    """
    arr = as_array(arr)
    n = len(arr)
    if mask is not None:
        arr = pc.if_else(mask, arr, pa.scalar(None, arr.type))
    enc = pc.dictionary_encode(arr)
    values = enc.dictionary.to_pylist()
    if not values:
        return [pa.nulls(n, t) for t in types]
    outs = fn(values)
    idx = enc.indices
    return [pc.take(pa.array(list(o), t), idx) for o, t in zip(outs, types)]


def concat_skip_nulls(parts: Sequence, sep: str) -> pa.Array:
    """Row-wise join of text arrays leaving nulls out; a row whose parts are all null stays null."""
    out = parts[0]
    for part in parts[1:]:
        joined = pc.binary_join_element_wise(out, part, sep)
        out = pc.if_else(pc.is_null(out), part, pc.if_else(pc.is_null(part), out, joined))
    return out


def coalesce(parts: Sequence) -> pa.Array:
    return parts[0] if len(parts) == 1 else pc.coalesce(*parts)


def digit_matrix(arr: pa.Array, length: int) -> np.ndarray:
    """Rows of ASCII digits, all ``length`` long and none null, as an (n, length) matrix of 0..9."""
    arr = as_array(arr)
    if len(arr) == 0:
        return np.zeros((0, length), dtype=np.int64)
    if arr.null_count:
        raise ValueError("digit_matrix needs an array without nulls")
    arr = pa.concat_arrays([arr])  # fresh buffers, offset 0
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[: len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    return (data.reshape(len(arr), length).astype(np.int64) - 48)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


# ---------------------------------------------------------------- options

def _is_name(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def unknown_keys(options: dict, allowed: Iterable[str]) -> str | None:
    from etl.config import suggest

    allowed = list(allowed)
    extra = [k for k in options if k not in allowed]
    if not extra:
        return None
    parts = []
    for k in extra:
        s = suggest(k, allowed)
        parts.append(f"{k!r}" + (f" (did you mean {s!r}?)" if s else ""))
    return f"unknown option(s) {', '.join(parts)}; valid: {', '.join(allowed)}"


def check_columns_option(options: dict, single: bool = False) -> str | None:
    cols = options.get("columns")
    if isinstance(cols, str):
        cols = [cols]
    if not isinstance(cols, list) or not cols or not all(_is_name(c) for c in cols):
        return "`columns:` must be a non-empty list of column names"
    if single and len(cols) != 1:
        return "`columns:` takes exactly one column here"
    return None


def check_choice(options: dict, key: str, choices: Sequence[str]) -> str | None:
    if key in options and options[key] not in choices:
        from etl.config import suggest

        s = suggest(str(options[key]), choices)
        return f"`{key}:` must be one of {', '.join(choices)} (got {options[key]!r})" + (
            f"; did you mean {s!r}?" if s else "")
    return None


def check_column_key(options: dict, key: str) -> str | None:
    if key in options and options[key] is not None and not _is_name(options[key]):
        return f"`{key}:` must be a column name"
    return None


@dataclass
class Cleaned:
    """What a stage's clean() found for one batch (all arrays as long as the batch)."""

    outputs: dict[str, pa.Array]  # column -> clean value (null where the value was bad and on_error is null)
    reason: pa.Array  # reason code where the value could not be cleaned, else null
    detail: pa.Array  # the message for those rows (names the column and the value)
    field: pa.Array  # the source column of the bad value
    value: pa.Array  # the bad value as written
    keep: dict[str, pa.Array] = field(default_factory=dict)  # column -> value to write on `on_error: keep`
    note: pa.Array | None = None  # informational codes for the flag column (e.g. inn_zero_restored)
    force: pa.Array | None = None  # rows rejected whatever on_error says (names: `companies: reject`)


class CleanStage(Stage):
    """Base of the cleaning stages: option checks, the on_error policy, the flag column, reject rows."""

    COMMON: ClassVar[tuple[str, ...]] = ("type", "columns", "into", "on_error", "flag")
    OPTIONS: ClassVar[tuple[str, ...]] = ()  # the stage's own option names
    SINGLE_COLUMN: ClassVar[bool] = False
    INTO_IS_MAPPING: ClassVar[bool] = False

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> str | None:
        options = {k: v for k, v in options.items() if k != "type"}
        err = unknown_keys(options, [k for k in cls.COMMON if k != "type"] + list(cls.OPTIONS))
        err = err or check_columns_option(options, cls.SINGLE_COLUMN)
        if "on_error" in options and options["on_error"] is None:  # YAML reads a bare `null` as None
            options["on_error"] = "null"
        err = err or check_choice(options, "on_error", ON_ERROR)
        err = err or check_column_key(options, "flag")
        if not err and not cls.INTO_IS_MAPPING:
            err = check_column_key(options, "into")
        return err or cls._check(options)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        return None

    @classmethod
    def output_columns(cls, options: dict[str, Any]) -> list[str]:
        """The columns this stage adds to the batch (for `etl validate`: a mapping may use them)."""
        out = [options["into"]] if isinstance(options.get("into"), str) else []
        if _is_name(options.get("flag")):
            out.append(options["flag"])
        return out

    # ------------------------------------------------------------ runtime
    @property
    def columns(self) -> list[str]:
        cols = self.options["columns"]
        return [cols] if isinstance(cols, str) else list(cols)

    @property
    def on_error(self) -> str:
        value = self.options.get("on_error", "reject")
        return "null" if value is None else value  # `on_error: null` in YAML is None

    def _need(self, table: pa.Table, names: Iterable[str]) -> None:
        missing = [c for c in names if c not in table.column_names]
        if missing:
            cols = ", ".join(f"«{c}»" for c in table.column_names if not c.startswith("_"))
            raise TerminalError(f"stage {self.type!r} of pipeline {self.context.pipeline!r}: the batch has no column "
                                f"{', '.join(repr(m) for m in missing)} (columns: {cols})")

    def clean(self, table: pa.Table) -> Cleaned:  # pragma: no cover - every stage implements it
        raise NotImplementedError

    def process(self, table: pa.Table) -> StageResult:
        self._need(table, self.columns)
        if table.num_rows == 0:
            return StageResult(self._empty_outputs(table), no_rejects())
        res = self.clean(table)
        bad = pc.is_valid(res.reason)
        policy = self.on_error
        forced = res.force if res.force is not None else pa.array([False] * len(bad))
        if policy == "reject":
            bad = pc.or_(bad, forced)
        for col, values in res.outputs.items():
            if policy == "keep" and col in res.keep:
                values = pc.if_else(pc.and_(bad, pc.invert(forced)), res.keep[col], values)
            table = set_column(table, col, values)
        flag = self.options.get("flag")
        if flag:
            table = set_column(table, flag, res.reason if res.note is None else pc.coalesce(res.reason, res.note))
        if policy != "reject":
            bad = forced
        if not pc.any(bad).as_py():
            return StageResult(table, no_rejects())
        rej = pa.table({ROW: table.column(ROW).filter(bad), "reason": res.reason.filter(bad),
                        "message": res.detail.filter(bad), "field": res.field.filter(bad),
                        "value": res.value.filter(bad)}, schema=STAGE_REJECT_SCHEMA)
        return StageResult(table.filter(pc.invert(bad)), rej)

    def _empty_outputs(self, table: pa.Table) -> pa.Table:
        for col in self.output_columns(self.options):
            if col not in table.column_names:
                table = table.append_column(col, pa.nulls(0, pa.string()))
        return table


def constant(n: int, value: str | None) -> pa.Array:
    return pa.array([value] * n, pa.string()) if value is not None else pa.nulls(n, pa.string())


def bad_messages(reason: pa.Array, field: pa.Array, value: pa.Array, detail: pa.Array) -> pa.Array:
    """"column «F»: 'value' detail" for the rows with a reason (they are few), null elsewhere."""
    n = len(reason)
    bad = np.flatnonzero(np.asarray(pc.is_valid(reason).to_numpy(zero_copy_only=False), dtype=bool))
    out: list = [None] * n
    if len(bad):
        idx = pa.array(bad)
        for i, f, v, d in zip(bad, pc.take(field, idx).to_pylist(), pc.take(value, idx).to_pylist(),
                              pc.take(detail, idx).to_pylist()):
            out[i] = f"column «{f}»: {v!r} {d}"
    return pa.array(out, pa.string())


__all__ = [
    "Cleaned", "CleanStage", "ON_ERROR", "SPACES_RE", "SPACES_RE2", "EXCEL_NUMBER_RE", "EXCEL_NUMBER_RE2",
    "as_array", "bad_messages", "coalesce", "concat_skip_nulls", "constant", "digit_matrix", "distinct_map",
    "empty_to_null",
    "fix_lookalikes", "set_column", "squeeze", "text", "unknown_keys", "where_matches",
]
