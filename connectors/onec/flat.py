"""1C flat exports (CSV / TXT / XLSX) as a Source.

1C itself saves spreadsheets as TXT (UTF-8 with BOM, tab-separated, CRLF), ANSITXT (windows-1251) and XLSX;
CSV comes from custom code with any delimiter and encoding. This source reads all of them the same way:

* one or several glob patterns, matched files read in sorted order, all with the same (cleaned) header;
* text: encoding from the BOM, else UTF-8 if the whole file is valid UTF-8, else windows-1251; delimiter
  sniffed from the header line; parsed by the C ``csv`` module, which gives us the physical line numbers;
* XLSX: openpyxl in read-only mode, cells turned into the text 1C would have written;
* every value stripped, empty -> null; selected columns typed with vectorised pyarrow.compute kernels
  (1C dates ``dd.mm.yyyy H:MM:SS`` and ISO, the empty date ``01.01.0001`` -> null, decimal comma numbers
  with no-break-space grouping, Да/Нет booleans); a row with an unreadable value becomes one reject.

Batches never span two files. The cursor points just past a batch: ``{"file", "file_index", "row", "size",
"mtime_ns"}`` where ``row`` counts the records consumed in that file: every parsed row but empty lines (XLSX:
empty sheet rows), whether it was kept, rejected, or dropped for having only empty values (";;;;").
"""

from __future__ import annotations

import bisect
import codecs
import csv
import datetime as _dt
import gc
import io
from functools import reduce
from itertools import islice
from pathlib import Path
from typing import Iterator, Literal, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors.base import (
    FILE_COLUMN,
    LINE_COLUMN,
    BadInputError,
    Source,
    SourceBatch,
    TerminalError,
    make_rejects,
    record_json,
)
from connectors.onec.paths import file_size, resolve_files

__all__ = [
    "COLUMN_TYPES", "ColumnType", "FlatFileSource", "clean_header", "detect_encoding", "read_header", "sniff_delimiter",
]

ColumnType = Literal["string", "date", "datetime", "number", "integer", "boolean"]

COLUMN_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "date": pa.date32(),
    "datetime": pa.timestamp("s"),
    "number": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
}

_REASON = {
    "date": "bad_date",
    "datetime": "bad_date",
    "number": "bad_number",
    "integer": "bad_number",
    "boolean": "bad_boolean",
}
_WHAT = {"date": "date", "datetime": "datetime", "number": "number", "integer": "integer", "boolean": "boolean"}

# What a value is stripped of (both ends). The spec names spaces, tabs and U+00A0; CR/LF (a quoted field
# ending in a newline) and U+202F (narrow no-break space, 1C's grouping in some locales) go too.
_STRIP = " \t\r\n\u00a0\u202f"
_HEADER_STRIP = _STRIP + "\ufeff"

_CHUNK = 4 << 20  # bytes per read when scanning a file for its encoding
_TEXT_BUFFER = 1 << 20
_DELIMITERS = (";", ",", "\t")  # in order of preference on a tie
_XLSX_SUFFIXES = (".xlsx", ".xlsm")

_NULL_STRING = pa.scalar(None, pa.string())

# --- typed parsing ------------------------------------------------------------------------------------------

_RU_WHEN = (
    r"^(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?)?$"
)
_ISO_WHEN = (
    r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,]\d+)?)?)?$"
)
_WHEN_FORMAT = "%Y-%m-%d-%H-%M-%S"
_GROUPING = (" ", "\u00a0", "\u202f")  # thousands separators
_NUMBER = r"^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$"
_INTEGER = r"^-?\d{1,18}(?:\.0*)?$"
_TRUE = pa.array(["да", "истина", "true", "1", "yes"])
_FALSE = pa.array(["нет", "ложь", "false", "0", "no"])


def _bad_mask(raw: pa.Array, ok: pa.Array) -> pa.Array:
    """True where a value was present but could not be read (no nulls in the result)."""
    return pc.and_(pc.is_valid(raw), pc.invert(ok.fill_null(False)))


def _parse_when(raw: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    ru = pc.extract_regex(raw, pattern=_RU_WHEN)
    rest = pc.if_else(pc.is_valid(ru), _NULL_STRING, raw)  # ISO is tried on what is not dd.mm.yyyy only
    iso = pc.extract_regex(rest, pattern=_ISO_WHEN)

    def part(name: str) -> pa.Array:
        return pc.utf8_lpad(pc.coalesce(pc.struct_field(ru, name), pc.struct_field(iso, name)), width=2, padding="0")

    year, month, day, hour, minute, second = (part(k) for k in ("y", "m", "d", "H", "M", "S"))
    text = pc.binary_join_element_wise(year, month, day, hour, minute, second, "-")
    ts = pc.strptime(text, format=_WHEN_FORMAT, unit="s", error_is_null=True)
    # strptime rolls 31.02 over into March and 23:59:60 into the next minute: the fields must come back
    ok = reduce(pc.and_, [
        pc.equal(pc.day(ts), pc.cast(day, pa.int64())),
        pc.equal(pc.hour(ts), pc.cast(hour, pa.int64())),
        pc.equal(pc.minute(ts), pc.cast(minute, pa.int64())),
        pc.equal(pc.second(ts), pc.cast(second, pa.int64())),
    ]).fill_null(False)
    year_one = pc.equal(year, "0001").fill_null(False)  # 1C's empty date 01.01.0001 (0:00:00) and kin
    ok = pc.and_(ok, pc.invert(year_one))
    ts = pc.if_else(ok, ts, pa.scalar(None, pa.timestamp("s")))
    bad = _bad_mask(raw, pc.or_(ok, year_one))
    if kind == "date":
        return pc.cast(ts, pa.date32(), safe=False), bad
    return ts, bad


def _clean_number(raw: pa.Array) -> pa.Array:
    s = raw
    for sep in _GROUPING:
        s = pc.replace_substring(s, pattern=sep, replacement="")
    s = pc.replace_substring(s, pattern=",", replacement=".")
    return pc.replace_substring_regex(s, pattern=r"^\+", replacement="")


def _parse_number(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    s = _clean_number(raw)
    ok = pc.match_substring_regex(s, pattern=_NUMBER).fill_null(False)
    values = pc.cast(pc.if_else(ok, s, _NULL_STRING), pa.float64())
    finite = pc.is_finite(values).fill_null(False)  # 1e400 parses as inf
    if not pc.all(pc.or_(finite, pc.invert(ok))).as_py():
        ok = pc.and_(ok, finite)
        values = pc.if_else(ok, values, pa.scalar(None, pa.float64()))
    return values, _bad_mask(raw, ok)


def _parse_integer(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    s = _clean_number(raw)
    ok = pc.match_substring_regex(s, pattern=_INTEGER).fill_null(False)
    s = pc.replace_substring_regex(pc.if_else(ok, s, _NULL_STRING), pattern=r"\.0*$", replacement="")
    return pc.cast(s, pa.int64()), _bad_mask(raw, ok)


def _parse_boolean(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    low = pc.utf8_lower(raw)
    yes = pc.is_in(low, value_set=_TRUE)
    no = pc.is_in(low, value_set=_FALSE)
    values = pc.if_else(yes, True, pc.if_else(no, False, pa.scalar(None, pa.bool_())))
    return pc.if_else(pc.is_valid(raw), values, pa.scalar(None, pa.bool_())), _bad_mask(raw, pc.or_(yes, no))


def _parse(raw: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    if kind in ("date", "datetime"):
        return _parse_when(raw, kind)
    if kind == "number":
        return _parse_number(raw)
    if kind == "integer":
        return _parse_integer(raw)
    if kind == "boolean":
        return _parse_boolean(raw)
    raise AssertionError(kind)


def _clean_strings(arr: pa.Array) -> pa.Array:
    """Strip every value and turn the empty ones into nulls, vectorised."""
    arr = pc.utf8_trim(arr, characters=_STRIP)
    filled = pc.greater(pc.binary_length(arr), 0).fill_null(False)
    if filled.false_count == 0:
        return arr
    if arr.offset == 0 and filled.offset == 0:
        # the same offsets and data, with "empty" folded into the validity bitmap (if_else would copy them)
        _, offsets, data = arr.buffers()
        return pa.Array.from_buffers(pa.string(), len(arr), [filled.buffers()[1], offsets, data])
    return pc.if_else(filled, arr, _NULL_STRING)


# --- header, encoding, delimiter ----------------------------------------------------------------------------


def clean_header(cells: Sequence[object]) -> list[str]:
    """Strip header cells; blank -> ``column_<N>``; repeated names get ``_2``, ``_3``... (1-based)."""
    names: list[str] = []
    used: set[str] = set()
    for pos, cell in enumerate(cells, 1):
        name = ("" if cell is None else str(cell)).strip(_HEADER_STRIP)
        if not name:
            name = f"column_{pos}"
        if name in used:
            k = 2
            while f"{name}_{k}" in used:
                k += 1
            name = f"{name}_{k}"
        used.add(name)
        names.append(name)
    return names


def _codec_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise TerminalError(f"unknown encoding {encoding!r}") from None


def _display_encoding(codec: str) -> str:
    return {"cp1251": "windows-1251", "utf-8-sig": "utf-8"}.get(codec, codec)


def detect_encoding(path: Path | str, *, whole: bool = True) -> str:
    """The codec of a text export: ``utf-8-sig`` (BOM), ``utf-8`` (all valid UTF-8) or ``cp1251``.

    With ``whole=False`` only the first few MB are checked (enough for a header).
    """
    with open(path, "rb") as f:
        if f.read(3) == codecs.BOM_UTF8:
            return "utf-8-sig"
        f.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while True:
                chunk = f.read(_CHUNK)
                decoder.decode(chunk, final=not chunk)
                if not chunk:
                    break
                if not whole:
                    if len(chunk) < _CHUNK:
                        decoder.decode(b"", final=True)
                    break
        except UnicodeDecodeError:
            return "cp1251"
    return "utf-8"


def _find_decode_error(path: Path, codec: str) -> tuple[int, int] | None:
    """(absolute offset, byte) of the first byte that ``codec`` cannot decode, or None."""
    start = 0
    if codec == "utf-8-sig":
        codec = "utf-8"
        with open(path, "rb") as f:
            if f.read(3) == codecs.BOM_UTF8:
                start = 3
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while True:
            chunk = f.read(_CHUNK)
            pending = len(decoder.getstate()[0])  # bytes held back from the previous chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                return pos - pending + e.start, e.object[e.start]
            if not chunk:
                return None
            pos += len(chunk)


def sniff_delimiter(path: Path | str, codec: str) -> str:
    """';', ',' or TAB: the one most frequent outside quotes in the header line (ties prefer ';')."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    text = head.decode(codec, errors="replace")
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    seen = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            seen = True
        elif quoted:
            continue
        elif ch == "\n" or ch == "\r":
            if seen:
                break  # end of the header line (leading blank lines skipped)
        else:
            if ch in counts:
                counts[ch] += 1
            if not ch.isspace() and ch != "\ufeff":
                seen = True
    return max(_DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals


def _norm_delimiter(delimiter: str) -> str:
    if delimiter == "auto":
        return delimiter
    aliases = {"\\t": "\t", "tab": "\t", "TAB": "\t"}
    delimiter = aliases.get(delimiter, delimiter)
    if len(delimiter) != 1 or delimiter in ('"', "\r", "\n"):
        raise TerminalError(f"bad delimiter {delimiter!r}: one character or 'auto'")
    return delimiter


def _is_xlsx(path: str | Path) -> bool:
    return str(path).lower().endswith(_XLSX_SUFFIXES)


# --- file readers -------------------------------------------------------------------------------------------


class _no_gc:
    """Pause the cyclic GC while a chunk of row lists is built.

    Tens of thousands of fresh lists that all survive trigger collections that find nothing and cost more
    than the parsing; the previous state is restored on exit (the pause lasts one chunk).
    """

    def __enter__(self) -> None:
        self._was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self._was:
            gc.enable()


class _Chunk(NamedTuple):
    rows: list  # raw rows, [] for an empty text line
    start: int  # text: physical lines read before the chunk
    end: int  # text: physical lines read after it
    lines: list[int] | None  # XLSX: the sheet row of each row (text: None, the builder counts them)


class _TextFile:
    """A delimited text file as chunks of csv rows."""

    def __init__(self, full: Path, rel: str, encoding: str, delimiter: str, whole_scan: bool):
        self.rel = rel
        self.full = full
        self.codec = detect_encoding(full, whole=whole_scan) if encoding == "auto" else encoding
        if delimiter == "auto":
            delimiter = sniff_delimiter(full, self.codec)
        self._raw = open(full, "rb", buffering=_TEXT_BUFFER)
        self._text = io.TextIOWrapper(self._raw, encoding=self.codec, errors="strict", newline="")
        self._text._CHUNK_SIZE = 1 << 16  # bigger decode steps than the default 8 KiB
        self._reader = csv.reader(
            self._text, delimiter=delimiter, quotechar='"', doublequote=True, skipinitialspace=True,
            strict=False,
        )
        self.header_cells: list[str] | None = None
        try:
            while True:  # the header is the first non-empty line
                chunk = self.take(1)
                if not chunk.rows:
                    break
                if chunk.rows[0]:
                    self.header_cells = chunk.rows[0]
                    break
        except BaseException:
            self.close()
            raise

    # errors of the underlying streams as connector errors
    def _decode_error(self) -> BadInputError:
        found = _find_decode_error(self.full, self.codec)
        enc = _display_encoding(self.codec)
        if found is None:  # the file changed under us
            return BadInputError(f"{self.rel}: cannot decode as {enc}", file=self.rel)
        offset, byte = found
        return BadInputError(
            f"{self.rel}: cannot decode as {enc} at byte {offset} (0x{byte:02X})", file=self.rel, offset=offset
        )

    def _csv_error(self, e: csv.Error) -> BadInputError:
        return BadInputError(
            f"{self.rel}, line {self._reader.line_num}: malformed delimited text: {e}",
            file=self.rel,
            offset=self._raw.tell(),
        )

    def take(self, n: int) -> _Chunk:
        """Up to ``n`` csv rows (``[]`` for an empty line) and the physical line counts around them."""
        reader = self._reader
        start = reader.line_num
        try:
            with _no_gc():
                rows = list(islice(reader, n)) if n > 0 else []
        except UnicodeDecodeError:
            raise self._decode_error() from None
        except csv.Error as e:
            raise self._csv_error(e) from None
        return _Chunk(rows, start, reader.line_num, None)

    def skip(self, n: int) -> int:
        """Read past ``n`` records (empty lines do not count); the number actually skipped."""
        done = 0
        while done < n:
            rows = self.take(min(n - done, 65536)).rows
            if not rows:
                break
            done += len(rows) - rows.count([])
        return done

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        try:
            self._text.close()
        except Exception:
            self._raw.close()


def _cell_text(v: object) -> str | None:
    """An XLSX cell as the text 1C would have written."""
    if v is None or type(v) is str:
        return v  # type: ignore[return-value]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, _dt.datetime):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if isinstance(v, _dt.date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    if isinstance(v, _dt.time):
        return v.isoformat(timespec="seconds")
    return str(v)


class _XlsxFile:
    """One sheet of an XLSX workbook as chunks of rows of text; empty sheet rows are not records."""

    def __init__(self, full: Path, rel: str, sheet: str | None):
        import openpyxl  # only when there is a workbook to read

        self.rel = rel
        self.size = full.stat().st_size
        try:
            self._wb = openpyxl.load_workbook(full, read_only=True, data_only=True)
        except OSError:
            raise
        except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException...
            raise TerminalError(f"{rel}: cannot open as XLSX: {e}") from None
        try:
            if sheet is not None:
                if sheet not in self._wb.sheetnames:
                    raise TerminalError(f"{rel}: no sheet {sheet!r} (sheets: {', '.join(self._wb.sheetnames)})")
                ws = self._wb[sheet]
            else:
                ws = self._wb.worksheets[0]
            # the stored dimension serves the progress estimate only: other tools often write it wrong, so
            # rows are read without it (each as long as its last cell)
            self._estimate = ws.max_row if isinstance(ws.max_row, int) and ws.max_row > 1 else None
            ws.reset_dimensions()
            self._rows = ws.iter_rows(values_only=True)
            self._row_no = 0
            self._done = False
            chunk = self.take(1)
        except BaseException:
            self.close()
            raise
        self.header_cells = chunk.rows[0] if chunk.rows else None

    def take(self, n: int) -> _Chunk:
        rows: list[list[str | None]] = []
        lines: list[int] = []
        if n > 0 and not self._done:
            try:
                for row in self._rows:
                    self._row_no += 1
                    if any(v is not None for v in row):
                        rows.append([_cell_text(v) for v in row])
                        lines.append(self._row_no)
                        if len(rows) >= n:
                            break
                else:
                    self._done = True
            except Exception as e:  # a corrupt sheet
                raise BadInputError(
                    f"{self.rel}, row {self._row_no + 1}: cannot read the sheet: {e}", file=self.rel
                ) from None
        return _Chunk(rows, 0, 0, lines)

    def skip(self, n: int) -> int:
        done = 0
        while done < n:
            rows = self.take(min(n - done, 10_000)).rows
            if not rows:
                break
            done += len(rows)
        return done

    def tell(self) -> int:
        if self._done:
            return self.size
        if self._estimate:
            return min(self.size, self.size * self._row_no // self._estimate)
        return 0

    def close(self) -> None:
        self._wb.close()


def _open(full: Path, rel: str, *, encoding: str, delimiter: str, sheet: str | None, whole_scan: bool):
    try:
        if _is_xlsx(rel):
            return _XlsxFile(full, rel, sheet)
        return _TextFile(full, rel, encoding, delimiter, whole_scan)
    except OSError as e:
        raise TerminalError(f"{rel}: cannot open: {e}") from None


def read_header(
    path: Path | str, encoding: str = "auto", delimiter: str = "auto", *, sheet: str | None = None
) -> list[str]:
    """The cleaned header of one export (reads the header only); TerminalError if the file has none."""
    path = Path(path)
    enc = "auto" if encoding == "auto" else _codec_name(encoding)
    f = _open(path, str(path), encoding=enc, delimiter=_norm_delimiter(delimiter), sheet=sheet, whole_scan=False)
    try:
        if not f.header_cells:
            raise TerminalError(f"{path}: empty file, no header")
        return clean_header(f.header_cells)
    finally:
        f.close()


# --- the source ---------------------------------------------------------------------------------------------


class FlatFileSource(Source):
    """1C flat exports: delimited text (CSV/TXT, any encoding 1C writes) and XLSX sheets."""

    progress_unit = "bytes"

    def __init__(
        self,
        files: str | list[str],
        *,
        base_dir: Path | str = ".",
        encoding: str = "auto",
        delimiter: str = "auto",
        sheet: str | None = None,
        types: dict[str, ColumnType] | None = None,
        name: str = "onec",
    ):
        self.patterns = [files] if isinstance(files, str) else list(files)
        if not self.patterns:
            raise TerminalError(f"{name}: no file pattern given")
        self.base_dir = Path(base_dir)
        self.encoding = "auto" if encoding == "auto" else _codec_name(encoding)
        self.delimiter = _norm_delimiter(delimiter)
        self.sheet = sheet
        self.types: dict[str, str] = dict(types or {})
        for col, kind in self.types.items():
            if kind not in COLUMN_TYPES:
                raise TerminalError(f"{name}: column {col!r}: unknown type {kind!r} (one of {', '.join(COLUMN_TYPES)})")
        self.name = name
        self._header: list[str] | None = None
        self._header_key: tuple | None = None

    # --- files

    def _resolve(self) -> list[tuple[str, Path]]:
        return resolve_files(self.patterns, self.base_dir, self.name)

    def _open(self, rel: str, full: Path, *, whole_scan: bool):
        return _open(full, rel, encoding=self.encoding, delimiter=self.delimiter, sheet=self.sheet,
                     whole_scan=whole_scan)

    def _header_of(self, rel: str, full: Path) -> list[str]:
        f = self._open(rel, full, whole_scan=False)
        try:
            if not f.header_cells:
                raise TerminalError(f"{rel}: empty file, no header")
            return clean_header(f.header_cells)
        finally:
            f.close()

    def _expected(self, files: list[tuple[str, Path]]) -> list[str]:
        rel, full = files[0]
        try:
            st = full.stat()
        except OSError as e:
            raise TerminalError(f"{rel}: cannot open: {e}") from None
        key = (rel, st.st_size, st.st_mtime_ns)
        if self._header is None or self._header_key != key:
            self._header = self._header_of(rel, full)
            self._header_key = key
        return self._header

    def _check_header(self, rel: str, header: list[str], expected: list[str], first: str) -> None:
        if header != expected:
            missing = [c for c in expected if c not in header]
            extra = [c for c in header if c not in expected]
            detail = f"missing {missing}, extra {extra}" if missing or extra else "columns in another order"
            raise TerminalError(f"{rel}: header differs from {first}: {detail}")

    def _check_types(self, header: list[str]) -> None:
        clash = [c for c in header if c in (FILE_COLUMN, LINE_COLUMN)]
        if clash:
            raise TerminalError(f"{self.name}: the header has a column named like a provenance column: {clash}")
        unknown = [c for c in self.types if c not in header]
        if unknown:
            raise TerminalError(f"{self.name}: typed column(s) not in the header: {', '.join(unknown)}")

    # --- Source

    def check(self) -> None:
        files = self._resolve()
        expected = self._expected(files)
        for rel, full in files[1:]:
            self._check_header(rel, self._header_of(rel, full), expected, files[0][0])
        self._check_types(expected)

    def columns(self) -> list[str]:
        return list(self._expected(self._resolve()))

    def total(self) -> int | None:
        try:
            return sum(full.stat().st_size for _, full in self._resolve())
        except (TerminalError, OSError):
            return None

    def next_pass(self, finished: dict | None) -> dict | None:
        return None  # files are snapshots: every pass starts from the top

    def _schema(self, header: list[str]) -> pa.Schema:
        fields = [pa.field(c, COLUMN_TYPES[self.types.get(c, "string")]) for c in header]
        return pa.schema(fields + [pa.field(FILE_COLUMN, pa.string()), pa.field(LINE_COLUMN, pa.int64())])

    @staticmethod
    def _start(files: list[tuple[str, Path]], cursor: dict | None) -> tuple[int, int]:
        """(index of the file to start in, records of it to skip)."""
        if not cursor:
            return 0, 0
        names = [rel for rel, _ in files]
        name = cursor.get("file")
        index = cursor.get("file_index")
        row = int(cursor.get("row") or 0)
        if isinstance(index, int) and 0 <= index < len(names) and names[index] == name:
            return index, row
        if name in names:  # files were added or removed before it
            return names.index(name), row
        if name is None:
            return (index, row) if isinstance(index, int) and 0 <= index < len(names) else (0, 0)
        # the file is gone: go on with the first one that sorts after it
        return bisect.bisect_right(names, name), 0

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        files = self._resolve()
        expected = self._expected(files)
        self._check_types(expected)
        schema = self._schema(expected)
        start, skip = self._start(files, cursor)
        done_bytes = sum(file_size(full) for _, full in files[:start])
        for index in range(start, len(files)):
            rel, full = files[index]
            try:
                st = full.stat()
            except OSError as e:
                raise TerminalError(f"{rel}: cannot open: {e}") from None
            size, mtime_ns = st.st_size, st.st_mtime_ns
            # Resuming goes by record count only. If the file's size/mtime differ from the cursor's, the file
            # was rewritten since; we still resume at the same record number (records of a rewritten file may
            # then be skipped or read twice). Exports are meant to be immutable snapshots.
            f = self._open(rel, full, whole_scan=True)
            try:
                if not f.header_cells:
                    raise TerminalError(f"{rel}: empty file, no header")
                self._check_header(rel, clean_header(f.header_cells), expected, files[0][0])
                consumed = f.skip(skip) if index == start else 0
                while True:
                    chunk = f.take(batch_size)
                    if not chunk.rows:
                        break
                    consumed += len(chunk.rows) - chunk.rows.count([])  # empty lines are no records
                    at_end = len(chunk.rows) < batch_size
                    table, rejects = self._build(chunk, rel, expected, schema)
                    progress = done_bytes + (size if at_end else min(f.tell(), size))
                    if table.num_rows or rejects.num_rows:
                        yield SourceBatch(
                            table=table,
                            cursor={"file": rel, "file_index": index, "row": consumed, "size": size,
                                    "mtime_ns": mtime_ns},
                            rejects=rejects,
                            progress=progress,
                        )
                    if at_end:
                        break
            finally:
                f.close()
            done_bytes += size

    # --- batch building

    def _build(self, chunk: _Chunk, rel: str, header: list[str], schema: pa.Schema) -> tuple[pa.Table, pa.Table]:
        n = len(header)
        rows = chunk.rows
        m = len(rows)
        rejects: list[dict] = []

        # All cells in one Arrow conversion (row-major), then each column gathered by index: no Python work
        # per cell, and ragged rows (short ones padded with nulls, long ones cut) cost nothing extra.
        nested = pa.array(rows, pa.list_(pa.string())) if m else pa.array([], pa.list_(pa.string()))
        offsets = nested.offsets.to_numpy()
        values = nested.values
        starts = offsets[:-1]
        lens = np.diff(offsets)
        regular = bool((lens == n).all())
        raw = [
            values.take(pa.array(starts + i)) if regular else values.take(pa.array(starts + i, mask=lens <= i))
            for i in range(n)
        ]

        if chunk.lines is not None:
            lines = np.asarray(chunk.lines, dtype=np.int64)
        elif chunk.end - chunk.start == m:  # one line a row: no field holds a line break
            lines = np.arange(chunk.start + 1, chunk.end + 1, dtype=np.int64)
        else:  # multi-line fields: a row spans 1 + the line breaks (CRLF, LF or CR) inside its fields
            breaks = pc.count_substring_regex(values, pattern="\r\n|\r|\n").fill_null(0).to_numpy(zero_copy_only=False)
            total = np.concatenate([[0], np.cumsum(breaks, dtype=np.int64)])
            spans = 1 + total[offsets[1:]] - total[starts]
            lines = chunk.start + 1 + np.cumsum(spans) - spans

        keep = None
        long_rows = np.flatnonzero(lens > n)
        if long_rows.size:  # values past the header: a trailing empty field is fine, a value is a bad row
            extra = lens[long_rows] - n
            first = np.repeat(starts[long_rows] + n, extra)
            within = np.arange(int(extra.sum())) - np.repeat(np.cumsum(extra) - extra, extra)
            filled = _clean_strings(values.take(pa.array(first + within))).is_valid().to_numpy(zero_copy_only=False)
            per_row = np.add.reduceat(filled.astype(np.int64), np.cumsum(extra) - extra)
            for i in long_rows[per_row > 0]:
                keep = np.ones(m, dtype=bool) if keep is None else keep
                keep[i] = False
                rejects.append(_bad_row(rel, int(lines[i]), rows[i], header))

        arrays = [_clean_strings(a) for a in raw]
        del raw, nested, values

        # rows whose every value is empty (empty lines, ";;;;", spaces) are not records
        if m and all(a.null_count for a in arrays):
            filled = reduce(pc.or_, [pc.is_valid(a) for a in arrays]).to_numpy(zero_copy_only=False)
            keep = filled if keep is None else keep & filled
        if keep is not None and not keep.all():
            mask = pa.array(keep)
            arrays = [a.filter(mask) for a in arrays]
            lines = lines[keep]

        out = list(arrays)
        bad_masks: list[tuple[int, str, np.ndarray]] = []
        for i, col in enumerate(header):
            kind = self.types.get(col, "string")
            if kind == "string":
                continue
            parsed, bad = _parse(arrays[i], kind)
            out[i] = parsed
            if pc.any(bad).as_py():
                bad_masks.append((i, kind, bad.to_numpy(zero_copy_only=False)))

        if bad_masks:
            any_bad = reduce(np.logical_or, [mask for _, _, mask in bad_masks])
            bad_idx = np.flatnonzero(any_bad)
            raw_rows = pa.Table.from_arrays(arrays, names=header).take(pa.array(bad_idx)).to_pylist()
            for k, row_i in enumerate(bad_idx):
                i, kind = next((i, kind) for i, kind, mask in bad_masks if mask[row_i])
                col = header[i]
                value = raw_rows[k][col]
                line = int(lines[row_i])
                rejects.append({
                    "stage": "read",
                    "reason": _REASON[kind],
                    "message": f"{rel}, line {line}, column «{col}»: bad {_WHAT[kind]} '{value}'",
                    "file": rel,
                    "line": line,
                    "field": col,
                    "value": value,
                    "record": record_json(raw_rows[k]),
                })
            mask = pa.array(~any_bad)
            out = [a.filter(mask) for a in out]
            lines = lines[~any_bad]

        table = pa.Table.from_arrays(
            out + [pa.repeat(pa.scalar(rel, pa.string()), len(lines)), pa.array(lines, pa.int64())], schema=schema
        )
        if len(rejects) > 1:
            rejects.sort(key=lambda r: r["line"])
        return table, make_rejects(rejects)


def _strip_or_none(v: str | None) -> str | None:
    return (v.strip(_STRIP) or None) if v is not None else None


def _bad_row(rel: str, line: int, row: Sequence[str | None], header: list[str]) -> dict:
    n = len(header)
    record = {c: _strip_or_none(v) for c, v in zip(header, row)}
    extra = [(j, _strip_or_none(v)) for j, v in enumerate(row[n:], n + 1)]
    for j, v in extra:
        record.setdefault(f"column_{j}", v)
    pos, value = next((j, v) for j, v in extra if v is not None)
    return {
        "stage": "read",
        "reason": "bad_row",
        "message": f"{rel}, line {line}: {len(row)} fields, the header has {n} (extra value '{value}' in field {pos})",
        "file": rel,
        "line": line,
        "value": value,
        "record": record_json(record),
    }
