"""Snapshot sinks that write files: a Parquet dataset (staging, BI) and a CSV file (exports for people and Excel).

Each pass receives every accepted record. Writes go into a staging directory of the pass,
``<path>/<pipeline>.staging-<pass_id>/``, one part file per write call; ``finish_pass`` publishes the staging as the
output (``<path>/<pipeline>/`` for Parquet, ``<path>/<pipeline>.csv`` for CSV), so the output always reflects
exactly the last complete pass.

Idempotency. A part is named ``part-<seq>-<key>.<ext>``: ``key`` is a hash of the sorted source ids of the batch,
``seq`` its place in the pass. Rewriting a batch after a crash finds the part with the same key and overwrites it in
place (same seq); a new batch gets the next seq. Parts are written to a hidden temp file and renamed, so a part is
complete or absent. At publish a source id held by several parts is kept once, from the part written last.
The published output remembers its pass id (``_pass`` in the Parquet directory, ``.<pipeline>.csv.pass`` beside the
CSV): if the engine dies after a publish but before it records the end of the pass, the resumed pass starts its
staging again from the published output, so a second ``finish_pass`` does not publish an empty file.

A file sink owns ``<path>/<pipeline>*``: two file sinks of one pipeline must not share a directory.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from connectors.base import (
    FILE_COLUMN,
    HASH,
    LINE_COLUMN,
    SOURCE_ID,
    Sink,
    StreamInfo,
    TerminalError,
    WriteResult,
    empty_rejects,
    make_rejects,
    record_json,
)

KEY_COLUMN = "source_id"
HASH_COLUMN = "content_hash"

PASS_MARKER = "_pass"  # in a published Parquet directory: the pass it holds (pyarrow skips "_" files)

_PART_RE = re.compile(r"^part-(\d+)-([0-9a-z]+)\.(\w+)$")
_UNSAFE = re.compile(r"[^\w.\-]", re.UNICODE)


def _safe(name: str) -> str:
    """A file-name-safe form of a pipeline name or pass id."""
    return _UNSAFE.sub("_", name)


@dataclass(frozen=True)
class _Part:
    seq: int
    key: str
    path: Path


def _batch_key(ids: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(ids), ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _last_occurrence(ids: list) -> list[int]:
    """Row positions keeping only the last occurrence of each id, in order."""
    last = {sid: i for i, sid in enumerate(ids)}
    return sorted(last.values()) if len(last) != len(ids) else list(range(len(ids)))


class _SnapshotFileSink(Sink):
    snapshot = True
    ext = ""

    def __init__(self, path: str | Path):
        self.root = Path(path)
        self._stream: StreamInfo | None = None
        self._schema: pa.Schema | None = None
        self._staging: Path | None = None
        self._name = ""
        self._pass = ""
        self._ids_cache: dict[str, tuple[tuple[int, int], frozenset]] = {}

    # -- layout --------------------------------------------------------------------------------------------

    @property
    def output_path(self) -> Path:
        raise NotImplementedError

    @property
    def staging_path(self) -> Path:
        if self._staging is None:
            raise TerminalError(f"{type(self).__name__}: open() must be called first")
        return self._staging

    def _parts(self) -> list[_Part]:
        staging = self.staging_path
        if not staging.is_dir():
            return []
        parts = []
        for entry in staging.iterdir():
            m = _PART_RE.match(entry.name)
            if m and m.group(3) == self.ext:
                parts.append(_Part(int(m.group(1)), m.group(2), entry))
        parts.sort(key=lambda p: (p.seq, p.key))
        return parts

    def _siblings(self, prefix: str) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.startswith(prefix))

    # -- open ----------------------------------------------------------------------------------------------

    def open(self, stream: StreamInfo) -> None:
        clash = [f.name for f in stream.schema if f.name in (KEY_COLUMN, HASH_COLUMN)]
        if clash:
            raise TerminalError(f"entity columns {clash} clash with the sink's own columns")
        self._stream = stream
        self._schema = pa.schema([pa.field(KEY_COLUMN, pa.string()), *stream.schema,
                                  pa.field(HASH_COLUMN, pa.string())])
        self._name = _safe(stream.pipeline)
        self._pass = _safe(stream.pass_id)
        self._staging = self.root / f"{self._name}.staging-{self._pass}"
        self._ids_cache = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._recover()
            # a staging dir of another pass is an abandoned pass: this pass replaces it
            for other in self._siblings(f"{self._name}.staging-") + self._siblings(f".{self._name}.seed-"):
                if other != self._staging:
                    shutil.rmtree(other, ignore_errors=True)
            if (not self._staging.exists() and stream.pass_id
                    and self._published_pass() == stream.pass_id):
                # this pass was published, then the engine died before it committed the end of the pass: start
                # the staging again from the published output, so that lookup() finds the records and a second
                # finish_pass() publishes them again rather than an empty output
                seed = self.root / f".{self._name}.seed-{uuid.uuid4().hex}"
                seed.mkdir()
                self._seed(seed)
                os.rename(seed, self._staging)
            self._staging.mkdir(exist_ok=True)
            for entry in self._staging.iterdir():  # half-written parts of a crashed write
                if entry.name.startswith(".tmp-"):
                    entry.unlink(missing_ok=True)
        except (OSError, UnicodeError) as exc:
            raise TerminalError(f"cannot prepare {self.root}: {exc}") from exc

    def _recover(self) -> None:
        """Undo what a crash in the middle of a publish left behind."""

    def _published_pass(self) -> str | None:
        """The pass id of the published output, if any."""
        raise NotImplementedError

    def _seed(self, staging: Path) -> None:
        """Put the published output into ``staging`` as parts."""
        raise NotImplementedError

    # -- write ---------------------------------------------------------------------------------------------

    def _reject(self, rec: dict, message: str, field: str | None = None) -> dict:
        line = rec.get(LINE_COLUMN)
        value = rec.get(field) if field else None
        return {
            "stage": "load",
            "reason": "sink_error",
            "message": message,
            "file": rec.get(FILE_COLUMN),
            "line": line if isinstance(line, int) else None,
            "field": field,
            "value": None if value is None else str(value),
            "source_id": None if rec.get(SOURCE_ID) is None else str(rec.get(SOURCE_ID)),
            "record": record_json(rec),
        }

    def _conform(self, tbl: pa.Table) -> tuple[pa.Table, list[dict]]:
        """The batch in the output schema; rows that do not fit it become rejects."""
        assert self._schema is not None
        if SOURCE_ID not in tbl.column_names:
            raise TerminalError(f"{type(self).__name__}: a batch without the {SOURCE_ID} column")
        sources = {KEY_COLUMN: SOURCE_ID, HASH_COLUMN: HASH}
        bad: dict[int, tuple[str, str]] = {}
        columns = []
        for field in self._schema:
            src = sources.get(field.name, field.name)
            if src not in tbl.column_names:
                columns.append(pa.nulls(tbl.num_rows, field.type))
                continue
            col = tbl.column(src)
            try:
                columns.append(col.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                values = []
                for i in range(tbl.num_rows):
                    try:
                        values.append(col.slice(i, 1).cast(field.type)[0].as_py())
                    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                        values.append(None)
                        bad.setdefault(i, (src, f"{src}: cannot convert {col[i].as_py()!r} to {field.type}: {exc}"))
                columns.append(pa.array(values, type=field.type))
        out = pa.Table.from_arrays(columns, schema=self._schema)
        ids = out.column(KEY_COLUMN)
        for i in range(out.num_rows):
            if i not in bad and (not ids[i].is_valid or ids[i].as_py() == ""):
                bad[i] = (SOURCE_ID, "the record has no source id")
        bad.update(self._check_rows(out, bad))
        rejects = []
        if bad:
            for i in sorted(bad):
                field, message = bad[i]
                rejects.append(self._reject(tbl.slice(i, 1).to_pylist()[0], message, field))
            out = out.take([i for i in range(out.num_rows) if i not in bad])
        return out, rejects

    def _check_rows(self, table: pa.Table, bad: dict) -> dict[int, tuple[str, str]]:
        """More rows the format cannot hold (index -> (field, message))."""
        return {}

    def write(self, creates: pa.Table, updates: pa.Table) -> WriteResult:
        staging = self.staging_path
        tables, rejects = [], []
        for tbl in (creates, updates):
            if tbl is None or tbl.num_rows == 0:
                continue
            conformed, bad = self._conform(tbl)
            tables.append(conformed)
            rejects += bad
        table = pa.concat_tables(tables) if tables else None
        ids: list[str] = []
        if table is not None and table.num_rows:
            table = table.take(_last_occurrence(table.column(KEY_COLUMN).to_pylist()))
            ids = table.column(KEY_COLUMN).to_pylist()
            key = _batch_key(ids)
            parts = self._parts()
            same = next((p for p in parts if p.key == key), None)
            seq = same.seq if same else max((p.seq for p in parts), default=0) + 1
            path = staging / f"part-{seq:06d}-{key}.{self.ext}"
            tmp = staging / f".tmp-{uuid.uuid4().hex}.{self.ext}"
            try:
                staging.mkdir(parents=True, exist_ok=True)
                self._write_part(table, tmp)
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise TerminalError(f"cannot write {path}: {exc}") from exc
        return WriteResult(ids={sid: sid for sid in ids},
                           rejects=make_rejects(rejects) if rejects else empty_rejects())

    def _write_part(self, table: pa.Table, path: Path) -> None:
        raise NotImplementedError

    # -- lookup --------------------------------------------------------------------------------------------

    def _read_ids(self, path: Path) -> list[str]:
        raise NotImplementedError

    def _staged_ids(self) -> set[str]:
        present: set[str] = set()
        seen = set()
        for part in self._parts():
            try:
                st = part.path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            name = part.path.name
            seen.add(name)
            cached = self._ids_cache.get(name)
            if cached is None or cached[0] != stamp:
                cached = (stamp, frozenset(self._read_ids(part.path)))
                self._ids_cache[name] = cached
            present |= cached[1]
        for name in set(self._ids_cache) - seen:
            del self._ids_cache[name]
        return present

    def lookup(self, source_ids: list[str]) -> dict[str, str]:
        present = self._staged_ids()
        return {sid: sid for sid in source_ids if sid in present}


class ParquetSink(_SnapshotFileSink):
    """Publishes each complete pass as a Parquet dataset directory ``<path>/<pipeline>/``."""

    ext = "parquet"

    def __init__(self, path: str | Path):
        super().__init__(path)

    @property
    def output_path(self) -> Path:
        return self.root / self._name

    def _old_prefix(self) -> str:
        return f"{self._name}.old-"

    def _recover(self) -> None:
        olds = self._siblings(self._old_prefix())
        if olds and not self.output_path.exists():
            # crashed between "rename the old output aside" and "rename the new one in": put the old one back
            newest = max(olds, key=lambda p: p.stat().st_mtime_ns)
            os.rename(newest, self.output_path)
            olds.remove(newest)
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)

    def _published_pass(self) -> str | None:
        marker = self.output_path / PASS_MARKER
        return marker.read_text(encoding="utf-8") if marker.is_file() else None

    def _seed(self, staging: Path) -> None:
        for entry in self.output_path.iterdir():
            if _PART_RE.match(entry.name):
                shutil.copy2(entry, staging / entry.name)

    def _write_part(self, table: pa.Table, path: Path) -> None:
        pq.write_table(table, path)

    def _read_ids(self, path: Path) -> list[str]:
        return pq.read_table(path, columns=[KEY_COLUMN]).column(KEY_COLUMN).to_pylist()

    def _align(self, table: pa.Table) -> pa.Table:
        """A part written under an older schema (a pass resumed after an upgrade), in the current one."""
        assert self._schema is not None
        cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
                else pa.nulls(table.num_rows, f.type) for f in self._schema]
        return pa.Table.from_arrays(cols, schema=self._schema)

    def finish_pass(self) -> None:
        staging = self.staging_path
        assert self._schema is not None
        try:
            staging.mkdir(parents=True, exist_ok=True)
            parts = self._parts()
            if not parts:  # an empty pass publishes an empty dataset, not a missing one
                pq.write_table(self._schema.empty_table(), staging / f"part-000000-empty.{self.ext}")
            else:
                self._dedupe(parts)
            out = self.output_path
            old = self.root / f"{self._old_prefix()}{self._pass}"
            if old.exists():
                shutil.rmtree(old)
            (staging / PASS_MARKER).write_text(self._stream.pass_id, encoding="utf-8")
            if out.exists():
                os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise TerminalError(f"cannot publish {self.output_path}: {exc}") from exc
        self._ids_cache = {}

    def _dedupe(self, parts: list[_Part]) -> None:
        """Rewrite the staging as one part if a source id is in several parts or a part has another schema."""
        assert self._schema is not None
        total, distinct, same_schema = 0, set(), True
        expected = self._parquet_schema()
        for part in parts:
            ids = self._read_ids(part.path)
            total += len(ids)
            distinct.update(ids)
            same_schema = same_schema and pq.read_schema(part.path).remove_metadata().equals(expected)
        if total == len(distinct) and same_schema:
            return
        table = pa.concat_tables([self._align(pq.read_table(p.path)) for p in parts])
        table = table.take(_last_occurrence(table.column(KEY_COLUMN).to_pylist()))
        seq = parts[-1].seq + 1
        tmp = self.staging_path / f".tmp-{uuid.uuid4().hex}.{self.ext}"
        pq.write_table(table, tmp)
        # the merged part comes last, so until the old parts are gone it wins every duplicate
        os.replace(tmp, self.staging_path / f"part-{seq:06d}-merged.{self.ext}")
        for part in parts:
            part.path.unlink(missing_ok=True)

    def _parquet_schema(self) -> pa.Schema:
        """The schema a part of the current schema reads back with (Parquet has no second timestamps)."""
        tmp = pa.BufferOutputStream()
        pq.write_table(self._schema.empty_table(), tmp)
        return pq.read_schema(pa.BufferReader(tmp.getvalue())).remove_metadata()


class CsvSink(_SnapshotFileSink):
    """Publishes each complete pass as one CSV file ``<path>/<pipeline>.csv`` with a single header.

    Values: NULL is an empty field, booleans ``true``/``false``, timestamps ``YYYY-MM-DD HH:MM:SS``, dates ISO,
    floats in Python's shortest round-trip form with a decimal point. Staging parts are UTF-8 CSV with a header;
    the output is encoded in ``encoding`` (a record it cannot represent is rejected at write).
    """

    ext = "csv"

    def __init__(self, path: str | Path, *, encoding: str = "utf-8-sig", delimiter: str = ";"):
        super().__init__(path)
        try:
            self._codec = codecs.lookup(encoding).name
        except LookupError as exc:
            raise TerminalError(f"unknown encoding {encoding!r}") from exc
        if len(delimiter) != 1:
            raise TerminalError(f"the CSV delimiter must be one character, not {delimiter!r}")
        self.encoding = encoding
        self.delimiter = delimiter

    @property
    def output_path(self) -> Path:
        return self.root / f"{self._name}.csv"

    def _tmp_prefix(self) -> str:
        return f".{self._name}.csv.tmp-"

    @property
    def _marker(self) -> Path:
        return self.root / f".{self._name}.csv.pass"

    def _recover(self) -> None:
        for tmp in self._siblings(self._tmp_prefix()):
            tmp.unlink(missing_ok=True)

    def _published_pass(self) -> str | None:
        if not (self._marker.is_file() and self.output_path.is_file()):
            return None
        return self._marker.read_text(encoding="utf-8")

    def _seed(self, staging: Path) -> None:
        with open(self.output_path, encoding=self.encoding, newline="") as src, \
                open(staging / f"part-000001-published.{self.ext}", "w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst)

    @staticmethod
    def _text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return "" if math.isnan(value) else repr(value)
        if isinstance(value, datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, date):
            return value.isoformat()
        return str(value)

    def _rows(self, table: pa.Table) -> Iterator[list[str]]:
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        for values in zip(*columns):
            yield [self._text(v) for v in values]

    def _check_rows(self, table: pa.Table, bad: dict) -> dict[int, tuple[str, str]]:
        if self._codec.startswith(("utf-8", "utf-16", "utf-32")):
            return {}  # every Arrow string is valid Unicode
        found = {}
        names = table.column_names
        for i, row in enumerate(self._rows(table)):
            if i in bad:
                continue
            for name, text in zip(names, row):
                try:
                    text.encode(self.encoding)
                except UnicodeEncodeError as exc:
                    found[i] = (name, f"{name}: {exc.object[exc.start:exc.end]!r} cannot be written in "
                                      f"{self.encoding}")
                    break
        return found

    def _writer(self, f) -> Any:
        return csv.writer(f, delimiter=self.delimiter, quoting=csv.QUOTE_MINIMAL)

    def _write_part(self, table: pa.Table, path: Path) -> None:
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = self._writer(f)
            w.writerow(table.column_names)
            w.writerows(self._rows(table))

    def _reader(self, path: Path) -> tuple[list[str], Iterator[list[str]], Any]:
        f = open(path, encoding="utf-8", newline="")
        reader = csv.reader(f, delimiter=self.delimiter)
        return next(reader, []), reader, f

    def _read_ids(self, path: Path) -> list[str]:
        header, rows, f = self._reader(path)
        with f:
            if KEY_COLUMN not in header:
                return []
            i = header.index(KEY_COLUMN)
            return [row[i] if len(row) > i else "" for row in rows]

    def finish_pass(self) -> None:
        assert self._schema is not None
        header = self._schema.names
        parts = self._parts()
        out = self.output_path
        tmp = self.root / f"{self._tmp_prefix()}{self._pass}"
        try:
            last: dict[str, tuple[int, int]] = {}
            total = 0
            for pi, part in enumerate(parts):
                for ri, sid in enumerate(self._read_ids(part.path)):
                    last[sid] = (pi, ri)
                    total += 1
            dedupe = total != len(last)
            with open(tmp, "w", encoding=self.encoding, newline="") as dst:
                w = self._writer(dst)
                w.writerow(header)
                for pi, part in enumerate(parts):
                    with open(part.path, encoding="utf-8", newline="") as src:
                        first = src.readline()  # the header of a part: our own column names, one line
                        part_header = next(csv.reader([first], delimiter=self.delimiter), [])
                        if part_header == header and not dedupe:
                            shutil.copyfileobj(src, dst)
                            continue
                        src.seek(0)
                        reader = csv.reader(src, delimiter=self.delimiter)
                        part_header = next(reader, [])
                        pos = {name: i for i, name in enumerate(part_header)}
                        key = pos.get(KEY_COLUMN)
                        idx = [pos.get(name) for name in header]
                        for ri, row in enumerate(reader):
                            if dedupe and key is not None and last.get(row[key]) != (pi, ri):
                                continue  # a later part holds this source id
                            w.writerow(["" if i is None or i >= len(row) else row[i] for i in idx])
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, out)
            marker_tmp = self.root / f"{self._tmp_prefix()}marker-{uuid.uuid4().hex}"
            marker_tmp.write_text(self._stream.pass_id, encoding="utf-8")
            os.replace(marker_tmp, self._marker)
            shutil.rmtree(self.staging_path, ignore_errors=True)
        except (OSError, UnicodeError) as exc:
            tmp.unlink(missing_ok=True)
            raise TerminalError(f"cannot publish {out}: {exc}") from exc
        self._ids_cache = {}
