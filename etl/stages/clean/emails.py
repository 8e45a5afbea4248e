"""E-mail addresses: trim, lower-case, fix what people mistype, check the syntax, split several.

Fast path (vectorised): a trimmed, lower-cased cell that is one plain address (``name.surname@mail.ru``) is valid as
it is. Every other distinct cell goes through :func:`parse_emails`, which

- drops ``mailto:`` and a display name (``Иван <ivan@mail.ru>``), spaces around '@', trailing dots and commas;
- takes a comma typed for a dot (``ivan@yandex,ru`` -> ``ivan@yandex.ru``, ``ivan,petrov@mail.ru`` ->
  ``ivan.petrov@mail.ru``) and tells it from a comma between two addresses (``a@x.ru,b@y.ru``);
- brings a word that mixes Cyrillic and Latin letters (a switched keyboard layout) to one script;
- splits several addresses (``;``, ``,``, spaces) and checks each: an ASCII local part of dot-separated atoms (at
  most 64 characters), a domain of at least two labels (letters, digits, hyphens; Cyrillic allowed, as in .рф) whose
  last label is letters (or xn--), at most 254 characters in all.

No DNS look-up: whether a mailbox exists is not something an offline cleaning stage can know. The addresses are
written ';'-separated (the canonical ``email`` field).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl.stages.clean.common import (SPACES_RE, Cleaned, CleanStage, bad_messages, coalesce, concat_skip_nulls,
                                     distinct_map, fix_lookalikes, squeeze, as_array)

SEP = ";"

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
LABEL_RE = re.compile(r"[a-z0-9а-яё](?:[a-z0-9а-яё-]{0,61}[a-z0-9а-яё])?\Z")
TLD_RE = re.compile(r"(?:[a-zа-яё]{2,63}|xn--[a-z0-9-]{1,59})\Z")

# the common case, for the vectorised path: must be a subset of what parse_emails accepts unchanged
FAST_RE2 = (r"^[a-z0-9_%+\-]+(?:\.[a-z0-9_%+\-]+)*@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _plain(arr: pa.Array) -> pa.Array:
    ok = pc.and_(pc.match_substring_regex(arr, FAST_RE2), pc.less_equal(pc.utf8_length(arr), 254))
    return pc.fill_null(pc.and_(ok, pc.less_equal(pc.find_substring(arr, "@"), 64)), False)


def fast_cells(cells: pa.Array) -> pa.Array:
    """The cells (already trimmed and lower-cased) that hold one or two plain addresses separated by ';' or
    spaces, as the ';'-joined field; null for every other cell (the slow path's)."""
    cells = as_array(cells)
    null = pa.scalar(None, pa.string())
    out = pc.if_else(_plain(cells), cells, null)
    two = pc.fill_null(pc.and_(pc.is_null(out), pc.match_substring_regex(cells, r"[;\s]")), False)
    if not pc.any(two).as_py():
        return out
    sub = cells.filter(two)
    lists = as_array(pc.split_pattern_regex(sub, r"[;\s]+"))
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    offsets = offsets - offsets[0]
    counts = np.diff(offsets)
    flat = lists.flatten()
    good = np.asarray(_plain(flat).to_numpy(zero_copy_only=False), dtype=bool)
    cs = np.concatenate([[0], np.cumsum(good)])
    ok = ((cs[offsets[1:]] - cs[offsets[:-1]]) == counts) & (counts == 2)
    last = max(len(flat) - 1, 0)
    first = pc.take(flat, pa.array(np.minimum(offsets[:-1], last)))
    second = pc.take(flat, pa.array(np.minimum(offsets[:-1] + 1, last)))
    joined = pc.if_else(pc.fill_null(pc.equal(first, second), False), first,
                        pc.binary_join_element_wise(first, second, SEP))
    return pc.replace_with_mask(out, two, pc.if_else(pa.array(ok), joined, null))


def check_address(addr: str) -> str | None:
    """None when the address is valid, else what is wrong with it."""
    if addr.count("@") != 1:
        return "has no '@'" if "@" not in addr else "has more than one '@'"
    local, domain = addr.split("@")
    if not local:
        return "has nothing before '@'"
    if not domain:
        return "has nothing after '@'"
    if len(addr) > 254:
        return "is longer than 254 characters"
    if len(local) > 64:
        return "has a part before '@' longer than 64 characters"
    if not local.isascii():
        return "has non-Latin letters before '@'"
    if not LOCAL_RE.match(local):
        return "has characters or dots before '@' that an address cannot have"
    labels = domain.split(".")
    if len(labels) < 2:
        return f"has no top-level domain after '@{domain}'"
    for label in labels:
        if not label:
            return "has an empty part in its domain (two dots, or a dot at an end)"
        if not LABEL_RE.match(label):
            return f"has an invalid domain part {label!r}"
    if not TLD_RE.match(labels[-1]):
        return f"has an invalid top-level domain {labels[-1]!r}"
    return None


_MAILTO = re.compile(r"mailto:", re.IGNORECASE)
_ANGLE = re.compile(r"<([^<>]*@[^<>]*)>")
_AT_SPACES = re.compile(r"\s*@\s*")
_SPLIT = re.compile(r"[;\s]+")


@lru_cache(maxsize=65536)
def parse_emails(cell: str, lower: bool = True) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(valid addresses, ((bad text, what is wrong), ...)) of one cell."""
    text = SPACES_RE.sub(" ", cell).strip()
    if lower:
        text = text.lower()
    text = _MAILTO.sub(" ", text)
    angled = _ANGLE.findall(text)
    if angled:
        text = " ".join(angled)
    text = _AT_SPACES.sub("@", text)
    good: list[str] = []
    bad: list[tuple[str, str]] = []
    if "@" not in text:
        return (), ((cell.strip(), "is not an e-mail address"),)
    for chunk in _SPLIT.split(text):
        chunk = chunk.strip(".,")
        if not chunk:
            continue
        for addr in _commas(chunk):
            addr = _fix(addr)
            problem = check_address(addr)
            if problem:
                bad.append((addr, problem))
            elif addr not in good:
                good.append(addr)
    return tuple(good), tuple(bad)


def _commas(chunk: str) -> list[str]:
    """Split a space-free chunk at commas: a part without '@' is a comma typed for a dot, joined to its neighbour."""
    parts = [p for p in chunk.split(",")]
    out: list[str] = []
    pending = ""  # text before the '@' part it belongs to (ivan,petrov@...)
    for p in parts:
        if not p:
            continue
        if "@" in p:
            out.append(f"{pending}.{p}" if pending else p)
            pending = ""
        elif out and "@" in out[-1]:
            out[-1] = f"{out[-1]}.{p}"  # ivan@yandex,ru
        else:
            pending = f"{pending}.{p}" if pending else p
    if pending:
        out.append(pending)
    return out


def _fix(addr: str) -> str:
    addr = addr.strip(".,'\"()[]")
    if "@" in addr:
        local, _, domain = addr.partition("@")
        domain = re.sub(r"\.{2,}", ".", domain).strip(".")
        addr = f"{fix_lookalikes(local)}@{'.'.join(fix_lookalikes(x) for x in domain.split('.'))}"
    return addr


class EmailStage(CleanStage):
    """`{type: email, columns: [ЭлПочта], into: ЭлПочта, lower: true, on_error: reject|keep|null, flag: COL}`"""

    type = "email"
    OPTIONS = ("lower",)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        if "lower" in options and not isinstance(options["lower"], bool):
            return "`lower:` must be true or false"
        return None

    def _cells(self, values: list[str]):
        lower = bool(self.options.get("lower", True))
        clean, keep, reasons, details = [], [], [], []
        for v in values:
            good, bad = parse_emails(v, lower)
            clean.append(SEP.join(good) or None)
            keep.append(SEP.join(list(good) + [b for b, _ in bad]) or None)
            if bad:
                reasons.append("email_invalid")
                b, why = bad[0]
                details.append(why if len(bad) == 1 and not good and b == v.strip() else f"— {b!r} {why}")
            else:
                reasons.append(None)
                details.append(None)
        return clean, keep, reasons, details

    def _column(self, raw):
        cells = squeeze(raw)
        low = pc.utf8_lower(cells) if self.options.get("lower", True) else cells
        fast = fast_cells(low)
        slow = pc.and_(pc.is_valid(cells), pc.is_null(fast))
        if pc.any(slow).as_py():
            s = pa.string()
            clean, keep, reason, detail = distinct_map(cells, self._cells, [s, s, s, s], mask=slow)
            return pc.coalesce(fast, clean), pc.coalesce(fast, keep), reason, detail
        nulls = pa.nulls(len(cells), pa.string())
        return fast, fast, nulls, nulls

    def clean(self, table: pa.Table) -> Cleaned:
        cols = self.columns
        parts = [self._column(table.column(c)) for c in cols]
        clean = concat_skip_nulls([p[0] for p in parts], SEP)
        keep = concat_skip_nulls([p[1] for p in parts], SEP)
        if len(cols) > 1:
            dedupe = lambda vs: [[SEP.join(dict.fromkeys(v.split(SEP))) for v in vs]]  # noqa: E731
            clean = distinct_map(clean, dedupe, [pa.string()])[0]
            keep = distinct_map(keep, dedupe, [pa.string()])[0]
        reason = coalesce([p[2] for p in parts])
        null = pa.scalar(None, pa.string())
        field = coalesce([pc.if_else(pc.is_valid(p[2]), pa.scalar(c), null) for p, c in zip(parts, cols)])
        value = coalesce([pc.if_else(pc.is_valid(p[2]), pc.cast(as_array(table.column(c)), pa.string()), null)
                          for p, c in zip(parts, cols)])
        detail = coalesce([p[3] for p in parts])
        into = self.options.get("into") or cols[0]
        return Cleaned(outputs={into: clean}, keep={into: keep}, reason=reason,
                       detail=bad_messages(reason, field, value, detail), field=field, value=value)


__all__ = ["EmailStage", "parse_emails", "check_address", "FAST_RE2"]
