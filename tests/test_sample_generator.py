"""The sample generator: determinism, encodings, headers, and a ground truth that matches the files it wrote.

Every check here re-reads the files with csv / openpyxl and recounts on its own (its own date, number and INN
rules), so a generator whose truth drifts from its files fails.
"""

from __future__ import annotations

import csv
import re
import tracemalloc
import zipfile
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from etl.sample import generate, write_contacts_csv

BOM = b"\xef\xbb\xbf"
FILES = ("companies.csv", "contacts.csv", "deals.xlsx", "sites.csv", "tickets.txt", "managers.csv", "truth.json")

HEADERS = {
    "companies.csv": "Код;Наименование;ИНН;КПП;ОГРН;Вид;Отрасль;Телефон;Телефон;ЭлПочта;Сайт;Адрес;Выручка;Активен;"
    "Ответственный;ДатаСоздания;Комментарий;",
    "contacts.csv": "Код;ФИО;Должность;Телефон;ЭлПочта;КодКонтрагента;ДатаРождения;Ответственный;ДатаСоздания;"
    "Комментарий",
    "deals": "Номер;Название;Направление;Стадия;Сумма;Валюта;КодКонтакта;КодКонтрагента;ДатаОткрытия;ДатаЗакрытия;"
    "Закрыта;Ответственный",
    "sites.csv": "Код;Наименование;ТипОбъекта;Адрес;КодКонтрагента;КодКонтакта;КонтактныеЛица;Ответственный;"
    "ДатаСоздания",
    "tickets.txt": "Номер\tКодОбъекта\tПричина\tСтатус\tДатаОткрытия\tДатаЗакрытия\tИнженер\tОтчёт\tВремяВПути\t"
    "ВремяРаботы\tКодКонтрагента",
    "managers.csv": "Логин;ФИО;ЭлПочта",
}

# what to recount per file: link column -> target entity, and the typed columns
SPEC = {
    "companies": dict(links={}, dates=("ДатаСоздания",), numbers=("Выручка",), bools=("Активен",)),
    "contacts": dict(links={"КодКонтрагента": "companies"}, dates=("ДатаРождения", "ДатаСоздания"), numbers=(), bools=()),
    "deals": dict(
        links={"КодКонтакта": "contacts", "КодКонтрагента": "companies"},
        dates=("ДатаОткрытия", "ДатаЗакрытия"), numbers=("Сумма",), bools=("Закрыта",),
    ),
    "sites": dict(links={"КодКонтрагента": "companies", "КодКонтакта": "contacts"}, dates=("ДатаСоздания",),
                  numbers=(), bools=()),
    "tickets": dict(links={"КодОбъекта": "sites", "КодКонтрагента": "companies"},
                    dates=("ДатаОткрытия", "ДатаЗакрытия"), numbers=("ВремяВПути", "ВремяРаботы"), bools=()),
}
USER_COLUMNS = {"companies": "Ответственный", "contacts": "Ответственный", "deals": "Ответственный",
                "sites": "Ответственный", "tickets": "Инженер"}


# --- reading the files back -------------------------------------------------------------------------------------


def read_table(path: Path) -> tuple[list[str], list[list]]:
    """Header and records of one file, read the way its format demands."""
    if path.suffix == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True)
        rows = [list(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
        wb.close()
        return [str(c) for c in rows[0]], rows[1:]
    if path.name in ("companies.csv", "sites.csv", "deals.csv"):
        enc, kw = "cp1251", {"delimiter": ";"}
    elif path.name == "tickets.txt":
        enc, kw = "utf-8-sig", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    elif path.name == "contacts.csv":
        enc, kw = "utf-8-sig", {"delimiter": ";"}
    else:
        enc, kw = "utf-8", {"delimiter": ";"}
    with open(path, encoding=enc, newline="") as f:
        rows = list(csv.reader(f, **kw))
    return rows[0], rows[1:]


def is_empty_date(v) -> bool:
    return v is None or v == "" or (isinstance(v, str) and v.startswith("01.01.0001"))


def is_bad_date(v) -> bool:
    if is_empty_date(v) or isinstance(v, datetime):
        return False
    m = re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{4})( (\d{1,2}):(\d{2}):(\d{2}))?", v)
    if not m:
        return True
    d, mo, y = int(m[1]), int(m[2]), int(m[3])
    try:
        datetime(y, mo, d, int(m[5] or 0), int(m[6] or 0), int(m[7] or 0))
    except ValueError:
        return True
    return False


def is_bad_number(v) -> bool:
    if v is None or v == "" or isinstance(v, (int, float)):
        return False
    return not re.fullmatch(r"\d{1,3}(\u00a0\d{3})+(,\d+)?|\d+(,\d+)?", v)


def is_bad_bool(v) -> bool:
    return v not in (None, "", "Да", "Нет")


def inn_checksum_ok(inn: str) -> bool:
    def ctl(ws):
        return str(sum(int(inn[i]) * w for i, w in enumerate(ws)) % 11 % 10)

    if re.fullmatch(r"\d{10}", inn):
        return ctl((2, 4, 10, 3, 5, 9, 4, 6, 8)) == inn[9]
    if re.fullmatch(r"\d{12}", inn):
        return ctl((7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == inn[10] and ctl((3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == inn[11]
    return False


def s(v) -> str:
    return "" if v is None else str(v)


@pytest.fixture(scope="module", params=[True, False], ids=["xlsx", "csv"])
def sample(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    truth = generate(out, companies=120, seed=42, xlsx=request.param)
    tables = {name: read_table(out / truth["files"][name]["file"]) for name in truth["files"]}
    return out, truth, tables


# --- determinism ------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ta = generate(a, companies=40, seed=7)
    tb = generate(b, companies=40, seed=7)
    generate(c, companies=40, seed=8)
    assert ta == tb
    assert sorted(p.name for p in a.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() != (c / name).read_bytes(), name
    # two saves a second apart would differ if the xlsx kept the save time anywhere
    with zipfile.ZipFile(a / "deals.xlsx") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = z.read("docProps/core.xml").decode()
    stamps = re.findall(r"<dcterms:(?:created|modified)[^>]*>([^<]+)<", core)
    assert len(stamps) == 2 and set(stamps) == {ta["generator"]["base_date"] + "Z"}


def test_sizes_scale_from_companies(sample):
    _, truth, _ = sample
    keys = {name: truth["files"][name]["keys"] for name in SPEC}
    assert keys == {"companies": 120, "contacts": 240, "deals": 240, "sites": 120, "tickets": 360}
    assert truth["files"]["managers"]["rows"] == len(truth["managers"]) == 8


# --- encodings, line ends, headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["companies.csv", "sites.csv"])
def test_cp1251_files(sample, name):
    raw = (sample[0] / name).read_bytes()
    assert not raw.startswith(BOM)
    raw.decode("cp1251")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


@pytest.mark.parametrize("name,bom", [("contacts.csv", True), ("tickets.txt", True), ("managers.csv", False)])
def test_utf8_files(sample, name, bom):
    raw = (sample[0] / name).read_bytes()
    assert raw.startswith(BOM) is bom
    raw.decode("utf-8")


@pytest.mark.parametrize("name", ["companies.csv", "contacts.csv", "sites.csv", "tickets.txt", "managers.csv"])
def test_crlf_line_ends(sample, name):
    raw = (sample[0] / name).read_bytes()
    assert raw.endswith(b"\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    if name == "tickets.txt":  # no quoting there: one physical line per record
        assert raw.count(b"\n") == raw.count(b"\r\n") == sample[1]["files"]["tickets"]["rows"] + 1


@pytest.mark.parametrize("name", list(HEADERS))
def test_headers_exact(sample, name):
    out, truth, _ = sample
    if name == "deals":
        header, _rows = read_table(out / truth["files"]["deals"]["file"])
        assert ";".join(header) == HEADERS["deals"]
        return
    enc = "cp1251" if name in ("companies.csv", "sites.csv") else "utf-8-sig"
    first = (out / name).read_bytes().decode(enc).split("\r\n", 1)[0]
    assert first == HEADERS[name]


def test_deals_format_follows_xlsx_flag(sample):
    out, truth, _ = sample
    xlsx = truth["generator"]["xlsx"]
    assert (out / "deals.xlsx").exists() is xlsx
    assert (out / "deals.csv").exists() is not xlsx
    if not xlsx:
        raw = (out / "deals.csv").read_bytes()
        assert raw.split(b"\r\n", 1)[0].decode("cp1251") == HEADERS["deals"]
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")


def test_xlsx_mixes_typed_and_text_cells(sample):
    out, truth, tables = sample
    if not truth["generator"]["xlsx"]:
        pytest.skip("deals.csv")
    header, rows = tables["deals"]
    amount, opened = header.index("Сумма"), header.index("ДатаОткрытия")
    kinds = Counter(type(r[amount]).__name__ for r in rows)
    assert kinds["float"] + kinds["int"] > len(rows) * 0.7 and kinds["str"] > 0
    dates = Counter(type(r[opened]).__name__ for r in rows)
    assert dates["datetime"] > len(rows) * 0.7 and dates["str"] > 0
    text_amounts = [r[amount] for r in rows if isinstance(r[amount], str) and not is_bad_number(r[amount])]
    assert any("\u00a0" in a and "," in a for a in text_amounts)


# --- the shape of real exports ----------------------------------------------------------------------------------


def test_companies_quirks(sample):
    out, truth, (header, rows) = sample[0], sample[1], sample[2]["companies"]
    assert len(header) == 18 and header[-1] == "" and header.count("Телефон") == 2
    assert all(len(r) == 18 and r[-1] == "" for r in rows)
    comments = [r[16] for r in rows]
    assert any(";" in c for c in comments) and any('"' in c for c in comments) and any("\n" in c for c in comments)
    text = (out / "companies.csv").read_bytes().decode("cp1251")
    assert text.count("\r\n") == len(rows) + 1  # the line break inside a quoted field is a bare LF
    assert text.count("\n") > len(rows) + 1
    codes = [r[0] for r in rows]
    assert all(re.fullmatch(r"00-\d{6}", c) for c in codes)
    revenue = [r[12] for r in rows]
    assert any(re.fullmatch(r"\d{1,3}(\u00a0\d{3})+,\d\d", v) for v in revenue) and "" in revenue
    created = [r[15] for r in rows]
    assert any(re.fullmatch(r"\d\d\.\d\d\.\d{4} \d:\d\d:\d\d", v) for v in created)  # one-digit hour
    assert set(r[13] for r in rows) >= {"Да", "Нет"}
    names = [r[1] for r in rows]
    assert any(n.startswith("ИП ") for n in names) and any("«" in n for n in names) and any('"' in n for n in names)
    phones = [p for r in rows for p in (r[7], r[8])]
    assert any(re.fullmatch(r"\d,\d+E\+10", p) for p in phones)


def test_contacts_quirks(sample):
    header, rows = sample[2]["contacts"]
    phones = [r[3] for r in rows]
    assert any(re.fullmatch(r"\d,\d+E\+10", p) for p in phones)
    assert any(p.startswith("+7 (") for p in phones) and "" in phones
    assert any(re.search(r"доб|вн\.", p) for p in phones)
    fio = [r[1] for r in rows]
    assert any(f == f.lower() for f in fio) and any(f == f.upper() for f in fio)
    assert any("  " in f for f in fio) and any("ё" in f.lower() for f in fio)
    assert any(re.search(r"\b\w\.\w\.$", f) for f in fio)
    emails = [r[4] for r in rows]
    assert any(e != e.strip() for e in emails) and any(re.search(r"@\w+,\w+$", e) for e in emails)
    birth = [r[6] for r in rows]
    assert "01.01.0001" in birth


# --- the ground truth against the files -------------------------------------------------------------------------


def test_truth_counts_match_files(sample):
    _, truth, tables = sample
    all_keys = {name: {s(r[0]) for r in tables[name][1]} for name in tables}
    for name, spec in SPEC.items():
        ft = truth["files"][name]
        header, rows = tables[name]
        col = {c: header.index(c) for c in header if c}
        keys = [s(r[0]) for r in rows]
        counts = Counter(keys)
        assert ft["rows"] == len(rows), name
        assert ft["keys"] == len(counts), name
        assert {d["key"]: d["count"] for d in ft["duplicate_rows"]} == {k: c for k, c in counts.items() if c > 1}
        assert ft["duplicates_identical"] > 0 and ft["duplicates_conflicting"] > 0, name

        orphans = {c: [keys[i] for i, r in enumerate(rows) if s(r[col[c]]) and s(r[col[c]]) not in all_keys[t]]
                   for c, t in spec["links"].items()}
        assert ft["orphans"] == orphans, name

        bad = set()
        for i, r in enumerate(rows, 1):
            for c in spec["dates"]:
                if is_bad_date(r[col[c]]):
                    bad.add((i, c, "bad_date"))
            for c in spec["numbers"]:
                if is_bad_number(r[col[c]]):
                    bad.add((i, c, "bad_number"))
            for c in spec["bools"]:
                if is_bad_bool(r[col[c]]):
                    bad.add((i, c, "bad_boolean"))
        assert {(b["row"], b["column"], b["reason"]) for b in ft["bad_values"]} == bad, name
        for b in ft["bad_values"]:
            assert s(rows[b["row"] - 1][col[b["column"]]]) == b["value"] and keys[b["row"] - 1] == b["key"]
        assert ft["empty_dates"] == sum(is_empty_date(r[col[c]]) for r in rows for c in spec["dates"]), name

        # the simple pipeline: reject later occurrences of a key, orphans and bad values; each row counts once
        seen, accepted = set(), 0
        bad_rows = {b[0] for b in bad}
        orphan_rows = {i for c, t in spec["links"].items() for i, r in enumerate(rows, 1)
                       if s(r[col[c]]) and s(r[col[c]]) not in all_keys[t]}
        for i, k in enumerate(keys, 1):
            accepted += k not in seen and i not in bad_rows and i not in orphan_rows
            seen.add(k)
        exp = truth["expected"][name]
        assert exp["accepted"] == accepted and exp["rejected"] == len(rows) - accepted, name
        assert len(ft["faulty_rows"]) == exp["rejected"]
        assert sum(exp["rejected_by"].values()) > exp["rejected"], f"{name}: no row carries two faults"


def test_every_kind_of_dirt_is_present(sample):
    files = sample[1]["files"]
    reasons = Counter(b["reason"] for f in files.values() for b in f["bad_values"])
    assert reasons["bad_date"] and reasons["bad_number"] and reasons["bad_boolean"]
    for name in ("contacts", "deals", "sites", "tickets"):
        assert sum(len(v) for v in files[name]["orphans"].values()) > 0, name
    assert files["companies"]["invalid_inn"] and files["companies"]["inn_leading_zero_lost"]
    assert files["contacts"]["mangled_phones"] and files["companies"]["mangled_phones"]


def test_links_do_not_cascade(sample):
    """A link that is not an orphan points at a key whose first row is accepted."""
    _, truth, tables = sample
    rejected_first = {}
    for name in SPEC:
        faulty = {f["row"] for f in truth["files"][name]["faulty_rows"]}
        first = {}
        for i, r in enumerate(tables[name][1], 1):
            first.setdefault(s(r[0]), i)
        rejected_first[name] = {k for k, i in first.items() if i in faulty}
    for name, spec in SPEC.items():
        header, rows = tables[name]
        for c, target in spec["links"].items():
            idx = header.index(c)
            assert not {s(r[idx]) for r in rows} & rejected_first[target], (name, c)


def test_users_are_managers(sample):
    _, truth, tables = sample
    variants = {v for m in truth["managers"] for v in m["variants"]}
    assert {m["fio"] for m in truth["managers"]} == {r[1] for r in tables["managers"][1]}
    for name, column in USER_COLUMNS.items():
        header, rows = tables[name]
        values = {s(r[header.index(column)]) for r in rows} - {""}
        assert values <= variants, name
        assert len(values) > 1


def test_inn_flags_match_checksum(sample):
    _, truth, (header, rows) = sample[0], sample[1], sample[2]["companies"]
    seen, invalid = set(), 0
    for r in rows:
        key, raw = r[0], r[2]
        if key in seen:
            continue
        seen.add(key)
        t = truth["companies"][key]
        assert t["inn_raw"] == raw
        clean = raw.zfill(10) if len(raw) == 9 else raw.zfill(12) if len(raw) == 11 else raw
        assert t["inn"] == (clean or None)
        assert t["inn_valid"] is inn_checksum_ok(clean), key
        assert (t["inn_issue"] == "leading_zero_lost") is (len(raw) in (9, 11))
        if t["inn_issue"] == "checksum":
            invalid += 1
            assert not t["inn_valid"]
        ogrn = r[4]
        assert t["ogrn"] == ogrn and len(ogrn) == (15 if t["is_person"] else 13)
        mod = 13 if len(ogrn) == 15 else 11
        assert t["ogrn_valid"] is (int(ogrn[:-1]) % mod % 10 == int(ogrn[-1]))
        assert t["kpp"] is None if t["is_person"] else re.fullmatch(r"\d{9}", t["kpp"])
    assert len(seen) == len(truth["companies"])
    assert 0 < invalid < len(seen) * 0.1
    assert sorted(truth["files"]["companies"]["invalid_inn"]) == sorted(
        k for k, t in truth["companies"].items() if t["inn_issue"] == "checksum")


def test_contact_truth_is_in_the_cells(sample):
    _, truth, (header, rows) = sample[0], sample[1], sample[2]["contacts"]
    first = {}
    for r in rows:
        first.setdefault(r[0], r)
    assert set(first) == set(truth["contacts"])
    mangled = set(truth["files"]["contacts"]["mangled_phones"])
    for key, t in truth["contacts"].items():
        r = first[key]
        words = r[1].lower().replace(".", ". ").split()
        for part in (t["last_name"], t["first_name"], t["middle_name"]):
            if part:
                assert part.lower() in words, (key, r[1], part)
        digits = re.sub(r"\D", "", r[3])
        for p in t["phones_e164"]:
            assert re.fullmatch(r"\+7\d{10}", p) and p[2:] in digits, (key, r[3], p)
        assert (key in mangled) is bool(re.fullmatch(r"\d,\d+E\+10", r[3]))
        if key in mangled:
            assert t["phones_e164"] == []
        cell = r[4].lower().replace(",", ".")
        for e in t["emails"]:
            assert e == e.lower().strip() and e in cell, (key, r[4], e)
        if t["birthdate"]:
            y, m, d = t["birthdate"].split("-")
            assert r[6].startswith(f"{d}.{m}.{y}")


def test_truth_json_is_the_returned_truth(sample):
    import json

    out, truth, _ = sample
    assert json.loads((out / "truth.json").read_text(encoding="utf-8")) == truth
    assert "several faults" in truth["rules"]["expected"]


# --- the streaming writer ---------------------------------------------------------------------------------------


def test_write_contacts_csv_stream(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_contacts_csv(a, 3000, seed=5, company_codes=100)
    write_contacts_csv(b, 3000, seed=5, company_codes=100)
    raw = a.read_bytes()
    assert raw == b.read_bytes()
    assert not raw.startswith(BOM)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    header, rows = read_table_as(a, "cp1251", ";")
    assert ";".join(header) == HEADERS["contacts.csv"] and len(rows) == 3000
    links = Counter("" if not r[5] else "ok" if int(r[5][3:]) <= 100 else "orphan" for r in rows)
    assert links["ok"] and links["orphan"] and links[""]
    assert len({r[0] for r in rows}) < 3000  # some exact duplicates

    c = tmp_path / "c.csv"
    write_contacts_csv(c, 50, seed=5, encoding="utf-8-sig", delimiter="\t")
    assert c.read_bytes().startswith(BOM)
    header, rows = read_table_as(c, "utf-8-sig", "\t")
    assert header[0] == "Код" and len(rows) == 50


def read_table_as(path: Path, encoding: str, delimiter: str):
    with open(path, encoding=encoding, newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    return rows[0], rows[1:]


def test_write_contacts_csv_constant_memory(tmp_path):
    def peak(rows: int) -> int:
        tracemalloc.start()
        try:
            write_contacts_csv(tmp_path / f"{rows}.csv", rows, seed=1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    write_contacts_csv(tmp_path / "warm.csv", 500, seed=1)  # one-time costs (imports, bounded caches) not counted
    small, big = peak(2_000), peak(20_000)
    size = (tmp_path / "20000.csv").stat().st_size
    assert size > 2_000_000
    # csv.writer alone holds a fixed 128 KiB record buffer; what matters is that nothing grows with the rows
    assert big < size / 8, f"peak {big} bytes for a {size}-byte file"
    assert big < small * 1.5 + 32_768, f"peak grew from {small} to {big} bytes"
