"""Safe, streaming XML for the 1C readers (CommerceML, EnterpriseData), and the source machinery they share.

Parsing
    ``iter_events`` streams ``("start" | "end", element)`` pairs from a file with ``defusedxml``'s iterparse:
    entity declarations (billion laughs, quadratic blow-up) and external entities are refused before anything is
    expanded or fetched, and the refusal is a ``BadInputError`` naming the file and line. Tags and attribute names
    come without their namespace (1C files are read by local name, whichever namespace, if any, they carry); every
    element knows the line of its start tag (``element.line``, the parser's position when it saw the tag).
    The encoding comes from the BOM, else from the XML declaration, else UTF-8 (windows-1251 is read by expat
    through Python's codec). Malformed XML is a ``BadInputError`` naming file, line and column.

Sources
    ``XmlRecordSource`` turns "record" elements into flat string rows. A file is walked in one or two *phases*:
    ``list`` (counterparties in their own list) and ``documents`` (documents, with the counterparties embedded in
    them). For counterparties and contact persons the list comes first, whatever the order in the file, and a
    counterparty embedded in documents is yielded once per file, from its first document, only if the list did not
    have its key (so the fuller list entry wins); the list walk notes the embedded keys, and the documents are walked
    a second time only if some are not in the list. Kept per file: the set of counterparty keys seen.
    Elements outside a record are cleared and dropped as soon as they end, a record's subtree once it has been
    turned into rows: memory stays flat whatever the file's size (the parser works one 16 KiB chunk ahead).

    The cursor after a batch is ``{"file", "file_index", "phase", "unit", "sub", "size", "mtime_ns"}``: ``unit``
    record elements of ``phase`` were consumed whole and ``sub`` items (rows or rejects) of the next one; at the end
    of a file it carries ``"done": true``. An XML file cannot be entered in the middle, so resuming parses the file
    again from the top and skips what the cursor covers (without yielding it).
"""

from __future__ import annotations

import bisect
import codecs
import datetime as _dt
import json
import logging
import re
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping
from xml.etree import ElementTree as ET

import pyarrow as pa
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml import ElementTree as DET

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

log = logging.getLogger("connectors.onec.xml")

__all__ = [
    "Element", "XmlRecordSource", "FileContext", "detect_xml_encoding", "iter_events", "clean", "norm_date",
    "norm_number", "norm_bool", "parse_inner_xml", "split_fio", "BadValue",
]

STRIP = " \t\r\n\u00a0\u202f\ufeff"
_HEAD = 4096  # bytes read to find the BOM and the XML declaration


# --- parsing ------------------------------------------------------------------------------------------------


class Element(ET.Element):
    """An ElementTree element that knows the line of its start tag."""

    __slots__ = ("line",)


class _Builder:
    """The parser's target: a TreeBuilder making ``Element``s with local names and their line.

    ``end``, ``data`` and ``close`` are the C TreeBuilder's own methods (no Python call per event); ``start`` strips
    the namespace and notes the line."""

    #: local names whose namespace is noted (the first occurrence): the roots and EnterpriseData's Body
    WATCH = frozenset({"КоммерческаяИнформация", "Message", "Body"})

    def __init__(self) -> None:
        tb = ET.TreeBuilder(element_factory=Element)
        self._start = tb.start
        self.end = tb.end  # the C TreeBuilder does not check the tag it is given
        self.data = tb.data
        self.close = tb.close
        self.expat: Any = None
        self.namespaces: dict[str, str] = {}  # local name -> namespace, for the names in WATCH

    def start(self, tag: str, attrs: dict) -> Element:
        if tag[:1] == "{":
            ns, _, local = tag[1:].partition("}")
        else:
            ns, local = "", tag
        if local in self.WATCH:
            self.namespaces.setdefault(local, ns)
        if attrs:
            attrs = {(k.rpartition("}")[2] if k[:1] == "{" else k): v for k, v in attrs.items()}
        el = self._start(local, attrs)
        el.line = self.expat.CurrentLineNumber
        return el


_DECL = re.compile(rb"""^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")


def _expat_name(codec: str) -> str:
    """The name expat is given for a Python codec (UTF-8/UTF-16 are native; single-byte ones go via Python)."""
    return {"utf-8": "UTF-8", "utf-16": "UTF-16", "utf-16-le": "UTF-16LE", "utf-16-be": "UTF-16BE",
            "cp1251": "windows-1251", "cp866": "cp866", "koi8-r": "KOI8-R", "latin-1": "ISO-8859-1",
            "iso8859-1": "ISO-8859-1", "ascii": "US-ASCII"}.get(codec, codec)


def detect_xml_encoding(head: bytes, display: str) -> str:
    """The encoding of an XML file from its first bytes: the BOM, else the declaration, else UTF-8.

    A BOM wins over a declaration that says otherwise (1C and Bitrix files have been seen with both)."""
    if head.startswith(codecs.BOM_UTF8):
        return "UTF-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    m = _DECL.match(head)
    if not m:
        return "UTF-8"
    declared = m.group(1).decode("ascii")
    try:
        info = codecs.lookup(declared)
    except LookupError:
        raise BadInputError(f"{display}, line 1: unknown encoding {declared!r} in the XML declaration",
                            file=display, offset=0) from None
    return _expat_name(info.name)


def _codec(expat_name: str) -> str:
    try:
        return codecs.lookup(expat_name).name
    except LookupError:
        return expat_name


def _parse_error(display: str, path: Path, parser: Any, encoding: str, err: ET.ParseError) -> BadInputError:
    code = getattr(err, "code", None)
    line, col = getattr(err, "position", (None, None))
    expat = parser.parser
    offset = getattr(expat, "ErrorByteIndex", None)
    try:
        from pyexpat import ErrorString

        reason = ErrorString(code) if code is not None else str(err)
    except Exception:  # noqa: BLE001
        reason = str(err)
    hint = ""
    if offset is not None and offset >= 0 and reason in ("not well-formed (invalid token)", "undefined entity"):
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                window = f.read(16)
            codecs.getincrementaldecoder(_codec(encoding))().decode(window, final=False)
        except (UnicodeDecodeError, LookupError):
            hint = (f" (the bytes here are not {encoding}: the file's encoding differs from its declaration; "
                    f"set `encoding:` on the source)")
        except OSError:
            pass
    where = f"line {line}, column {col + 1 if isinstance(col, int) else col}" if line else "at the start"
    return BadInputError(f"{display}, {where}: malformed XML: {reason}{hint}", file=display,
                         offset=offset if isinstance(offset, int) and offset >= 0 else None)


def _refused(display: str, parser: Any, err: Exception) -> BadInputError:
    expat = parser.parser
    line = getattr(expat, "CurrentLineNumber", None)
    offset = getattr(expat, "CurrentByteIndex", None)
    if isinstance(err, EntitiesForbidden):
        what = (f"an entity declaration (<!ENTITY {err.name} ...>): entity declarations are refused, "
                f"they are how entity-expansion attacks work")
    elif isinstance(err, ExternalReferenceForbidden):
        what = f"a reference to an external entity ({err.sysid or err.pubid}): external entities are refused"
    else:
        what = "a DTD: DTDs are refused"
    return BadInputError(f"{display}, line {line}: unsafe XML refused: {what}", file=display,
                         offset=offset if isinstance(offset, int) and offset >= 0 else None)


class _Stream:
    """An open XML file being parsed; ``tell()`` gives the bytes read so far (for progress)."""

    def __init__(self, path: Path, display: str, encoding: str = "auto"):
        self.path = path
        self.display = display
        try:
            self.file: IO[bytes] = open(path, "rb")
        except OSError as e:
            raise TerminalError(f"{display}: cannot open: {e}") from None
        head = self.file.read(_HEAD)
        self.file.seek(0)
        self.encoding = detect_xml_encoding(head, display) if encoding == "auto" else _expat_name(_codec(encoding))
        self.builder = _Builder()
        self.parser = DET.DefusedXMLParser(target=self.builder, encoding=self.encoding)
        self.builder.expat = self.parser.parser

    def tell(self) -> int:
        try:
            return self.file.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.file.close()

    def iterparse(self) -> Iterator[tuple[str, Element]]:
        """defusedxml's iterparse over the file (errors untranslated: see ``translate``)."""
        return DET.iterparse(self.file, events=("start", "end"), parser=self.parser)

    def translate(self, exc: Exception) -> BadInputError | None:
        """The BadInputError for an exception out of the parser; None if it is not the parser's."""
        if isinstance(exc, ET.ParseError):
            return _parse_error(self.display, self.path, self.parser, self.encoding, exc)
        if isinstance(exc, (EntitiesForbidden, ExternalReferenceForbidden, DTDForbidden)):
            return _refused(self.display, self.parser, exc)
        # an encoding expat cannot take: unknown to it (LookupError) or multi-byte (ValueError from pyexpat)
        if isinstance(exc, LookupError) or (isinstance(exc, ValueError) and "encoding" in str(exc)):
            return BadInputError(f"{self.display}: cannot read encoding {self.encoding!r}: {exc}", file=self.display)
        return None

    def events(self) -> Iterator[tuple[str, Element]]:
        try:
            yield from self.iterparse()
        except Exception as e:  # noqa: BLE001 - translated if it is the parser's, else raised as it is
            bad = self.translate(e)
            if bad is None:
                raise
            raise bad from None


def iter_events(path: Path | str, display: str | None = None, encoding: str = "auto") -> Iterator[tuple[str, Element]]:
    """Stream ``(event, element)`` from an XML file, hardened; see the module doc."""
    path = Path(path)
    s = _Stream(path, display or str(path), encoding)
    try:
        yield from s.events()
    finally:
        s.close()


# --- values -------------------------------------------------------------------------------------------------


def clean(value: str | None) -> str | None:
    """Stripped (spaces, tabs, line breaks, no-break spaces, BOM); empty -> None."""
    if value is None:
        return None
    value = value.strip(STRIP)
    return value or None


class BadValue(ValueError):
    """A value that should be a date, number or boolean and is not."""

    def __init__(self, kind: str, value: str):
        super().__init__(f"bad {kind} {value!r}")
        self.kind = kind
        self.value = value


_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
                  r"(Z|[+-]\d{2}:?\d{2})?$")
_RU = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?$")


def norm_date(value: str | None, time: str | None = None) -> str | None:
    """A 1C date/dateTime as ISO text: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS``; the empty date (year 1) -> None.

    Accepts ISO with ``T`` or a space, a bare date where a dateTime is due, ``dd.mm.yyyy[ H:MM[:SS]]``; a zone
    suffix is dropped (1C works in local time). ``time`` (CommerceML ``Время``) is added to a bare date.
    Raises BadValue for anything else, impossible dates included."""
    value = clean(value)
    if value is None:
        return None
    m = _ISO.match(value)
    if m:
        y, mo, d, hh, mi, ss = m.group(1, 2, 3, 4, 5, 6)
    else:
        m = _RU.match(value)
        if not m:
            raise BadValue("date", value)
        d, mo, y, hh, mi, ss = m.group(1, 2, 3, 4, 5, 6)
    if int(y) <= 1:
        return None  # 0001-01-01T00:00:00, 01.01.0001 0:00:00: 1C's empty date
    t = clean(time)
    if hh is None and t is not None:
        tm = _TIME.match(t)
        if not tm:
            raise BadValue("time", t)
        hh, mi, ss = tm.group(1, 2, 3)
    try:
        if hh is None:
            return _dt.date(int(y), int(mo), int(d)).isoformat()
        return _dt.datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0)).isoformat()
    except ValueError:
        raise BadValue("date", value if time is None else f"{value} {time}") from None


_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def norm_number(value: str | None) -> str | None:
    """A number as XML writes it (dot decimal), stripped of a leading '+'; raises BadValue otherwise."""
    value = clean(value)
    if value is None:
        return None
    if not _NUMBER.match(value):
        raise BadValue("number", value)
    return value[1:] if value[0] == "+" else value


_TRUE = {"true", "1", "да", "истина", "yes"}
_FALSE = {"false", "0", "нет", "ложь", "no"}


def norm_bool(value: str | None) -> str | None:
    """``true`` / ``false`` from xs:boolean and 1C's Да/Нет; raises BadValue otherwise."""
    value = clean(value)
    if value is None:
        return None
    low = value.lower()
    if low in _TRUE:
        return "true"
    if low in _FALSE:
        return "false"
    raise BadValue("boolean", value)


_FIO_WORD = re.compile(r"^[А-ЯЁ][а-яё]+(?:-[А-ЯЁ][а-яё]+)?$")


def split_fio(name: str | None) -> tuple[str | None, str | None, str | None]:
    """(last, first, middle) from "Фамилия Имя [Отчество]" when the name is two or three capitalised Cyrillic
    words; else (None, None, None): the name stays whole in its own column."""
    if not name:
        return None, None, None
    words = name.split()
    if len(words) not in (2, 3) or not all(_FIO_WORD.match(w) for w in words):
        return None, None, None
    return words[0], words[1], words[2] if len(words) == 3 else None


def parse_inner_xml(text: str) -> ET.Element:
    """Parse XML held as text inside an element (EnterpriseData ``ЗначенияПолей``), hardened the same way."""
    return DET.fromstring(text)


# --- the source ---------------------------------------------------------------------------------------------

LIST, DOCUMENTS = "list", "documents"


@dataclass
class FileContext:
    """What a walk of one file knows: its name, format version, flags and the oddities seen."""

    rel: str
    version: str | None = None
    # keys of counterparties embedded in documents that the list walk met (None: one without a key); those not in
    # the list by the end of it are what the documents walk is for
    pending: set = field(default_factory=set)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, tuple[int | None, str]] = field(default_factory=dict)

    def warn(self, code: str, line: int | None, message: str) -> None:
        """Note an oddity that does not stop a record (a value read leniently, a fallback taken)."""
        self.warnings[code] += 1
        if code not in self.examples:
            self.examples[code] = (line, message)


@dataclass
class Item:
    """What a record element gives: a row, or a reject of the record."""

    row: dict | None = None
    reject: dict | None = None


class XmlRecordSource(Source):
    """The shared machinery of the 1C XML sources: files, phases, dedupe, batches, cursor, warnings."""

    progress_unit = "bytes"
    #: kind -> its columns (all strings), in order
    KINDS: dict[str, list[str]] = {}
    MAX_WARNINGS = 500

    def __init__(self, files: str | list[str], *, base_dir: Path | str = ".", kind: str = "counterparties",
                 encoding: str = "auto", embedded_counterparties: bool = True, name: str = "onec_xml"):
        self.patterns = [files] if isinstance(files, str) else list(files)
        if not self.patterns:
            raise TerminalError(f"{name}: no file pattern given")
        if kind not in self.KINDS:
            raise TerminalError(f"{name}: unknown kind {kind!r} (one of {', '.join(self.KINDS)})")
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise TerminalError(f"{name}: unknown encoding {encoding!r}") from None
        self.base_dir = Path(base_dir)
        self.kind = kind
        self.encoding = encoding
        self.embedded = embedded_counterparties
        self.name = name
        self.warnings: list[str] = []  # oddities of the files read, one line per kind of oddity and file
        self._schema = pa.schema([pa.field(c, pa.string()) for c in self.KINDS[kind]]
                                 + [pa.field(FILE_COLUMN, pa.string()), pa.field(LINE_COLUMN, pa.int64())])

    # --- hooks of a format

    @abstractmethod
    def _root(self, el: Element, ctx: FileContext, stream: _Stream) -> None:
        """Check the root element (BadInputError if this is not the format's file); note the version."""

    @abstractmethod
    def _record_type(self, el: Element, names: list[str], ctx: FileContext, phase: str) -> str | None:
        """At a start tag outside any record: "counterparty" or "document" if a record of ``phase`` starts;
        "embedded" in the list phase for a counterparty embedded in a document (only its key is taken)."""

    def _on_end(self, el: Element, names: list[str], ctx: FileContext) -> None:
        """An element outside any record ended (before it is cleared)."""

    @abstractmethod
    def counterparty_key(self, el: Element) -> str | None:
        """The dedupe key of a counterparty element: its 1C id, else ИНН+КПП."""

    @abstractmethod
    def embedded_counterparties(self, doc: Element) -> list[Element]:
        """The counterparty elements embedded in a document."""

    @abstractmethod
    def counterparty_items(self, el: Element, key: str | None, ctx: FileContext) -> list[Item]:
        """The items of a counterparty for this source's kind (a row, its contact persons...)."""

    @abstractmethod
    def document_items(self, doc: Element, ctx: FileContext) -> list[Item]:
        """The items of a document for this source's kind (the document, its lines)."""

    # --- helpers for the formats

    def row(self, ctx: FileContext, el: Element, values: Mapping[str, str | None]) -> dict:
        out = {c: values.get(c) for c in self.KINDS[self.kind]}
        out[FILE_COLUMN] = ctx.rel
        out[LINE_COLUMN] = getattr(el, "line", None)
        return out

    def reject(self, ctx: FileContext, line: int | None, reason: str, message: str, *, field: str | None = None,
               value: str | None = None, row: Mapping[str, Any] | None = None) -> Item:
        where = f"{ctx.rel}, line {line}" if line else ctx.rel
        return Item(reject={
            "stage": "read", "reason": reason, "message": f"{where}: {message}", "file": ctx.rel, "line": line,
            "field": field, "value": value, "record": record_json(row) if row is not None else None,
        })

    # --- files

    def _resolve(self) -> list[tuple[str, Path]]:
        return resolve_files(self.patterns, self.base_dir, self.name)

    def _phases(self) -> list[str]:
        if self.kind in ("documents", "document_items"):
            return [DOCUMENTS]
        return [LIST, DOCUMENTS] if self.embedded else [LIST]

    # --- Source

    def check(self) -> None:
        for rel, full in self._resolve():
            stream = _Stream(full, rel, self.encoding)
            try:
                for event, el in stream.events():
                    self._root(el, FileContext(rel), stream)
                    break
                else:
                    raise BadInputError(f"{rel}: empty XML file", file=rel)
            finally:
                stream.close()

    def columns(self) -> list[str]:
        return list(self.KINDS[self.kind])

    def total(self) -> int | None:
        try:
            return sum(full.stat().st_size for _, full in self._resolve())
        except (TerminalError, OSError):
            return None

    def next_pass(self, finished: dict | None) -> dict | None:
        return None  # files are snapshots: every pass starts from the top

    @staticmethod
    def _start(files: list[tuple[str, Path]], cursor: dict | None) -> tuple[int, tuple[str, int, int] | None]:
        """(index of the file to start in, (phase, unit, sub) to skip to in it, or None)."""
        if not cursor:
            return 0, None
        names = [rel for rel, _ in files]
        name = cursor.get("file")
        index = cursor.get("file_index")
        if not (isinstance(index, int) and 0 <= index < len(names) and names[index] == name):
            if name in names:  # files were added or removed before it
                index = names.index(name)
            else:  # the file is gone: go on with the first one that sorts after it
                return bisect.bisect_right(names, name or ""), None
        if cursor.get("done"):
            return index + 1, None
        return index, (str(cursor.get("phase") or LIST), int(cursor.get("unit") or 0), int(cursor.get("sub") or 0))

    def read(self, cursor: dict | None, batch_size: int) -> Iterator[SourceBatch]:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        files = self._resolve()
        start, pos = self._start(files, cursor)
        done_bytes = sum(file_size(full) for _, full in files[:start])
        for index in range(start, len(files)):
            rel, full = files[index]
            yield from self._read_file(index, rel, full, pos if index == start else None, batch_size, done_bytes)
            done_bytes += file_size(full)

    def _walk(self, stream: _Stream, ctx: FileContext, phase: str) -> Iterator[tuple[str, Element]]:
        """The complete record elements of one phase, in document order; everything else is dropped as it ends."""
        stack: list[Element] = []
        names: list[str] = []
        push, pop, push_name, pop_name = stack.append, stack.pop, names.append, names.pop
        record_type = self._record_type
        on_end = self._on_end if type(self)._on_end is not XmlRecordSource._on_end else None
        record: Element | None = None
        kind: str | None = None
        try:
            for event, el in stream.iterparse():
                if event == "start":
                    if record is None:
                        if stack:
                            kind = record_type(el, names, ctx, phase)
                            if kind is not None:
                                record = el
                        else:
                            self._root(el, ctx, stream)
                    push(el)
                    push_name(el.tag)
                    continue
                pop()
                pop_name()
                if record is not None:
                    if record is not el:
                        continue  # inside a record: keep the subtree until the record ends
                    yield kind, el  # type: ignore[misc]
                    record = None
                elif on_end is not None:
                    on_end(el, names, ctx)
                el.clear()
                if stack:
                    # the parser builds a chunk ahead of the events we handle: later siblings may be in the parent
                    # already; the one that ended is its first child (those before it were dropped), not its last
                    parent = stack[-1]
                    if parent[0] is el:
                        del parent[0]
                    else:
                        parent.remove(el)
        except Exception as e:  # noqa: BLE001 - translated if it is the parser's, else raised as it is
            bad = stream.translate(e)
            if bad is None:
                raise
            raise bad from None

    def _units(self, stream: _Stream, ctx: FileContext, phase: str, seen: set[str]) -> Iterator[tuple[Element, list[Item]]]:
        """Each record element of the phase with its items. Counterparties embedded in documents come once per
        file: those whose key was seen (in the list, or in an earlier document) give no items."""
        for rtype, el in self._walk(stream, ctx, phase):
            if rtype == "embedded":  # the list walk meets a document's counterparty: note its key, no unit
                ctx.pending.add(self.counterparty_key(el))
                continue
            if rtype == "counterparty":
                key = self.counterparty_key(el)
                if key is not None:
                    seen.add(key)
                yield el, self.counterparty_items(el, key, ctx)
            elif self.kind in ("counterparties", "contacts"):
                items: list[Item] = []
                for cp in self.embedded_counterparties(el):
                    key = self.counterparty_key(cp)
                    if key is not None:
                        if key in seen:
                            continue
                        seen.add(key)
                    items.extend(self.counterparty_items(cp, key, ctx))
                yield el, items
            else:
                yield el, self.document_items(el, ctx)

    def _read_file(self, index: int, rel: str, full: Path, pos: tuple[str, int, int] | None, batch_size: int,
                   done_bytes: int) -> Iterator[SourceBatch]:
        try:
            st = full.stat()
        except OSError as e:
            raise TerminalError(f"{rel}: cannot open: {e}") from None
        size, mtime_ns = st.st_size, st.st_mtime_ns
        phases = self._phases()
        start_phase, start_unit, start_sub = pos if pos and pos[0] in phases else (phases[0], 0, 0)
        ctx = FileContext(rel)
        seen: set[str] = set()
        rows: list[dict] = []
        rejects: list[dict] = []
        base = {"file": rel, "file_index": index, "size": size, "mtime_ns": mtime_ns}

        def batch(cursor: dict, progress: int) -> SourceBatch:
            table = pa.Table.from_pylist(rows, schema=self._schema)
            b = SourceBatch(table=table, cursor={**base, **cursor}, rejects=make_rejects(rejects), progress=progress)
            rows.clear()
            rejects.clear()
            return b

        # Resuming: files change rarely (exports are snapshots); if this one did since the cursor was taken, we
        # still skip by count, so some records may be skipped or read twice.
        for p_index, phase in enumerate(phases):
            if phases.index(start_phase) > p_index:
                skip_units, skip_sub = None, 0  # a phase the cursor is past: walk it for its keys only
            elif phase == start_phase:
                skip_units, skip_sub = start_unit, start_sub
            else:
                skip_units, skip_sub = 0, 0
            if phase == DOCUMENTS and LIST in phases and not (ctx.pending - seen):
                break  # every counterparty the documents carry was in the list: no second walk
            stream = _Stream(full, rel, self.encoding)
            try:
                unit = 0
                for el, items in self._units(stream, ctx, phase, seen):
                    if skip_units is None or unit < skip_units:
                        unit += 1
                        continue
                    first = skip_sub if unit == skip_units else 0
                    for k in range(first, len(items)):
                        if len(rows) + len(rejects) >= batch_size:
                            progress = done_bytes + (min(stream.tell(), size) if p_index == 0 else size)
                            yield batch({"phase": phase, "unit": unit, "sub": k}, progress)
                        item = items[k]
                        if item.row is not None:
                            rows.append(item.row)
                        else:
                            rejects.append(item.reject)
                    unit += 1
            finally:
                stream.close()
        if rows or rejects:
            yield batch({"phase": phases[-1], "unit": 0, "sub": 0, "done": True}, done_bytes + size)
        self._report(ctx)

    def _report(self, ctx: FileContext) -> None:
        for code, n in sorted(ctx.warnings.items()):
            line, message = ctx.examples[code]
            at = f"line {line}" if line else "the file"
            msg = f"{ctx.rel}: {message} ({at})" if n == 1 else f"{ctx.rel}: {message} ({n} times, first at {at})"
            log.warning("%s", msg)
            if len(self.warnings) < self.MAX_WARNINGS:
                self.warnings.append(msg)


# --- small helpers the formats share ------------------------------------------------------------------------


def text_of(el: Element | None, *paths: str) -> str | None:
    """The stripped text of the first of ``paths`` (ElementPath, relative to ``el``) that has any; else None."""
    if el is None:
        return None
    for p in paths:
        child = el.find(p) if p else el
        if child is not None:
            v = clean(child.text)
            if v is not None:
                return v
    return None


def find_first(el: Element | None, *paths: str) -> Element | None:
    if el is None:
        return None
    for p in paths:
        child = el.find(p)
        if child is not None:
            return child
    return None


def join_unique(values: Iterable[str | None], sep: str = "; ") -> str | None:
    out = list(dict.fromkeys(v for v in values if v))
    return sep.join(out) if out else None


def as_json(pairs: list[tuple[str, str | None]]) -> str | None:
    if not pairs:
        return None
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            d[k] = d[k] + "; " + (v or "") if d[k] else v
        else:
            d[k] = v
    return json.dumps(d, ensure_ascii=False)
