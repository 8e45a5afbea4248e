"""A deterministic generator of realistic, dirty Russian CRM data, written the way 1C and Excel write exports.

``generate()`` writes a whole sample data set (companies, contacts, deals, sites, tickets, managers) and returns the
ground truth, also written to ``truth.json``. ``write_contacts_csv()`` streams any number of contacts into one file
with constant memory, for the benchmarks.

Determinism: every file has its own ``random.Random`` seeded from ``seed`` and the file's name, every date derives
from ``BASE_DATE``, and the XLSX zip is written with fixed timestamps, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import zipfile
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from . import data as D
from . import ru
from .address import city_by_name, make_address, pick_city

BASE_DATE = datetime(2024, 6, 28, 18, 0, 0)  # "now" for the sample: every date is derived from it
START_DATE = datetime(2016, 1, 1)

COMPANIES_HEADER = (
    "Код;Наименование;ИНН;КПП;ОГРН;Вид;Отрасль;Телефон;Телефон;ЭлПочта;Сайт;Адрес;Выручка;Активен;"
    "Ответственный;ДатаСоздания;Комментарий;"
).split(";")
CONTACTS_HEADER = "Код;ФИО;Должность;Телефон;ЭлПочта;КодКонтрагента;ДатаРождения;Ответственный;ДатаСоздания;Комментарий".split(";")
DEALS_HEADER = (
    "Номер;Название;Направление;Стадия;Сумма;Валюта;КодКонтакта;КодКонтрагента;ДатаОткрытия;ДатаЗакрытия;Закрыта;"
    "Ответственный"
).split(";")
SITES_HEADER = "Код;Наименование;ТипОбъекта;Адрес;КодКонтрагента;КодКонтакта;КонтактныеЛица;Ответственный;ДатаСоздания".split(";")
TICKETS_HEADER = (
    "Номер\tКодОбъекта\tПричина\tСтатус\tДатаОткрытия\tДатаЗакрытия\tИнженер\tОтчёт\tВремяВПути\tВремяРаботы\t"
    "КодКонтрагента"
).split("\t")
MANAGERS_HEADER = ["Логин", "ФИО", "ЭлПочта"]

FORMATS = {
    "companies": {"file": "companies.csv", "encoding": "cp1251", "bom": False, "delimiter": ";", "newline": "CRLF"},
    "contacts": {"file": "contacts.csv", "encoding": "utf-8", "bom": True, "delimiter": ";", "newline": "CRLF"},
    "deals_xlsx": {"file": "deals.xlsx", "sheet": "Сделки", "header_row": 1},
    "deals_csv": {"file": "deals.csv", "encoding": "cp1251", "bom": False, "delimiter": ";", "newline": "CRLF"},
    "sites": {"file": "sites.csv", "encoding": "cp1251", "bom": False, "delimiter": ";", "newline": "CRLF"},
    "tickets": {
        "file": "tickets.txt", "encoding": "utf-8", "bom": True, "delimiter": "\t", "newline": "CRLF",
        "quoting": "none: no field holds a TAB, CR, LF or '\"'",
    },
    "managers": {"file": "managers.csv", "encoding": "utf-8", "bom": False, "delimiter": ";", "newline": "CRLF"},
}

RULES = {
    "row": "1-based number of a data record in its file, header excluded (a quoted field with a line break is "
    "still one record; in deals.xlsx sheet row = row + 1)",
    "key": "the file's first column (Код / Номер / Логин)",
    "duplicate": "a row whose key already appeared in an earlier row of the same file; the first occurrence is "
    "not a duplicate. duplicate_rows lists every key that appears more than once, with its count and whether all "
    "its rows are identical (an exact re-export) or not (a later row with the same key and other content)",
    "orphan": "a non-empty link whose value is the key of no row at all in the target file; an empty link is not "
    "an orphan. orphans[column] lists the key of every such row, in file order (a duplicated orphan row is listed "
    "once per row)",
    "links": "every non-empty link that is not an orphan points at a key whose first row in the target file is "
    "accepted, so rejections never cascade from one file to another",
    "bad_value": "a cell that cannot be read as its type: bad_date (no such date, or not a dd.mm.yyyy[ H:MM:SS] "
    "date), bad_number (not a number with a decimal comma and optional no-break-space grouping), bad_boolean "
    "(neither Да nor Нет). An empty cell is never a bad value",
    "empty_date": "a date cell that is empty or holds 1C's empty date 01.01.0001 (0:00:00); it is not a fault. "
    "empty_dates counts cells (empty_dates_by_column per column)",
    "users": "Ответственный / Инженер hold a manager's ФИО in some spelling (see managers[].variants) or are "
    "empty; they are never orphans",
    "expected": "a simple pipeline rejects a row that is a duplicate, has an orphan link or a bad value. A row with "
    "several faults counts once in rejected (accepted + rejected = rows); rejected_by counts it under each kind "
    "it carries, so rejected_by may add up to more than rejected. faulty_rows lists every rejected row with all "
    "its faults",
    "records": "companies / contacts / sites hold the clean answers per key, for the key's first row",
    "inn": "companies[key].inn is the cleaned INN (digits; a leading zero that Excel dropped restored) or null "
    "when empty; inn_raw is the cell as written; inn_valid is the checksum of inn; inn_issue is checksum, "
    "leading_zero_lost, empty or null",
    "names": "contacts[key] last/first/middle name in proper case; null when the source has no such part; a name "
    "given only as an initial is that letter with a dot (\"И.\")",
    "phones": "phones_e164 are the numbers a cleaner should find (extensions dropped); an Excel-mangled number "
    "(7,91235E+10) or junk gives none, and mangled_phones lists those keys",
    "emails": "emails are lower-case, trimmed, a comma typed for the dot fixed (ivan@yandex,ru -> ivan@yandex.ru)",
}


# --- rows and ground truth --------------------------------------------------------------------------------------


@dataclass
class _Row:
    key: str
    cells: list
    bad: list = field(default_factory=list)  # (column, value as written, reason)
    truth: dict | None = None  # the clean answers; None for the rows added as duplicates
    extra: dict = field(default_factory=dict)  # facts the generator needs later (links of the record)


def _count(n: int, rate: float) -> int:
    """How many of n records get a kind of dirt: at least one when there are records at all."""
    return 0 if n <= 0 else min(n, max(1, round(n * rate)))


def _pick(rng: random.Random, n: int, rate: float, exclude: set | None = None) -> set[int]:
    pool = [i for i in range(n) if not exclude or i not in exclude]
    return set(rng.sample(pool, min(len(pool), _count(n, rate))))


class _Codes:
    """Ascending 1C codes with a few gaps (deleted records); the gaps give believable orphan codes."""

    def __init__(self, rng: random.Random, n: int, fmt: Callable[[int], str], gap_rate: float = 0.06):
        self.fmt = fmt
        self.codes: list[str] = []
        self.gaps: list[str] = []
        num = 0
        for _ in range(n):
            if rng.random() < gap_rate:
                gap = rng.randint(1, 4)
                self.gaps.extend(fmt(num + j) for j in range(1, gap + 1))
                num += gap
            num += 1
            self.codes.append(fmt(num))
        self.top = num

    def orphan(self, rng: random.Random) -> str:
        if self.gaps and rng.random() < 0.7:
            return rng.choice(self.gaps)
        return self.fmt(self.top + rng.randint(1, 500))


def _add_duplicates(rng, rows, exact_rate, conflict_rate, mutate, prefer=()):
    """Copy some rows to later positions: exact copies, and copies with other content (same key)."""
    n = len(rows)
    if n == 0:
        return rows
    exact = rng.sample(range(n), _count(n, exact_rate))
    prefer = [i for i in prefer if i not in exact]
    if prefer and exact:  # make sure at least one duplicate row carries another fault as well
        exact[0] = rng.choice(prefer)
    exact_set = set(exact)
    rest = [i for i in range(n) if i not in exact_set]
    conflict = rng.sample(rest, min(len(rest), _count(n, conflict_rate)))
    conflict_set = set(conflict)
    order = [(float(i), 0, r) for i, r in enumerate(rows)]
    seq = 1
    for i in exact + conflict:
        src = rows[i]
        if i in conflict_set:
            copy = mutate(rng, src)
            if copy.cells == src.cells:
                raise AssertionError("a conflicting duplicate must differ from its first row")
        else:
            copy = _Row(src.key, list(src.cells), list(src.bad))
        pos = i + 0.5 if rng.random() < 0.4 else rng.uniform(i + 0.5, n)
        order.append((pos, seq, copy))
        seq += 1
    order.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in order]


def _is_empty_date(value) -> bool:
    return value is None or value == "" or (isinstance(value, str) and value.startswith(ru.EMPTY_DATE))


def _finalize(file_name: str, header: list[str], rows: list[_Row], links: dict, date_cols: tuple[str, ...]):
    """The truth of one file and the keys other files may link to (first row accepted)."""
    counts = Counter(r.key for r in rows)
    link_idx = {col: (header.index(col), targets) for col, targets in links.items()}
    date_idx = [(col, header.index(col)) for col in date_cols]
    orphans: dict[str, list[str]] = {col: [] for col in links}
    bad_values, faulty, accepted_keys = [], [], []
    empty = Counter({col: 0 for col in date_cols})
    rejected_by = Counter({"duplicate": 0, "orphan": 0, "bad_value": 0})
    first_cells: dict[str, list] = {}
    identical = {k: True for k, c in counts.items() if c > 1}
    seen: set[str] = set()
    for n, r in enumerate(rows, 1):
        faults = []
        first = r.key not in seen
        if not first:
            faults.append("duplicate")
            if r.cells != first_cells[r.key]:
                identical[r.key] = False
        else:
            first_cells[r.key] = r.cells
        for col, (idx, targets) in link_idx.items():
            value = r.cells[idx]
            if value and value not in targets:
                orphans[col].append(r.key)
                faults.append(f"orphan:{col}")
        for col, value, reason in r.bad:
            bad_values.append({"key": r.key, "column": col, "value": value, "reason": reason, "row": n})
            faults.append(f"{reason}:{col}")
        for col, idx in date_idx:
            if _is_empty_date(r.cells[idx]):
                empty[col] += 1
        seen.add(r.key)
        if faults:
            faulty.append({"row": n, "key": r.key, "faults": faults})
            kinds = {f.split(":")[0] for f in faults}
            rejected_by["duplicate"] += "duplicate" in kinds
            rejected_by["orphan"] += any(f.startswith("orphan") for f in faults)
            rejected_by["bad_value"] += any(k.startswith("bad_") for k in kinds)
        elif first:
            accepted_keys.append(r.key)
    dups = [{"key": k, "count": c, "identical": identical[k]} for k, c in counts.items() if c > 1]
    accepted = len(rows) - len(faulty)
    truth = {
        "file": file_name,
        "rows": len(rows),
        "keys": len(counts),
        "duplicate_rows": dups,
        "duplicates_identical": sum(d["count"] - 1 for d in dups if d["identical"]),
        "duplicates_conflicting": sum(d["count"] - 1 for d in dups if not d["identical"]),
        "orphans": orphans,
        "bad_values": bad_values,
        "empty_dates": sum(empty.values()),
        "empty_dates_by_column": dict(empty),
        "faulty_rows": faulty,
    }
    expected = {"accepted": accepted, "rejected": len(rows) - accepted, "rejected_by": dict(rejected_by)}
    return truth, expected, accepted_keys


# --- managers ---------------------------------------------------------------------------------------------------


def _make_managers(rng: random.Random, count: int = 8) -> list[dict]:
    people, lasts, initials = [], set(), set()
    while len(people) < count:
        female = len(people) % 3 == 1
        last = rng.choice(D.LAST_NAMES)
        father = rng.choice(D.MALE_NAMES)
        if female:
            first, middle, last = rng.choice(D.FEMALE_NAMES), father[2], D.feminine_last_name(last)
        else:
            first, middle = rng.choice(D.MALE_NAMES)[0], father[1]
        if last in lasts or (first[0], last) in initials:
            continue
        lasts.add(last)
        initials.add((first[0], last))
        fio = f"{last} {first} {middle}"
        login = f"{ru.translit(last)}.{ru.translit(first)[0]}"
        variants = [
            fio, fio.upper(), fio.lower(), f"{last} {first[0]}.{middle[0]}.", f"{last} {first[0]}. {middle[0]}.",
            f"{first} {last}", f"{last}  {first} {middle}", f"{fio} ", f"{last.upper()} {first[0]}.{middle[0]}.",
        ]
        people.append(
            {
                "login": login,
                "fio": fio,
                "email": f"{ru.translit(first)[0]}.{ru.translit(last)}@sample-crm.example",
                "last_name": last,
                "first_name": first,
                "middle_name": middle,
                "role": "engineer" if len(people) >= count - 3 else "manager",
                "variants": variants,
            }
        )
    return people


def _person_picker(rng: random.Random, people: list[dict], empty_rate: float) -> Callable[[], str]:
    def pick() -> str:
        if rng.random() < empty_rate:
            return ""
        m = rng.choice(people)
        return m["fio"] if rng.random() < 0.7 else rng.choice(m["variants"][1:])

    return pick


# --- contacts (shared by generate() and write_contacts_csv()) ---------------------------------------------------


class _ContactMaker:
    def __init__(self, rng: random.Random, managers: list[dict]):
        self.rng = rng
        self.responsible = _person_picker(rng, [m for m in managers if m["role"] == "manager"], 0.05)
        self.area_codes = [c[3] for c in D.CITIES]

    def name(self):
        rng = self.rng
        female = rng.random() < 0.45
        last = rng.choice(D.LAST_NAMES)
        father = rng.choice(D.MALE_NAMES)
        if female:
            first, middle, last = rng.choice(D.FEMALE_NAMES), father[2], D.feminine_last_name(last)
        else:
            first, middle = rng.choice(D.MALE_NAMES)[0], father[1]
        return female, last, first, middle

    def fio(self, last: str, first: str, middle: str):
        rng = self.rng
        r = rng.random()
        parts = (last, first, middle)
        if r < 0.45:
            text = f"{last} {first} {middle}"
        elif r < 0.55:
            text = f"{first} {middle} {last}".lower()
        elif r < 0.60:
            text = f"{first} {middle} {last}"
        elif r < 0.68:
            text = f"{last} {first} {middle}".upper()
        elif r < 0.73:
            text = f"{last} {first} {middle}".lower()
        elif r < 0.79:
            text = rng.choice(("{l} {f}.{m}.", "{l} {f}. {m}.", "{L} {f}.{m}."))
            text = text.format(l=last, L=last.upper(), f=first[0], m=middle[0])
            if rng.random() < 0.5:
                text = text.upper()
            parts = (last, first[0] + ".", middle[0] + ".")
        elif r < 0.86:
            text, parts = f"{last} {first}", (last, first, None)
        elif r < 0.93:
            text, parts = f"{first} {last}", (last, first, None)
        elif r < 0.96:
            text, parts = first, (None, first, None)
        else:
            text = f"{last.upper()} {first} {middle}"
        r = rng.random()
        if r < 0.06:
            text = text.replace(" ", "  ", 1)
        elif r < 0.09:
            text += " "
        elif r < 0.10:
            text = " " + text
        return text, parts

    def phone(self):
        """(cell text, e164 numbers, mangled?)"""
        rng = self.rng
        r = rng.random()
        if r < 0.20:
            return "", [], False
        if r < 0.72:
            n = ru.mobile_number(rng)
            return ru.format_phone(rng, n), [ru.e164(n)], False
        if r < 0.82:
            codes = rng.choice(self.area_codes)
            n = ru.landline_number(rng, codes)
            text = ru.format_phone(rng, n, len(codes[0]))
            if rng.random() < 0.4:
                text = ru.with_extension(rng, text)
            return text, [ru.e164(n)], False
        if r < 0.91:
            codes = rng.choice(self.area_codes)
            a = ru.landline_number(rng, codes) if rng.random() < 0.5 else ru.mobile_number(rng)
            b = ru.mobile_number(rng)
            text = ru.format_phone(rng, a, len(codes[0]) if a[0] != "9" else 3)
            text += rng.choice((", ", "; ", " / ", ",", " "))
            text += ru.format_phone(rng, b)
            return text, [ru.e164(a), ru.e164(b)], False
        if r < 0.95:
            return ru.excel_mangled(rng, ru.mobile_number(rng)), [], True
        return rng.choice(D.JUNK_PHONES), [], False

    def _address(self, first: str, last: str, year: int) -> str:
        rng = self.rng
        f, l = ru.translit(first), ru.translit(last)
        local = rng.choice(
            (f"{f}.{l}", f"{l}.{f}", f"{f[0]}.{l}", f"{l}{year % 100:02d}", f"{l}_{f[0]}", f"{f}{rng.randint(1, 999)}")
        )
        return f"{local}@{rng.choice(D.MAIL_DOMAINS)}"

    def email(self, first: str, last: str, year: int):
        """(cell text, clean e-mails)"""
        rng = self.rng
        r = rng.random()
        if r < 0.40:
            return "", []
        a = self._address(first, last, year)
        if r < 0.75:
            return a, [a]
        if r < 0.85:
            local, domain = a.split("@")
            name, _, tld = domain.rpartition(".")
            text = ".".join(p.capitalize() for p in local.split(".")) + "@" + name.capitalize() + "." + tld.upper()
            if rng.random() < 0.6:
                text += " "
            elif rng.random() < 0.5:
                text = " " + text
            return text, [a]
        if r < 0.89:
            local, domain = a.split("@")
            return local + "@" + domain.replace(".", ",", 1), [a]
        if r < 0.95:
            b = self._address(first, last, year + 1)
            if b == a:
                b = "2" + b
            return a + rng.choice(("; ", " ", ";")) + b, [a, b]
        return rng.choice(D.JUNK_EMAILS), []

    def make(self, code: str, company_code: str, bad_birth: bool = False) -> _Row:
        rng = self.rng
        female, last, first, middle = self.name()
        fio, (t_last, t_first, t_middle) = self.fio(last, first, middle)
        post = rng.choice(D.POSTS)
        phone, phones, mangled = self.phone()
        birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(20000))
        email, emails = self.email(first, last, birth.year)
        bad = []
        birth_iso = None
        if bad_birth:
            birth_text = rng.choice(ru.BAD_DATES).format(y=birth.year)
            bad.append(("ДатаРождения", birth_text, "bad_date"))
        else:
            r = rng.random()
            if r < 0.30:
                birth_text = ""
            elif r < 0.35:
                birth_text = ru.EMPTY_DATE
            else:
                birth_text = ru.date_1c(birth) + (" 0:00:00" if r > 0.88 else "")
                birth_iso = birth.date().isoformat()
        created = ru.dt_1c(ru.random_datetime(rng, START_DATE, BASE_DATE))
        comment = ""
        if rng.random() < 0.12:
            comment = rng.choice(D.CONTACT_COMMENTS).format(last=rng.choice(D.LAST_NAMES))
        cells = [code, fio, post, phone, email, company_code, birth_text, self.responsible(), created, comment]
        truth = {
            "last_name": t_last,
            "first_name": t_first,
            "middle_name": t_middle,
            "gender": "F" if female else "M",
            "birthdate": birth_iso,
            "phones_e164": phones,
            "emails": emails,
        }
        return _Row(code, cells, bad, truth, {"mangled": mangled})

    def mutate(self, rng: random.Random, row: _Row) -> _Row:
        cells = list(row.cells)
        what = rng.randrange(3)
        if what == 0:
            cells[3] = ru.format_phone(rng, ru.mobile_number(rng))
        elif what == 1:
            cells[2] = rng.choice([p for p in D.POSTS if p != cells[2]])
        else:
            cells[9] = (cells[9] + " " if cells[9] else "") + "обновлено"
        return _Row(row.key, cells, list(row.bad))


def _company_code(n: int) -> str:
    return f"00-{n:06d}"


def _contact_code(n: int) -> str:
    return f"{n:09d}"


# --- companies --------------------------------------------------------------------------------------------------


def _company_name(rng: random.Random, person: bool, name: tuple[bool, str, str, str]):
    """(Наименование, the core word a domain is made of)"""
    _female, last, first, middle = name
    if person:
        r = rng.random()
        if r < 0.75:
            text = f"ИП {last} {first} {middle}"
        elif r < 0.87:
            text = f"ИП {last} {first[0]}.{middle[0]}."
        elif r < 0.94:
            text = f"Индивидуальный предприниматель {last} {first} {middle}"
        else:
            text = f"{last} {first} {middle} ИП"
        return text, last
    r = rng.random()
    if r < 0.35:
        core = rng.choice(D.NAME_PREFIXES) + rng.choice(D.NAME_SUFFIXES)
    elif r < 0.5:
        core = rng.choice(D.NAME_PREFIXES) + rng.choice(D.NAME_SUFFIXES).lower()
    elif r < 0.7:
        core = rng.choice(D.NAME_WORDS) + "-" + rng.choice(D.NAME_SUFFIXES)
    elif r < 0.9:
        core = rng.choice(D.NAME_WORDS)
    else:
        core = rng.choice(("ТД ", "ГК ", "ПКФ ", "НПО ")) + rng.choice(D.NAME_WORDS)
    form = rng.choices(("ООО", "АО", "ПАО", "ЗАО", "НАО"), weights=(75, 12, 3, 7, 3))[0]
    r = rng.random()
    if r < 0.40:
        text = f"{form} «{core}»"
    elif r < 0.80:
        text = f'{form} "{core}"'
    elif r < 0.86:
        text = f"{form} {core}"
    elif r < 0.90 and form == "ООО":
        text = f"Общество с ограниченной ответственностью «{core}»"
    elif r < 0.93:
        text = f'"{core}" {form}'
    elif r < 0.96 and " " in core:
        head, _, tail = core.partition(" ")
        text = f'{form} "{head} "{tail}"'  # the unbalanced nested quotes 1C users type
    else:
        text = f"{form} {core}".lower()
    if rng.random() < 0.03:
        text = text.replace(" ", "  ", 1)
    return text, core


def _company_phone(rng: random.Random, city: tuple):
    r = rng.random()
    if r < 0.7:
        n = ru.landline_number(rng, city[3])
        text = ru.format_phone(rng, n, len(city[3][0]))
        if rng.random() < 0.2:
            text = ru.with_extension(rng, text)
        return text, [ru.e164(n)]
    if r < 0.92:
        n = ru.mobile_number(rng)
        return ru.format_phone(rng, n), [ru.e164(n)]
    a, b = ru.landline_number(rng, city[3]), ru.mobile_number(rng)
    text = ru.format_phone(rng, a, len(city[3][0])) + rng.choice((", ", "; ", " ")) + ru.format_phone(rng, b)
    return text, [ru.e164(a), ru.e164(b)]


_SPECIAL_COMMENTS = (
    "Клиент с {year} года; работает по предоплате",
    'Директор — "{last}", ЛПР',
    "Договор № {num} от {date}\nпродлён до {year2}",
)


def _build_companies(rng: random.Random, n: int, managers: list[dict]):
    codes = _Codes(rng, n, _company_code)
    bad_inn = _pick(rng, n, 0.05)
    lost_zero = _pick(rng, n, 0.015, bad_inn)
    empty_inn = _pick(rng, n, 0.02, bad_inn | lost_zero)
    bad_ogrn = _pick(rng, n, 0.03)
    bad_rev = _pick(rng, n, 0.015)
    bad_bool = _pick(rng, n, 0.01)
    bad_date = _pick(rng, n, 0.01)
    empty_date = _pick(rng, n, 0.02, bad_date)
    mangled = _pick(rng, n, 0.02)
    special = sorted(rng.sample(range(n), min(n, len(_SPECIAL_COMMENTS))))  # ';', '"' and a line break, always
    responsible = _person_picker(rng, [m for m in managers if m["role"] == "manager"], 0.04)
    maker = _ContactMaker(rng, managers)
    rows: list[_Row] = []
    for i, code in enumerate(codes.codes):
        person = rng.random() < 0.15
        city = city_by_name("Уфа") if i in lost_zero else pick_city(rng)
        name = maker.name()
        title, core = _company_name(rng, person, name)
        created = ru.random_datetime(rng, START_DATE, BASE_DATE)
        inn = ru.make_inn(rng, city[4], person)
        issue = None
        if i in bad_inn:
            inn, issue = ru.break_last_digit(rng, inn), "checksum"
        inn_raw = inn
        if i in lost_zero:
            inn_raw, issue = inn.lstrip("0"), "leading_zero_lost"
        if i in empty_inn:
            inn = inn_raw = ""
            issue = "empty"
        kpp = "" if person else ru.make_kpp(rng, inn or ru.make_inn(rng, city[4], False))
        ogrn = ru.make_ogrn(rng, city[4], max(2003, created.year - rng.randint(0, 12)), person)
        if i in bad_ogrn:
            ogrn = ru.break_last_digit(rng, ogrn)
        phones = ["", ""]
        nums: list[list[str]] = [[], []]
        if rng.random() < 0.9:
            slot = 0 if rng.random() < 0.85 else 1
            phones[slot], nums[slot] = _company_phone(rng, city)
            if rng.random() < 0.3:
                phones[1 - slot], nums[1 - slot] = _company_phone(rng, city)
        if i in mangled:  # the Excel-mangled number replaces whatever that cell held
            slot = 0 if not phones[0] or rng.random() < 0.5 else 1
            phones[slot], nums[slot] = ru.excel_mangled(rng, ru.mobile_number(rng)), []
        e164 = nums[0] + nums[1]
        domain = ru.translit(core) + rng.choice((".ru", ".ru", ".ru", ".com", ".su", "-msk.ru"))
        r = rng.random()
        box = rng.choice(("info", "sales", "office", "zakaz", "buh", "mail"))
        if r < 0.55:
            email = f"{box}@{domain}"
        elif r < 0.65:
            email = f"{box.upper()}@{domain.upper()} "
        elif r < 0.70:
            email = f"{box}@{domain}; {'buh' if box != 'buh' else 'info'}@{domain}"
        elif r < 0.75:
            email = maker._address(name[2], name[1], created.year)
        else:
            email = ""
        site = ""
        if rng.random() < 0.45:
            site = rng.choice((f"www.{domain}", f"http://{domain}", f"https://www.{domain}/", domain))
        address, _parts = make_address(rng, city, flat=rng.random() < 0.3, formal=True)
        bad = []
        if i in bad_rev:
            revenue = rng.choice(ru.BAD_NUMBERS)
            bad.append(("Выручка", revenue, "bad_number"))
        elif rng.random() < 0.15:
            revenue = ""
        else:
            value = round(10 ** rng.uniform(5, 9.3), 2)
            r = rng.random()
            revenue = ru.money(value) if r < 0.75 else ru.money(value, False) if r < 0.9 else str(int(value))
        if i in bad_bool:
            active = rng.choice(ru.BAD_BOOLEANS)
            bad.append(("Активен", active, "bad_boolean"))
        else:
            active = "Да" if rng.random() < 0.85 else "Нет"
        if i in bad_date:
            created_text = rng.choice(ru.BAD_DATETIMES).format(y=created.year)
            bad.append(("ДатаСоздания", created_text, "bad_date"))
        elif i in empty_date:
            created_text = rng.choice(("", ru.EMPTY_DATETIME))
        else:
            created_text = ru.dt_1c(created)
        comment = ""
        templates = _SPECIAL_COMMENTS[special.index(i)] if i in special else None
        if templates or rng.random() < 0.2:
            comment = (templates or rng.choice(D.COMPANY_COMMENTS)).format(
                year=created.year - rng.randint(0, 5), year2=created.year + rng.randint(1, 3),
                last=rng.choice(D.LAST_NAMES), num=rng.randint(1, 999), word=rng.choice(D.NAME_WORDS),
                date=ru.date_1c(created - timedelta(days=rng.randrange(900))),
            )
        cells = [
            code, title, inn_raw, kpp, ogrn, rng.choice(D.COMPANY_KINDS),
            rng.choice(D.INDUSTRIES) if rng.random() < 0.8 else "", phones[0], phones[1], email, site, address,
            revenue, active, responsible(), created_text, comment, "",
        ]
        truth = {
            "inn": inn or None,
            "inn_raw": inn_raw,
            "inn_valid": ru.inn_is_valid(inn),
            "inn_issue": issue,
            "kpp": kpp or None,
            "ogrn": ogrn,
            "ogrn_valid": ru.ogrn_is_valid(ogrn),
            "is_person": person,
            "phones_e164": e164,
        }
        rows.append(_Row(code, cells, bad, truth, {"mangled": i in mangled}))

    def mutate(rng: random.Random, row: _Row) -> _Row:
        cells = list(row.cells)
        what = rng.randrange(3)
        if what == 0:
            cells[7] = ru.format_phone(rng, ru.mobile_number(rng))
        elif what == 1:
            cells[11] = make_address(rng, formal=True)[0]
        else:
            cells[1] = cells[1].upper() if cells[1] != cells[1].upper() else cells[1].lower()
        if cells == row.cells:
            cells[16] = (cells[16] + " " if cells[16] else "") + "(изм.)"
        return _Row(row.key, cells, list(row.bad))

    prefer = [i for i, r in enumerate(rows) if r.bad]
    return _add_duplicates(rng, rows, 0.02, 0.02, mutate, prefer), codes


# --- deals ------------------------------------------------------------------------------------------------------


def _build_deals(rng, n, managers, contacts_ok, contact_company, companies_list, contact_codes, company_codes, xlsx):
    companies_ok = set(companies_list)
    codes = _Codes(rng, n, lambda k: f"ЦБ-{k:06d}", 0.03)
    orphan_contact = _pick(rng, n, 0.03)
    orphan_company = _pick(rng, n, 0.01, orphan_contact)
    bad_amount = _pick(rng, n, 0.015)
    bad_open = _pick(rng, n, 0.01)
    bad_close = _pick(rng, n, 0.01)
    bad_flag = _pick(rng, n, 0.01)
    responsible = _person_picker(rng, [m for m in managers if m["role"] == "manager"], 0.03)
    directions = list(D.DIRECTIONS)
    rows = []
    for i, code in enumerate(codes.codes):
        direction = rng.choices(directions, weights=(3, 4, 3))[0]
        open_st, won, lost = D.DIRECTIONS[direction]
        opened = ru.random_datetime(rng, START_DATE, BASE_DATE)
        closed_flag = (BASE_DATE - opened).days > 60 and rng.random() < 0.8 or rng.random() < 0.1
        if closed_flag:
            stage = rng.choice(won) if rng.random() < 0.7 else rng.choice(lost)
            closed = min(opened + timedelta(minutes=rng.randint(30, 60 * 24 * 90)), BASE_DATE)
        else:
            stage, closed = rng.choice(open_st), None
        if direction == "Продажа автомобилей":
            model = rng.choice(D.CAR_MODELS)
            title = rng.choice((f"Продажа {model}", f"{model}", f"Покупка авто {model}", f"{model} в кредит"))
            amount = round(rng.uniform(900_000, 6_500_000), -3)
        elif direction == "Сервис":
            title = f"{rng.choice(D.SERVICE_JOBS)} {rng.choice(D.CAR_MODELS)}"
            amount = round(rng.uniform(2_500, 180_000), 2)
        else:
            title = f"Заказ запчастей: {rng.choice(D.PARTS)}"
            amount = round(rng.uniform(400, 95_000), 2)
        bad = []
        r = rng.random()
        if i in bad_amount:
            amount_cell = rng.choice(ru.BAD_NUMBERS)
            bad.append(("Сумма", amount_cell, "bad_number"))
        elif r < 0.02:
            amount_cell = None if xlsx else ""
        elif r < 0.12 or not xlsx:
            amount_cell = ru.money(amount, grouping=rng.random() < 0.8)
        else:
            amount_cell = int(amount) if amount == int(amount) else amount
        if i in orphan_contact:
            contact = contact_codes.orphan(rng)
        elif contacts_ok and rng.random() < 0.85:
            contact = rng.choice(contacts_ok)
        else:
            contact = ""
        if i in orphan_company:
            company = company_codes.orphan(rng)
        elif contact and contact_company.get(contact) in companies_ok and rng.random() < 0.9:
            company = contact_company[contact]
        elif companies_list and rng.random() < 0.3:
            company = rng.choice(companies_list)
        else:
            company = ""

        def when(value: datetime | None, bad_it: bool, column: str):
            if bad_it:
                text = rng.choice(ru.BAD_DATETIMES).format(y=(value or opened).year)
                bad.append((column, text, "bad_date"))
                return text
            if value is None:
                return ru.EMPTY_DATETIME if rng.random() < 0.1 else (None if xlsx else "")
            if xlsx and rng.random() < 0.9:
                return value
            return ru.dt_1c(value)

        opened_cell = when(opened, i in bad_open, "ДатаОткрытия")
        closed_cell = when(closed, i in bad_close and closed is not None, "ДатаЗакрытия")
        if i in bad_flag:
            flag = rng.choice(ru.BAD_BOOLEANS)
            bad.append(("Закрыта", flag, "bad_boolean"))
        else:
            flag = "Да" if closed_flag else "Нет"
        cells = [
            code, title, direction, stage, amount_cell, rng.choice(D.CURRENCIES), contact, company, opened_cell,
            closed_cell, flag, responsible(),
        ]
        rows.append(_Row(code, cells, bad, None))

    def mutate(rng: random.Random, row: _Row) -> _Row:
        cells = list(row.cells)
        cells[1] = cells[1] + rng.choice((" (повторно)", " - изменено", " !"))
        return _Row(row.key, cells, list(row.bad))

    prefer = [i for i, r in enumerate(rows) if r.bad]
    return _add_duplicates(rng, rows, 0.02, 0.01, mutate, prefer)


# --- sites ------------------------------------------------------------------------------------------------------


def _build_sites(rng, n, managers, companies_ok, contacts_ok, company_codes, contact_codes):
    codes = _Codes(rng, n, lambda k: f"ОБ-{k:06d}", 0.05)
    orphan = _pick(rng, n, 0.03)
    bad_date = _pick(rng, n, 0.01)
    empty_date = _pick(rng, n, 0.02, bad_date)
    responsible = _person_picker(rng, managers, 0.05)
    maker = _ContactMaker(rng, managers)
    rows = []
    for i, code in enumerate(codes.codes):
        site_type, templates, has_flat = rng.choice(D.SITE_TYPES)
        city = pick_city(rng)
        raw, parts = make_address(rng, city, flat=has_flat and rng.random() < 0.9)
        _f, last, first, middle = maker.name()
        title = rng.choice(templates).format(
            last=last, i=first[0], m=middle[0], word=rng.choice(D.NAME_WORDS), n=rng.randint(1, 12),
            street=parts["street"],
        )
        by_company = rng.random() < 0.55 if companies_ok and contacts_ok else bool(companies_ok)
        company = contact = ""
        if i in orphan:
            if rng.random() < 0.55:
                company, by_company = company_codes.orphan(rng), True
            else:
                contact, by_company = contact_codes.orphan(rng), False
        elif by_company:
            company = rng.choice(companies_ok)
        elif contacts_ok:
            contact = rng.choice(contacts_ok)
        r = rng.random()
        persons = ""
        if r < 0.3:
            persons = f"{first} {middle}, {ru.format_phone(rng, ru.mobile_number(rng))}"
        elif r < 0.45:
            persons = f"{rng.choice(D.SITE_CONTACT_ROLES)}: {ru.format_phone(rng, ru.landline_number(rng, city[3]), len(city[3][0]))}"
        elif r < 0.6:
            persons = (
                f"{last} {first} {ru.format_phone(rng, ru.mobile_number(rng))}; "
                f"{rng.choice(D.SITE_CONTACT_ROLES)} {ru.format_phone(rng, ru.mobile_number(rng))}"
            )
        bad = []
        created = ru.random_datetime(rng, START_DATE, BASE_DATE)
        if i in bad_date:
            created_text = rng.choice(ru.BAD_DATETIMES).format(y=created.year)
            bad.append(("ДатаСоздания", created_text, "bad_date"))
        elif i in empty_date:
            created_text = rng.choice(("", ru.EMPTY_DATETIME))
        else:
            created_text = ru.dt_1c(created)
        cells = [code, title, site_type, raw, company, contact, persons, responsible(), created_text]
        truth = {"owner": "company" if by_company else "contact", "address_raw": raw, **parts}
        rows.append(_Row(code, cells, bad, truth, {"company": company, "contact": contact}))

    def mutate(rng: random.Random, row: _Row) -> _Row:
        cells = list(row.cells)
        if rng.random() < 0.5:
            cells[6] = (cells[6] + "; " if cells[6] else "") + f"сторож {ru.format_phone(rng, ru.mobile_number(rng))}"
        else:
            cells[1] = cells[1] + " (старый)"
        return _Row(row.key, cells, list(row.bad))

    prefer = [i for i, r in enumerate(rows) if r.bad]
    return _add_duplicates(rng, rows, 0.02, 0.02, mutate, prefer), codes


# --- tickets ----------------------------------------------------------------------------------------------------


def _build_tickets(rng, n, managers, sites_ok, site_owner, contact_company, companies_ok, site_codes, company_codes):
    codes = _Codes(rng, n, lambda k: f"ЗВ-{k:06d}", 0.02)
    orphan_site = _pick(rng, n, 0.03)
    orphan_company = _pick(rng, n, 0.01, orphan_site)
    bad_open = _pick(rng, n, 0.01)
    bad_close = _pick(rng, n, 0.01)
    bad_travel = _pick(rng, n, 0.01)
    bad_work = _pick(rng, n, 0.01)
    engineer = _person_picker(rng, [m for m in managers if m["role"] == "engineer"], 0.0)
    rows = []
    for i, code in enumerate(codes.codes):
        if i in orphan_site or not sites_ok:
            site = site_codes.orphan(rng)
            owner_company = ""
        else:
            site = rng.choice(sites_ok)
            own = site_owner[site]
            owner_company = own["company"] or contact_company.get(own["contact"], "")
        opened = ru.random_datetime(rng, START_DATE, BASE_DATE)
        is_open = (BASE_DATE - opened).days < 20 and rng.random() < 0.6 or rng.random() < 0.04
        bad = []
        status = rng.choice(D.TICKET_OPEN_STATUSES if is_open else D.TICKET_CLOSED_STATUSES)
        if i in bad_open:
            opened_text = rng.choice(ru.BAD_DATETIMES).format(y=opened.year)
            bad.append(("ДатаОткрытия", opened_text, "bad_date"))
        else:
            opened_text = ru.dt_1c(opened)
        if is_open:
            closed_text = ru.EMPTY_DATETIME
        elif i in bad_close:
            closed_text = rng.choice(ru.BAD_DATETIMES).format(y=opened.year)
            bad.append(("ДатаЗакрытия", closed_text, "bad_date"))
        else:
            closed_text = ru.dt_1c(min(opened + timedelta(minutes=rng.randint(40, 60 * 24 * 7)), BASE_DATE))
        worked = not is_open and status != "Отменена"
        who = engineer() if (worked or status == "В работе" or rng.random() < 0.3) else ""
        report = rng.choice(D.TICKET_REPORTS) if worked else ("Отменена клиентом" if status == "Отменена" else "")

        def minutes(bad_it: bool, column: str, low: int, high: int) -> str:
            if bad_it:
                text = rng.choice(ru.BAD_NUMBERS)
                bad.append((column, text, "bad_number"))
                return text
            if not worked:
                return rng.choice(("", "0"))
            value = rng.randint(low, high)
            if rng.random() < 0.3:
                value += rng.choice((0.5, 0.25, 0.75, 0.1))
            return ru.decimal_comma(value)

        travel = minutes(i in bad_travel, "ВремяВПути", 5, 180)
        work = minutes(i in bad_work, "ВремяРаботы", 10, 1500 if rng.random() < 0.05 else 300)
        if i in orphan_company:
            company = company_codes.orphan(rng)
        elif owner_company and owner_company in companies_ok and rng.random() < 0.85:
            company = owner_company
        else:
            company = ""
        reason = rng.choice(D.TICKET_REASONS)
        cells = [code, site, reason, status, opened_text, closed_text, who, report, travel, work, company]
        rows.append(_Row(code, cells, bad, None))

    def mutate(rng: random.Random, row: _Row) -> _Row:
        cells = list(row.cells)
        cells[2] = rng.choice([r for r in D.TICKET_REASONS if r != cells[2]])
        return _Row(row.key, cells, list(row.bad))

    prefer = [i for i, r in enumerate(rows) if r.bad]
    return _add_duplicates(rng, rows, 0.02, 0.01, mutate, prefer)


# --- writers ----------------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[_Row], encoding: str, delimiter: str = ";") -> None:
    with open(path, "w", encoding=encoding, newline="", errors="strict") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(r.cells for r in rows)


def _write_tsv(path: Path, header: list[str], rows: list[_Row]) -> None:
    """1C's TXT: no quoting at all, so no field may hold a TAB, a line break or a quote."""
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        for cells in [header] + [r.cells for r in rows]:
            for c in cells:
                if any(ch in c for ch in '\t\r\n"'):
                    raise ValueError(f"tickets.txt cannot hold {c!r}")
            f.write("\t".join(cells) + "\r\n")


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _write_xlsx(path: Path, header: list[str], rows: list[_Row]) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    wb.properties.creator = "crm-etl sample"
    wb.properties.created = BASE_DATE
    ws = wb.create_sheet("Сделки")
    ws.append(header)
    for r in rows:
        ws.append(r.cells)
    buf = io.BytesIO()
    wb.save(buf)
    # openpyxl stamps the save time into docProps/core.xml and the zip entries: pin both to fixed values
    stamp = BASE_DATE.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            payload = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                payload = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*", rb"\g<1>" + stamp, payload)
            zi = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, payload)
    path.write_bytes(out.getvalue())


# --- public API -------------------------------------------------------------------------------------------------


def generate(out_dir: Path | str, *, companies: int = 200, seed: int = 42, xlsx: bool = True) -> dict:
    """Write a whole sample data set into out_dir and return the ground truth (also written to out_dir/truth.json).

    Sizes scale from ``companies``: contacts ~2x, deals ~2x, sites ~1x, tickets ~3x, plus the duplicate rows;
    eight managers. See truth["rules"] for what every count means.
    """
    if companies < 0:
        raise ValueError("companies must be >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def rng_for(name: str) -> random.Random:
        return random.Random(f"crm-etl-sample/{seed}/{name}")

    files, expected = {}, {}
    managers = _make_managers(rng_for("managers"))
    with open(out / "managers.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=";", lineterminator="\r\n")
        w.writerow(MANAGERS_HEADER)
        w.writerows([m["login"], m["fio"], m["email"]] for m in managers)
    m_rows = [_Row(m["login"], [m["login"], m["fio"], m["email"]]) for m in managers]
    files["managers"], expected["managers"], _ = _finalize("managers.csv", MANAGERS_HEADER, m_rows, {}, ())

    # companies
    rng = rng_for("companies")
    company_rows, company_codes = _build_companies(rng, companies, managers)
    _write_csv(out / "companies.csv", COMPANIES_HEADER, company_rows, "cp1251")
    files["companies"], expected["companies"], companies_ok = _finalize(
        "companies.csv", COMPANIES_HEADER, company_rows, {}, ("ДатаСоздания",)
    )
    company_keys = {r.key for r in company_rows}
    company_truth = {r.key: r.truth for r in company_rows if r.truth is not None}
    files["companies"].update(
        invalid_inn=[k for k, t in company_truth.items() if t["inn_issue"] == "checksum"],
        inn_leading_zero_lost=[k for k, t in company_truth.items() if t["inn_issue"] == "leading_zero_lost"],
        inn_empty=[k for k, t in company_truth.items() if t["inn_issue"] == "empty"],
        invalid_ogrn=[k for k, t in company_truth.items() if not t["ogrn_valid"]],
        mangled_phones=[r.key for r in company_rows if r.truth is not None and r.extra.get("mangled")],
    )

    # contacts
    rng = rng_for("contacts")
    n = 2 * companies
    contact_codes = _Codes(rng, n, _contact_code, 0.04)
    maker = _ContactMaker(rng, managers)
    empty_link = _pick(rng, n, 0.10)
    orphan = _pick(rng, n, 0.03, empty_link)
    bad_birth = _pick(rng, n, 0.02)
    if orphan and bad_birth:  # one row with two faults at least
        orphan.add(sorted(bad_birth)[0])
        empty_link.discard(sorted(bad_birth)[0])
    rows = []
    for i, code in enumerate(contact_codes.codes):
        if i in orphan:
            link = company_codes.orphan(rng)
        elif i in empty_link or not companies_ok:
            link = ""
        else:
            link = rng.choice(companies_ok)
        rows.append(maker.make(code, link, i in bad_birth))
    prefer = [i for i, r in enumerate(rows) if r.bad]
    contact_rows = _add_duplicates(rng, rows, 0.02, 0.02, maker.mutate, prefer)
    _write_csv(out / "contacts.csv", CONTACTS_HEADER, contact_rows, "utf-8-sig")
    files["contacts"], expected["contacts"], contacts_ok = _finalize(
        "contacts.csv", CONTACTS_HEADER, contact_rows, {"КодКонтрагента": company_keys},
        ("ДатаРождения", "ДатаСоздания"),
    )
    contact_keys = {r.key for r in contact_rows}
    contact_truth = {r.key: r.truth for r in contact_rows if r.truth is not None}
    contact_company = {r.key: r.cells[5] for r in contact_rows if r.truth is not None}
    files["contacts"]["mangled_phones"] = [r.key for r in contact_rows if r.truth is not None and r.extra["mangled"]]
    companies_ok_set = set(companies_ok)

    # deals
    rng = rng_for("deals")
    deal_rows = _build_deals(
        rng, 2 * companies, managers, contacts_ok, contact_company, companies_ok, contact_codes, company_codes, xlsx,
    )
    deals_name = "deals.xlsx" if xlsx else "deals.csv"
    if xlsx:
        _write_xlsx(out / deals_name, DEALS_HEADER, deal_rows)
    else:
        _write_csv(out / deals_name, DEALS_HEADER, deal_rows, "cp1251")
    files["deals"], expected["deals"], _ = _finalize(
        deals_name, DEALS_HEADER, deal_rows, {"КодКонтакта": contact_keys, "КодКонтрагента": company_keys},
        ("ДатаОткрытия", "ДатаЗакрытия"),
    )

    # sites
    rng = rng_for("sites")
    site_rows, site_codes = _build_sites(rng, companies, managers, companies_ok, contacts_ok, company_codes, contact_codes)
    _write_csv(out / "sites.csv", SITES_HEADER, site_rows, "cp1251")
    files["sites"], expected["sites"], sites_ok = _finalize(
        "sites.csv", SITES_HEADER, site_rows, {"КодКонтрагента": company_keys, "КодКонтакта": contact_keys},
        ("ДатаСоздания",),
    )
    site_keys = {r.key for r in site_rows}
    site_truth = {r.key: r.truth for r in site_rows if r.truth is not None}
    site_owner = {r.key: r.extra for r in site_rows if r.truth is not None}

    # tickets
    rng = rng_for("tickets")
    ticket_rows = _build_tickets(
        rng, 3 * companies, managers, sites_ok, site_owner, contact_company, companies_ok_set, site_codes,
        company_codes,
    )
    _write_tsv(out / "tickets.txt", TICKETS_HEADER, ticket_rows)
    files["tickets"], expected["tickets"], _ = _finalize(
        "tickets.txt", TICKETS_HEADER, ticket_rows, {"КодОбъекта": site_keys, "КодКонтрагента": company_keys},
        ("ДатаОткрытия", "ДатаЗакрытия"),
    )

    formats = dict(FORMATS)
    formats["deals"] = formats.pop("deals_xlsx" if xlsx else "deals_csv")
    formats.pop("deals_csv" if xlsx else "deals_xlsx")
    for name, fmt in formats.items():
        files[name]["format"] = fmt
    order = ("companies", "contacts", "deals", "sites", "tickets", "managers")
    truth = {
        "generator": {"seed": seed, "companies": companies, "xlsx": xlsx, "base_date": BASE_DATE.isoformat()},
        "rules": RULES,
        "files": {k: files[k] for k in order},
        "expected": {k: expected[k] for k in order},
        "managers": managers,
        "companies": company_truth,
        "contacts": contact_truth,
        "sites": site_truth,
    }
    text = json.dumps(truth, ensure_ascii=False, indent=1)
    (out / "truth.json").write_text(text + "\n", encoding="utf-8")
    return json.loads(text)


def write_contacts_csv(
    path,
    rows: int,
    *,
    seed: int = 42,
    encoding: str = "cp1251",
    delimiter: str = ";",
    company_codes: int | None = None,
) -> None:
    """Stream `rows` contacts into one file with constant memory (for benchmarks).

    Same header and dirt as contacts.csv: ~1% exact duplicate rows (a recent row written again), ~10% empty and
    ~3% orphan company links, ~2% bad birth dates. Links point at ``00-000001`` .. ``00-{company_codes}`` (default
    rows // 2); orphans at codes above that. Pass encoding="utf-8-sig" for the BOM contacts.csv has.
    """
    rng = random.Random(f"crm-etl-sample/{seed}/contacts-stream")
    managers = _make_managers(random.Random(f"crm-etl-sample/{seed}/managers"))
    maker = _ContactMaker(rng, managers)
    n_comp = max(1, rows // 2) if company_codes is None else company_codes
    recent: deque[list] = deque(maxlen=64)
    random_ = rng.random
    with open(path, "w", encoding=encoding, newline="") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(CONTACTS_HEADER)
        code = 0
        for _ in range(rows):
            if recent and random_() < 0.01:
                w.writerow(recent[int(random_() * len(recent))])
                continue
            r = random_()
            if r < 0.10 or n_comp <= 0:
                link = ""
            elif r < 0.13:
                link = _company_code(n_comp + 1 + int(random_() * 1000))
            else:
                link = _company_code(1 + int(random_() * n_comp))
            code += 1
            cells = maker.make(_contact_code(code), link, random_() < 0.02).cells
            recent.append(cells)
            w.writerow(cells)
