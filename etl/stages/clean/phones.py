"""Phone numbers to E.164: a vectorised fast path for the common Russian formats, phonenumbers for the rest.

The fast path takes a cell that holds one number written with digits, spaces, dashes, brackets and an optional
leading '+' (``+7 (495) 123-45-67``, ``8 916 1234567``, ``89161234567``, ``(495) 123-45-67``...), and accepts it
when its 10-digit national number matches phonenumbers' own patterns for a valid Russian number (read from the
library's metadata at import, so the two paths agree; a test holds them to it). Every other distinct cell goes
through :func:`parse_cell`: it finds extensions (доб., вн., ext), splits several numbers (``,``, ``;``, ``/``, or
just a space between two whole numbers), and asks phonenumbers about each.

The output column holds the numbers in E.164, ';'-separated (the canonical ``phone`` field). An extension is
written RFC 3966 style after its number (``+74951234567;ext=123``; :func:`split_phones` reads such a field back),
dropped, or put into a column of its own, as ``extensions:`` says.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata, PhoneNumberFormat

from etl.stages.clean.common import (EXCEL_NUMBER_RE, EXCEL_NUMBER_RE2, SPACES_RE, Cleaned, CleanStage, as_array,
                                     bad_messages, check_choice, check_column_key, coalesce, concat_skip_nulls,
                                     distinct_map, squeeze)

SEP = ";"
EXT = ";ext="

# --- the fast path: phonenumbers' metadata for Russia as one RE2 pattern --------------------------------------

_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
          "fixed_line", "mobile")


def _valid_national_re(region: str = "RU") -> str:
    """An anchored pattern a national number matches iff phonenumbers calls it a valid number of ``region``."""
    md = PhoneMetadata.metadata_for_region(region)
    patterns = [getattr(md, t).national_number_pattern for t in _TYPES
                if getattr(md, t) is not None and getattr(md, t).national_number_pattern]
    return f"^(?:{md.general_desc.national_number_pattern})$", "^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")$"


RU_GENERAL_RE2, RU_VALID_RE2 = _valid_national_re("RU")
# one number: digits, spaces, dashes, brackets, an optional leading '+'
_SHAPE_RE2 = r"^\+?[0-9 ()\-]+$"


def fast_e164_ru(cells: pa.Array) -> pa.Array:
    """E.164 for the cells that hold one valid Russian number in a common format; null for every other cell."""
    digits = cells  # where the shape below matches, dropping these characters leaves the digits (literal: fast)
    for ch in " ()-+":
        digits = pc.replace_substring(digits, ch, "")
    plus = pc.starts_with(cells, "+")
    d11 = pc.and_(pc.match_substring_regex(digits, r"^[78][0-9]{10}$"),
                  pc.invert(pc.and_(plus, pc.starts_with(digits, "8"))))
    d10 = pc.and_(pc.equal(pc.utf8_length(digits), 10), pc.invert(plus))
    national = pc.if_else(d11, pc.utf8_slice_codeunits(digits, 1), digits)
    ok = pc.and_(pc.match_substring_regex(cells, _SHAPE_RE2), pc.or_(d11, d10))
    ok = pc.and_(ok, pc.and_(pc.match_substring_regex(national, RU_VALID_RE2),
                             pc.match_substring_regex(national, RU_GENERAL_RE2)))
    e164 = pc.binary_join_element_wise(pa.scalar("+7"), national, "")
    return pc.if_else(pc.fill_null(ok, False), e164, pa.scalar(None, pa.string()))


# an extension at the end of a cell: "... доб. 123", "... (вн. 12)", "..., ext 5"
_FAST_EXT_RE2 = (r"(?i)^(?P<num>.*?[0-9][^,;/]*?)[\s,]*\(?\s*(?:доб(?:авочный)?|вн(?:утр(?:енний)?)?|"
                 r"ext(?:ension)?)\s*[.:]?\s*(?P<ext>[0-9]{1,7})\s*\)?$")
_FAST_SPLIT_RE2 = r"\s*[,;/]\s*"


def fast_cells_ru(cells: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(E.164 field, extension) of the cells the fast path can read: one or two numbers in common Russian formats
    separated by ',', ';' or '/', or one number with an extension; null for every other cell (the slow path's)."""
    n = len(cells)
    null = pa.scalar(None, pa.string())
    cells = as_array(cells)
    # one plain number: most cells
    out = fast_e164_ru(cells)
    ext = pa.nulls(n, pa.string())
    rest = pc.and_(pc.is_valid(cells), pc.is_null(out))
    # an extension at the end, or two numbers: only the cells that have letters or a separator
    with_ext = pc.fill_null(pc.and_(rest, pc.match_substring_regex(cells, r"(?i)доб|вн|ext")), False)
    if pc.any(with_ext).as_py():
        sub = cells.filter(with_ext)
        m = pc.extract_regex(sub, _FAST_EXT_RE2)
        number = fast_e164_ru(pc.utf8_trim_whitespace(pc.struct_field(m, "num")))
        got = pc.fill_null(pc.and_(pc.is_valid(m), pc.is_valid(number)), False)
        out = pc.replace_with_mask(out, with_ext, pc.if_else(got, number, null))
        ext = pc.replace_with_mask(ext, with_ext, pc.if_else(got, pc.struct_field(m, "ext"), null))
    two = pc.fill_null(pc.and_(pc.and_(rest, pc.invert(with_ext)), pc.match_substring_regex(cells, r"[,;/]")), False)
    if pc.any(two).as_py():
        sub = cells.filter(two)
        out = pc.replace_with_mask(out, two, _two_numbers(sub))
    return out, ext


def _two_numbers(cells: pa.Array) -> pa.Array:
    """Cells of two numbers separated by ',', ';' or '/', each in a common format: 'a;b' (a once if a == b)."""
    lists = as_array(pc.split_pattern_regex(cells, _FAST_SPLIT_RE2))
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    offsets = offsets - offsets[0]
    counts = np.diff(offsets)
    flat = lists.flatten()
    numbers = fast_e164_ru(flat)
    good = np.asarray(pc.is_valid(numbers).to_numpy(zero_copy_only=False), dtype=bool)
    cs = np.concatenate([[0], np.cumsum(good)])
    ok = ((cs[offsets[1:]] - cs[offsets[:-1]]) == counts) & (counts == 2)
    last = max(len(flat) - 1, 0)
    first = pc.take(numbers, pa.array(np.minimum(offsets[:-1], last)))
    second = pc.take(numbers, pa.array(np.minimum(offsets[:-1] + 1, last)))
    joined = pc.if_else(pc.fill_null(pc.equal(first, second), False), first,
                        pc.binary_join_element_wise(first, second, SEP))
    return pc.if_else(pa.array(ok), joined, pa.scalar(None, pa.string()))


# --- the slow path: one distinct cell at a time -----------------------------------------------------------------

_EXT_RE = re.compile(
    r"[(\[]?\s*(?:доб(?:авочный)?|добав|вн(?:утр(?:енний)?)?|ext(?:ension)?|x|#)\s*[.:]?\s*(?:№\s*)?(\d{1,7})\s*[)\]]?",
    re.IGNORECASE)
_SPLIT_RE = re.compile(r"[,;/\\|\n]+|\s+(?:или|и|or)\s+", re.IGNORECASE)
_NOT_PHONE_CHARS = re.compile(r"[^\d+()\-\s.]")
_DIGIT = re.compile(r"\d")
_MANGLED = "is a number Excel wrote in exponent form: its last digits are lost"
_WORD_RE = re.compile(r"[A-Za-zА-Яа-яЁё]+\.?:?")


def _e164(num: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(num, PhoneNumberFormat.E164)


_SHAPE_RE = re.compile(r"\+?[0-9 ()\-]+\Z")
_NOT_DIGIT = re.compile(r"\D")
_RU_VALID = re.compile(RU_VALID_RE2)
_RU_GENERAL = re.compile(RU_GENERAL_RE2)


def fast_one_ru(piece: str) -> str | None:
    """The fast path's rule for one piece, in Python: E.164 of one valid Russian number in a common format."""
    if not _SHAPE_RE.match(piece):
        return None
    d = _NOT_DIGIT.sub("", piece)
    plus = piece.startswith("+")
    if len(d) == 11 and d[0] in "78" and not (plus and d[0] == "8"):
        nat = d[1:]
    elif len(d) == 10 and not plus:
        nat = d
    else:
        return None
    return "+7" + nat if _RU_VALID.match(nat) and _RU_GENERAL.match(nat) else None


def _parse_one(piece: str, region: str, strict: bool = True) -> tuple[str, str | None] | None:
    """(E.164, extension phonenumbers found) of one number, or None. The Russian fast rule first, then
    phonenumbers."""
    if region == "RU":
        quick = fast_one_ru(piece.strip())
        if quick is not None:
            return quick, None
    try:
        num = phonenumbers.parse(piece, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(num) or (not strict and phonenumbers.is_possible_number(num)):
        return _e164(num), (num.extension or None)
    return None


def _parse_possible(piece: str, region: str) -> bool:
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(piece, region))
    except phonenumbers.NumberParseException:
        return False


def _split_two(piece: str, region: str, strict: bool = True) -> list[str] | None:
    """Two whole numbers written with only a space between them: the unique split where both halves are valid
    (by the Russian fast rule first, by phonenumbers when that finds none)."""
    spaces = [m.start() for m in re.finditer(r"\s+", piece)]
    halves = [(piece[:pos].strip(), piece[pos:].strip()) for pos in spaces]
    tries = []
    if region == "RU":
        tries.append(lambda x: fast_one_ru(x))
    tries.append(lambda x: (_parse_one(x, region, strict) or (None,))[0])
    for parse in tries:
        found = set()
        for left, right in halves:
            a = parse(left)
            b = parse(right) if a is not None else None
            if a is not None and b is not None:
                found.add((a, b))
        if len(found) == 1:
            return list(found.pop())
        if found:
            return None  # ambiguous: more than one way to read it
    return None


@lru_cache(maxsize=65536)
def parse_cell(cell: str, region: str = "RU", strict: bool = True) -> tuple[tuple, ...]:
    """Every number in one cell: a tuple of items, each ("ok", e164, extension or None) or ("bad", text, reason,
    detail). Text without digits between numbers (тел., моб., a name) is a comment and is left out.

    ``strict``: only numbers phonenumbers calls valid (in an allocated range); else also the possible ones (the
    right length for their country), for ranges the library's metadata does not know yet."""
    cell = SPACES_RE.sub(" ", cell).strip()
    if EXCEL_NUMBER_RE.fullmatch(cell):
        return (("bad", cell, "phone_excel_mangled", _MANGLED),)
    if len(_DIGIT.findall(cell)) < 5:
        return (("bad", cell, "phone_junk", "holds no phone number"),)
    items: list[tuple] = []
    for piece in _SPLIT_RE.split(cell):
        piece = piece.strip()
        if not _DIGIT.search(piece):
            continue
        ext = None
        m = _EXT_RE.search(piece)
        if m and not _DIGIT.search(piece[: m.start()]) and not _DIGIT.search(piece[m.end():]):
            # "8 (495) 123-45-67, доб. 12": the extension of the number before it
            if items and items[-1][0] == "ok" and not items[-1][2]:
                items[-1] = ("ok", items[-1][1], m.group(1))
                continue
        elif m and _DIGIT.search(piece[: m.start()]):
            ext = m.group(1)
            piece = (piece[: m.start()] + " " + piece[m.end():]).strip()
        if EXCEL_NUMBER_RE.fullmatch(piece):
            items.append(("bad", piece, "phone_excel_mangled", _MANGLED))
            continue
        # words split a piece: "тел. 8 916 ...", "... звонить после 18"; a few digits after a word are a remark
        segments = _WORD_RE.split(piece)
        kept = [s for j, s in enumerate(segments)
                if _DIGIT.search(s) and not (j > 0 and len(_DIGIT.findall(s)) < 5)]
        bare = re.sub(r"\s+", " ", _NOT_PHONE_CHARS.sub(" ", " ".join(kept))).strip(" .-")
        ndigits = len(_DIGIT.findall(bare))
        if ndigits == 0:
            continue
        num = _parse_one(bare, region, strict) if ndigits <= 17 else None
        if num is not None:
            items.append(("ok", num[0], ext or num[1]))
            continue
        two = _split_two(bare, region, strict) if ndigits >= 14 else None
        if two is not None:
            items.append(("ok", two[0], None))
            items.append(("ok", two[1], ext))
            continue
        hint = ""
        if ndigits in (5, 6, 7):
            hint = "; a local number without its area code?"
        elif ndigits > 15:
            hint = "; several numbers run together?"
        if strict and not hint and _parse_possible(bare, region):
            hint = "; the right length, but in a range phonenumbers does not know as allocated (strict: false " \
                   "accepts it)"
        items.append(("bad", piece, "phone_invalid", f"is not a valid phone number ({ndigits} digits{hint})"))
    if not items:
        return (("bad", cell, "phone_junk", "holds no phone number"),)
    return tuple(items)


def split_phones(field: str | None) -> list[tuple[str, str | None]]:
    """A ';'-separated phone field as this stage writes it -> [(E.164 number, extension or None)]."""
    out: list[tuple[str, str | None]] = []
    for part in (field or "").split(SEP):
        part = part.strip()
        if not part:
            continue
        if part.startswith("ext=") and out:
            out[-1] = (out[-1][0], part[4:])
        else:
            out.append((part, None))
    return out


def _dedupe(field: str) -> str:
    seen, out = set(), []
    for number, ext in split_phones(field):
        if number in seen:
            continue
        seen.add(number)
        out.append(number + (EXT + ext if ext else ""))
    return SEP.join(out)


class PhoneStage(CleanStage):
    """`{type: phone, columns: [Телефон, Телефон_2], into: Телефон, region: RU, extensions: inline|drop|column,
    extensions_into: COL, strict: true, on_error: reject|keep|null, flag: COL}`"""

    type = "phone"
    OPTIONS = ("region", "extensions", "extensions_into", "strict")

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        region = options.get("region", "RU")
        if not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            return f"`region:` must be a two-letter region phonenumbers knows (RU, KZ, BY...), got {region!r}"
        err = check_choice(options, "extensions", ("inline", "drop", "column")) or check_column_key(
            options, "extensions_into")
        if err:
            return err
        if options.get("extensions") == "column" and not options.get("extensions_into"):
            return "`extensions: column` needs `extensions_into: COLUMN`"
        if options.get("extensions_into") and options.get("extensions", "column") != "column":
            return "`extensions_into:` goes with `extensions: column`"
        if "strict" in options and not isinstance(options["strict"], bool):
            return "`strict:` must be true or false"
        return None

    @classmethod
    def output_columns(cls, options):
        out = super().output_columns(options)
        return out + ([options["extensions_into"]] if options.get("extensions_into") else [])

    @property
    def region(self) -> str:
        return str(self.options.get("region", "RU")).upper()

    @property
    def ext_mode(self) -> str:
        if self.options.get("extensions_into"):
            return "column"
        return self.options.get("extensions", "inline")

    def _cells(self, values: list[str]):
        """Per distinct slow-path cell: clean field, keep field, extensions, reason, detail."""
        mode, region, strict = self.ext_mode, self.region, bool(self.options.get("strict", True))
        clean, keep, exts, reasons, details = [], [], [], [], []
        for v in values:
            items = parse_cell(v, region, strict)
            c, k, e = [], [], []
            reason = detail = None
            seen = set()
            for it in items:
                if it[0] == "ok":
                    if it[1] in seen:
                        continue
                    seen.add(it[1])
                    num = it[1] + (EXT + it[2] if it[2] and mode == "inline" else "")
                    c.append(num)
                    k.append(num)
                    if it[2] and mode == "column":
                        e.append(it[2])
                else:
                    k.append(it[1])
                    if reason is None:
                        reason, detail = it[2], (it[3] if it[1] == v else f"— {it[1]!r} {it[3]}")
            clean.append(SEP.join(c) or None)
            keep.append(SEP.join(k) or None)
            exts.append(SEP.join(e) or None)
            reasons.append(reason)
            details.append(detail)
        return clean, keep, exts, reasons, details

    def _column(self, raw) -> tuple:
        cells = squeeze(raw)
        n = len(cells)
        if self.region == "RU":
            fast, fast_ext = fast_cells_ru(cells)
        else:
            fast = fast_ext = pa.nulls(n, pa.string())
        slow = pc.and_(pc.is_valid(cells), pc.is_null(fast))
        # Excel's exponent form is common (a whole column typed as numbers) and needs no parsing: vectorised too
        mangled = pc.fill_null(pc.and_(slow, pc.match_substring_regex(cells, EXCEL_NUMBER_RE2)), False)
        slow = pc.and_(slow, pc.invert(mangled))
        mode = self.ext_mode
        if mode == "inline":
            fast = pc.if_else(pc.is_valid(fast_ext), pc.binary_join_element_wise(fast, fast_ext, EXT), fast)
        null = pa.scalar(None, pa.string())
        if pc.any(slow).as_py():
            s = pa.string()
            clean, keep, exts, reason, detail = distinct_map(cells, self._cells, [s, s, s, s, s], mask=slow)
            clean = pc.coalesce(fast, clean)
            keep = pc.coalesce(fast, keep)
            exts = pc.coalesce(fast_ext, exts)
        else:
            clean = keep = fast
            exts = fast_ext
            reason = detail = pa.nulls(n, pa.string())
        if pc.any(mangled).as_py():
            keep = pc.if_else(mangled, cells, keep)
            reason = pc.if_else(mangled, pa.scalar("phone_excel_mangled"), reason)
            detail = pc.if_else(mangled, pa.scalar(_MANGLED), detail)
        return clean, keep, exts, reason, detail

    def clean(self, table: pa.Table) -> Cleaned:
        cols = self.columns
        parts = [self._column(table.column(c)) for c in cols]
        n = table.num_rows
        clean = concat_skip_nulls([p[0] for p in parts], SEP)
        keep = concat_skip_nulls([p[1] for p in parts], SEP)
        if len(cols) > 1:  # the same number in two columns: keep it once
            counts = [pc.cast(pc.is_valid(p[1]), pa.int8()) for p in parts]
            total = counts[0]
            for c in counts[1:]:
                total = pc.add(total, c)
            several = pc.greater(total, 1)
            if pc.any(several).as_py():
                dedupe = lambda vs: [[_dedupe(v) for v in vs]]  # noqa: E731
                clean = pc.if_else(several, distinct_map(clean, dedupe, [pa.string()], mask=several)[0], clean)
                keep = pc.if_else(several, distinct_map(keep, dedupe, [pa.string()], mask=several)[0], keep)
        reason = coalesce([p[3] for p in parts])
        null = pa.scalar(None, pa.string())
        field = coalesce([pc.if_else(pc.is_valid(p[3]), pa.scalar(c), null) for p, c in zip(parts, cols)])
        value = coalesce([pc.if_else(pc.is_valid(p[3]), pc.cast(as_array(table.column(c)), pa.string()), null)
                          for p, c in zip(parts, cols)])
        detail = coalesce([p[4] for p in parts])
        message = bad_messages(reason, field, value, detail)
        into = self.options.get("into") or cols[0]
        outputs = {into: clean}
        keeps = {into: keep}
        if self.ext_mode == "column":
            outputs[self.options["extensions_into"]] = concat_skip_nulls([p[2] for p in parts], SEP)
        return Cleaned(outputs=outputs, keep=keeps, reason=reason, detail=message, field=field, value=value)


__all__ = ["PhoneStage", "parse_cell", "fast_e164_ru", "split_phones", "RU_VALID_RE2"]
