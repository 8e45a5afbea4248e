"""INN, KPP, OGRN and OGRNIP: format and checksum, vectorised over digit matrices.

- INN: 10 digits (an organisation: one control digit) or 12 (a person or sole trader: two control digits); the
  control digit is the weighted sum of the digits before it, mod 11, mod 10.
- OGRN: 13 digits, the last is (the number made of the first 12) mod 11 mod 10; OGRNIP: 15 digits, (the first 14)
  mod 13 mod 10.
- KPP: 9 characters: 4 digits (the tax office), 2 digits or capital Latin letters (the reason), 3 digits.

Excel drops the leading zero of an INN typed into a number cell (regions 01-09: 0274... becomes 274...): a 9- or
11-digit value is given its zero back when, and only when, the result passes the checksum. A KPP has no checksum:
its zero is restored only when the record's INN (``inn: COLUMN``) starts with the same four digits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl.stages.clean.common import (EXCEL_NUMBER_RE2, SPACES_RE2, Cleaned, CleanStage, as_array, check_choice,
                                     check_column_key, digit_matrix, empty_to_null, text)

INN10_WEIGHTS = np.array([2, 4, 10, 3, 5, 9, 4, 6, 8])
INN12_WEIGHTS_1 = np.array([7, 2, 4, 10, 3, 5, 9, 4, 6, 8])
INN12_WEIGHTS_2 = np.array([3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8])


def inn_controls(m: np.ndarray) -> np.ndarray:
    """The control digit(s) an INN matrix (rows of 10 or 12 digits) should end with: shape (n, 1) or (n, 2)."""
    if m.shape[1] == 10:
        return ((m[:, :9] @ INN10_WEIGHTS) % 11 % 10)[:, None]
    c1 = (m[:, :10] @ INN12_WEIGHTS_1) % 11 % 10
    c2 = (np.hstack([m[:, :10], c1[:, None]]) @ INN12_WEIGHTS_2) % 11 % 10
    return np.stack([c1, c2], axis=1)


def ogrn_control(m: np.ndarray) -> np.ndarray:
    """The control digit of OGRN (13 digits) or OGRNIP (15 digits) rows."""
    k = m.shape[1] - 1
    powers = 10 ** np.arange(k - 1, -1, -1, dtype=np.int64)
    number = m[:, :k] @ powers
    return number % (11 if k == 12 else 13) % 10


def _clean_digits(arr) -> pa.Array:
    """Whitespace removed; the '.0' a float conversion leaves is dropped; empty -> null."""
    t = pc.replace_substring_regex(as_array(text(arr)), SPACES_RE2, "")
    t = pc.replace_substring_regex(t, r"^([0-9]+)[.,]0+$", r"\1")
    return empty_to_null(t)


def _np(mask) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


class _RegistryStage(CleanStage):
    """One column of a registry number: clean it, check it, restore a lost zero where that is proven."""

    SINGLE_COLUMN = True
    NAME: ClassVar[str] = ""  # INN / KPP / OGRN, for messages
    PREFIX: ClassVar[str] = ""  # reason codes: <prefix>_format, <prefix>_checksum, <prefix>_excel_mangled

    def checks(self, t: pa.Array, lengths: np.ndarray, digits: np.ndarray, table: pa.Table):
        """(ok, restored, reason codes (object array, None = fine), details) for the present values."""
        raise NotImplementedError

    def clean(self, table: pa.Table) -> Cleaned:
        col = self.columns[0]
        raw = as_array(text(table.column(col)))
        t = _clean_digits(raw)
        n = len(t)
        present = _np(pc.is_valid(t))
        mangled = _np(pc.match_substring_regex(t, EXCEL_NUMBER_RE2))
        digits = _np(pc.match_substring_regex(t, r"^[0-9]+$"))
        lengths = np.asarray(pc.fill_null(pc.utf8_length(t), 0).to_numpy(zero_copy_only=False))
        ok, restored, reason, detail = self.checks(t, lengths, digits, table)
        mangled &= present & ~ok
        rest = present & ~ok & ~restored & ~mangled & (reason == None)  # noqa: E711 - elementwise
        reason[mangled] = f"{self.PREFIX}_excel_mangled"
        reason[rest] = f"{self.PREFIX}_format"
        tl = t.to_pylist() if rest.any() else None
        for i in np.flatnonzero(mangled):
            detail[i] = (f"is a number Excel wrote in exponent form: the digits of the {self.NAME} are lost "
                         f"(format the column as text in Excel and export again)")
        for i in np.flatnonzero(rest):
            detail[i] = f"is not a {self.NAME}: {_what_is_wrong(tl[i])}"
        bad = reason != None  # noqa: E711 - elementwise on an object array
        zero = pa.array(["0"] * n, pa.string())
        out = pc.if_else(pa.array(restored), pc.binary_join_element_wise(zero, t, ""), t)
        out = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), out)
        raw_list = None
        messages = [None] * n
        if bad.any():
            raw_list = raw.to_pylist()
            for i in np.flatnonzero(bad):
                messages[i] = f"column «{col}»: {raw_list[i]!r} {detail[i]}"
        note = np.where(restored, f"{self.PREFIX}_zero_restored", None)
        return Cleaned(
            outputs={self.options.get("into") or col: out},
            keep={self.options.get("into") or col: t},
            reason=pa.array(reason.tolist(), pa.string()),
            detail=pa.array(messages, pa.string()),
            field=pa.array([col] * n, pa.string()),
            value=raw,
            note=pa.array(note.tolist(), pa.string()),
        )


def _what_is_wrong(value: str) -> str:
    others = sorted({ch for ch in value if not ch.isdigit()})
    return f"it holds {', '.join(repr(c) for c in others[:5])} besides digits"


def _groups(t: pa.Array, lengths: np.ndarray, digits: np.ndarray, length: int, prefix_zero: bool = False):
    """Row indices of the all-digit values of one length and their digit matrix (with a zero put in front)."""
    idx = np.flatnonzero(digits & (lengths == length))
    if not len(idx):
        return idx, np.zeros((0, length + prefix_zero), dtype=np.int64)
    m = digit_matrix(pc.take(t, pa.array(idx)), length)
    if prefix_zero:
        m = np.hstack([np.zeros((len(m), 1), dtype=np.int64), m])
    return idx, m


class InnStage(_RegistryStage):
    """`{type: inn, columns: [ИНН], into: ИНН, kind: any|company|person, on_error: reject|keep|null, flag: COL}`"""

    type = "inn"
    NAME = "INN"
    PREFIX = "inn"
    OPTIONS = ("kind",)
    LENGTHS = {"any": (10, 12), "company": (10,), "person": (12,)}

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        return check_choice(options, "kind", list(cls.LENGTHS))

    def checks(self, t, lengths, digits, table):
        n = len(t)
        allowed = self.LENGTHS[self.options.get("kind", "any")]
        ok = np.zeros(n, bool)
        restored = np.zeros(n, bool)
        reason = np.full(n, None, dtype=object)
        detail = np.full(n, None, dtype=object)
        for length in allowed:
            idx, m = _groups(t, lengths, digits, length)
            if len(idx):
                want = inn_controls(m)
                good = (m[:, length - want.shape[1]:] == want).all(axis=1) & (m.sum(axis=1) > 0)
                ok[idx] = good
                for j in np.flatnonzero(~good):
                    i = idx[j]
                    reason[i] = "inn_checksum"
                    if m[j].sum() == 0:
                        detail[i] = "is all zeros, not an INN"
                    else:
                        got = "".join(map(str, m[j, length - want.shape[1]:]))
                        exp = "".join(map(str, want[j]))
                        detail[i] = (f"fails the INN checksum: a {length}-digit INN with these digits ends in "
                                     f"{exp}, not {got}")
            # a zero Excel dropped: restore it when the checksum proves it
            idx, m = _groups(t, lengths, digits, length - 1, prefix_zero=True)
            if len(idx):
                want = inn_controls(m)
                good = (m[:, length - want.shape[1]:] == want).all(axis=1) & (m.sum(axis=1) > 0)
                restored[idx] = good
                for i in idx[~good]:
                    reason[i] = "inn_format"
                    detail[i] = (f"has {length - 1} digits, and with the leading zero Excel may have dropped it "
                                 f"still fails the {length}-digit INN checksum")
        wrong = digits & ~ok & ~restored & (reason == None)  # noqa: E711
        kinds = {10: "10 (an organisation)", 12: "12 (a person or sole trader)"}
        want_text = " or ".join(kinds[x] for x in allowed)
        for i in np.flatnonzero(wrong):
            reason[i] = "inn_format"
            detail[i] = f"has {lengths[i]} digits; an INN here has {want_text}"
        return ok, restored, reason, detail


class OgrnStage(_RegistryStage):
    """`{type: ogrn, columns: [ОГРН], kind: any|company|person, ...}`: OGRN (13 digits) and OGRNIP (15)."""

    type = "ogrn"
    NAME = "OGRN"
    PREFIX = "ogrn"
    OPTIONS = ("kind",)
    LENGTHS = {"any": (13, 15), "company": (13,), "person": (15,)}

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        return check_choice(options, "kind", list(cls.LENGTHS))

    def checks(self, t, lengths, digits, table):
        n = len(t)
        allowed = self.LENGTHS[self.options.get("kind", "any")]
        ok = np.zeros(n, bool)
        reason = np.full(n, None, dtype=object)
        detail = np.full(n, None, dtype=object)
        for length in allowed:
            idx, m = _groups(t, lengths, digits, length)
            if not len(idx):
                continue
            want = ogrn_control(m)
            good = (m[:, -1] == want) & (m[:, 0] > 0)
            ok[idx] = good
            label = "OGRN" if length == 13 else "OGRNIP"
            for j in np.flatnonzero(~good):
                i = idx[j]
                reason[i] = "ogrn_checksum"
                detail[i] = (f"fails the {label} checksum: ends in {m[j, -1]}, the first {length - 1} digits give "
                             f"{want[j]}" if m[j, 0] > 0 else f"starts with 0, which no {label} does")
        wrong = digits & ~ok & (reason == None)  # noqa: E711
        kinds = {13: "13 (OGRN)", 15: "15 (OGRNIP)"}
        want_text = " or ".join(kinds[x] for x in allowed)
        for i in np.flatnonzero(wrong):
            reason[i] = "ogrn_format"
            detail[i] = f"has {lengths[i]} digits; an OGRN here has {want_text}"
        return ok, np.zeros(n, bool), reason, detail


class KppStage(_RegistryStage):
    """`{type: kpp, columns: [КПП], inn: ИНН, ...}`: 4 digits, 2 digits or capital Latin letters, 3 digits.

    With ``inn:`` (the record's INN column) an 8-digit KPP gets its lost leading zero back when the INN starts with
    the four digits the restored KPP starts with.
    """

    type = "kpp"
    NAME = "KPP"
    PREFIX = "kpp"
    OPTIONS = ("inn",)

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        return check_column_key(options, "inn")

    def process(self, table: pa.Table):
        if self.options.get("inn"):
            self._need(table, [self.options["inn"]])
        return super().process(table)

    def clean(self, table: pa.Table) -> Cleaned:
        # letters are allowed in the reason part: upper-case them before the digit checks
        col = self.columns[0]
        original = table.column(col)
        upper = pc.utf8_upper(as_array(text(original)))
        res = super().clean(table.set_column(table.column_names.index(col), col, upper))
        res.value = as_array(text(original))
        return res

    def checks(self, t, lengths, digits, table):
        n = len(t)
        ok = _np(pc.match_substring_regex(t, r"^[0-9]{4}[0-9A-Z]{2}[0-9]{3}$"))
        ok &= ~_np(pc.match_substring_regex(t, r"^0000"))
        restored = np.zeros(n, bool)
        reason = np.full(n, None, dtype=object)
        detail = np.full(n, None, dtype=object)
        eight = digits & (lengths == 8)
        if self.options.get("inn") and eight.any():
            inn = _clean_digits(table.column(self.options["inn"]))
            inn_len = pc.fill_null(pc.utf8_length(inn), 0)
            # the INN may have lost its zero too
            inn = pc.if_else(pc.is_in(inn_len, value_set=pa.array([9, 11], pa.int32())),
                             pc.binary_join_element_wise(pa.array(["0"] * n), inn, ""), inn)
            want = pc.utf8_slice_codeunits(inn, 0, 4)
            have = pc.binary_join_element_wise(pa.array(["0"] * n), pc.utf8_slice_codeunits(t, 0, 3), "")
            restored = eight & _np(pc.equal(want, have))
        present = _np(pc.is_valid(t))
        tl = None
        for i in np.flatnonzero(present & ~ok & ~restored):
            tl = tl if tl is not None else t.to_pylist()
            if _np(pc.match_substring_regex(pa.array([tl[i]]), EXCEL_NUMBER_RE2))[0]:
                continue  # the base class reports it as Excel-mangled
            reason[i] = "kpp_format"
            v = tl[i]
            if eight[i]:
                detail[i] = ("has 8 digits; a KPP has 9 (a leading zero Excel dropped is restored only when the INN "
                             "column starts with the same four digits)")
            elif v.startswith("0000"):
                detail[i] = "starts with 0000, which is no tax office"
            else:
                detail[i] = ("is not a KPP: 9 characters are expected, 4 digits, then 2 digits or capital Latin "
                             "letters, then 3 digits")
        return ok, restored, reason, detail

__all__ = ["InnStage", "KppStage", "OgrnStage", "inn_controls", "ogrn_control"]
