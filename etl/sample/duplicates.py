"""Generated CRM files with duplicates under different keys, and their ground truth (who is who).

``write_duplicate_contacts`` writes a 1C contacts export (cp1251, ';') where some people were entered two or three
times by different managers: the phone typed in another format, the e-mail in capitals, one of them missing, a new
mobile beside the old one, the name as "Фамилия И.О."; a few changed both phone and e-mail (no matcher can tell). It also holds the cases that trip a matcher: namesakes (the
same name, nothing else in common) and relatives who share a home phone (a different person with the same number).

``write_duplicate_companies`` writes companies where some were entered twice (the INN with its leading zero lost,
the name spelled another way) and branches that share the INN of their head office under another KPP (not
duplicates).

The truth maps each code to the person (or company) it really is; :func:`pair_scores` turns a grouping into
precision and recall over pairs.
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta
from itertools import combinations
from pathlib import Path

from .data import FEMALE_NAMES, LAST_NAMES, MAIL_DOMAINS, MALE_NAMES, NAME_WORDS, feminine_last_name
from .ru import dt_1c, format_phone, landline_number, make_inn, make_kpp, mobile_number, translit

CONTACT_COLUMNS = ["Код", "ФИО", "Телефон", "ЭлПочта", "Изменен"]
COMPANY_COLUMNS = ["Код", "Наименование", "ИНН", "КПП", "Телефон", "Изменен"]
_START = datetime(2019, 1, 1)


def _person(rng: random.Random) -> dict:
    male = rng.random() < 0.55
    if male:
        first, patr, _ = rng.choice(MALE_NAMES)
        last = rng.choice(LAST_NAMES)
    else:
        first = rng.choice(FEMALE_NAMES)
        patr = rng.choice(MALE_NAMES)[2]
        last = feminine_last_name(rng.choice(LAST_NAMES))
    login = f"{translit(first)[:1]}.{translit(last)}{rng.randint(1, 9999)}"
    return {"last": last, "first": first, "patr": patr, "mobile": mobile_number(rng),
            "email": f"{login}@{rng.choice(MAIL_DOMAINS)}"}


def _when(rng: random.Random) -> datetime:
    return _START + timedelta(seconds=rng.randint(0, 6 * 365 * 86400))


def write_duplicate_contacts(path: str | Path, people: int = 400, *, dup_rate: float = 0.3, seed: int = 7,
                             encoding: str = "cp1251") -> dict:
    """Write the file; return ``{"person": {code: person id}, "records": n, "people": n, "households": n}``."""
    rng = random.Random(f"crm-etl-dedupe/{seed}/contacts")
    rows: list[list[str]] = []
    truth: dict[str, int] = {}
    code = 0
    households = 0
    persons = []
    for pid in range(people):
        p = _person(rng)
        r = rng.random()
        if persons and r < 0.05:  # a relative: same last name and home phone, a person of their own
            other = rng.choice(persons)
            p["last"] = other["last"] if (other["first"] in FEMALE_NAMES) == (p["first"] in FEMALE_NAMES) \
                else p["last"]
            p["mobile"] = other["mobile"]
            households += 1
        elif persons and r < 0.08:  # a namesake: the same name, nothing else in common
            other = rng.choice(persons)
            p.update(last=other["last"], first=other["first"], patr=other["patr"])
        persons.append(p)
        copies = 1 + (rng.random() < dup_rate) + (rng.random() < dup_rate / 4)
        for n in range(copies):
            code += 1
            c = f"КЛ-{code:06d}"
            truth[c] = pid
            name = f"{p['last']} {p['first']} {p['patr']}"
            phone = format_phone(rng, p["mobile"])
            email = p["email"]
            if n:
                kind = rng.choice(("format", "no_email", "no_phone", "new_mobile", "other_email") * 4 + ("moved",))
                if rng.random() < 0.3:
                    name = f"{p['last']} {p['first'][0]}.{p['patr'][0]}."
                if rng.random() < 0.3:
                    email = email.upper()
                if kind == "no_email":
                    email = ""
                elif kind == "no_phone":
                    phone = ""
                elif kind == "new_mobile":
                    phone = format_phone(rng, mobile_number(rng))
                elif kind == "moved":  # a new mobile and a new e-mail: nothing left to match (a miss by design)
                    phone = format_phone(rng, mobile_number(rng))
                    email = f"{translit(p['first'])}.{rng.randint(100, 999)}@{rng.choice(MAIL_DOMAINS)}"
                elif kind == "other_email":
                    email = f"{translit(p['first'])}{rng.randint(10, 99)}@{rng.choice(MAIL_DOMAINS)}"
            rows.append([c, name, phone, email, dt_1c(_when(rng))])
    _write_shuffled(rng, path, CONTACT_COLUMNS, rows, encoding)
    return {"person": truth, "records": len(rows), "people": people, "households": households}


def write_duplicate_companies(path: str | Path, companies: int = 200, *, dup_rate: float = 0.25, seed: int = 7,
                              encoding: str = "cp1251") -> dict:
    """Write the file; return ``{"company": {code: company id}, "records": n, "branches": n}``."""
    rng = random.Random(f"crm-etl-dedupe/{seed}/companies")
    rows: list[list[str]] = []
    truth: dict[str, int] = {}
    code = 0
    branches = 0
    cid = 0
    for _ in range(companies):
        inn = make_inn(rng, rng.choice(("01", "02", "77", "78", "50")), False)
        kpp = make_kpp(rng, inn)
        title = f"ООО «{rng.choice(NAME_WORDS)} {rng.choice(NAME_WORDS)}»"
        phone = landline_number(rng, ("495", "499", "812", "343"))
        units = [(cid, kpp, title)]
        cid += 1
        if rng.random() < 0.1:  # a branch: the head office's INN, a KPP of its own
            branch_kpp = kpp
            while branch_kpp == kpp:
                branch_kpp = kpp[:4] + "0" + f"{rng.randint(10, 99)}" + kpp[7:]
            units.append((cid, branch_kpp, title + " (филиал)"))
            cid += 1
            branches += 1
        for unit, u_kpp, u_title in units:
            copies = 1 + (rng.random() < dup_rate)
            for n in range(copies):
                code += 1
                c = f"00-{code:06d}"
                truth[c] = unit
                t, i = u_title, inn
                if n:
                    t = rng.choice((u_title.replace("ООО «", "ООО \"").replace("»", "\""),
                                    u_title.replace("ООО «", "").replace("»", "") + " ООО", u_title.upper()))
                    if inn.startswith("0") and rng.random() < 0.7:
                        i = inn.lstrip("0")  # Excel ate the leading zero
                rows.append([c, t, i, u_kpp, format_phone(rng, phone), dt_1c(_when(rng))])
    _write_shuffled(rng, path, COMPANY_COLUMNS, rows, encoding)
    return {"company": truth, "records": len(rows), "branches": branches}


def _write_shuffled(rng: random.Random, path: str | Path, header: list[str], rows: list[list[str]],
                    encoding: str) -> None:
    """The rows in random order (copies apart, as they were typed over the years), as 1C writes a CSV export."""
    rng.shuffle(rows)
    with open(path, "w", encoding=encoding, newline="") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)


def pair_scores(truth: dict[str, int], group_of: dict[str, str]) -> dict:
    """Precision and recall over pairs of records: a predicted pair is two codes in one group (``group_of``: code ->
    group, e.g. the target id), a true pair two codes of one person. Codes missing from ``group_of`` are ignored."""
    codes = [c for c in truth if c in group_of]

    def pairs(key) -> set[tuple[str, str]]:
        by: dict = {}
        for c in codes:
            by.setdefault(key(c), []).append(c)
        return {tuple(sorted(p)) for g in by.values() for p in combinations(g, 2)}

    true, found = pairs(truth.__getitem__), pairs(group_of.__getitem__)
    hit = len(true & found)
    return {"true_pairs": len(true), "found_pairs": len(found), "correct_pairs": hit,
            "precision": hit / len(found) if found else 1.0, "recall": hit / len(true) if true else 1.0}


__all__ = ["write_duplicate_contacts", "write_duplicate_companies", "pair_scores"]
