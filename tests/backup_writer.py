"""Test-only writer of Bitrix24 / 1C-Bitrix backups in the real format, from synthetic data.

Follows ../shared/reference/bitrix24-backup.md: CBackup's dump (``-- Started``, ``SET NAMES``, per table the dashed
comment, DROP TABLE, CREATE TABLE, INSERTs of one row per line closed past a size limit, ``-- Finished`` without a
newline; values: NULL, bare numbers, 0x hex for blobs, everything else quoted with mysql_real_escape_string), a
mysqldump variant (one-line extended inserts, ``_binary`` strings, LOCK TABLES, conditional comments), CTar (v7
headers by pack, no magic, ``././@LongLink``, no end blocks), volumes cut at block boundaries, each a multi-member
gzip starting with the empty BX-extra member, and the encrypted variant (header + ECB in 51,200-byte buffers).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from connectors.bitrix24.backup.crypto import encrypt_blocks, make_key

EMPTY_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\xff\xff\x03\x00" + b"\x00" * 8


def mysql_escape(raw: bytes) -> bytes:
    """What mysql_real_escape_string does: NUL, \\n, \\r, \\\\, ', ", Ctrl-Z."""
    out = raw.replace(b"\\", b"\\\\")
    for a, b in ((b"\x00", b"\\0"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"'", b"\\'"), (b'"', b'\\"'),
                 (b"\x1a", b"\\Z")):
        out = out.replace(a, b)
    return out


@dataclass
class Table:
    name: str
    columns: list[tuple[str, str]]  # (name, SQL type)
    rows: list[list] = field(default_factory=list)
    skip_data: bool = False  # "Creating empty table"

    def create(self) -> str:
        lines = [f"  `{n}` {t}{' NOT NULL' if n == 'ID' else ' DEFAULT NULL'}" for n, t in self.columns]
        if self.columns and self.columns[0][0] == "ID":
            lines.append("  PRIMARY KEY (`ID`)")
        lines.append(f"  KEY `ix_{self.name}_1` (`{self.columns[0][0]}`)")
        return f"CREATE TABLE `{self.name}` (\n" + ",\n".join(lines) + "\n) ENGINE=InnoDB DEFAULT CHARSET=utf8"


def _kind(sqltype: str) -> int:
    """CBackup::GetTableColumns: 0 number, 1 binary, 2 quoted."""
    import re

    if re.match(r"^(\w*int|year|float|double|decimal)", sqltype):
        return 0
    if re.match(r"^(\w*(binary|blob))", sqltype):
        return 1
    return 2


class Serialized(list):
    """A multiple value, written as PHP serialize() does in the dump's charset (string lengths in bytes)."""

    def php(self, encoding: str) -> bytes:
        out = [f"a:{len(self)}:{{".encode()]
        for i, v in enumerate(self):
            raw = str(v).encode(encoding)
            out.append(f"i:{i};s:{len(raw)}:\"".encode() + raw + b'";')
        return b"".join(out) + b"}"


def _text(v, encoding: str) -> bytes:
    if isinstance(v, Serialized):
        return v.php(encoding)
    if isinstance(v, bytes):
        return v
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S").encode()
    if isinstance(v, dt.date):
        return v.strftime("%Y-%m-%d").encode()
    if isinstance(v, (int, float, Decimal)):
        return str(v).encode()
    return str(v).encode(encoding)


def cbackup_value(v, sqltype: str, encoding: str) -> bytes:
    if v is None:
        return b"NULL"
    k = _kind(sqltype)
    raw = _text(v, encoding)
    if k == 0:
        return raw
    if k == 1:
        return b"''" if not raw else b"0x" + raw.hex().encode()
    return b"'" + mysql_escape(raw) + b"'"


def cbackup_dump(tables: list[Table], charset: str = "utf8", insert_limit: int = 1_000_000) -> bytes:
    enc = "cp1251" if charset == "cp1251" else "utf-8"
    out = [b"-- Started: 2024-05-06 07:08:09\n", f"SET NAMES '{charset}';\n".encode()]
    for t in tables:
        if t.skip_data:
            out.append(f"-- -----------------------------------\n-- Creating empty table {t.name}\n"
                       f"-- -----------------------------------\n".encode())
            out.append(t.create().replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS").encode(enc) + b";\n\n")
            continue
        out.append(f"-- -----------------------------------\n-- Dumping table {t.name}\n"
                   f"-- -----------------------------------\nDROP TABLE IF EXISTS `{t.name}`;\n".encode())
        out.append(t.create().encode(enc) + b";\n\n")
        stmt = b""
        for row in t.rows:
            if not stmt:
                stmt = f"INSERT INTO `{t.name}` VALUES".encode()
            else:
                stmt += b","
            stmt += b"\n(" + b", ".join(cbackup_value(v, ty, enc) for v, (_, ty) in zip(row, t.columns)) + b")"
            if len(stmt) > insert_limit:
                out.append(stmt + b";\n")
                stmt = b""
        if stmt:
            out.append(stmt + b";\n")
    out.append(b"-- Finished: 2024-05-06 07:09:10")
    return b"".join(out)


def mysqldump_value(v, sqltype: str, encoding: str, hex_blob: bool) -> bytes:
    if v is None:
        return b"NULL"
    k = _kind(sqltype)
    raw = _text(v, encoding)
    if k == 0:
        return raw
    if k == 1:
        if hex_blob:
            return b"0x" + raw.hex().encode() if raw else b"''"
        return b"_binary '" + mysql_escape(raw) + b"'"
    return b"'" + mysql_escape(raw) + b"'"


def mysqldump(tables: list[Table], charset: str = "utf8mb4", rows_per_insert: int = 1000,
              hex_blob: bool = False) -> bytes:
    enc = "cp1251" if charset == "cp1251" else "utf-8"
    out = [b"-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: localhost    Database: sitemanager\n",
           b"-- ------------------------------------------------------\n-- Server version\t8.0.36\n\n",
           b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n",
           f"/*!40101 SET NAMES {charset} */;\n".encode(),
           b"/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, "
           b"UNIQUE_CHECKS=0 */;\n\n"]
    for t in tables:
        out.append(f"--\n-- Table structure for table `{t.name}`\n--\n\nDROP TABLE IF EXISTS `{t.name}`;\n"
                   f"/*!40101 SET @saved_cs_client     = @@character_set_client */;\n"
                   f"/*!50503 SET character_set_client = utf8mb4 */;\n".encode())
        out.append(t.create().encode(enc) + b";\n/*!40101 SET character_set_client = @saved_cs_client */;\n\n")
        out.append(f"--\n-- Dumping data for table `{t.name}`\n--\n\nLOCK TABLES `{t.name}` WRITE;\n"
                   f"/*!40000 ALTER TABLE `{t.name}` DISABLE KEYS */;\n".encode())
        for i in range(0, len(t.rows), rows_per_insert):
            chunk = t.rows[i:i + rows_per_insert]
            vals = b",".join(b"(" + b",".join(mysqldump_value(v, ty, enc, hex_blob) for v, (_, ty)
                                              in zip(row, t.columns)) + b")" for row in chunk)
            out.append(f"INSERT INTO `{t.name}` VALUES ".encode() + vals + b";\n")
        out.append(f"/*!40000 ALTER TABLE `{t.name}` ENABLE KEYS */;\nUNLOCK TABLES;\n\n".encode())
    out.append(b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n-- Dump completed on 2024-05-06  7:09:10\n")
    return b"".join(out)


def split_parts(data: bytes, base: str, part_size: int) -> list[tuple[str, bytes]]:
    """X.sql, X.sql.1, ... cut every part_size bytes (anywhere: statements span parts)."""
    parts = []
    for i in range(0, max(len(data), 1), part_size):
        parts.append((base if i == 0 else f"{base}.{i // part_size}", data[i:i + part_size]))
    return parts


# ------------------------------------------------------------------------------------------------ CTar


def _checksum(block: bytes) -> int:
    return sum(block[:148]) + 8 * 32 + sum(block[156:512])


def tar_header(name: bytes, size: int, type_: bytes = b"0", mode: int = 0o644, mtime: int = 1714979289) -> bytes:
    head0 = (name[:100].ljust(100, b"\x00") + oct(mode)[2:].encode().ljust(8, b"\x00")
             + b"1000".ljust(8, b"\x00") + b"1000".ljust(8, b"\x00") + oct(size)[2:].encode().ljust(12, b"\x00")
             + oct(mtime)[2:].encode().ljust(12, b"\x00"))
    head1 = type_.ljust(1, b"\x00") + b"\x00" * (100 + 6 + 2 + 32 + 32 + 8 + 8 + 155)
    block = (head0 + b" " * 8 + head1).ljust(512, b"\x00")
    chk = oct(_checksum(block))[2:].encode().ljust(8, b"\x00")
    return (head0 + chk + head1).ljust(512, b"\x00")


def ctar(members: list[tuple[str, bytes]]) -> bytes:
    out = []
    for name, data in members:
        raw = name.encode("utf-8")
        if len(raw) > 100:
            out.append(tar_header(b"././@LongLink", len(raw), b"L"))
            out.append(raw.ljust(512, b"\x00"))
        out.append(tar_header(raw, len(data)))
        out.append(data + b"\x00" * ((-len(data)) % 512))
    return b"".join(out)  # no end-of-archive blocks


# ------------------------------------------------------------------------------------------------ archive


def encrypted_stream(tar: bytes, password: str, cipher: str = "aes-256-ecb") -> bytes:
    key = make_key(password)
    plain = (hashlib.md5(os.urandom(8)).hexdigest().encode().ljust(100, b"\x00")
             + b"Bitrix Encrypted File".ljust(90, b"\x00") + b"1.2".ljust(10, b"\x00") + b"\x00" * 56)
    header = plain + encrypt_blocks(plain, key, cipher)
    body = b"".join(encrypt_blocks(tar[i:i + 51200], key, cipher) for i in range(0, len(tar), 51200))
    return header + body


def _gzip_member(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def write_volumes(stream: bytes, base: Path, volume_size: int | None = None, gz: bool = True,
                  member_size: int = 64 * 1024) -> list[Path]:
    """Cut the tar (or encrypted) stream into volumes at 512-byte boundaries and write them like CTar."""
    size = volume_size or max(len(stream), 512)
    size -= size % 512
    pieces = [stream[i:i + size] for i in range(0, len(stream), size)] or [b""]
    paths = []
    for n, piece in enumerate(pieces):
        path = base if n == 0 else base.with_name(f"{base.name}.{n}")
        if gz:
            head = bytearray(EMPTY_GZIP[:3] + b"\x04" + EMPTY_GZIP[4:10] + b"\x0a\x00" + b"\x00\x00\x00\x00BX0000"
                             + EMPTY_GZIP[10:])
            head[18:22] = struct.pack("<I", len(piece))
            body = b"".join(_gzip_member(piece[i:i + member_size]) for i in range(0, len(piece), member_size))
            path.write_bytes(bytes(head) + body)
        else:
            path.write_bytes(piece)
        paths.append(path)
    if gz and len(pieces) > 1:
        with open(base, "r+b") as f:
            f.seek(12)
            f.write(b"LN" + struct.pack("<H", len(pieces) - 1))
    return paths


def write_backup(dir: Path, dump: bytes, *, name: str = "20240506_070809_full_a1b2c3d4e5f6a7b8",
                 password: str | None = None, cipher: str = "aes-256-ecb", volume_size: int | None = None,
                 sql_part_size: int = 2_000_000_000, gz: bool = True, long_prefix: bool = False,
                 files: list[tuple[str, bytes]] | None = None) -> Path:
    """A CBackup archive in ``dir``; returns the first volume's path."""
    prefix = ("very/long/document/root/" * 5) if long_prefix else ""
    members = [(prefix + "bitrix/.config.php", b"<?php return array();\n")]
    members += [(prefix + f"bitrix/backup/{n}", d) for n, d in split_parts(dump, f"{name}.sql", sql_part_size)]
    members.append((prefix + f"bitrix/backup/{name}_after_connect.sql",
                    b"SET NAMES 'utf8';\nALTER DATABASE `<DATABASE>` COLLATE utf8_unicode_ci;\n"))
    members += files if files is not None else [("upload/crm/1/photo.jpg", os.urandom(3000)),
                                                 ("index.php", b"<?php echo 1;\n")]
    stream = ctar(members)
    ext = ".tar"
    if password:
        stream = encrypted_stream(stream, password, cipher)
        ext = ".enc"
    base = dir / f"{name}{ext}{'.gz' if gz else ''}"
    write_volumes(stream, base, volume_size, gz)
    return base
