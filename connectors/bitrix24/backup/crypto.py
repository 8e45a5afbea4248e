"""Encrypted CBackup archives (``X.enc``, ``X.enc.gz`` and their volumes).

Volume 1 starts with a 512-byte header: 100 bytes of a random md5 hex, 90 bytes ``Bitrix Encrypted File``,
10 bytes version (``1.2`` openssl, ``1.1`` mcrypt; readers accept <= 1.2), 56 zero bytes, then those same 256
bytes encrypted. The rest of the tar stream follows in ECB mode (the writer encrypts 51,200-byte buffers, always
whole 512-byte blocks, so ciphertext and plaintext offsets coincide). The key is the 32-character ASCII hex string
of md5(password), not its 16 raw bytes. Ciphers: ``aes-256-ecb`` (newer default) and ``bf-ecb`` (older); like
the vendor's reader we try both on the header's second half and keep the one that gives back the first.

The standard library has neither AES nor Blowfish, hence the ``cryptography`` package (OpenSSL bindings); its
Blowfish lives in ``cryptography.hazmat.decrepit`` since version 43.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

from connectors.base import TerminalError

__all__ = ["HEADER_SIZE", "SIGNATURE", "Decryptor", "WrongPasswordError", "is_encrypted_header", "make_key",
           "encrypt_blocks"]

HEADER_SIZE = 512
SIGNATURE = b"Bitrix Encrypted File"
CIPHERS = ("aes-256-ecb", "bf-ecb")


class WrongPasswordError(TerminalError):
    """The password does not decrypt the archive header."""


def is_encrypted_header(block: bytes) -> bool:
    return len(block) >= HEADER_SIZE and block[100:190].rstrip(b"\x00 ").strip() == SIGNATURE


def header_version(block: bytes) -> str:
    return block[190:200].rstrip(b"\x00 ").decode("ascii", "replace").strip()


def make_key(password: str, encoding: str = "utf-8") -> bytes:
    """The key CTar uses: md5(password) as 32 lower-case hex characters, those characters' bytes."""
    return hashlib.md5(password.encode(encoding)).hexdigest().encode("ascii")


def _cipher(name: str, key: bytes):
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    if name == "aes-256-ecb":
        from cryptography.hazmat.primitives.ciphers import algorithms

        return Cipher(algorithms.AES(key), modes.ECB())
    if name == "bf-ecb":
        try:
            from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
        except ImportError:  # cryptography < 43
            from cryptography.hazmat.primitives.ciphers.algorithms import Blowfish  # type: ignore[attr-defined]
        return Cipher(Blowfish(key), modes.ECB())
    raise ValueError(name)


def block_size(name: str) -> int:
    return 16 if name.startswith("aes") else 8


def encrypt_blocks(data: bytes, key: bytes, cipher: str = "aes-256-ecb") -> bytes:
    """ECB-encrypt ``data`` zero-padded to the cipher's block (what CTar::encrypt does)."""
    bs = block_size(cipher)
    if len(data) % bs:
        data += b"\x00" * (bs - len(data) % bs)
    enc = _cipher(cipher, key).encryptor()
    return enc.update(data) + enc.finalize()


class Decryptor:
    """Checks the password on the header of volume 1 and decrypts the stream after it."""

    def __init__(self, header: bytes, password: str | None, *, file: str = "archive"):
        if not is_encrypted_header(header):
            raise TerminalError(f"{file}: not an encrypted Bitrix archive (no '{SIGNATURE.decode()}' header)")
        version = header_version(header)
        try:
            newer = tuple(int(x) for x in version.split(".")) > (1, 2)
        except ValueError:
            newer = True
        if newer:
            raise TerminalError(f"{file}: unsupported encrypted archive version {version!r} (1.1 and 1.2 are known)")
        if not password:
            raise TerminalError(f"{file}: the archive is encrypted: give its password (source option `password`, "
                                "e.g. password: ${BACKUP_PASSWORD})")
        plain, enc = header[:256], header[256:512]
        encodings = ["utf-8"] + (["cp1251"] if _encodable(password, "cp1251") and password.encode("cp1251")
                                 != password.encode("utf-8") else [])
        for encoding in encodings:
            key = make_key(password, encoding)
            for name in CIPHERS:
                d = _cipher(name, key).decryptor()
                if d.update(enc) == plain:
                    self.cipher = name
                    self.key = key
                    self.block = block_size(name)
                    self.version = version
                    return
        raise WrongPasswordError(f"{file}: wrong password: it does not decrypt the archive header "
                                 f"(tried {', '.join(CIPHERS)})")

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Decrypt ciphertext chunks (the stream after the header); a trailing partial block is an error."""
        d = _cipher(self.cipher, self.key).decryptor()
        rest = b""
        for chunk in chunks:
            data = rest + chunk if rest else chunk
            cut = len(data) - len(data) % self.block
            rest = data[cut:]
            if cut:
                yield d.update(data[:cut] if cut != len(data) else data)
        if rest:
            raise TerminalError(f"encrypted archive: the ciphertext ends with {len(rest)} bytes that are not a "
                                f"whole {self.cipher} block: the archive is truncated")


def _encodable(s: str, encoding: str) -> bool:
    try:
        s.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False
