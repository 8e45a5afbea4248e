"""Full names (ФИО) into last, first and middle name, in whichever order they were typed.

How, vectorised: the cells are normalised (spaces, glued initials "И.И." -> "И. И.", a remark in brackets dropped)
and split into words with Arrow. The *distinct words* of a batch (a few thousand even in a million rows) are
classified in Python: an initial, a patronymic (-ович/-евич/-ич, -овна/-евна/-ична; "оглы"/"кызы" after the
father's name), a known first name, a surname by its ending (-ов/-ева/-ский/-енко...), a legal form (ООО, ИП...), a
placeholder (нет, тест) or an unknown word; each also gets its proper case (Римский-Корсаков), ё as `yo:` says, and
Latin look-alike letters fixed. A row is then the sequence of its word classes; the *distinct sequences* (a few
dozen) are decided in Python - which word is which part - and Arrow gathers the parts for all rows at once.

Decisions, in short: a patronymic fixes the order ("Иванова Мария Петровна", "Мария Петровна Иванова"); initials
follow or precede the surname ("ИВАНОВ И.И.", "И.И. Иванов"); two words are told apart by the first-name list and
surname endings ("иванов иван", "Иван Иванов"); with no clue the official order (surname first) is assumed.
Gender comes from the patronymic (-вич/-ич/оглы: male, -вна/-чна/кызы: female); with `gender_from: names` also
from an unambiguous first name or a gendered surname ending when there is no patronymic.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl.stages.clean import ru_names as R
from etl.stages.clean.common import (Cleaned, CleanStage, as_array, check_choice, concat_skip_nulls, constant,
                                     fix_lookalikes, squeeze, text, unknown_keys, where_matches)

EMPTY, INITIAL, PATR, OGLY, FIRST, SURNAME, WORD, JUNK, COMPANY = range(9)
CLASS_NAMES = ("empty", "initial", "patronymic", "ogly", "first", "surname", "word", "junk", "company")
OK, NONE, INVALID, IS_COMPANY = range(4)
PARTS = ("last", "first", "middle", "gender", "full", "company")

_INITIAL = re.compile(r"([A-Za-zА-Яа-яЁё])\.?\Z")
_LETTERS = re.compile(r"[A-Za-zА-Яа-яЁё]+(?:[-'’][A-Za-zА-Яа-яЁё]+)*\Z")
_STRIP = "\"'«»“”„()[]{}.,;:!?"
_QUOTES_RE2 = r"[\"«»“”„]"


def _proper(word: str) -> str:
    out = []
    for part in re.split(r"([-'’])", word):
        low = part.lower()
        out.append(low if low in R.OGLY or part in "-'’" else low[:1].upper() + low[1:])
    return "".join(out)


def _ends(k: str, endings: tuple[str, ...], min_len: int) -> bool:
    return len(k) >= min_len and k.endswith(tuple(e.replace("ё", "е") for e in endings))


@lru_cache(maxsize=200_000)  # words repeat across batches; bounded, so memory stays flat
def classify(token: str, yo: str = "keep") -> tuple[int, str | None, str | None, str | None, str | None]:
    """(class, the word as it should be written, gender by patronymic, by first name, by surname ending)."""
    m = _INITIAL.match(token)
    if m:
        return INITIAL, m.group(1).upper() + ".", None, None, None
    bare = token.strip(_STRIP)
    k = R.key(bare)
    if k in R.COMPANY_WORDS or R.key(token) in R.COMPANY_WORDS:
        return COMPANY, token, None, None, None
    if not bare or k in R.PLACEHOLDERS or not _LETTERS.match(bare):
        return JUNK, token, None, None, None
    word = fix_lookalikes(bare)
    if yo == "e":
        word = word.replace("ё", "е").replace("Ё", "Е")
    k = R.key(word)
    if yo == "restore" and k in R.YO:
        word = R.YO[k]
    word = _proper(word)
    last = k.replace("’", "'").split("-")[-1]
    if k in R.OGLY:
        return OGLY, word, R.OGLY[k], None, None
    if "-" in k and last in R.OGLY:  # Гасан-оглы
        return PATR, word, R.OGLY[last], None, None
    if k in R.PATRONYMIC_MALE_WORDS or _ends(k, R.PATRONYMIC_MALE, 5):
        return PATR, word, "M", None, None
    if _ends(k, R.PATRONYMIC_FEMALE, 6):
        return PATR, word, "F", None, None
    parts = k.split("-")
    if k in R.FIRST_GENDER or (len(parts) > 1 and all(p in R.FIRST_GENDER for p in parts)):
        g = R.FIRST_GENDER.get(k, R.FIRST_GENDER.get(parts[0]))
        return FIRST, word, None, g, None
    if _ends(last, R.SURNAME_FEMALE, 4):
        return SURNAME, word, None, None, "F"
    if _ends(last, R.SURNAME_MALE, 4):
        return SURNAME, word, None, None, "M"
    if _ends(last, R.SURNAME_NEUTRAL, 4):
        return SURNAME, word, None, None, None
    return WORD, word, None, None, None


Decision = tuple[int, tuple, tuple, tuple, int]  # status, last, first, middle positions, gender position


def decide(cls: tuple[int, ...], n: int) -> Decision:
    """Which word of a row is the last, first and middle name, from the classes of its words (at most 4 shown;
    ``n`` is the real number of words)."""
    no = (INVALID, (), (), (), -1)
    if n == 0:
        return NONE, (), (), (), -1
    if COMPANY in cls:
        return IS_COMPANY, (), (), (), -1
    if n > 4 or JUNK in cls:
        return no
    if n == 1:
        c = cls[0]
        if c in (INITIAL, OGLY):
            return no
        if c == PATR:
            return OK, (), (), (0,), 0
        if c == SURNAME:
            return OK, (0,), (), (), -1
        return OK, (), (0,), (), -1
    if OGLY in cls:
        k = cls.index(OGLY)
        if cls.count(OGLY) > 1 or k == 0 or INITIAL in cls or PATR in cls:
            return no
        rest = [i for i in range(n) if i not in (k - 1, k)]
        middle = (k - 1, k)
        if len(rest) == 2 and k == n - 1:  # Мамедов Али Гасан оглы
            return OK, (rest[0],), (rest[1],), middle, k
        if len(rest) == 2 and rest == [0, n - 1]:  # Али Гасан оглы Мамедов
            return OK, (n - 1,), (0,), middle, k
        if len(rest) == 1 and rest[0] == 0:  # Али Гасан оглы
            return OK, (), (0,), middle, k
        return no
    if n == 2:
        a, b = cls
        if a == INITIAL and b == INITIAL:
            return no
        if b == INITIAL:
            return OK, (0,), (1,), (), -1
        if a == INITIAL:
            return OK, (1,), (0,), (), -1
        if b == PATR and a != PATR:
            return (OK, (0,), (), (1,), 1) if a == SURNAME else (OK, (), (0,), (1,), 1)
        if a == FIRST and b != FIRST:
            return OK, (1,), (0,), (), -1
        if b == FIRST and a != FIRST:
            return OK, (0,), (1,), (), -1
        if b == SURNAME and a != SURNAME:
            return OK, (1,), (0,), (), -1
        return OK, (0,), (1,), (), -1
    if n == 3:
        a, b, c = cls
        if c == PATR and INITIAL not in (a, b):
            return OK, (0,), (1,), (2,), 2
        if b == PATR and INITIAL not in (a, c):
            return OK, (2,), (0,), (1,), 1
        if b == INITIAL and c == INITIAL and a != INITIAL:
            return OK, (0,), (1,), (2,), -1
        if a == INITIAL and b == INITIAL and c != INITIAL:
            return OK, (2,), (0,), (1,), -1
        if b == INITIAL and c == PATR or a == INITIAL and b == PATR:
            return (OK, (0,), (1,), (2,), 2) if c == PATR else (OK, (2,), (0,), (1,), 1)
        if INITIAL in cls:
            return no
        if a == FIRST and c == SURNAME and b not in (FIRST, SURNAME):
            return OK, (2,), (0,), (1,), -1
        return OK, (0,), (1,), (2,), -1
    # four words: a double surname written without its hyphen
    if cls[3] == PATR and INITIAL not in cls and PATR not in cls[:3]:
        return OK, (0, 1), (2,), (3,), 3
    if cls[1] == PATR and INITIAL not in cls and PATR not in (cls[0], cls[2], cls[3]):
        return OK, (2, 3), (0,), (1,), 1
    return no


class NameStage(CleanStage):
    """`{type: name, columns: [ФИО], into: {last: Фамилия, first: Имя, middle: Отчество, gender: Пол, full: ФИО,
    company: Организация}, companies: reject|keep, gender_from: patronymic|names, gender_values: {male: M,
    female: F}, yo: keep|e|restore, on_error: reject|keep|null, flag: COL}`"""

    type = "name"
    OPTIONS = ("companies", "gender_from", "gender_values", "yo")
    INTO_IS_MAPPING = True

    @classmethod
    def _check(cls, options: dict[str, Any]) -> str | None:
        into = options.get("into")
        if not isinstance(into, dict) or not into:
            return ("`into:` must map the parts to columns, e.g. {last: Фамилия, first: Имя, middle: Отчество, "
                    "gender: Пол}")
        err = unknown_keys(into, PARTS)
        if err:
            return "into: " + err
        if not all(isinstance(v, str) and v.strip() for v in into.values()):
            return "`into:` values must be column names"
        err = (check_choice(options, "companies", ("reject", "keep"))
               or check_choice(options, "gender_from", ("patronymic", "names"))
               or check_choice(options, "yo", ("keep", "e", "restore")))
        if err:
            return err
        gv = options.get("gender_values")
        if gv is not None:
            if not isinstance(gv, dict) or set(gv) - {"male", "female"}:
                return "`gender_values:` must be {male: ..., female: ...}"
        if "company" in into and options.get("companies", "reject") != "keep":
            return "`into.company` is only filled with `companies: keep`"
        return None

    @classmethod
    def output_columns(cls, options):
        into = options.get("into") if isinstance(options.get("into"), dict) else {}
        return list(into.values()) + ([options["flag"]] if options.get("flag") else [])

    def _words(self, values: list[str]):
        yo = self.options.get("yo", "keep")
        out = [classify(v, yo) for v in values]
        return [list(x) for x in zip(*out)]

    def clean(self, table: pa.Table) -> Cleaned:
        cols = self.columns
        n = table.num_rows
        raws = [as_array(text(table.column(c))) for c in cols]
        raw = raws[0] if len(raws) == 1 else concat_skip_nulls([squeeze(r) for r in raws], " ")
        cells = squeeze(raw)
        def tidy(a: pa.Array) -> pa.Array:
            a = pc.replace_substring_regex(a, r"\([^)]*\)", " ")
            a = pc.replace_substring_regex(a, r"[,;]", " ")
            return squeeze(pc.replace_substring_regex(a, r"\.([^\s.])", r". \1"))

        prepared = where_matches(cells, r"[(,;]|\.[^\s.]", tidy)
        quoted = np.asarray(pc.fill_null(pc.match_substring_regex(prepared, _QUOTES_RE2), False)
                            .to_numpy(zero_copy_only=False), dtype=bool)
        lists = pc.utf8_split_whitespace(pc.fill_null(prepared, ""))
        offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
        offsets = offsets - offsets[0]
        counts = np.diff(offsets)
        counts[np.asarray(pc.is_null(prepared).to_numpy(zero_copy_only=False), dtype=bool)] = 0
        flat = lists.flatten()
        enc = pc.dictionary_encode(flat)
        words = enc.dictionary.to_pylist()
        idx = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        w_cls, w_norm, w_gp, w_gf, w_gs = self._words(words) if words else ([], [], [], [], [])
        w_cls = np.asarray(w_cls, dtype=np.int64)
        tok_cls = w_cls[idx] if len(idx) else np.zeros(0, dtype=np.int64)

        # per row: how many words, the classes of the first four, any company word or junk anywhere
        def per_row(flag: np.ndarray) -> np.ndarray:
            cs = np.concatenate([[0], np.cumsum(flag)])
            return cs[offsets[1:]] - cs[offsets[:-1]]

        has_company = (per_row(tok_cls == COMPANY) > 0) | (quoted & (counts > 0))
        starts = offsets[:-1]
        code = np.minimum(counts, 5) * 10 ** 4
        for j in range(4):
            present = counts > j
            pos = np.where(present, starts + j, 0)
            c = np.where(present, tok_cls[pos] if len(tok_cls) else 0, EMPTY)
            code = code + c * 10 ** j
        code = np.where(has_company, -1, code)
        uniq, inverse = np.unique(code, return_inverse=True)
        decisions = []
        for u in uniq.tolist():
            if u == -1:
                decisions.append((IS_COMPANY, (), (), (), -1))
                continue
            k = u // 10 ** 4
            cls = tuple((u // 10 ** j) % 10 for j in range(min(k, 4)))
            decisions.append(decide(cls, k))
        status = np.array([d[0] for d in decisions], dtype=np.int64)[inverse]

        norm = pa.array(w_norm, pa.string())
        word_idx = pa.array(idx, pa.int64())

        def gather(positions: np.ndarray, source: pa.Array) -> pa.Array:
            ok = positions >= 0
            flat_pos = np.where(ok, starts + positions, 0)
            take_idx = pa.array(np.where(ok, flat_pos, 0), pa.int64(), mask=~ok)
            if len(word_idx) == 0:
                return pa.nulls(n, source.type)
            return pc.take(source, pc.take(word_idx, take_idx))

        def role(which: int) -> pa.Array:
            a = np.array([d[which][0] if d[which] else -1 for d in decisions], dtype=np.int64)[inverse]
            b = np.array([d[which][1] if len(d[which]) > 1 else -1 for d in decisions], dtype=np.int64)[inverse]
            va = gather(a, norm)
            if (b >= 0).any():
                return concat_skip_nulls([va, gather(b, norm)], " ")
            return va

        ok_rows = pa.array(status == OK)
        null = pa.scalar(None, pa.string())
        last, first, middle = (pc.if_else(ok_rows, role(i), null) for i in (1, 2, 3))

        gpos = np.array([d[4] for d in decisions], dtype=np.int64)[inverse]
        genders = [gather(gpos, pa.array(w_gp, pa.string()))]
        if self.options.get("gender_from", "patronymic") == "names":
            first_pos = np.array([d[2][0] if d[2] else -1 for d in decisions], dtype=np.int64)[inverse]
            last_pos = np.array([d[1][-1] if d[1] else -1 for d in decisions], dtype=np.int64)[inverse]
            genders += [gather(first_pos, pa.array(w_gf, pa.string())), gather(last_pos, pa.array(w_gs, pa.string()))]
        gender = pc.if_else(ok_rows, pc.coalesce(*genders) if len(genders) > 1 else genders[0], null)
        values = {"male": "M", "female": "F", **(self.options.get("gender_values") or {})}
        gender = pc.if_else(pc.equal(gender, "M"), pa.scalar(str(values["male"])),
                            pc.if_else(pc.equal(gender, "F"), pa.scalar(str(values["female"])), null))

        is_company = status == IS_COMPANY
        invalid = status == INVALID
        companies_keep = self.options.get("companies", "reject") == "keep"
        reason = np.full(n, None, dtype=object)
        reason[invalid] = "name_invalid"
        note = None
        if companies_keep:
            note = pa.array(np.where(is_company, "name_company", None).tolist(), pa.string())
        else:
            reason[is_company] = "name_company"
        detail: list = [None] * n
        bad = np.flatnonzero(reason != None)  # noqa: E711
        if len(bad):
            field = " + ".join(f"«{c}»" for c in cols)
            shown = pc.take(raw, pa.array(bad)).to_pylist()
            word_counts = counts[bad]
            for i, v, wc in zip(bad, shown, word_counts):
                if reason[i] == "name_company":
                    detail[i] = (f"column {field}: {v!r} looks like an organisation (a legal form such as ООО or "
                                 f"ИП, or quotes), not a person")
                elif wc > 4:
                    detail[i] = (f"column {field}: {v!r} has {wc} words: it cannot be split into last, first and "
                                 f"middle name (several people in one cell?)")
                else:
                    detail[i] = f"column {field}: {v!r} is not a person's name that can be split"
        into = self.options["into"]
        full = concat_skip_nulls([last, first, middle], " ")
        parts = {"last": last, "first": first, "middle": middle, "gender": gender, "full": full,
                 "company": pc.if_else(pa.array(is_company), cells, null)}
        outputs = {col: parts[p] for p, col in into.items()}
        keep = {}
        if "first" in into:
            keep[into["first"]] = cells  # an unsplittable name goes on whole, as the first name
        if "full" in into:
            keep[into["full"]] = cells
        reason_arr = pa.array(reason.tolist(), pa.string())
        return Cleaned(outputs=outputs, keep=keep, reason=reason_arr, detail=pa.array(detail, pa.string()),
                       field=constant(n, cols[0]), value=pc.cast(raw, pa.string()), note=note,
                       force=pa.array(is_company & (not companies_keep)))


__all__ = ["NameStage", "classify", "decide"]
