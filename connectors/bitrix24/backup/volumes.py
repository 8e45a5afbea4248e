"""Archive volumes: ``X.tar.gz``, ``X.tar.gz.1``, ``X.tar.gz.2``... read as one byte stream.

CBackup cuts the tar stream at 512-byte block boundaries into volumes (option ``dump_archive_size_limit``); each
volume is its own multi-member gzip file that starts with an empty member carrying the ``BX`` extra field (the
volume's uncompressed size at offset 18; in volume 1 ``LN`` + the number of the last part at offset 12). We find the
parts in natural numeric order, check none is missing, inflate member after member, and hand out plain chunks.
"""

from __future__ import annotations

import os
import re
import struct
import zlib

try:  # ISA-L's inflate (python-isal): the same decompressobj API as zlib, about four times faster
    from isal import isal_zlib as _inflate_lib

    _INFLATE_ERRORS: tuple[type[BaseException], ...] = (_inflate_lib.error, zlib.error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps the reader working without it
    _inflate_lib = zlib
    _INFLATE_ERRORS = (zlib.error,)
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from connectors.base import BadInputError, TerminalError

__all__ = ["Volume", "VolumeSet", "base_name", "find_volumes", "gzip_volume_info", "is_gzip"]

GZIP_MAGIC = b"\x1f\x8b"
READ_SIZE = 1 << 20
RESTART_EVERY = 16 << 20  # plain bytes between two kept restart points (gzip member starts)
_NUMBERED = re.compile(r"^(.*)\.(\d+)$")


def base_name(path: Path) -> Path:
    """``X.tar.gz.3`` -> ``X.tar.gz`` (CTar::getFirstName); other names unchanged."""
    m = _NUMBERED.match(path.name)
    if m and re.search(r"\.(tar|enc|gz|tgz|sql)$", m.group(1), re.I):
        return path.with_name(m.group(1))
    return path


def is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError:
        return False


def gzip_volume_info(path: Path) -> dict:
    """What CBackup wrote into a volume's first gzip member: {"data_size": int|None, "last_part": int|None}."""
    with open(path, "rb") as f:
        head = f.read(22)
    info: dict = {"data_size": None, "last_part": None}
    if len(head) >= 22 and head[:2] == GZIP_MAGIC and head[3] & 4 and head[16:18] == b"BX":
        if head[18:22] != b"0000":
            info["data_size"] = struct.unpack("<I", head[18:22])[0]
        if head[12:14] == b"LN":
            info["last_part"] = struct.unpack("<H", head[14:16])[0]
    return info


def find_volumes(first: Path) -> list[Path]:
    """Every part of the archive whose first volume (or any volume) is ``first``, in order; TerminalError if
    the first is missing or a part in the middle (or, per the LN mark, at the end) is missing."""
    base = base_name(first)
    if not base.is_file():
        raise TerminalError(f"{base}: no such file (the first volume of the archive)")
    parts = [base]
    n = 1
    while True:
        nxt = base.with_name(f"{base.name}.{n}")
        if not nxt.is_file():
            break
        parts.append(nxt)
        n += 1
    # a gap: X.2 present without X.1 is caught here too
    later = sorted(
        (int(m.group(2)) for p in base.parent.glob(f"{glob_escape(base.name)}.*")
         if (m := _NUMBERED.match(p.name)) and m.group(1) == base.name),
    )
    if later and later[-1] > len(parts) - 1:
        missing = next(k for k in range(1, later[-1] + 1) if k > len(parts) - 1)
        raise TerminalError(f"{base}: volume {base.name}.{missing} is missing (found up to .{later[-1]})")
    if is_gzip(base):
        last = gzip_volume_info(base)["last_part"]
        if last and last > len(parts) - 1:
            raise TerminalError(f"{base}: the archive has {last + 1} volumes (up to {base.name}.{last}), "
                                f"only {len(parts)} found")
    return parts


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass
class Volume:
    path: Path
    size: int
    gzip: bool


class VolumeSet:
    """The volumes of one archive (or one file), read as one plain (inflated) byte stream."""

    def __init__(self, first: Path | str, *, single: bool = False, restart_every: int | None = None):
        first = Path(first)
        paths = [first] if single else find_volumes(first)
        self.volumes = [Volume(p, p.stat().st_size, is_gzip(p)) for p in paths]
        self.position = 0  # plain bytes handed out so far
        self.compressed_done = 0  # bytes of the volume files read so far
        # (plain position, volume index, compressed offset) of gzip member starts met while inflating, a few MB
        # apart: where a later read of the same archive can start inflating instead of at the beginning
        self.restart_points: list[tuple[int, int, int]] = []
        self.restart_every = restart_every or RESTART_EVERY
        self.inflated = 0  # compressed bytes fed to the inflater (what a restart point saves)

    @property
    def first(self) -> Path:
        return self.volumes[0].path

    @property
    def total_size(self) -> int:
        return sum(v.size for v in self.volumes)

    def identity(self) -> dict:
        st = self.first.stat()
        return {"path": str(self.first.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "volumes": len(self.volumes)}

    def chunks(self, start_at: tuple[int, int, int] | None = None) -> Iterator[bytes]:
        """Plain chunks of the whole stream, volume after volume; from a restart point ``(plain position, volume
        index, compressed offset of a gzip member start)`` when given (see :attr:`restart_points`)."""
        done_before = 0
        first_vol, first_at = 0, 0
        if start_at is not None:
            self.position, first_vol, first_at = start_at
            done_before = sum(v.size for v in self.volumes[:first_vol])
        for n, vol in enumerate(self.volumes):
            if n < first_vol:
                continue
            if vol.gzip:
                yield from self._inflate(vol, done_before, first_at if n == first_vol else 0, n)
            else:
                with open(vol.path, "rb") as f:
                    while True:
                        data = f.read(READ_SIZE)
                        if not data:
                            break
                        self.compressed_done = done_before + f.tell()
                        self.position += len(data)
                        yield data
            done_before += vol.size
            self.compressed_done = done_before

    def _point(self, vol_index: int, member_start: int) -> None:
        """A gzip member starts here: keep it as a restart point if the last one is far enough behind."""
        pts = self.restart_points
        if not pts or self.position - pts[-1][0] >= self.restart_every:
            pts.append((self.position, vol_index, member_start))

    def _inflate(self, vol: Volume, done_before: int, start: int = 0, vol_index: int = 0) -> Iterator[bytes]:
        d = _inflate_lib.decompressobj(wbits=31)
        member_start = start
        member_fed = False
        fed = start
        self._point(vol_index, start)
        with open(vol.path, "rb") as f:
            if start:
                f.seek(start)
            while True:
                data = f.read(READ_SIZE)
                if not data:
                    break
                fed += len(data)
                self.inflated += len(data)
                self.compressed_done = done_before + fed
                while data:
                    member_fed = True
                    try:
                        out = d.decompress(data)
                    except _INFLATE_ERRORS as e:
                        at = fed - len(data)
                        raise BadInputError(f"{vol.path.name}: corrupt gzip data near byte {at} "
                                            f"(member starting at byte {member_start}): {e}",
                                            file=str(vol.path), offset=at) from None
                    if out:
                        self.position += len(out)
                        yield out
                    if d.eof:
                        rest = d.unused_data
                        member_start = fed - len(rest)
                        d = _inflate_lib.decompressobj(wbits=31)
                        member_fed = False
                        data = rest
                        if rest[:2] == GZIP_MAGIC:
                            self._point(vol_index, member_start)
                        if rest and rest[:2] != GZIP_MAGIC and not rest.strip(b"\x00"):
                            data = b""  # zero padding after the last member
                        elif rest and rest[:2] != GZIP_MAGIC:
                            raise BadInputError(f"{vol.path.name}: garbage after gzip member at byte "
                                                f"{member_start}", file=str(vol.path), offset=member_start)
                    else:
                        data = b""
        if member_fed and not d.eof:
            raise BadInputError(f"{vol.path.name}: truncated gzip data (the volume ends inside a member that "
                                f"starts at byte {member_start}); is the file complete?",
                                file=str(vol.path), offset=fed)


def plain_size(paths: list[Path]) -> int:
    return sum(os.path.getsize(p) for p in paths)


def prefetch(chunks: Iterator[bytes], depth: int = 4) -> Iterator[bytes]:
    """Run ``chunks`` (gzip inflating, which releases the GIL) in a background thread, ``depth`` chunks ahead, so
    that inflating and parsing overlap on two cores. Errors reach the consumer; closing the generator stops the
    producer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for c in chunks:
                while not stop.is_set():
                    try:
                        q.put(c, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, name="backup-inflate", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
