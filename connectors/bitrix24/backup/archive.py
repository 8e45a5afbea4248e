"""The database dump inside a backup, as one stream of ``(part name, bytes)`` chunks.

Accepted inputs (detected by name, then by the first bytes):

* CBackup archives ``X.tar``, ``X.tar.gz``, ``X.enc``, ``X.enc.gz`` with volumes ``.1``, ``.2``... (any volume may
  be named: the set starts at the one without a number); encrypted ones need the password;
* plain dumps: ``X.sql`` with its continuation parts ``X.sql.1``, ``X.sql.2``... (CBackup), a mysqldump file
  (BitrixVM), or a gzipped dump ``X.sql.gz``.

Inside an archive the ``bitrix/backup/<name>.sql``, ``.sql.1``... members come first (after ``.config.php``); we
read them in order and stop at the first member after them, so ``upload/`` is never inflated.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path
from typing import Iterator

from connectors.base import BadInputError, TerminalError
from connectors.bitrix24.backup.crypto import HEADER_SIZE, Decryptor, is_encrypted_header
from connectors.bitrix24.backup.tar import TarMember, TarReader, looks_like_tar
from connectors.bitrix24.backup.volumes import READ_SIZE, VolumeSet, base_name, is_gzip, prefetch

__all__ = ["BackupDump", "is_dump_member"]


def _drop(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """The chunks without their first ``n`` bytes."""
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:] if n else chunk
        n = 0

_ARCHIVE_NAME = re.compile(r"\.(tar|tgz|enc)(\.gz)?$|\.tar\.gz$|\.enc\.gz$", re.I)
_SQL_NAME = re.compile(r"\.sql$", re.I)
_SQL_PART = re.compile(r"^(.*\.sql)(?:\.(\d+))?$", re.I)


def is_dump_member(name: str) -> tuple[str, int] | None:
    """(dump base name, part number) for ``.../X.sql`` (0) and ``.../X.sql.N`` (N); None otherwise
    (``X_after_connect.sql`` is not part of the dump)."""
    m = _SQL_PART.match(name)
    if not m or m.group(1).lower().endswith("_after_connect.sql"):
        return None
    return m.group(1), int(m.group(2) or 0)


class BackupDump:
    """Open a backup (archive or dump file) and stream its SQL dump."""

    def __init__(self, path: Path | str, *, password: str | None = None, restart_every: int | None = None):
        self.path = Path(path)
        self.restart_every = restart_every
        if not self.path.exists() and not base_name(self.path).exists():
            raise TerminalError(f"{self.path}: no such file")
        self.password = password
        self.kind = self._detect()
        self.sql_done = 0  # bytes of the dump handed out in the current pass
        self._volumes: VolumeSet | None = None
        self._encrypted = False
        self._block = 16  # the cipher's block, for restart points in an encrypted archive
        # the dump's parts as met in the archive: (part number, name, tar data offset, size, dump offset)
        self._parts: list[tuple[int, str, int, int, int]] = []
        self._dump_base: str | None = None

    # --- detection

    def _detect(self) -> str:
        name = base_name(self.path).name
        if _ARCHIVE_NAME.search(name):
            return "archive"
        if _SQL_NAME.search(name) or _SQL_PART.match(self.path.name):
            return "sql"
        if name.lower().endswith(".sql.gz"):
            return "sqlgz"
        # by content
        first = base_name(self.path)
        if is_gzip(first):
            head = b""
            for chunk in VolumeSet(first, single=True).chunks():
                head += chunk
                if len(head) >= HEADER_SIZE:
                    break
            return "archive" if is_encrypted_header(head) or looks_like_tar(head) else "sqlgz"
        with open(first, "rb") as f:
            head = f.read(HEADER_SIZE)
        return "archive" if is_encrypted_header(head) or looks_like_tar(head) else "sql"

    def identity(self) -> dict:
        first = base_name(self.path) if self.kind != "sql" else self._sql_parts()[0]
        st = first.stat()
        return {"path": str(first.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "kind": self.kind}

    def _sql_parts(self) -> list[Path]:
        m = _SQL_PART.match(self.path.name)
        base = self.path.with_name(m.group(1)) if m else self.path
        if not base.is_file():
            raise TerminalError(f"{base}: no such file (the first part of the dump)")
        parts = [base]
        while (nxt := base.with_name(f"{base.name}.{len(parts)}")).is_file():
            parts.append(nxt)
        return parts

    def total(self) -> int | None:
        """Bytes of the dump when known without reading (plain dumps)."""
        if self.kind == "sql":
            return sum(p.stat().st_size for p in self._sql_parts())
        return None

    @property
    def compressed_done(self) -> int:
        return self._volumes.compressed_done if self._volumes else 0

    # --- streaming

    def seek_points(self) -> list[dict]:
        """Where a later read of this archive can start inflating, as learnt by reading it (a gzip member start
        inside a dump part's data): ``{"dump": dump offset, "plain", "vol", "at", "part", "no", "data", "size",
        "base"}``, in order. Empty for encrypted archives and plain dumps."""
        vs = self._volumes
        if self.kind != "archive" or vs is None or self._dump_base is None:
            return []
        out = []
        parts = list(self._parts)
        for plain, vol, at in list(vs.restart_points):
            skip, tar = 0, plain
            if self._encrypted:  # ECB: decrypting can start at any whole cipher block after the header
                if plain < HEADER_SIZE:
                    continue
                tar = -(-(plain - HEADER_SIZE) // self._block) * self._block
                skip = tar - (plain - HEADER_SIZE)
            for no, name, data, size, dump_at in parts:
                if data <= tar < data + size:
                    out.append({"dump": dump_at + tar - data, "plain": plain, "vol": vol, "at": at, "tar": tar,
                                "skip": skip, "encrypted": self._encrypted, "part": name, "no": no, "data": data,
                                "size": size, "base": self._dump_base})
                    break
        return out

    def chunks(self, start: int = 0, seek: list[dict] | None = None) -> Iterator[tuple[str, bytes]]:
        """The dump from stream offset ``start``: (part name, bytes) chunks, parts in order. ``seek``: points from
        :meth:`seek_points` of an earlier read of the same archive; inflating starts at the last one before
        ``start`` instead of at the beginning."""
        self.sql_done = start
        if self.kind == "sql":
            yield from self._plain(start)
            return
        if self.kind == "sqlgz":
            self._volumes = VolumeSet(base_name(self.path), single=True)
            yield from self._from(((self.path.name, c) for c in self._volumes.chunks()), start)
            return
        point = max((p for p in seek or () if p["dump"] <= start), key=lambda p: p["dump"], default=None)
        if point is not None:
            yield from self._from(self._archive_members(point), start, point["dump"])
        else:
            yield from self._from(self._archive_members(), start)

    def _plain(self, start: int) -> Iterator[tuple[str, bytes]]:
        at = 0
        for p in self._sql_parts():
            size = p.stat().st_size
            if at + size <= start:
                at += size
                continue
            with open(p, "rb") as f:
                if start > at:
                    f.seek(start - at)
                while True:
                    data = f.read(READ_SIZE)
                    if not data:
                        break
                    self.sql_done += len(data)
                    yield p.name, data
            at += size

    def _from(self, chunks: Iterator[tuple[str, bytes]], start: int, at: int = 0) -> Iterator[tuple[str, bytes]]:
        for part, data in chunks:
            n = len(data)
            if at + n <= start:
                at += n
                continue
            if at < start:
                data = data[start - at:]
            at += n
            self.sql_done = at
            yield part, data

    def _archive_members(self, point: dict | None = None) -> Iterator[tuple[str, bytes]]:
        self._volumes = vs = VolumeSet(self.path, restart_every=self.restart_every)
        name = vs.first.name
        if point is not None:  # picked up inside a dump part, at a gzip member start met by an earlier read
            plain = prefetch(vs.chunks((point["plain"], point["vol"], point["at"])))
            stream: Iterator[bytes] = plain
            if point.get("encrypted"):
                self._encrypted = True
                head = b""
                first = VolumeSet(self.path, single=True).chunks()  # the header, to check the password
                for chunk in first:
                    head += chunk
                    if len(head) >= HEADER_SIZE:
                        break
                first.close()
                dec = Decryptor(head[:HEADER_SIZE], self.password, file=name)
                self._block = dec.block
                stream = dec.stream(_drop(plain, int(point["skip"])))
            inside = TarMember(point["part"], point["size"], "0", point["data"], point["data"])
            tar = TarReader(stream, name=name, offset=point.get("tar", point["plain"]), inside=inside)
            dump_base, expected = point["base"], point["no"] + 1
            self._dump_base = dump_base
            part = point["part"].rsplit("/", 1)[-1]
            for data in tar.data():
                yield part, data
            yield from self._dump_members(tar, name, vs, dump_base, expected,
                                          point["dump"] - (point["plain"] - point["data"]) + point["size"])
            return
        plain = prefetch(vs.chunks())
        head = b""
        for chunk in plain:
            head += chunk
            if len(head) >= HEADER_SIZE:
                break
        if len(head) < HEADER_SIZE:
            raise BadInputError(f"{name}: too short for a backup archive ({len(head)} bytes)", file=str(vs.first))
        if is_encrypted_header(head):
            self._encrypted = True
            dec = Decryptor(head[:HEADER_SIZE], self.password, file=name)
            self._block = dec.block
            stream = dec.stream(chain([head[HEADER_SIZE:]], plain))
        elif looks_like_tar(head):
            stream = chain([head], plain)
        else:
            raise BadInputError(f"{name}: not a Bitrix backup archive: neither a tar header nor the encrypted "
                                "archive header at the start (corrupt, or a wrong file?)", file=str(vs.first))
        tar = TarReader(stream, name=name)
        self._parts = []
        yield from self._dump_members(tar, name, vs, None, 0, 0)

    def _dump_members(self, tar: TarReader, name: str, vs: VolumeSet, dump_base: str | None, expected: int,
                      dump_at: int) -> Iterator[tuple[str, bytes]]:
        """The dump parts from here on (the next one is number ``expected``, at dump offset ``dump_at``), in order;
        stops at the first member after them."""
        for member in tar.members():
            info = is_dump_member(member.name) if member.is_file else None
            if info is None or (dump_base is not None and info[0] != dump_base):
                if dump_base is not None:
                    return  # the dump is done: stop before the site files (upload/...)
                continue
            base, number = info
            if dump_base is None:
                if number != 0:
                    raise BadInputError(f"{name}: the dump starts with part {member.name}, not {base}",
                                        file=str(vs.first))
                dump_base = self._dump_base = base
            if number != expected:
                raise BadInputError(f"{name}: dump part {member.name} out of order (expected part {expected})",
                                    file=str(vs.first))
            if not any(p[0] == number for p in self._parts):
                self._parts.append((number, member.name, member.data_offset, member.size, dump_at))
            dump_at += member.size
            expected += 1
            part = member.name.rsplit("/", 1)[-1]
            for data in tar.data():
                yield part, data
        if dump_base is None:
            raise BadInputError(f"{name}: the archive holds no database dump (no bitrix/backup/*.sql member)",
                                file=str(vs.first))
