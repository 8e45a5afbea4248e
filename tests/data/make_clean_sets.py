"""Write the labelled sets the cleaning stages are measured on: dirty phone cells, full names and registry numbers,
each with the answer a cleaner should give. Deterministic (fixed seeds): the same files every time.

    python tests/data/make_clean_sets.py          # rewrites tests/data/clean_*.csv

Every answer is known by construction - the clean value is made first, then written the dirty way people and
Excel write it - never by running the code under test. The sample generator's own formats (etl.sample.ru) are
used beside extra kinds of dirt seen in real exports. A test regenerates the sets and checks the committed files
are equal, so they cannot drift from this script.

Files (UTF-8, ';'-separated, with a header):
- clean_phones.csv: cell; expected (the numbers a cleaner finds, E.164, ';'-joined, an extension as ';ext=N');
  reason (the reject code when the cell is not clean: all of it or a part of it); kind (what dirt it shows)
- clean_names.csv: cell; status (ok | company | invalid | empty); last; first; middle; gender (M/F where the
  patronymic tells it); kind
- clean_registry.csv: what (inn | kpp | ogrn); cell; inn (the record's INN, for KPP); expected; reason; note; kind
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from etl.sample import data as D  # noqa: E402
from etl.sample import ru  # noqa: E402

NBSP = "\u00a0"
AREA_CODES = [code for city in D.CITIES for code in city[3]]


def _mobile(rng: random.Random) -> str:
    while True:
        n = ru.mobile_number(rng)
        if not n.startswith("9300"):  # 930-0xx is only partly allocated: keep the set to numbers in use
            return n


def _landline(rng: random.Random) -> tuple[str, int]:
    code = rng.choice(AREA_CODES)
    return ru.landline_number(rng, (code,)), len(code)


def _split_local(local: str) -> str:
    return f"{local[:-4]}-{local[-4:-2]}-{local[-2:]}"


# extra ways of writing one Russian number (national 10 digits n, area code length k)
EXTRA_STYLES = [
    ("label", lambda n, k: f"тел. 8 ({n[:k]}) {_split_local(n[k:])}"),
    ("label", lambda n, k: f"моб.: +7 {n[:3]} {n[3:6]}-{n[6:8]}-{n[8:]}"),
    ("label", lambda n, k: f"Тел: 8{n}"),
    ("comment", lambda n, k: f"+7 ({n[:k]}) {_split_local(n[k:])} (Иван)"),
    ("comment", lambda n, k: f"8{n} звонить после 18"),
    ("nbsp", lambda n, k: f"+7{NBSP}{n[:3]}{NBSP}{n[3:6]}{NBSP}{n[6:8]}{NBSP}{n[8:]}"),
    ("dots", lambda n, k: f"8.{n[:3]}.{n[3:6]}.{n[6:8]}.{n[8:]}"),
    ("compact", lambda n, k: f"+7({n[:k]}){n[k:]}"),
    ("spaces", lambda n, k: f"  8 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}  "),
    ("dashes", lambda n, k: f"+7-{n[:3]}-{n[3:6]}-{n[6:8]}-{n[8:]}"),
    ("brackets8", lambda n, k: f"(8{n[:k]}) {_split_local(n[k:])}"),
]
EXT_STYLES = [" доб. {e}", " доб {e}", " (доб. {e})", " вн. {e}", " ext. {e}", " доб.{e}", ", доб. {e}", " #{e}"]
SEPARATORS = [", ", "; ", " / ", ",", " ", ";", "\n", " или "]
JUNK = list(D.JUNK_PHONES) + ["н/д", "—", "нет номера", "уточнить", "не указан", "+7", "8 (   )", "--"]


def phones(rng: random.Random) -> list[dict]:
    rows: list[dict] = []

    def add(cell: str, expected: list[str], reason: str = "", kind: str = "") -> None:
        rows.append({"cell": cell, "expected": ";".join(expected), "reason": reason, "kind": kind})

    for _ in range(90):  # the sample generator's styles: mobiles
        n = _mobile(rng)
        add(ru.format_phone(rng, n), [ru.e164(n)], kind="sample_mobile")
    for _ in range(60):  # landlines, 3- and 4-digit area codes
        n, k = _landline(rng)
        add(ru.format_phone(rng, n, k), [ru.e164(n)], kind="sample_landline")
    for _ in range(40):  # with an extension
        n, k = _landline(rng)
        e = str(rng.randint(1, 9999))
        style = rng.choice(EXT_STYLES)
        add(ru.format_phone(rng, n, k) + style.format(e=e), [ru.e164(n) + ";ext=" + e], kind="extension")
    for _ in range(50):  # two numbers in a cell
        a, ka = _landline(rng) if rng.random() < 0.5 else (_mobile(rng), 3)
        b = _mobile(rng)
        sep = rng.choice(SEPARATORS)
        add(ru.format_phone(rng, a, ka) + sep + ru.format_phone(rng, b), [ru.e164(a), ru.e164(b)], kind="two")
    for _ in range(6):  # three numbers
        nums = [_mobile(rng) for _ in range(3)]
        add("; ".join(ru.format_phone(rng, n) for n in nums), [ru.e164(n) for n in nums], kind="three")
    for _ in range(4):  # the same number twice: once in the answer
        n = _mobile(rng)
        add(f"{ru.format_phone(rng, n)}, {ru.format_phone(rng, n)}", [ru.e164(n)], kind="repeated")
    for kind, style in EXTRA_STYLES * 4:
        n, k = _landline(rng) if rng.random() < 0.4 else (_mobile(rng), 3)
        add(style(n, k), [ru.e164(n)], kind=kind)
    for _ in range(4):  # toll-free
        n = "800" + f"{rng.randint(0, 9999999):07d}"
        add(rng.choice((f"8-800-{n[3:6]}-{n[6:8]}-{n[8:]}", f"8 (800) {_split_local(n[3:])}")), [ru.e164(n)],
            kind="toll_free")
    # other countries, written in full international form
    add("+375 29 123-45-67", ["+375291234567"], kind="foreign")
    add("+375 (44) 765-43-21", ["+375447654321"], kind="foreign")
    add("+7 701 234 56 78", ["+77012345678"], kind="foreign")  # Kazakhstan shares +7
    add("+380 67 123 45 67", ["+380671234567"], kind="foreign")
    add("+49 30 12345678", ["+493012345678"], kind="foreign")
    for _ in range(24):  # Excel wrote the number in exponent form: the digits are gone
        cell = ru.excel_mangled(rng, _mobile(rng))
        if rng.random() < 0.25:
            cell = cell.replace(",", ".")
        add(cell, [], "phone_excel_mangled", "excel")
    for j in JUNK:
        add(j, [], "phone_junk", "junk")
    for _ in range(8):  # a local number without its area code
        local = f"{rng.randint(200, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
        add(local, [], "phone_invalid", "no_area_code")
    for _ in range(6):  # a digit missing / one too many
        n = _mobile(rng)
        add(rng.choice((f"+7 {n[:3]} {n[3:6]} {n[6:8]} {n[8:9]}", f"8 {n[:3]} {n[3:6]} {n[6:]}5")), [],
            "phone_invalid", "wrong_length")
    for _ in range(4):  # an area code no Russian number has
        add(f"+7 (0{rng.randint(10, 99)}) {rng.randint(200, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}", [],
            "phone_invalid", "bad_area_code")
    for _ in range(4):  # a good number and a broken fragment: the cell is not clean
        n = _mobile(rng)
        add(f"{ru.format_phone(rng, n)}, {rng.randint(100, 9999)}", [ru.e164(n)], "phone_invalid", "partly_broken")
    add("", [], "", "empty")
    return rows


def names(rng: random.Random) -> list[dict]:
    rows: list[dict] = []

    def add(cell, status, last=None, first=None, middle=None, gender=None, kind=""):
        rows.append({"cell": cell, "status": status, "last": last or "", "first": first or "", "middle": middle or "",
                     "gender": gender or "", "kind": kind})

    def person():
        female = rng.random() < 0.5
        last = rng.choice(D.LAST_NAMES)
        father = rng.choice(D.MALE_NAMES)
        if female:
            return "F", D.feminine_last_name(last), rng.choice(D.FEMALE_NAMES), father[2]
        return "M", last, rng.choice(D.MALE_NAMES)[0], father[1]

    formats = [
        ("l f m", lambda l, f, m: f"{l} {f} {m}", "lfm"),
        ("f m l lower", lambda l, f, m: f"{f} {m} {l}".lower(), "lfm"),
        ("f m l", lambda l, f, m: f"{f} {m} {l}", "lfm"),
        ("upper", lambda l, f, m: f"{l} {f} {m}".upper(), "lfm"),
        ("lower", lambda l, f, m: f"{l} {f} {m}".lower(), "lfm"),
        ("L f m", lambda l, f, m: f"{l.upper()} {f} {m}", "lfm"),
        ("initials", lambda l, f, m: f"{l} {f[0]}.{m[0]}.", "lii"),
        ("initials spaced", lambda l, f, m: f"{l} {f[0]}. {m[0]}.", "lii"),
        ("INITIALS", lambda l, f, m: f"{l} {f[0]}.{m[0]}.".upper(), "lii"),
        ("initials first", lambda l, f, m: f"{f[0]}.{m[0]}. {l}", "lii"),
        ("initials no dot", lambda l, f, m: f"{l} {f[0]}.{m[0]}", "lii"),
        ("l f", lambda l, f, m: f"{l} {f}", "lf"),
        ("f l", lambda l, f, m: f"{f} {l}", "lf"),
        ("l f lower", lambda l, f, m: f"{l} {f}".lower(), "lf"),
        ("f", lambda l, f, m: f, "f"),
        ("f m", lambda l, f, m: f"{f} {m}", "fm"),
        ("double space", lambda l, f, m: f"{l}  {f}  {m}", "lfm"),
        ("nbsp", lambda l, f, m: f"{l}{NBSP}{f}{NBSP}{m}", "lfm"),
        ("padded", lambda l, f, m: f"  {l} {f} {m} ", "lfm"),
        ("comma", lambda l, f, m: f"{l}, {f} {m}", "lfm"),
        ("remark", lambda l, f, m: f"{l} {f} {m} (бухгалтер)", "lfm"),
        ("yo lost", lambda l, f, m: f"{l} {f} {m}".replace("ё", "е"), "lfm-e"),
    ]
    for i in range(190):
        label, fmt, parts = formats[i % len(formats)]
        gender, last, first, middle = person()
        cell = fmt(last, first, middle)
        if parts == "lfm-e":
            last, first, middle = (x.replace("ё", "е") for x in (last, first, middle))
            parts = "lfm"
        if parts == "lfm":
            add(cell, "ok", last, first, middle, gender, label)
        elif parts == "lii":
            add(cell, "ok", last, first[0] + ".", middle[0] + ".", None, label)
        elif parts == "lf":
            add(cell, "ok", last, first, None, None, label)
        elif parts == "f":
            add(cell, "ok", None, first, None, None, label)
        else:
            add(cell, "ok", None, first, middle, gender, label)
    # Latin look-alike letters typed in a Cyrillic name (a switched keyboard layout)
    for lat, cyr in (("o", "о"), ("a", "а"), ("e", "е"), ("p", "р"), ("c", "с")):
        gender, last, first, middle = person()
        cell = f"{last} {first} {middle}"
        pos = next((i for i, ch in enumerate(cell) if ch == cyr), None)
        if pos is None:
            continue
        add(cell[:pos] + lat + cell[pos + 1:], "ok", last, first, middle, gender, "lookalike")
    # names that are not on the generator's lists
    add("Кравченко Ульяна Арсеньевна", "ok", "Кравченко", "Ульяна", "Арсеньевна", "F", "other")
    add("Шевчук Богдан Тарасович", "ok", "Шевчук", "Богдан", "Тарасович", "M", "other")
    add("Арсений Глебович Воронцов", "ok", "Воронцов", "Арсений", "Глебович", "M", "other")
    add("Римская-Корсакова Анна Петровна", "ok", "Римская-Корсакова", "Анна", "Петровна", "F", "hyphen")
    add("петрова-водкина мария ильинична", "ok", "Петрова-Водкина", "Мария", "Ильинична", "F", "hyphen")
    add("Иванов Илья Ильич", "ok", "Иванов", "Илья", "Ильич", "M", "short_patronymic")
    add("Никитина Ольга Никитична", "ok", "Никитина", "Ольга", "Никитична", "F", "short_patronymic")
    add("Мамедов Али Гасан оглы", "ok", "Мамедов", "Али", "Гасан оглы", "M", "ogly")
    add("Алиева Лейла Ильхам кызы", "ok", "Алиева", "Лейла", "Ильхам кызы", "F", "ogly")
    add("Гусейнов Рамиз Алекпер-оглы", "ok", "Гусейнов", "Рамиз", "Алекпер-оглы", "M", "ogly")
    add("Ахмедова Гульнара", "ok", "Ахмедова", "Гульнара", None, None, "other")
    add("Тимур Гарипов", "ok", "Гарипов", "Тимур", None, None, "other")
    add("Смирнов", "ok", "Смирнов", None, None, None, "last_only")
    add("Кузнецова", "ok", "Кузнецова", None, None, None, "last_only")
    # organisations typed where a person should be
    for cell in ("ООО «Ромашка»", 'ЗАО "Вега"', "ао сигма", "ИП Иванов Иван Иванович", "ИП Петрова А.А.",
                 "Индивидуальный предприниматель Сидоров Павел Олегович", "Общество с ограниченной ответственностью "
                 "«Гранит»", "Автосервис Колесо", "ПАО Сбербанк", "Иванов Иван Иванович ИП"):
        add(cell, "company", kind="company")
    for cell in ("-", "нет", "???", "123", "Тест", "не указано", "Иванов Иван Иванович, Петров Пётр Петрович",
                 "И.", "8 916 123-45-67"):
        add(cell, "invalid", kind="junk")
    add("", "empty", kind="empty")
    return rows


def _restorable(rng, person: bool) -> str:
    """A valid INN of a region 01-09 (it starts with 0)."""
    return ru.make_inn(rng, f"0{rng.randint(1, 9)}", person)


def registry(rng: random.Random) -> list[dict]:
    rows: list[dict] = []

    def add(what, cell, expected="", reason="", note="", kind="", inn=""):
        rows.append({"what": what, "cell": cell, "inn": inn, "expected": expected, "reason": reason, "note": note,
                     "kind": kind})

    def region():
        return rng.choice([c[4] for c in D.CITIES] + ["50", "61", "36", "24"])

    for _ in range(45):
        inn = ru.make_inn(rng, region(), False)
        add("inn", inn, inn, kind="inn10")
    for _ in range(30):
        inn = ru.make_inn(rng, region(), True)
        add("inn", inn, inn, kind="inn12")
    for i in range(24):  # Excel dropped the leading zero; the checksum proves where it was
        inn = _restorable(rng, person=i % 3 == 0)
        add("inn", inn[1:], inn, note="inn_zero_restored", kind="zero_lost")
    for _ in range(12):
        inn = ru.make_inn(rng, region(), rng.random() < 0.3)
        cell = rng.choice((f"{inn[:4]} {inn[4:]}", f" {inn} ", f"{inn[:2]}{NBSP}{inn[2:]}", f"{inn}\t"))
        add("inn", cell, inn, kind="spaces")
    for _ in range(5):
        inn = ru.make_inn(rng, region(), False)
        add("inn", inn + rng.choice((".0", ",0", ",00")), inn, kind="float_text")
    for _ in range(30):
        inn = ru.break_last_digit(rng, ru.make_inn(rng, region(), rng.random() < 0.3))
        add("inn", inn, reason="inn_checksum", kind="checksum")
    for _ in range(6):  # 12 digits as Excel shows them
        inn = ru.make_inn(rng, region(), True)
        add("inn", f"{int(inn):.5E}".replace(".", ","), reason="inn_excel_mangled", kind="excel")
    for _ in range(6):  # a zero lost and the check digit wrong: nothing proves the zero
        inn = ru.break_last_digit(rng, _restorable(rng, person=False))
        add("inn", inn[1:], reason="inn_format", kind="zero_lost_broken")
    for cell in ("77О7083893", "ИНН 7707083893", "7707-083893", "н/д", "-", "нет"):  # letters, labels, junk
        add("inn", cell, reason="inn_format", kind="not_digits")
    for cell in ("12345678", "770708389", "1234567890123", "12345"):
        # 9 digits: "0"+ fails the checksum too (checked below by construction of the numbers)
        add("inn", cell, reason="inn_format", kind="wrong_length")
    add("inn", "0000000000", reason="inn_checksum", kind="zeros")
    add("inn", "", kind="empty")

    # KPP
    for _ in range(12):
        inn = ru.make_inn(rng, region(), False)
        kpp = ru.make_kpp(rng, inn)
        add("kpp", kpp, kpp, kind="kpp", inn=inn)
    add("kpp", "7701AB001", "7701AB001", kind="kpp_letters", inn="7701000000")
    add("kpp", "7701ab001", "7701AB001", kind="kpp_letters_lower")
    for _ in range(5):  # the zero lost in both: the INN shows where it was
        inn = _restorable(rng, person=False)
        kpp = ru.make_kpp(rng, inn)
        add("kpp", kpp[1:], kpp, note="kpp_zero_restored", kind="kpp_zero_lost", inn=inn[1:])
    add("kpp", "27401001", reason="kpp_format", kind="kpp_zero_unproven", inn="7707083893")
    add("kpp", "77010100", reason="kpp_format", kind="kpp_short")
    add("kpp", "7701010011", reason="kpp_format", kind="kpp_long")
    add("kpp", "000001001", reason="kpp_format", kind="kpp_zeros")
    add("kpp", "7,70101E+08", reason="kpp_excel_mangled", kind="kpp_excel")

    # OGRN / OGRNIP
    for _ in range(14):
        ogrn = ru.make_ogrn(rng, region(), rng.randint(2003, 2024), False)
        add("ogrn", ogrn, ogrn, kind="ogrn")
    for _ in range(10):
        ogrn = ru.make_ogrn(rng, region(), rng.randint(2004, 2024), True)
        add("ogrn", ogrn, ogrn, kind="ogrnip")
    for _ in range(10):
        ogrn = ru.break_last_digit(rng, ru.make_ogrn(rng, region(), rng.randint(2003, 2024), rng.random() < 0.4))
        add("ogrn", ogrn, reason="ogrn_checksum", kind="ogrn_checksum")
    for _ in range(4):
        ogrn = ru.make_ogrn(rng, region(), 2015, False)
        add("ogrn", f"{int(ogrn):.5E}".replace(".", ","), reason="ogrn_excel_mangled", kind="ogrn_excel")
    add("ogrn", "10277000", reason="ogrn_format", kind="ogrn_short")
    add("ogrn", "ОГРН 1027700132195", reason="ogrn_format", kind="ogrn_label")
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=";", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def build(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "phones": (out_dir / "clean_phones.csv", phones(random.Random("clean-sets/phones/1"))),
        "names": (out_dir / "clean_names.csv", names(random.Random("clean-sets/names/1"))),
        "registry": (out_dir / "clean_registry.csv", registry(random.Random("clean-sets/registry/1"))),
    }
    for path, rows in files.values():
        _write(path, rows)
    return {k: v[0] for k, v in files.items()}


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


if __name__ == "__main__":
    for name, path in build(HERE).items():
        print(f"{path.name}: {len(read(path))} rows")
