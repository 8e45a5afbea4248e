"""Tar streams: Bitrix's CTar variant and standard (ustar, GNU, pax) tar, read forward from byte chunks.

CTar writes v7-style headers by PHP ``pack``: name, mode, uid, gid, size (octal), mtime, checksum, typeflag, and
empty link/magic/uname/gname fields (no ``ustar`` magic); names over 100 bytes get a ``././@LongLink`` entry of
type ``L`` right before the real one; there are no end-of-archive zero blocks (EOF at a header boundary ends the
archive), and volumes cut the stream at block boundaries, so members cross volumes (the caller concatenates).
Standard archives add the ustar ``prefix`` and pax ``path=`` records; zero blocks are skipped as CTar does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from connectors.base import BadInputError

__all__ = ["TarMember", "TarReader", "header_checksum_ok", "looks_like_tar"]

BLOCK = 512


@dataclass
class TarMember:
    name: str
    size: int
    type: str  # "0" file, "5" directory, "2" symlink...
    header_offset: int  # stream offset of the (first) header of this member
    data_offset: int

    @property
    def is_file(self) -> bool:
        return self.type in ("0", "", "7")


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        v = int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
        return v
    text = field.split(b"\x00", 1)[0].strip(b" \x00")
    return int(text, 8) if text else 0


def header_checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 256 + sum(
        (b - 256 if b > 127 else b) for b in block[156:512])
    return stored in (unsigned, signed)


def looks_like_tar(block: bytes) -> bool:
    return len(block) >= BLOCK and block[:100].strip(b"\x00") != b"" and header_checksum_ok(block[:BLOCK])


class TarReader:
    """Members of a tar stream, one after the other. Iterate :meth:`members`; for the current member either
    read :meth:`data` or move on (its data is skipped, without being kept)."""

    def __init__(self, chunks: Iterable[bytes], *, name: str = "archive", offset: int = 0,
                 inside: TarMember | None = None):
        """``offset``: the stream offset of the first chunk; ``inside``: the member that offset lies in (its data),
        when the stream is picked up in the middle of one (a restart point)."""
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.offset = offset  # stream offset of _buf[_pos]
        self.name = name
        self._remaining = 0  # data bytes of the current member not yet consumed
        self._pad = 0
        self.eof = False
        if inside is not None:
            end = inside.data_offset + inside.size
            if not inside.data_offset <= offset <= end:
                raise ValueError(f"offset {offset} is not in the data of {inside.name}")
            self._remaining = end - offset
            self._pad = (-inside.size) % BLOCK

    def _more(self) -> bool:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.eof = True
            return False
        self._buf = self._buf[self._pos:] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def _read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            if not self._more():
                break
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        self.offset += len(out)
        return out

    def _skip(self, n: int) -> int:
        skipped = 0
        while n:
            avail = len(self._buf) - self._pos
            if not avail and not self._more():
                break
            avail = len(self._buf) - self._pos
            take = min(avail, n)
            self._pos += take
            self.offset += take
            n -= take
            skipped += take
        return skipped

    def data(self) -> Iterator[bytes]:
        """The current member's data, in chunks."""
        while self._remaining:
            if self._pos >= len(self._buf) and not self._more():
                raise BadInputError(f"{self.name}: the archive ends inside a member ({self._remaining} bytes "
                                    "missing): is a volume missing or truncated?", offset=self.offset)
            take = min(len(self._buf) - self._pos, self._remaining)
            out = self._buf[self._pos:self._pos + take]
            self._pos += take
            self.offset += take
            self._remaining -= take
            yield out

    def _finish_member(self) -> None:
        if self._remaining:
            got = self._skip(self._remaining)
            if got < self._remaining:
                raise BadInputError(f"{self.name}: the archive ends inside a member: is a volume missing?",
                                    offset=self.offset)
            self._remaining = 0
        if self._pad:
            self._skip(self._pad)
            self._pad = 0

    def members(self) -> Iterator[TarMember]:
        long_name: str | None = None
        pax: dict[str, str] = {}
        header_start: int | None = None
        while True:
            self._finish_member()
            at = self.offset
            block = self._read(BLOCK)
            if not block:
                return
            if len(block) < BLOCK:
                raise BadInputError(f"{self.name}: truncated tar header at byte {at} ({len(block)} of 512 bytes)",
                                    offset=at)
            if not block.strip(b"\x00"):
                continue  # zero blocks: end markers of standard tar, padding; CTar skips them too
            if not header_checksum_ok(block):
                shown = block[:100].split(b"\x00", 1)[0][:60]
                raise BadInputError(f"{self.name}: corrupt archive: bad tar header checksum at byte {at} "
                                    f"(name field {shown!r})", offset=at)
            if header_start is None:
                header_start = at
            try:
                size = _number(block[124:136])
            except ValueError:
                raise BadInputError(f"{self.name}: corrupt archive: bad size field at byte {at}", offset=at) from None
            typeflag = block[156:157].decode("latin-1").strip("\x00") or "0"
            name = block[:100].split(b"\x00", 1)[0]
            if block[257:262] == b"ustar":
                prefix = block[345:500].split(b"\x00", 1)[0]
                if prefix:
                    name = prefix + b"/" + name
            self._remaining = size
            self._pad = (-size) % BLOCK
            if typeflag in ("L", "K", "x", "g"):
                payload = b"".join(self.data())
                self._finish_member()
                if typeflag == "L":
                    long_name = payload.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
                elif typeflag == "x":
                    pax.update(_pax(payload))
                continue
            text = long_name or pax.get("path") or name.decode("utf-8", "surrogateescape")
            if "size" in pax:
                try:
                    self._remaining = size = int(pax["size"])
                    self._pad = (-size) % BLOCK
                except ValueError:
                    pass
            long_name, pax = None, {}
            if text.startswith("./"):
                text = text[2:]
            if text.startswith("/") or text.endswith("/"):
                typeflag = "5" if typeflag in ("0", "") else typeflag
            if typeflag == "5":
                self._remaining = 0
                self._pad = 0
            member = TarMember(text.strip("/"), size, typeflag, header_start, self.offset)
            header_start = None
            yield member


def _pax(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(payload):
        sp = payload.find(b" ", pos)
        if sp < 0:
            break
        try:
            length = int(payload[pos:sp])
        except ValueError:
            break
        rec = payload[sp + 1:pos + length - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "surrogateescape")
        pos += length
    return out
