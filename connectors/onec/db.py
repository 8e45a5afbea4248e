"""1C:Enterprise's own SQL database as a Source: ``_Reference<N>`` / ``_Document<N>`` / tabular-part tables read
through a mapping to readable names, on top of connectors.sql.SqlSource (streaming, keyset paging, incremental).

What 1C keeps in its tables (../shared/reference/1c-dadata.md, section 4) and what this reader makes of it:

* ``_IDRRef`` binary(16) (PostgreSQL ``bytea``) -> ``Ссылка``, the 1C UUID as text, the value CommerceML ``Ид``
  and EnterpriseData ``Ссылка`` carry: the last 8 bytes reversed in groups, then the first 8
  (``b762b13668d0905011eb76684b9f6867`` -> ``4b9f6867-7668-11eb-b762-b13668d09050``). Every column whose name
  ends in ``RRef`` (``_ParentIDRRef``, ``_OwnerIDRRef``, ``_Fld123RRef``, ``_Fld123_RRRef``) is converted the
  same way; the empty reference (16 zero bytes) is NULL.
* Dates: bases made with "смещение дат 2000" keep every year + 2000; the offset is read from ``_YearOffset``
  (``year_offset: auto``) or given, and subtracted; 1C's empty date (year 1, i.e. ``2001-01-01`` with the
  offset) is NULL.
* ``_Marked`` -> ``ПометкаУдаления`` (boolean); ``_Folder`` -> ``ЭтоГруппа``, inverted (0x00 = group);
  ``_PredefinedID`` -> ``Предопределенный`` (not all zeros); ``_Code`` -> ``Код``, ``_Description`` ->
  ``Наименование``, ``_ParentIDRRef`` -> ``Родитель``, ``_OwnerIDRRef`` -> ``Владелец``; documents add
  ``_Date_Time`` -> ``Дата``, ``_Number`` -> ``Номер``, ``_Posted`` -> ``Проведен``; a tabular part's owner link
  ``_Reference<N>_IDRRef`` -> ``Ссылка`` and ``_LineNo<K>`` -> ``НомерСтроки``.
* MS SQL booleans are binary(1) (0x01 = true), PostgreSQL ones ``boolean``: both become booleans. Composite
  attributes' ``_TYPE`` (binary(1)) and ``_RTRef`` (binary(4)) become integers. Text is right-trimmed (``nchar``
  padding), empty text is NULL.
* Names are matched without regard to case: PostgreSQL bases have ``_reference42``, ``_fld1234``.

The ``fields`` mapping names every other attribute: ``{ИНН: _Fld1234, Контрагент: _Fld1240RRef}``. The number
-> name table (``_Reference42`` is ``Справочник.Контрагенты``) comes from 1C itself
(``ПолучитьСтруктуруХраненияБазыДанных``); it is not guessed here.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import FILE_COLUMN, Source, SourceBatch, TerminalError, make_rejects, record_json
from connectors.sql.source import Mode, SqlSource

__all__ = ["OnecDbSource", "idrref_to_uuid", "uuid_to_idrref", "refs_to_guids", "STANDARD_COLUMNS"]

# raw column (lower case) -> (readable name, conversion)
STANDARD_COLUMNS: dict[str, tuple[str, str]] = {
    "_idrref": ("Ссылка", "ref"),
    "_marked": ("ПометкаУдаления", "bool"),
    "_predefinedid": ("Предопределенный", "predefined"),
    "_code": ("Код", "auto"),
    "_description": ("Наименование", "auto"),
    "_parentidrref": ("Родитель", "ref"),
    "_owneridrref": ("Владелец", "ref"),
    "_folder": ("ЭтоГруппа", "folder"),
    "_date_time": ("Дата", "auto"),
    "_number": ("Номер", "auto"),
    "_posted": ("Проведен", "bool"),
}
_OWNER_RE = re.compile(r"^_(reference|document)\d+_idrref$", re.IGNORECASE)  # a tabular part's owner link
_LINENO_RE = re.compile(r"^_lineno\d+$", re.IGNORECASE)

# _IDRRef byte i of the UUID's 16 bytes, in UUID order: the last 8 bytes reversed in groups (12-15, 10-11, 8-9),
# then the first 8 (0-1, 2-7)
_PERM = np.array([12, 13, 14, 15, 10, 11, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7])
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_GUID_DIGITS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_DAYS_PER_400_YEARS = 146_097  # the Gregorian calendar repeats every 400 years


def idrref_to_uuid(b: bytes) -> uuid.UUID:
    """1C's ``_IDRRef`` (16 bytes) as the UUID 1C shows."""
    if len(b) != 16:
        raise ValueError(f"an _IDRRef has 16 bytes, not {len(b)}")
    return uuid.UUID(bytes=bytes(bytes(b)[i] for i in _PERM))


def uuid_to_idrref(u: uuid.UUID | str) -> bytes:
    """The ``_IDRRef`` bytes of a 1C UUID (the inverse of idrref_to_uuid)."""
    raw = (u if isinstance(u, uuid.UUID) else uuid.UUID(str(u))).bytes
    out = bytearray(16)
    for pos, src in enumerate(_PERM):
        out[src] = raw[pos]
    return bytes(out)


def refs_to_guids(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """A binary column of _IDRRef values as UUID text, vectorised; the empty reference (zeros) is NULL.

    Returns the text column and a boolean mask of values that are not 16 bytes long (they come back NULL).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    if pa.types.is_null(arr.type):
        return pa.nulls(n, pa.string()), np.zeros(n, dtype=bool)
    if pa.types.is_fixed_size_binary(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.binary())
    lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    good = valid & (lengths == 16)
    bad = valid & (lengths != 16)
    rows = np.flatnonzero(good)
    m = rows.size
    if m == 0:
        return pa.nulls(n, pa.string()), bad
    packed = arr.filter(pa.array(good))
    _, offsets_buf, data_buf = packed.buffers()
    start = np.frombuffer(offsets_buf, dtype=np.int32, count=packed.offset + 1)[packed.offset]
    raw = np.frombuffer(data_buf, dtype=np.uint8, count=start + 16 * m, offset=0)[start:].reshape(m, 16)
    zero = ~raw.any(axis=1)
    b = raw[:, _PERM]
    digits = np.empty((m, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[b >> 4]
    digits[:, 1::2] = _HEX[b & 0x0F]
    text = np.full((m, 36), ord("-"), dtype=np.uint8)
    text[:, _GUID_DIGITS] = digits
    offsets = np.arange(0, 36 * (m + 1), 36, dtype=np.int32)
    guids = pa.Array.from_buffers(pa.string(), m, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())])
    index = np.full(n, -1, dtype=np.int64)
    index[rows[~zero]] = np.flatnonzero(~zero)
    return guids.take(pa.array(index, mask=index < 0)), bad


def _big_endian_ints(arr: pa.Array) -> pa.Array:
    """Binary values (``_TYPE``, ``_RTRef``, ``_Version``) as integers, per distinct value."""
    if pa.types.is_integer(arr.type) or pa.types.is_null(arr.type):
        return arr
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
            or pa.types.is_fixed_size_binary(arr.type)):
        return arr
    enc = arr.dictionary_encode()
    values = [None if v is None else int.from_bytes(v, "big") for v in enc.dictionary.to_pylist()]
    ints = pa.array(values, pa.int64())
    return ints.take(enc.indices)


def _to_bool(arr: pa.Array, invert: bool = False) -> pa.Array:
    """binary(1) (MS SQL), boolean (PostgreSQL) or 0/1 integers as booleans."""
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.bool_())
    if pa.types.is_boolean(t):
        out = arr
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        out = pc.not_equal(arr.cast(pa.binary()), pa.scalar(b"\x00", pa.binary()))
    elif pa.types.is_integer(t) or pa.types.is_decimal(t):
        out = pc.not_equal(arr.cast(pa.int64()), 0)
    elif pa.types.is_string(t):
        out = pc.is_in(pc.utf8_lower(arr), value_set=pa.array(["1", "true", "t", "y", "yes"]))
        out = pc.if_else(arr.is_valid(), out, pa.scalar(None, pa.bool_()))
    else:
        raise TerminalError(f"cannot read a {t} column as a boolean")
    return pc.invert(out) if invert else out


def _not_zero(arr: pa.Array) -> pa.Array:
    """_PredefinedID: true where the value is not 16 zero bytes."""
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.bool_())
    return pc.not_equal(arr.cast(pa.binary()), pa.scalar(bytes(16), pa.binary()))


def _is_one_byte_binary(arr: pa.Array) -> bool:
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        return pa.types.is_fixed_size_binary(arr.type) and arr.type.byte_width == 1
    lengths = pc.binary_length(arr)
    return arr.null_count < len(arr) and pc.all(pc.equal(lengths, 1)).as_py() is True


def shift_years(arr: pa.Array, offset: int) -> pa.Array:
    """Timestamps (or dates) moved back by ``offset`` years; year 1 (1C's empty date) and earlier become NULL."""
    if offset:
        if offset % 400 == 0:  # the usual 2000: a whole number of Gregorian cycles, an exact number of days
            days = offset // 400 * _DAYS_PER_400_YEARS
            if pa.types.is_timestamp(arr.type):
                arr = pc.subtract(arr, pa.scalar(_dt.timedelta(days=days), pa.duration(arr.type.unit)))
            else:
                arr = pa.array(pc.cast(arr, pa.int32()).to_numpy(zero_copy_only=False) - days, pa.int32(),
                               mask=arr.is_null().to_numpy(zero_copy_only=False)).cast(pa.date32())
        else:  # per distinct value (29 February may not exist in the target year)
            enc = arr.dictionary_encode()
            vals = []
            for v in enc.dictionary.to_pylist():
                try:
                    vals.append(v.replace(year=v.year - offset))
                except ValueError:
                    vals.append(v.replace(year=v.year - offset, day=28) if v.year - offset >= 1 else None)
            arr = pa.array(vals, arr.type).take(enc.indices)
    year = pc.year(arr)
    return pc.if_else(pc.greater(year, 1).fill_null(False), arr, pa.scalar(None, arr.type))


class OnecDbSource(Source):
    """A 1C table (catalog, document or tabular part) with readable column names, full or incremental."""

    progress_unit = "rows"

    def __init__(
        self,
        url: str,
        *,
        reference: str | None = None,
        document: str | None = None,
        table: str | None = None,
        schema: str | None = None,
        fields: dict[str, str] | None = None,
        standard: bool = True,
        year_offset: int | str = "auto",
        key: str | Sequence[str] | None = None,
        watermark: str | None = None,
        mode: Mode | None = None,
        fetch_size: int = 5000,
        page_rows: int | None = 50_000,
        lookback: float | None = None,
        name: str = "onec_db",
        timestamp_unit: Literal["s", "ms", "us"] = "s",
    ):
        given = [t for t in (reference, document, table) if t]
        if len(given) != 1:
            raise TerminalError(f"{name}: give exactly one of `reference`, `document` and `table`")
        if not (year_offset == "auto" or (isinstance(year_offset, int) and year_offset >= 0)):
            raise TerminalError(f"{name}: year_offset must be `auto` or a whole number of years (0, 2000)")
        self.name = name
        self.table_name = given[0]
        self.fields = dict(fields or {})
        self.standard = standard
        self.year_offset_setting = year_offset
        self._key_given = [key] if isinstance(key, str) else (list(key) if key else None)
        self._watermark_given = watermark
        # the SQL source is told the real column names once the table has been looked at (_resolve)
        self.sql = SqlSource(url, table=self.table_name, schema=schema, key=self._key_given or ["_IDRRef"],
                             watermark=watermark, mode=mode, fetch_size=fetch_size, page_rows=page_rows,
                             lookback=lookback, name=name, timestamp_unit=timestamp_unit)
        self._plan: list[tuple[str, str, str]] | None = None  # (readable name, raw column, conversion)
        self._year_offset: int | None = None

    # -- looking at the table ----------------------------------------------------------------------------

    def _resolve(self) -> list[tuple[str, str, str]]:
        if self._plan is not None:
            return self._plan
        have = self.sql.db_columns()
        by_lower = {c.lower(): c for c in have}

        def real(col: str, what: str) -> str:
            found = by_lower.get(col.lower())
            if found is None:
                raise TerminalError(f"{self.sql.label}: no column {col!r} ({what}); it has {', '.join(have)}")
            return found

        plan: list[tuple[str, str, str]] = []
        user_names = set(self.fields)
        if "_idrref" in by_lower:
            plan.append(("Ссылка", by_lower["_idrref"], "ref"))
        if self.standard:
            for c in have:
                low = c.lower()
                if low in STANDARD_COLUMNS and low != "_idrref":
                    readable_name, conversion = STANDARD_COLUMNS[low]
                    plan.append((readable_name, c, conversion))
                elif _OWNER_RE.match(c) and "_idrref" not in by_lower:
                    plan.append(("Ссылка", c, "ref"))
                elif _LINENO_RE.match(c):
                    plan.append(("НомерСтроки", c, "auto"))
        plan = [p for p in plan if p[0] not in user_names]
        readable = {p[0] for p in plan}
        for out, col in self.fields.items():
            if not isinstance(col, str) or not col:
                raise TerminalError(f"{self.name}: fields.{out}: give the table's column, e.g. _Fld1234")
            if out in readable:
                raise TerminalError(f"{self.name}: fields.{out}: the name is used twice")
            if out == FILE_COLUMN:
                raise TerminalError(f"{self.name}: fields.{out}: the name is reserved")
            plan.append((out, real(col, f"fields.{out}"), "auto"))
            readable.add(out)

        if self._key_given:
            key = [real(k, "key") for k in self._key_given]
        elif "_idrref" in by_lower:
            key = [by_lower["_idrref"]]
        else:
            owner = [c for c in have if _OWNER_RE.match(c)]
            line = [c for c in have if _LINENO_RE.match(c)]
            if len(owner) == 1 and len(line) == 1:
                key = [owner[0], line[0]]
            else:
                raise TerminalError(f"{self.sql.label}: no _IDRRef column and no tabular-part owner and line "
                                    "number: give `key:` (the table's unique column(s))")
        watermark = real(self._watermark_given, "watermark") if self._watermark_given else None
        self.sql.configure(key=key, columns=list(dict.fromkeys(col for _, col, _ in plan)), watermark=watermark)
        self._plan = plan
        return plan

    def year_offset(self) -> int:
        """The years 1C added to every date: given, or read from ``_YearOffset`` (0 when there is none)."""
        if self._year_offset is None:
            if isinstance(self.year_offset_setting, int):
                self._year_offset = self.year_offset_setting
            else:
                self._year_offset = _read_year_offset(self.sql)
        return self._year_offset

    # -- Source ------------------------------------------------------------------------------------------

    def check(self) -> None:
        self._plan = None
        self.sql._db_columns = None
        self._resolve()
        self.sql.check()
        self.year_offset()

    def columns(self) -> list[str]:
        return [out for out, _, _ in self._resolve()]

    def total(self) -> int | None:
        self._resolve()
        return self.sql.total()

    def next_pass(self, finished: dict | None) -> dict | None:
        self._resolve()
        return self.sql.next_pass(finished)

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        plan = self._resolve()
        offset = self.year_offset()
        for batch in self.sql.read(cursor, batch_size):
            table, rejects = self._convert(batch.table, plan, offset)
            if batch.rejects.num_rows:
                rejects = pa.concat_tables([batch.rejects, rejects]) if rejects.num_rows else batch.rejects
            yield SourceBatch(table=table, cursor=batch.cursor, rejects=rejects, progress=batch.progress)

    # -- converting a batch ------------------------------------------------------------------------------

    def _convert(self, raw: pa.Table, plan: list[tuple[str, str, str]], offset: int) -> tuple[pa.Table, pa.Table]:
        n = raw.num_rows
        done: dict[tuple[str, str], pa.Array] = {}
        bad_rows: dict[int, tuple[str, Any]] = {}
        for out, col, kind in plan:
            if (col, kind) in done:
                continue
            arr = raw.column(col).combine_chunks() if n else pa.array([], raw.schema.field(col).type)
            low = col.lower()
            if kind == "ref" or low.endswith("rref"):
                if pa.types.is_string(arr.type):  # already text (a view that converts)
                    conv = arr
                else:
                    conv, bad = refs_to_guids(arr)
                    for r in np.flatnonzero(bad):
                        bad_rows.setdefault(int(r), (col, arr[int(r)].as_py()))
            elif kind == "bool":
                conv = _to_bool(arr)
            elif kind == "folder":
                conv = _to_bool(arr, invert=True)
            elif kind == "predefined":
                conv = _not_zero(arr)
            elif low.endswith("_type") or low.endswith("_rtref") or low == "_version":
                conv = _big_endian_ints(arr)
            elif pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
                conv = shift_years(arr, offset)
            elif pa.types.is_string(arr.type):
                trimmed = pc.utf8_rtrim(arr, characters=" ")
                conv = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
            elif _is_one_byte_binary(arr):
                conv = _to_bool(arr)
            else:
                conv = arr
            done[(col, kind)] = conv
        names = [out for out, _, _ in plan]
        arrays = [done[(col, kind)] for _, col, kind in plan]
        if FILE_COLUMN in raw.column_names:
            names.append(FILE_COLUMN)
            arrays.append(raw.column(FILE_COLUMN).combine_chunks() if n else pa.array([], pa.string()))
        table = pa.Table.from_arrays(arrays, names=names)
        rejects = make_rejects([])
        if bad_rows:
            keep = np.ones(n, dtype=bool)
            keep[list(bad_rows)] = False
            out_rows = []
            label = self.sql._table_display()
            key = self.sql.key
            for r in sorted(bad_rows):
                col, value = bad_rows[r]
                rec = {c: raw.column(c)[r].as_py() for c in raw.column_names if c != FILE_COLUMN}
                at = ", ".join(f"{k}={_show(rec.get(k))}" for k in key)
                shown = _show(value)
                out_rows.append({"stage": "read", "reason": "bad_ref", "file": label, "field": col, "value": shown,
                                 "message": f"{label}, row {at}: column «{col}»: {shown} is not a 16-byte reference",
                                 "record": record_json({k: _show(v) for k, v in rec.items()})})
            table = table.filter(pa.array(keep))
            rejects = make_rejects(out_rows)
        return table, rejects


def _show(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "0x" + bytes(v).hex()
    return v


def _read_year_offset(sql: SqlSource) -> int:
    """``_YearOffset`` holds one row with the offset (MS SQL column ``Offset``, PostgreSQL ``ofset``)."""
    import sqlalchemy as sa

    try:
        with sql.engine.connect() as conn:
            for name in ("_YearOffset", "_yearoffset", "_YEAROFFSET"):
                try:
                    row = conn.execute(sa.select(sa.text("*")).select_from(sa.table(name, schema=sql.schema))).first()
                except sa.exc.DBAPIError as exc:
                    if exc.connection_invalidated:
                        raise
                    conn.rollback()
                    continue
                if row is None:
                    return 0
                value = next((v for v in row if isinstance(v, (int, float)) or hasattr(v, "as_integer_ratio")),
                             None)
                if value is None:
                    raise TerminalError(f"{sql.label}: _YearOffset holds no number: {tuple(row)!r}")
                return int(value)
    except TerminalError:
        raise
    except Exception as exc:
        raise sql._error(exc, "cannot read _YearOffset") from exc
    return 0
