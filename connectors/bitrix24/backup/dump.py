"""A streaming parser for MySQL dumps: CBackup's own dump (1C-Bitrix / Bitrix24 backups) and mysqldump output.

The dump arrives as a stream of byte chunks (the ``.sql``, ``.sql.1``... parts, concatenated; statements may span
parts and archive volumes). :class:`DumpReader` walks it statement by statement:

* statement boundaries of the tables we do not want are found with ``bytes.find`` (``;`` + newline: neither CBackup
  nor mysqldump ever writes a raw newline inside a string, they escape it), so skipping runs at memory speed;
* ``CREATE TABLE`` gives the column names and types (INSERTs have no column list, and portals add columns in
  updates: the dump's own CREATE TABLE is the only truth);
* ``SET NAMES`` (also inside ``/*!40101 ... */``) gives the charset the strings are in;
* the INSERT rows of the selected tables are parsed exactly (MySQL string literal rules: backslash escapes,
  ``''``, ``NULL``, ``0x``/``X''`` hex, ``b''`` bits, ``_binary`` and other introducers, multi-row inserts) by a
  vectorised numpy pass over the statement (quotes, escapes and separators found as positions; values cut out
  and gathered into Arrow arrays; escapes undone with Arrow kernels), with an exact pure-Python tokenizer as the
  fallback for the rare shapes the fast pass does not take (double-quoted strings, ``''`` doubling, rows with a
  wrong number of values: those become rejects) and for precise error positions.

Rows come out as :class:`Rows` events holding raw byte columns; :func:`typed_table` turns them into typed Arrow
columns (integers, decimals, dates, text decoded from the dump charset, binary) named by the CREATE TABLE.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "Column", "DumpReader", "DumpSyntaxError", "Rows", "TableDef", "TableSchema", "SetNames", "StatementError",
    "charset_codec", "decode_text", "parse_create_table", "parse_values_slow", "typed_table", "unescape",
]

# ---------------------------------------------------------------------------------------------- charsets


def charset_codec(name: str | None) -> str:
    """The Python codec for a MySQL charset name (``utf8``, ``utf8mb3``, ``utf8mb4``, ``cp1251``, ``latin1``...)."""
    n = (name or "utf8").strip().strip("'\"`").lower()
    if n.startswith("utf8") or n in ("utf-8", "binary"):
        return "utf-8"
    mapping = {"cp1251": "cp1251", "latin1": "cp1252", "koi8r": "koi8_r", "cp866": "cp866", "ascii": "ascii",
               "cp1250": "cp1250", "cp1252": "cp1252", "koi8u": "koi8_u", "latin2": "iso8859_2"}
    if n in mapping:
        return mapping[n]
    try:
        return codecs.lookup(n).name
    except LookupError:
        raise ValueError(f"unknown charset {name!r} in SET NAMES") from None


_SINGLE_BYTE: dict[str, tuple[str, np.ndarray]] = {}


def _single_byte_table(codec: str) -> tuple[str, np.ndarray] | None:
    """(decoding table, UTF-8 length of each byte) for a single-byte codec; undefined bytes decode to U+FFFD."""
    if codec in _SINGLE_BYTE:
        return _SINGLE_BYTE[codec]
    try:
        info = codecs.lookup(codec)
    except LookupError:
        return None
    chars = []
    for b in range(256):
        try:
            ch = bytes([b]).decode(info.name)
        except UnicodeDecodeError:
            ch = "\ufffd"
        if len(ch) != 1:
            return None
        chars.append(ch)
    table = "".join(chars)
    lens = np.array([len(c.encode("utf-8")) for c in chars], dtype=np.int64)
    _SINGLE_BYTE[codec] = (table, lens)
    return _SINGLE_BYTE[codec]


def _plain(arr: pa.Array) -> pa.Array:
    """The array with offset 0 (copied if it was a slice)."""
    if arr.offset:
        arr = pa.concat_arrays([arr])
        if arr.offset:
            arr = pc.take(arr, pa.array(np.arange(len(arr))))
    return arr


def decode_text(arr: pa.Array, codec: str) -> tuple[pa.Array, np.ndarray | None]:
    """Binary -> string in ``codec``. Returns the strings and a mask of values that did not decode (or None)."""
    if len(arr) == 0:
        return pa.array([], pa.string()), None
    if codec == "utf-8" or codec == "ascii":
        try:
            return arr.cast(pa.string()), None
        except pa.ArrowInvalid:
            vals = arr.to_pylist()
            bad = np.zeros(len(vals), dtype=bool)
            out = []
            for i, v in enumerate(vals):
                if v is None:
                    out.append(None)
                    continue
                try:
                    out.append(v.decode(codec))
                except UnicodeDecodeError:
                    bad[i] = True
                    out.append(None)
            return pa.array(out, pa.string()), bad
    sb = _single_byte_table(codec)
    arr = _plain(arr)
    if sb is None:  # a multi-byte charset other than UTF-8: per value
        out = [None if v is None else v.decode(codec, "replace") for v in arr.to_pylist()]
        return pa.array(out, pa.string()), None
    table, lens = sb
    validity, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(arr) + 1)
    o0, o1 = int(offsets[0]), int(offsets[-1])
    raw = np.frombuffer(data_buf, dtype=np.uint8, count=o1 - o0, offset=o0) if o1 > o0 else np.zeros(0, np.uint8)
    text = codecs.charmap_decode(raw.tobytes(), "strict", table)[0]
    utf8 = text.encode("utf-8")
    cum = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(lens[raw], out=cum[1:])
    new_offsets = cum[offsets - o0]
    if new_offsets[-1] >= 2**31:
        return pa.array([None if v is None else v.decode(codec, "replace") for v in arr.to_pylist()],
                        pa.large_string()).cast(pa.string()), None
    out = pa.Array.from_buffers(pa.string(), len(arr),
                                [validity, pa.py_buffer(new_offsets.astype(np.int32)), pa.py_buffer(utf8)],
                                null_count=arr.null_count)
    return out, None


# ---------------------------------------------------------------------------------------------- literals

_ESCAPES = {ord("0"): b"\x00", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b",
            ord("Z"): b"\x1a", ord("%"): b"\\%", ord("_"): b"\\_"}
_ESC_RE = re.compile(rb"\\(.)|''|\"\"", re.S)


def unescape(raw: bytes, quote: int = 39) -> bytes:
    """Undo MySQL string-literal escaping (the content between the quotes): ``\\0 \\' \\" \\b \\n \\r \\t \\Z \\\\``,
    ``\\%`` and ``\\_`` keep their backslash, ``\\x`` is ``x``; a doubled quote is one quote."""
    if b"\\" not in raw and b"''" not in raw and b'""' not in raw:
        return raw

    def sub(m: re.Match) -> bytes:
        g = m.group(1)
        if g is None:
            return m.group(0)[:1] if m.group(0)[0] == quote else m.group(0)
        return _ESCAPES.get(g[0], g)

    return _ESC_RE.sub(sub, raw)


# ---------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Column:
    name: str
    sqltype: str  # as written, lower case: "int(10) unsigned", "varchar(255)", "decimal(18,2)"
    kind: str  # int, uint, float, decimal, date, datetime, binary, bit, string

    @property
    def arrow_type(self) -> pa.DataType:
        if self.kind == "int":
            return pa.int64()
        if self.kind == "uint":
            return pa.uint64() if self.sqltype.startswith("bigint") else pa.int64()
        if self.kind == "float":
            return pa.float64()
        if self.kind == "decimal":
            m = re.search(r"\((\d+)\s*(?:,\s*(\d+))?\)", self.sqltype)
            p, s = (int(m.group(1)), int(m.group(2) or 0)) if m else (10, 0)
            return pa.decimal128(p, s) if 0 < p <= 38 else pa.float64()
        if self.kind == "date":
            return pa.date32()
        if self.kind == "datetime":
            m = re.search(r"\((\d)\)", self.sqltype)
            return pa.timestamp("us" if m and int(m.group(1)) > 0 else "s")
        if self.kind == "binary":
            return pa.binary()
        if self.kind == "bit":
            return pa.int64()
        return pa.string()


def column_kind(sqltype: str) -> str:
    t = sqltype.lower().strip()
    if re.match(r"(tiny|small|medium|big)?int(eger)?\b", t):
        return "uint" if "unsigned" in t else "int"
    if t.startswith("year"):
        return "int"
    if re.match(r"(float|double|real)\b", t):
        return "float"
    if re.match(r"(decimal|numeric|dec|fixed)\b", t):
        return "decimal"
    if re.match(r"datetime\b|timestamp\b", t):
        return "datetime"
    if re.match(r"date\b", t):
        return "date"
    if re.match(r"bit\b", t):
        return "bit"
    if re.match(r"(var)?binary\b|(tiny|medium|long)?blob\b|geometry|point|linestring|polygon|multi", t):
        return "binary"
    return "string"


@dataclass
class TableSchema:
    name: str
    columns: list[Column]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_json(self) -> list:
        return [[c.name, c.sqltype] for c in self.columns]

    @classmethod
    def from_json(cls, name: str, data: list) -> "TableSchema":
        return cls(name, [Column(n, t, column_kind(t)) for n, t in data])


_CREATE_HEAD = re.compile(rb"CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:`(?:[^`]|``)+`|[\w$]+)"
                          rb"(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)\s*\(", re.I)
_COL_LINE = re.compile(rb"\s*`((?:[^`]|``)+)`\s+((?:[a-zA-Z]+)(?:\s*\([^)]*\))?(?:\s+(?:unsigned|signed|zerofill))*)",
                       re.I)
_BARE_COL = re.compile(rb"\s*([A-Za-z_][\w$]*)\s+((?:[a-zA-Z]+)(?:\s*\([^)]*\))?(?:\s+(?:unsigned|signed|zerofill))*)",
                       re.I)
_NOT_COLUMN = re.compile(rb"\s*(PRIMARY|UNIQUE|KEY|INDEX|FULLTEXT|SPATIAL|CONSTRAINT|FOREIGN|CHECK|PERIOD)\b", re.I)


def _ident(raw: bytes) -> str:
    raw = raw.strip()
    if b"." in raw and raw.count(b"`") >= 4:  # `db`.`table`
        raw = raw[raw.rindex(b"`", 0, raw.rindex(b"`")) :]
    if raw.startswith(b"`") and raw.endswith(b"`"):
        raw = raw[1:-1].replace(b"``", b"`")
    elif b"." in raw:
        raw = raw.rsplit(b".", 1)[1]
    return raw.decode("utf-8", "replace")


def _split_defs(body: bytes) -> list[bytes]:
    """Split a CREATE TABLE body on commas outside parentheses, quotes and backticks."""
    out, depth, start, i, n = [], 0, 0, 0, len(body)
    while i < n:
        c = body[i]
        if c in (39, 34, 96):  # ' " `
            q = c
            i += 1
            while i < n:
                if body[i] == 92 and q != 96:
                    i += 2
                    continue
                if body[i] == q:
                    if i + 1 < n and body[i + 1] == q:
                        i += 2
                        continue
                    break
                i += 1
        elif c == 40:
            depth += 1
        elif c == 41:
            depth -= 1
            if depth < 0:
                out.append(body[start:i])
                return out
        elif c == 44 and depth == 0:
            out.append(body[start:i])
            start = i + 1
        i += 1
    out.append(body[start:])
    return out


def parse_create_table(stmt: bytes) -> TableSchema | None:
    """The table name and its columns (in order, with their types) from a CREATE TABLE statement."""
    m = _CREATE_HEAD.search(stmt)
    if not m:
        return None
    name = _ident(m.group(1))
    cols: list[Column] = []
    for part in _split_defs(stmt[m.end():]):
        if not part.strip() or _NOT_COLUMN.match(part):
            continue
        cm = _COL_LINE.match(part) or _BARE_COL.match(part)
        if not cm:
            continue
        col = _ident(b"`" + cm.group(1) + b"`") if part.lstrip().startswith(b"`") else cm.group(1).decode()
        sqltype = re.sub(rb"\s+", b" ", cm.group(2)).decode("ascii", "replace").lower()
        cols.append(Column(col, sqltype, column_kind(sqltype)))
    return TableSchema(name, cols)


# ---------------------------------------------------------------------------------------------- events


@dataclass
class TableDef:
    schema: TableSchema
    offset: int


@dataclass
class SetNames:
    charset: str
    offset: int


@dataclass
class TableStart:
    """A statement about ``table`` begins (DROP/CREATE/INSERT/LOCK): tables come one after the other."""

    table: str
    offset: int
    line: int = 0  # line of the statement in its part (1-based), and the part
    part: str = ""


@dataclass
class Rows:
    """Rows of one INSERT statement (or a piece of a long one): raw byte columns in the table's column order."""

    table: str
    columns: list[pa.Array]  # binary (hex and escapes undone) or null; bit literals as decimal text
    stmt_offset: int  # stream offset of the INSERT keyword
    row_ids: np.ndarray  # index of each row within the statement (malformed rows count too)
    end_row: int  # rows of the statement consumed once these are
    lines: np.ndarray  # line of each row in its part (1-based)
    part: str
    count: int
    bad: list = field(default_factory=list)  # [(row index in statement, line, message, raw text)] malformed rows
    names: list[str] | None = None  # an explicit column list (INSERT ... (a, b) VALUES)
    stmt_line: int = 1  # line of the INSERT keyword in stmt_part
    stmt_part: str = ""


@dataclass
class StatementError:
    """A statement that could not be parsed past some point: the rest of it is reported and skipped."""

    table: str
    stmt_offset: int
    offset: int
    line: int
    part: str
    message: str
    first_row: int
    snippet: str


class DumpSyntaxError(Exception):
    def __init__(self, offset: int, message: str):
        super().__init__(message)
        self.offset = offset
        self.message = message


class _Fallback(Exception):
    """The fast pass does not take this shape; use the exact tokenizer."""


# ---------------------------------------------------------------------------------------------- fast pass

_WS_LUT = np.zeros(256, dtype=bool)
for _c in b" \t\r\n\f\v":
    _WS_LUT[_c] = True
_CLS = np.zeros(256, dtype=np.uint8)
for _c, _k in ((39, 1), (40, 2), (41, 3), (44, 4), (59, 5), (34, 6)):
    _CLS[_c] = _k
_GAP_OK = _WS_LUT.copy()
_GAP_OK[ord(",")] = True
_EMPTY = np.zeros(0, dtype=np.int64)


def _isin_sorted(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if y.size == 0 or x.size == 0:
        return np.zeros(x.size, dtype=bool)
    idx = np.searchsorted(y, x)
    idx[idx >= y.size] = 0
    return y[idx] == x


@dataclass
class _Region:
    columns: list[pa.Array] | None
    count: int
    consumed: int  # index into the buffer just past the last complete row (or past ';' when done)
    done: bool  # the statement's ';' was reached
    row_starts: np.ndarray  # buffer index of each row's '('
    bad: list = field(default_factory=list)  # slow pass only: (row index in region, buffer index, message)


def _fast_region(buf: bytes, start: int, end: int, ncols: int, at_eof: bool) -> _Region:
    """Parse the complete rows of ``buf[start:end]`` (the VALUES list or its continuation after a row).

    Raises _Fallback when the shape is not one the vectorised pass handles exactly.
    """
    a = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    n_all = a.size
    bs = np.flatnonzero(a == 92)
    if bs.size:
        run_start = np.zeros(bs.size, dtype=np.int64)
        brk = np.flatnonzero(np.diff(bs) != 1) + 1
        run_start[brk] = brk
        np.maximum.accumulate(run_start, out=run_start)
        esc = bs[((np.arange(bs.size) - run_start) & 1) == 0]  # the backslashes that escape the next byte
        escaped = esc + 1
    else:
        esc = escaped = _EMPTY
    # one pass: the structural bytes (quote, parens, comma, semicolon, double quote) in order; escaped ones out
    cls = _CLS[a]
    if escaped.size:
        cls[escaped[escaped < n_all]] = 0
    idx = np.flatnonzero(cls.view(np.bool_))  # a bool view: nonzero over bytes is ~3x faster than over uint8
    c = cls[idx]
    isq = c == 1
    q = idx[isq]
    nq = q.size
    if nq >= 3 and np.any(q[1:-1:2] + 1 == q[2::2]):
        raise _Fallback("doubled quote")
    # outside strings: an even number of quotes up to here (the running parity of the quotes)
    out_mask = ~isq & (np.bitwise_xor.accumulate(isq.view(np.uint8)) == 0)
    oi = idx[out_mask]
    oc = c[out_mask]
    semi = oi[oc == 5]
    done = bool(semi.size)
    stop = int(semi[0]) if done else n_all
    if done:
        keep = oi < stop
        oi, oc = oi[keep], oc[keep]
    if np.any(oc == 6):
        raise _Fallback("double-quoted string")
    lp = oi[oc == 2]
    rp = oi[oc == 3]
    cm = oi[oc == 4]

    def outside(pos: np.ndarray) -> np.ndarray:
        return (np.searchsorted(q, pos) & 1) == 0

    n = rp.size
    if lp.size not in (n, n + 1) or (done and lp.size != n):
        raise _Fallback("parentheses")
    if n and (np.any(lp[:n] >= rp) or (n > 1 and np.any(rp[:-1] >= lp[1:n]))):
        raise _Fallback("parentheses order")
    if lp.size == n + 1 and n and lp[n] < rp[n - 1]:
        raise _Fallback("parentheses order")
    # what lies between rows (and before the first, after the last) must be blanks and one comma
    gap_starts = np.concatenate([[0], rp + 1])
    gap_ends = np.concatenate([lp[:n], [stop if lp.size == n else lp[n]]])
    glen = gap_ends - gap_starts
    if np.any(glen < 0):
        raise _Fallback("gap")
    if glen.sum():
        gi = np.repeat(gap_starts - np.concatenate([[0], np.cumsum(glen)[:-1]]), glen) + np.arange(glen.sum())
        if not np.all(_GAP_OK[a[gi]]):
            raise _Fallback("text between rows")
        gofs = np.concatenate([[0], np.cumsum(glen)[:-1]])
        cc = np.zeros(int(glen.sum()) + 1, dtype=np.int64)
        np.cumsum(a[gi] == 44, out=cc[1:])
        commas = cc[gofs + glen] - cc[gofs]
        # gaps between two rows need exactly one comma; the first gap may hold one (a continuation), the last none
        if n > 1 and np.any(commas[1:n] != 1):
            raise _Fallback("row separator")
        if commas[0] > 1 or (lp.size > n and n and commas[n] != 1) or (lp.size == n and n and commas[n] != 0 and done):
            raise _Fallback("row separator")
    if n == 0:
        if done:
            return _Region([pa.nulls(0, pa.binary()) for _ in range(ncols)], 0, start + stop + 1, True, _EMPTY)
        if at_eof:
            raise _Fallback("the stream ends inside the statement")  # the exact tokenizer reports where
        return _Region(None, 0, start, False, _EMPTY)
    # commas inside complete rows separate fields
    row_of = np.searchsorted(lp[:n], cm, side="right") - 1
    inrow = (row_of >= 0) & (cm < rp[np.clip(row_of, 0, n - 1)])
    cm_in = cm[inrow]
    counts = np.bincount(row_of[inrow], minlength=n)
    if np.any(counts != ncols - 1):
        raise _Fallback("column count")
    bounds = np.empty((n, ncols + 1), dtype=np.int64)
    bounds[:, 0] = lp[:n]
    bounds[:, -1] = rp
    if ncols > 1:
        bounds[:, 1:-1] = cm_in.reshape(n, ncols - 1)
    starts = (bounds[:, :-1] + 1).ravel()
    ends = bounds[:, 1:].ravel().copy()
    for _ in range(64):
        m = (starts < ends) & _WS_LUT[a[np.minimum(starts, n_all - 1)]]
        if not m.any():
            break
        starts += m
    for _ in range(64):
        m = (ends > starts) & _WS_LUT[a[ends - 1]]
        if not m.any():
            break
        ends -= m
    length = ends - starts
    if np.any(length <= 0):
        raise _Fallback("empty value")
    first = a[starts]
    second = a[np.minimum(starts + 1, n_all - 1)]
    last = a[ends - 1]
    quoted = first == 39
    intro = first == 95
    if np.any(quoted & ((last != 39) | (length < 2))):
        raise _Fallback("string end")
    cs = starts + 1
    ce = ends - 1
    plain = ~quoted
    is_null = plain & (length == 4) & ((first | 32) == ord("n")) & ((second | 32) == ord("u")) \
        & ((a[np.minimum(starts + 2, n_all - 1)] | 32) == ord("l")) & ((last | 32) == ord("l"))
    hex0x = plain & (first == 48) & ((second | 32) == ord("x")) & (length >= 2)
    lit = plain & ((first | 32) == ord("x")) & (second == 39) & (last == 39) & (length >= 3)
    bits = plain & ((first | 32) == ord("b")) & (second == 39) & (last == 39) & (length >= 3)
    if intro.any():
        ii = np.flatnonzero(intro)
        qi = np.searchsorted(q, starts[ii])
        if np.any(qi >= nq):
            raise _Fallback("introducer")
        qpos = q[qi]
        if np.any((qpos >= ends[ii] - 1) | (last[ii] != 39)):
            raise _Fallback("introducer")
        between = [bytes(a[s:p]) for s, p in zip(starts[ii][:50], qpos[:50])]
        if any(not re.fullmatch(rb"_[A-Za-z0-9]+\s*", b) for b in between):
            raise _Fallback("introducer")
        cs[ii] = qpos + 1
        quoted = quoted | intro
        plain = ~quoted
    bare = plain & ~is_null & ~hex0x & ~lit & ~bits
    cs = np.where(bare, starts, cs)
    ce = np.where(bare, ends, ce)
    cs = np.where(hex0x | lit | bits, starts + 2, cs)
    ce = np.where(hex0x, ends, ce)
    cs = np.where(is_null, starts, cs)
    ce = np.where(is_null, starts, ce)
    if np.any(ce < cs):
        raise _Fallback("span")
    # fields with an escaping backslash
    if esc.size:
        fidx = np.searchsorted(starts, esc, side="right") - 1
        has_esc = np.zeros(starts.size, dtype=bool)
        ok = (fidx >= 0) & (esc < ends[np.clip(fidx, 0, None)])
        has_esc[fidx[ok]] = True
        if np.any(~quoted & has_esc):
            raise _Fallback("backslash outside a string")
    else:
        has_esc = None
    # gather every value's bytes column by column (column-major) into one buffer: each column is then a contiguous
    # run of it, an Arrow array made on its slice without a copy
    lens = ce - cs
    order = np.arange(lens.size).reshape(n, ncols).T.ravel()
    lens_c = lens[order]
    offsets = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens_c, out=offsets[1:])
    total = int(offsets[-1])
    if total >= 2**31:
        raise _Fallback("too large")
    data = np.empty(total, dtype=np.uint8)
    shift = cs[order] - offsets[:-1]  # buffer index of a value's byte = its place in ``data`` + shift
    for j in range(ncols if total else 0):  # a column at a time: the index array stays the size of one column
        v0, v1 = j * n, (j + 1) * n
        lo, hi = int(offsets[v0]), int(offsets[v1])
        if hi > lo:
            gather = np.repeat(shift[v0:v1], lens_c[v0:v1])
            gather += np.arange(lo, hi, dtype=np.int64)
            data[lo:hi] = a[gather]
    offsets32 = offsets.astype(np.int32)
    is_null2 = is_null.reshape(n, ncols)
    hex2 = (hex0x | lit).reshape(n, ncols)
    bits2 = bits.reshape(n, ncols)
    esc2 = has_esc.reshape(n, ncols) if has_esc is not None else None
    columns = []
    for j in range(ncols):
        lo, hi = int(offsets32[j * n]), int(offsets32[(j + 1) * n])
        col = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets32[j * n:(j + 1) * n + 1] - lo),
                                                      pa.py_buffer(data[lo:hi])])
        nulls = is_null2[:, j]
        if esc2 is not None and esc2[:, j].any():
            col = _unescape_column(col)
        if hex2[:, j].any():
            col = _replace_values(col, hex2[:, j], lambda b: bytes.fromhex(b.decode("ascii")))
        if bits2[:, j].any():
            col = _replace_values(col, bits2[:, j], lambda b: str(int(b or b"0", 2)).encode())
        if nulls.any():
            col = _with_nulls(col, nulls)
        columns.append(col)
    return _Region(columns, n, start + (stop + 1 if done else int(rp[-1]) + 1), done, lp[:n] + start)


def _with_nulls(col: pa.Array, nulls: np.ndarray) -> pa.Array:
    col = _plain(col)
    bufs = col.buffers()
    valid = np.packbits(~nulls, bitorder="little")
    return pa.Array.from_buffers(col.type, len(col), [pa.py_buffer(valid)] + bufs[1:], null_count=int(nulls.sum()))


def _replace_values(col: pa.Array, mask: np.ndarray, fn: Callable[[bytes], bytes]) -> pa.Array:
    idx = np.flatnonzero(mask)
    vals = col.take(pa.array(idx)).to_pylist()
    try:
        new = [fn(v) for v in vals]
    except ValueError as e:
        raise _Fallback(f"literal: {e}") from None
    out = col.to_pylist()
    for i, v in zip(idx, new):
        out[i] = v
    return pa.array(out, pa.binary())


_PLACEHOLDERS = [bytes([b]) for b in list(range(1, 8)) + [11, 12] + list(range(14, 26)) + list(range(27, 32)) + [127]]
_SIMPLE_ESC = [(b"\\0", b"\x00"), (b"\\n", b"\n"), (b"\\r", b"\r"), (b"\\t", b"\t"), (b"\\b", b"\b"),
               (b"\\Z", b"\x1a"), (b"\\'", b"'"), (b'\\"', b'"')]


def _data_bytes(col: pa.Array) -> bytes:
    """The value bytes of a binary array (for quick `in` tests)."""
    bufs = col.buffers()
    return bufs[2].to_pybytes() if len(bufs) > 2 and bufs[2] is not None else b""


def _unescape_column(col: pa.Array) -> pa.Array:
    """Undo backslash escapes in every value of a binary column, with Arrow kernels (Python per value only for
    the rare escapes mysql_real_escape_string never writes)."""
    raw = _data_bytes(col)
    ph = next((p for p in _PLACEHOLDERS if p not in raw), None)
    if ph is None:
        return pa.array([None if v is None else unescape(v) for v in col.to_pylist()], pa.binary())
    data = raw
    out = pc.replace_substring(col, pattern=b"\\\\", replacement=ph) if b"\\\\" in data else col
    for pat, rep in _SIMPLE_ESC:
        if pat in data:
            out = pc.replace_substring(out, pattern=pat, replacement=rep)
    rest = pc.match_substring(out, b"\\")
    if pc.any(rest).as_py():
        # \% and \_ keep their backslash; any other \x is x
        kept = pc.replace_substring(pc.replace_substring(out, pattern=b"\\%", replacement=b""),
                                    pattern=b"\\_", replacement=b"")
        if pc.any(pc.match_substring(kept, b"\\")).as_py():
            orig = col.to_pylist()
            return pa.array([None if v is None else unescape(v) for v in orig], pa.binary())
    return pc.replace_substring(out, pattern=ph, replacement=b"\\")


# ---------------------------------------------------------------------------------------------- exact tokenizer

_SQ = rb"'((?:[^'\\]++|\\.|'')*+)'"  # possessive: no backtracking on a runaway string
_TOKEN = re.compile(
    rb"[ \t\r\n]*(?:" + _SQ
    + rb"|\"((?:[^\"\\]++|\\.|\"\")*+)\""
    + rb"|(_[A-Za-z0-9]+)[ \t\r\n]*" + _SQ
    + rb"|0[xX]([0-9A-Fa-f]*)(?![\w])"
    + rb"|[xX]'([0-9A-Fa-f]*)'"
    + rb"|[bB]'([01]*)'"
    + rb"|([^ \t\r\n,()'\";]+)"
    + rb")[ \t\r\n]*",
    re.S,
)
_WS_RE = re.compile(rb"[ \t\r\n]*")


def parse_values_slow(buf: bytes, start: int, end: int, ncols: int | None, at_eof: bool) -> _Region:
    """The exact tokenizer: the same contract as the fast pass; rows with a wrong number of values are
    reported in ``bad`` (and skipped), a syntax error that no more data can fix raises DumpSyntaxError."""
    pos = start
    rows: list[list] = []
    row_starts: list[int] = []
    bad: list = []
    first_sep_ok = True
    done = False
    while True:
        pos = _WS_RE.match(buf, pos, end).end()
        if pos >= end:
            break
        c = buf[pos]
        if c == 59:  # ;
            done = True
            pos += 1
            break
        if c == 44:  # ,
            if not (rows or bad or first_sep_ok):
                raise DumpSyntaxError(pos, "unexpected ','")
            first_sep_ok = False
            pos = _WS_RE.match(buf, pos + 1, end).end()
            if pos >= end:
                break
            c = buf[pos]
        if c != 40:
            raise DumpSyntaxError(pos, f"expected '(' but found {buf[pos:pos + 20]!r}")
        row_start = pos
        p = pos + 1
        vals: list = []
        complete = False
        while True:
            m = _TOKEN.match(buf, p, end)
            if not m or m.end() == end and not at_eof:
                if not at_eof:
                    break  # need more data
                if not m:
                    raise DumpSyntaxError(p, f"bad value {buf[p:p + 30]!r}")
            sq, dq, intro, isq, hx, xhx, bits, bare = m.groups()
            if sq is not None:
                vals.append(unescape(sq))
            elif dq is not None:
                vals.append(unescape(dq, 34))
            elif intro is not None:
                vals.append(unescape(isq))
            elif hx is not None:
                vals.append(bytes.fromhex(hx.decode()) if len(hx) % 2 == 0 else bytes.fromhex("0" + hx.decode()))
            elif xhx is not None:
                if len(xhx) % 2:
                    raise DumpSyntaxError(p, "odd number of hex digits")
                vals.append(bytes.fromhex(xhx.decode()))
            elif bits is not None:
                vals.append(str(int(bits or b"0", 2)).encode())
            elif bare is not None:
                vals.append(None if bare.upper() == b"NULL" else bare)
            p = m.end()
            if p >= end:
                if at_eof:
                    raise DumpSyntaxError(p, "statement ends inside a row")
                break
            if buf[p] == 44:
                p += 1
                continue
            if buf[p] == 41:
                p += 1
                complete = True
                break
            raise DumpSyntaxError(p, f"expected ',' or ')' but found {buf[p:p + 20]!r}")
        if not complete:
            break
        if ncols is not None and len(vals) != ncols:
            bad.append((len(rows) + len(bad), row_start, f"{len(vals)} values, the table has {ncols} columns"))
        else:
            rows.append(vals)
            row_starts.append(row_start)
        pos = p
    width = ncols if ncols is not None else (len(rows[0]) if rows else 0)
    if not rows and not bad and not done and not at_eof:
        return _Region(None, 0, start, False, _EMPTY)
    columns = [pa.array([r[j] for r in rows], pa.binary()) for j in range(width)]
    consumed = pos
    return _Region(columns, len(rows), consumed, done, np.array(row_starts, dtype=np.int64), bad)


# ---------------------------------------------------------------------------------------------- typing

_ZERO_DATE = re.compile(r"^0000-00-00")


def _cast_numbers(text: pa.Array, type_: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    try:
        return pc.cast(text, type_), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    bad = np.zeros(len(text), dtype=bool)
    good: list = []
    uniq = pc.unique(text).drop_null().to_pylist()
    bad_vals = []
    for v in uniq:
        try:
            pc.cast(pa.array([v], pa.string()), type_)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad_vals.append(v)
    if not bad_vals:  # e.g. decimals that only fail together
        return pa.array([None if v is None else float(v) for v in text.to_pylist()]).cast(type_, safe=False), None
    bad_mask = pc.is_in(text, value_set=pa.array(bad_vals, pa.string())).fill_null(False)
    cleaned = pc.if_else(bad_mask, pa.scalar(None, pa.string()), text)
    return pc.cast(cleaned, type_), bad_mask.to_numpy(zero_copy_only=False)


def typed_table(schema: TableSchema, columns: list[pa.Array], codec: str,
                names: list[str] | None = None) -> tuple[pa.Table, list[tuple[int, str, str, str]]]:
    """Typed Arrow columns named after the CREATE TABLE. Returns the table (all rows) and the problems found
    as (row, column, reason, raw value); the caller turns those rows into rejects."""
    cols = schema.columns
    if names is not None:
        by = {c.name: c for c in cols}
        cols = [by.get(nm, Column(nm, "text", "string")) for nm in names]
    out: list[pa.Array] = []
    problems: list[tuple[int, str, str, str]] = []
    for col, raw in zip(cols, columns):
        kind = col.kind
        if kind == "binary":
            out.append(raw)
            continue
        if kind == "string":
            text, bad = decode_text(raw, codec)
            if bad is not None:
                for i in np.flatnonzero(bad):
                    problems.append((int(i), col.name, "bad_encoding", repr(raw[int(i)].as_py())[:200]))
            out.append(text)
            continue
        text, bad = decode_text(raw, "utf-8" if codec == "utf-8" else codec)
        if bad is not None:
            for i in np.flatnonzero(bad):
                problems.append((int(i), col.name, "bad_encoding", repr(raw[int(i)].as_py())[:200]))
        if kind in ("date", "datetime"):
            zero = pc.match_substring_regex(text, _ZERO_DATE.pattern).fill_null(False)
            if pc.any(zero).as_py():
                text = pc.if_else(zero, pa.scalar(None, pa.string()), text)
            reason = "bad_date"
        else:
            reason = "bad_number"
        if kind == "bit":
            vals = []
            for v in raw.to_pylist():
                if v is None:
                    vals.append(None)
                elif v.isdigit():
                    vals.append(int(v))
                else:
                    vals.append(int.from_bytes(v, "big"))
            out.append(pa.array(vals, pa.int64()))
            continue
        if kind == "datetime":
            text = pc.replace_substring_regex(text, pattern=r"^(\d{4}-\d\d-\d\d)T", replacement=r"\1 ")
        typed, badm = _cast_numbers(text, col.arrow_type)
        if badm is not None:
            for i in np.flatnonzero(badm):
                problems.append((int(i), col.name, reason, text[int(i)].as_py()))
        out.append(typed)
    return pa.Table.from_arrays(out, names=[c.name for c in cols]), problems


# ---------------------------------------------------------------------------------------------- the reader

_INSERT = re.compile(rb"(INSERT|REPLACE)(?:\s+(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE))*\s+(?:INTO\s+)?"
                     rb"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)\s*"
                     rb"(\((?:[^()'\"]|`[^`]*`)*\)\s*)?VALUES?\b", re.I)
_TABLE_STMT = re.compile(rb"(?:DROP\s+TABLE(?:\s+IF\s+EXISTS)?|CREATE\s+(?:TEMPORARY\s+)?TABLE(?:\s+IF\s+NOT\s+EXISTS)?"
                         rb"|LOCK\s+TABLES|ALTER\s+TABLE|/\*!\d+\s+ALTER\s+TABLE)\s+"
                         rb"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)", re.I)
_SET_NAMES = re.compile(rb"SET\s+NAMES\s+['\"`]?([\w-]+)", re.I)
_DELIMITER = re.compile(rb"DELIMITER[ \t]+(\S+)", re.I)
_COLLIST = re.compile(rb"`((?:[^`]|``)+)`|([\w$]+)")

CHUNK = 4 << 20
MAX_REGION = 8 << 20


class DumpReader:
    """Walk a dump stream statement by statement, yielding events; INSERT rows only for the tables ``want``
    accepts (a set of names or a predicate).

    ``chunks`` yields ``(part_name, bytes)``: the dump's parts in order, each as one or more chunks; a new part
    name starts a new part (lines count from 1 in each part). ``start`` = (stream offset of a statement, rows of
    it already consumed, line of the statement in its part, part name, charset, schema or None) resumes there;
    the chunks must then begin at that offset.
    """

    def __init__(self, chunks: Iterable[tuple[str, bytes]], want: set[str] | Callable[[str], bool],
                 *, charset: str | None = None, start_offset: int = 0, start_line: int = 1,
                 start_part: str = "", schemas: dict[str, TableSchema] | None = None,
                 skip_rows: int = 0, fast: bool = True):
        self._chunks = iter(chunks)
        self._want = want if callable(want) else (lambda t, s=frozenset(want): t in s)
        self.charset = charset
        self.codec = charset_codec(charset) if charset else "utf-8"
        self.schemas: dict[str, TableSchema] = dict(schemas or {})
        self.fast = fast
        self.buf = b""
        self.base = start_offset  # stream offset of buf[0]
        self.pos = 0
        self.eof = False
        self.part = start_part
        self.line_at_base = start_line  # line (in self.part) of buf[0]
        self._pending_part: tuple[int, str] | None = None  # (stream offset where a new part starts, name)
        self._part_marks: list[tuple[int, str]] = []  # part starts inside buf: (buffer index, name)
        self._skip_rows = skip_rows
        self.delimiter = b";"
        self.fast_regions = 0
        self.slow_regions = 0
        self.bytes_skipped = 0

    # --- buffer

    def _fill(self) -> bool:
        """Read one more chunk (dropping what is consumed). False at the end of the stream."""
        if self.eof:
            return False
        if self.pos:
            self._drop(self.pos)
        while True:
            try:
                part, data = next(self._chunks)
            except StopIteration:
                self.eof = True
                return False
            if part != self._current_last_part():
                self._part_marks.append((len(self.buf), part))
            if data:
                self.buf = self.buf + data if self.buf else data
                return True

    def _current_last_part(self) -> str:
        return self._part_marks[-1][1] if self._part_marks else self.part

    def _drop(self, n: int) -> None:
        """Forget buf[:n], keeping the line count."""
        marks = [(i, p) for i, p in self._part_marks if i <= n]
        if marks:
            i, p = marks[-1]
            self.part = p
            self.line_at_base = 1 + self.buf.count(b"\n", i, n)
        else:
            self.line_at_base += self.buf.count(b"\n", 0, n)
        self._part_marks = [(i - n, p) for i, p in self._part_marks if i > n]
        self.buf = self.buf[n:]
        self.base += n
        self.pos -= n

    def line_part(self, index: int) -> tuple[int, str]:
        """(line, part) of buffer index ``index``."""
        marks = [(i, p) for i, p in self._part_marks if i <= index]
        if marks:
            i, p = marks[-1]
            return 1 + self.buf.count(b"\n", i, index), p
        return self.line_at_base + self.buf.count(b"\n", 0, index), self.part

    def _lines_of(self, indexes: np.ndarray) -> tuple[np.ndarray, str]:
        if indexes.size == 0:
            return np.zeros(0, dtype=np.int64), self.part
        lo, hi = int(indexes[0]), int(indexes[-1]) + 1
        line0, part = self.line_part(lo)
        marks = [(i, p) for i, p in self._part_marks if lo < i <= hi]
        a = np.frombuffer(self.buf, dtype=np.uint8, count=hi - lo, offset=lo)
        nl = np.flatnonzero(a == 10)
        lines = line0 + np.searchsorted(nl, indexes - lo)
        if marks:  # rows of one INSERT in two parts: count the later ones from their part's start
            for i, p in marks:
                after = indexes >= i
                lines[after] = 1 + np.array([self.buf.count(b"\n", i, int(x)) for x in indexes[after]])
                part = p
        return lines.astype(np.int64), part

    def _ensure(self, n: int) -> bool:
        """At least n bytes available from pos (or the end of the stream)."""
        while len(self.buf) - self.pos < n:
            if not self._fill():
                return len(self.buf) - self.pos > 0
        return True

    # --- statements

    def _skip_blank(self) -> bool:
        """Move past blanks and comments to the next statement. False at the end of the stream."""
        while True:
            if not self._ensure(3):
                return False
            b = self.buf
            i = self.pos
            n = len(b)
            while i < n and b[i] in b" \t\r\n":
                i += 1
            self.pos = i
            if i >= n:
                if not self._fill():
                    return False
                continue
            if not self._ensure(3):
                return len(self.buf) > self.pos
            b, i = self.buf, self.pos
            if b.startswith(b"--", i) and (len(b) <= i + 2 or b[i + 2] in b" \t\r\n") or b.startswith(b"#", i):
                if not self._skip_to(b"\n"):
                    return False
                continue
            if b.startswith(b"/*", i) and not b.startswith(b"/*!", i):
                if not self._skip_to(b"*/"):
                    return False
                continue
            return True

    def _skip_to(self, token: bytes) -> bool:
        """Move pos just past the next ``token``; False if the stream ends first (pos then at the end)."""
        while True:
            j = self.buf.find(token, self.pos)
            if j >= 0:
                self.pos = j + len(token)
                return True
            # keep only a tail that could begin the token (usually nothing: the next chunk is then taken as it is,
            # not copied onto a remainder)
            keep = len(self.buf)
            for k in range(len(token) - 1, 0, -1):
                if self.buf.endswith(token[:k]):
                    keep = len(self.buf) - k
                    break
            keep = max(self.pos, keep)
            self.bytes_skipped += keep - self.pos
            self.pos = keep
            if not self._fill():
                self.pos = len(self.buf)
                return False

    def _statement_end(self) -> bool:
        """Move pos past the current statement's delimiter (delimiter + newline, or at the end of the stream)."""
        token = self.delimiter + b"\n"
        found = self._skip_to(token)
        if not found:  # the last statement: delimiter at the very end, or none
            return False
        return True

    def _skip_inserts(self, prefix: bytes) -> None:
        """Skip the current INSERT and the ones right after it that start with the same ``prefix`` (the same
        table): one find and one startswith per statement, without the per-statement event machinery."""
        need = len(prefix)
        while self._statement_end():
            if len(self.buf) - self.pos < need and not self._ensure(need):
                return
            if not self.buf.startswith(prefix, self.pos):
                return

    def _read_statement(self, limit: int = 64 << 20) -> bytes:
        """The whole current statement (small ones: CREATE TABLE, SET...), pos moved past it."""
        token = self.delimiter + b"\n"
        while True:
            j = self.buf.find(token, self.pos)
            if j >= 0:
                stmt = self.buf[self.pos:j]
                self.pos = j + len(token)
                return stmt
            if len(self.buf) - self.pos > limit:
                raise DumpSyntaxError(self.base + self.pos, "statement too long")
            if not self._fill():
                stmt = self.buf[self.pos:]
                self.pos = len(self.buf)
                d = self.delimiter
                return stmt[:-len(d)] if stmt.rstrip().endswith(d) else stmt

    def events(self) -> Iterator:
        current: str | None = None
        while self._skip_blank():
            stmt_index = self.pos
            self._ensure(4096)
            stmt_index = self.pos
            head = self.buf[stmt_index:stmt_index + 4096]
            offset = self.base + stmt_index
            m = _INSERT.match(head)
            if m:
                table = _ident(m.group(2))
                if table != current:
                    current = table
                    yield TableStart(table, offset, *self.line_part(stmt_index))
                if self._want(table):
                    yield from self._insert(table, offset, m)
                else:
                    self._skip_inserts(head[:m.end(2)])
                continue
            if head[:9].upper() == b"DELIMITER":
                lm = _DELIMITER.match(head)
                self._skip_to(b"\n")
                if lm:
                    self.delimiter = lm.group(1)
                continue
            tm = _TABLE_STMT.match(head)
            if tm:
                table = _ident(tm.group(1))
                if table != current:
                    current = table
                    yield TableStart(table, offset, *self.line_part(stmt_index))
                if head[:6].upper() == b"CREATE":
                    stmt = self._read_statement()
                    schema = parse_create_table(stmt)
                    if schema is not None:
                        self.schemas[schema.name] = schema
                        yield TableDef(schema, offset)
                else:
                    self._statement_end()
                continue
            sm = _SET_NAMES.search(head[:200])
            if sm and (head[:3].upper() == b"SET" or head.startswith(b"/*!")):
                self.charset = sm.group(1).decode("ascii")
                self.codec = charset_codec(self.charset)
                self._statement_end()
                yield SetNames(self.charset, offset)
                continue
            self._statement_end()

    def _insert(self, table: str, offset: int, m: re.Match) -> Iterator:
        schema = self.schemas.get(table)
        names = None
        if m.group(3):
            names = [_ident(x.group(0)) for x in _COLLIST.finditer(m.group(3).strip()[1:-1])]
        ncols = len(names) if names else (len(schema.columns) if schema else None)
        stmt_line, stmt_part = self.line_part(self.pos)
        self.pos += m.end()
        row_index = 0  # rows of this statement consumed so far (good and malformed)
        skip = self._skip_rows
        self._skip_rows = 0
        limit = MAX_REGION
        search_from = 0  # buffer index from which to look for the statement's end
        while True:
            while len(self.buf) - self.pos < min(limit, CHUNK) and self._fill():
                pass
            end = min(len(self.buf), self.pos + limit)
            # the statement most likely ends at the next ';' + newline: look no further (the fast pass checks
            # that this ';' is outside strings; if not, it parses the complete rows and we go on from there)
            guess = self.buf.find(self.delimiter + b"\n", max(self.pos, search_from), end)
            if guess >= 0:
                end = guess + len(self.delimiter)
            at_eof = self.eof and end == len(self.buf)
            try:
                region = None
                if self.fast and ncols:
                    try:
                        region = _fast_region(self.buf, self.pos, end, ncols, at_eof)
                        self.fast_regions += 1
                    except _Fallback:
                        region = None
                if region is None:
                    region = parse_values_slow(self.buf, self.pos, end, ncols, at_eof)
                    self.slow_regions += 1
            except DumpSyntaxError as e:
                at = min(e.offset, max(len(self.buf) - 1, 0))
                line, part = self.line_part(at)
                snippet = self.buf[at:at + 80].decode(self.codec, "replace")
                # resynchronise at the first ';' + newline after the last complete row: dumpers never write a
                # raw newline inside a string, so that is where this statement really ends
                self._statement_end()
                yield StatementError(table, offset, self.base + at, line, part, e.message, row_index, snippet)
                return
            if region.columns is None:  # no complete row yet
                if guess >= 0:
                    search_from = end  # that ';' was inside a string: look past it
                    continue
                if end < len(self.buf):
                    limit *= 2  # one row longer than the region
                elif not self._fill():
                    if len(self.buf) == self.pos:
                        break
                continue
            limit = MAX_REGION
            search_from = 0
            total = region.count + len(region.bad)
            if total:
                bad_at = {k for k, _, _ in region.bad}
                ids = np.array([k for k in range(total) if k not in bad_at], dtype=np.int64) if bad_at \
                    else np.arange(total, dtype=np.int64)
                ids += row_index
                lines, part = self._lines_of(region.row_starts)
                bad = []
                for k, bidx, msg in region.bad:
                    if row_index + k < skip:
                        continue
                    bl, _ = self.line_part(bidx)
                    raw = self.buf[bidx:bidx + 200].decode(self.codec, "replace")
                    bad.append((row_index + k, bl, msg, raw))
                cols = region.columns
                count = region.count
                if skip > row_index:
                    drop = int(np.searchsorted(ids, skip))
                    cols = [c.slice(drop) for c in cols]
                    lines, ids, count = lines[drop:], ids[drop:], count - drop
                row_index += total
                if count or bad:
                    yield Rows(table, cols, offset, ids, row_index, lines, part, count, bad, names, stmt_line, stmt_part)
            if region.consumed <= self.pos and not region.done and at_eof:
                line, part = self.line_part(self.pos)
                snippet = self.buf[self.pos:self.pos + 80].decode(self.codec, "replace")
                yield StatementError(table, offset, self.base + self.pos, line, part,
                                     "the dump ends inside this statement", row_index, snippet)
                self.pos = len(self.buf)
                break
            self.pos = region.consumed
            if region.done or (at_eof and region.consumed >= len(self.buf)):
                break
            if self.pos > CHUNK:
                self._drop(self.pos)
        if self.delimiter != b";":
            self._statement_end()
