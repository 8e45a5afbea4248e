"""FlatFileSource: 1C flat exports (CSV/TXT/XLSX) read into Arrow batches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import openpyxl
import pyarrow as pa
import pytest

from connectors.base import FILE_COLUMN, LINE_COLUMN, REJECT_SCHEMA, BadInputError, TerminalError
from connectors.onec.flat import FlatFileSource, clean_header, read_header

NBSP = "\u00a0"


def write(path: Path, lines: list[str], *, encoding: str = "cp1251", eol: str = "\r\n", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (eol.join(lines) + eol).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def read_all(src: FlatFileSource, cursor=None, batch_size: int = 1000):
    batches = list(src.read(cursor, batch_size))
    tables = [b.table for b in batches]
    table = pa.concat_tables(tables) if tables else None
    rejects = pa.concat_tables([b.rejects for b in batches]) if batches else REJECT_SCHEMA.empty_table()
    return batches, table, rejects


def rows_of(table: pa.Table) -> list[dict]:
    return table.to_pylist()


# --- text files --------------------------------------------------------------------------------------------


@pytest.fixture
def contacts_cp1251(tmp_path: Path) -> Path:
    lines = [
        "Код;Наименование;ИНН;Телефон;Телефон; ;Комментарий",  # line 1: a duplicate and a blank cell
        f"000000001; ООО \"Ромашка\" ;7701234567;+7 495 111-22-33;{NBSP}+7 916 000-00-01{NBSP};x;",  # 2
        '000000002;"ИП Петров; торговля";;8 (800) 555-35-35;;;"первая строка',  # 3, the field runs on
        "вторая строка",  # 4
        'третья ""в кавычках"""',  # 5: the record ends here
        '000000003;"ЗАО ""Вектор""";500100732259;;;;',  # 6
        "",  # 7: a blank line is no record
        "000000004;Сидорова Анна;;;;;  ",  # 8
    ]
    return write(tmp_path / "data" / "contacts.csv", lines)


def test_cp1251_semicolon_header_values_and_lines(tmp_path: Path, contacts_cp1251: Path) -> None:
    src = FlatFileSource("data/*.csv", base_dir=tmp_path)
    src.check()
    assert src.columns() == ["Код", "Наименование", "ИНН", "Телефон", "Телефон_2", "column_6", "Комментарий"]
    _, table, rejects = read_all(src)
    assert rejects.num_rows == 0
    assert table.schema.field(FILE_COLUMN).type == pa.string()
    assert table.schema.field(LINE_COLUMN).type == pa.int64()
    assert rows_of(table) == [
        {"Код": "000000001", "Наименование": 'ООО "Ромашка"', "ИНН": "7701234567", "Телефон": "+7 495 111-22-33",
         "Телефон_2": "+7 916 000-00-01", "column_6": "x", "Комментарий": None,
         "_file": "data/contacts.csv", "_line": 2},
        {"Код": "000000002", "Наименование": "ИП Петров; торговля", "ИНН": None, "Телефон": "8 (800) 555-35-35",
         "Телефон_2": None, "column_6": None, "Комментарий": 'первая строка\r\nвторая строка\r\nтретья "в кавычках"',
         "_file": "data/contacts.csv", "_line": 3},
        {"Код": "000000003", "Наименование": 'ЗАО "Вектор"', "ИНН": "500100732259", "Телефон": None,
         "Телефон_2": None, "column_6": None, "Комментарий": None, "_file": "data/contacts.csv", "_line": 6},
        {"Код": "000000004", "Наименование": "Сидорова Анна", "ИНН": None, "Телефон": None, "Телефон_2": None,
         "column_6": None, "Комментарий": None, "_file": "data/contacts.csv", "_line": 8},
    ]


def test_lines_after_multiline_fields_in_small_batches(tmp_path: Path, contacts_cp1251: Path) -> None:
    src = FlatFileSource("data/contacts.csv", base_dir=tmp_path)
    for size in (1, 2, 3):
        _, table, _ = read_all(src, batch_size=size)
        assert table.column(LINE_COLUMN).to_pylist() == [2, 3, 6, 8], size


def test_utf8_bom_comma_lf(tmp_path: Path) -> None:
    write(tmp_path / "k.csv", [
        "Код,Наименование,Город",
        '1,"Иванов, Иван",Москва',
        '2,"Многострочный',
        'адрес",Санкт-Петербург',
        "3,Пётр,Казань",
    ], encoding="utf-8", eol="\n", bom=True)
    src = FlatFileSource("k.csv", base_dir=tmp_path)
    assert src.columns() == ["Код", "Наименование", "Город"]  # no BOM in the first name
    _, table, _ = read_all(src)
    assert table.column("Наименование").to_pylist() == ["Иванов, Иван", "Многострочный\nадрес", "Пётр"]
    assert table.column("Город").to_pylist() == ["Москва", "Санкт-Петербург", "Казань"]
    assert table.column(LINE_COLUMN).to_pylist() == [2, 3, 5]


def test_utf8_without_bom_and_explicit_encoding(tmp_path: Path) -> None:
    write(tmp_path / "u.csv", ["Имя;Город", "Ёлкин;Орёл"], encoding="utf-8")
    _, table, _ = read_all(FlatFileSource("u.csv", base_dir=tmp_path))
    assert rows_of(table)[0]["Город"] == "Орёл"
    write(tmp_path / "w.csv", ["Имя;Город", "Ёлкин;Орёл"], encoding="cp1251")
    _, table, _ = read_all(FlatFileSource("w.csv", base_dir=tmp_path, encoding="windows-1251", delimiter=";"))
    assert rows_of(table)[0]["Имя"] == "Ёлкин"


def test_tab_txt_crlf_with_blank_lines(tmp_path: Path) -> None:
    # the platform's TXT: UTF-8 with BOM, TAB, CRLF
    write(tmp_path / "export.txt", [
        "Контрагент\tИНН\tКПП\tАдрес",
        'ООО "Альфа"\t7707083893\t773601001\tг. Москва, ул. Тверская, д. 1',
        "",
        "",
        'ИП Смирнов\t\t\t"Новосибирск,\r\nКрасный проспект; 5"',
        "\t\t\t",  # only delimiters: not a record
        "АО Бета\t7710140679",  # short row, padded
    ], encoding="utf-8", bom=True)
    src = FlatFileSource("*.txt", base_dir=tmp_path)
    _, table, rejects = read_all(src)
    assert rejects.num_rows == 0
    assert rows_of(table) == [
        {"Контрагент": 'ООО "Альфа"', "ИНН": "7707083893", "КПП": "773601001",
         "Адрес": "г. Москва, ул. Тверская, д. 1", "_file": "export.txt", "_line": 2},
        {"Контрагент": "ИП Смирнов", "ИНН": None, "КПП": None, "Адрес": "Новосибирск,\r\nКрасный проспект; 5",
         "_file": "export.txt", "_line": 5},
        {"Контрагент": "АО Бета", "ИНН": "7710140679", "КПП": None, "Адрес": None,
         "_file": "export.txt", "_line": 8},
    ]


def test_delimiter_sniffing_counts_outside_quotes(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", ['"Фамилия, имя";"Город, улица";Код', "x;y;z"])
    assert read_header(tmp_path / "a.csv") == ["Фамилия, имя", "Город, улица", "Код"]
    write(tmp_path / "b.csv", ["Код,Имя;Город"])  # a tie: ';' wins
    assert read_header(tmp_path / "b.csv") == ["Код,Имя", "Город"]
    write(tmp_path / "c.csv", ["a\tb\tc,d"])
    assert read_header(tmp_path / "c.csv") == ["a", "b", "c,d"]


def test_clean_header() -> None:
    assert clean_header(["\ufeff Код ", "Телефон", f"{NBSP}Телефон", "", "Телефон", None]) == [
        "Код", "Телефон", "Телефон_2", "column_4", "Телефон_3", "column_6"]


# --- typed columns -----------------------------------------------------------------------------------------

TYPES = {"ДатаРождения": "date", "Создан": "datetime", "Сумма": "number", "Количество": "integer",
         "Активен": "boolean"}


def test_typed_values(tmp_path: Path) -> None:
    write(tmp_path / "t.csv", [
        "Код;ДатаРождения;Создан;Сумма;Количество;Активен",
        f"1;05.03.1981;05.03.2021 9:07:00;1{NBSP}234{NBSP}567,89;1 000;Да",
        "2;01.01.0001;01.01.0001 0:00:00;-12,5;-3;нет",
        "3;1999-12-31;2021-03-05T19:07;0.25;42,00;ИСТИНА",
        "4;31.12.1969 23:59:59;2021-03-05 09:07:05;\u202f7\u202f000 ;7;false",
        "5;;;;;",
        "6;5.3.2021;05.03.2021 19:07;+3;0;1",
    ], encoding="utf-8")  # U+202F is not in cp1251
    src = FlatFileSource("t.csv", base_dir=tmp_path, types=TYPES)
    _, table, rejects = read_all(src)
    assert rejects.num_rows == 0
    assert table.schema.field("ДатаРождения").type == pa.date32()
    assert table.schema.field("Создан").type == pa.timestamp("s")
    assert table.schema.field("Сумма").type == pa.float64()
    assert table.schema.field("Количество").type == pa.int64()
    assert table.schema.field("Активен").type == pa.bool_()
    assert table.schema.field("Код").type == pa.string()
    assert table.column("ДатаРождения").to_pylist() == [
        dt.date(1981, 3, 5), None, dt.date(1999, 12, 31), dt.date(1969, 12, 31), None, dt.date(2021, 3, 5)]
    assert table.column("Создан").to_pylist() == [
        dt.datetime(2021, 3, 5, 9, 7), None, dt.datetime(2021, 3, 5, 19, 7), dt.datetime(2021, 3, 5, 9, 7, 5),
        None, dt.datetime(2021, 3, 5, 19, 7)]
    assert table.column("Сумма").to_pylist() == [1234567.89, -12.5, 0.25, 7000.0, None, 3.0]
    assert table.column("Количество").to_pylist() == [1000, -3, 42, 7, None, 0]
    assert table.column("Активен").to_pylist() == [True, False, True, False, None, True]


def test_typed_rejects(tmp_path: Path) -> None:
    write(tmp_path / "data" / "contacts.csv", [
        "Код;ДатаРождения;Создан;Сумма;Количество;Активен",
        "1;05.03.1981;05.03.2021 9:07:00;10;1;Да",
        "2;31.02.2020;05.03.2021 9:07:00;10;1;Да",  # impossible date
        "3;05.03.1981;05.03.2021 25:07:00;10;1;Да",  # impossible hour
        "4;05.03.1981;05.03.2021;12,3,4;1;Да",  # garbage number
        "5;05.03.1981;;10;1,5;Да",  # integer not whole
        "6;05.03.1981;;10;1;может быть",  # boolean garbage
        "6a;05.03.1981;;1e400;1;Да",  # overflows to inf
        "7;завтра;;abc;1;Да",  # two bad fields: one reject, the first field's reason
        "8;;;;;",
    ])
    src = FlatFileSource("data/contacts.csv", base_dir=tmp_path, types=TYPES)
    batches, table, rejects = read_all(src, batch_size=100)
    assert table.column("Код").to_pylist() == ["1", "8"]
    assert table.column(LINE_COLUMN).to_pylist() == [2, 10]
    assert rejects.schema == REJECT_SCHEMA
    got = rejects.to_pylist()
    assert [(r["line"], r["reason"], r["field"], r["value"]) for r in got] == [
        (3, "bad_date", "ДатаРождения", "31.02.2020"),
        (4, "bad_date", "Создан", "05.03.2021 25:07:00"),
        (5, "bad_number", "Сумма", "12,3,4"),
        (6, "bad_number", "Количество", "1,5"),
        (7, "bad_boolean", "Активен", "может быть"),
        (8, "bad_number", "Сумма", "1e400"),
        (9, "bad_date", "ДатаРождения", "завтра"),
    ]
    assert got[0]["message"] == "data/contacts.csv, line 3, column «ДатаРождения»: bad date '31.02.2020'"
    assert all(r["stage"] == "read" and r["file"] == "data/contacts.csv" and r["source_id"] is None for r in got)
    assert json.loads(got[0]["record"]) == {"Код": "2", "ДатаРождения": "31.02.2020",
                                            "Создан": "05.03.2021 9:07:00", "Сумма": "10", "Количество": "1",
                                            "Активен": "Да"}
    assert json.loads(got[3]["record"])["Создан"] is None
    assert sum(b.read_count for b in batches) == 9


def test_bad_row_and_trailing_delimiters(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", [
        "Код;Имя;Город",
        "1;Анна;Тула;",  # a trailing empty field: fine
        "2;Борис;Тверь;;лишнее",  # a value past the header: a bad row
        "3;Вера",  # short: padded
    ])
    _, table, rejects = read_all(FlatFileSource("r.csv", base_dir=tmp_path))
    assert rows_of(table) == [
        {"Код": "1", "Имя": "Анна", "Город": "Тула", "_file": "r.csv", "_line": 2},
        {"Код": "3", "Имя": "Вера", "Город": None, "_file": "r.csv", "_line": 4},
    ]
    (rej,) = rejects.to_pylist()
    assert (rej["reason"], rej["line"], rej["file"], rej["value"]) == ("bad_row", 3, "r.csv", "лишнее")
    assert rej["message"].startswith("r.csv, line 3: 5 fields, the header has 3")
    assert json.loads(rej["record"])["column_5"] == "лишнее"


def test_unknown_typed_column_is_terminal(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", ["Код;Имя", "1;x"])
    src = FlatFileSource("a.csv", base_dir=tmp_path, types={"Дата": "date"})
    with pytest.raises(TerminalError, match="Дата"):
        src.check()
    with pytest.raises(TerminalError, match="Дата"):
        list(src.read(None, 10))
    with pytest.raises(TerminalError):
        FlatFileSource("a.csv", base_dir=tmp_path, types={"Код": "money"})  # type: ignore[dict-item]


# --- encodings ---------------------------------------------------------------------------------------------


def test_undecodable_cp1251_byte_offset(tmp_path: Path) -> None:
    head = "Код;Наименование\r\n".encode("cp1251")
    body = b"".join(f"{i};Контрагент {i}\r\n".encode("cp1251") for i in range(20000))
    bad_at = len(head) + len(body) + len(b"20000;")
    data = head + body + b"20000;\x98\r\n" + "20001;ок\r\n".encode("cp1251")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "contacts.csv").write_bytes(data)
    assert bad_at > 200_000  # past the sniffing window and the first decode chunks
    src = FlatFileSource("data/contacts.csv", base_dir=tmp_path)
    with pytest.raises(BadInputError) as err:
        list(src.read(None, 1000))
    assert err.value.offset == bad_at
    assert err.value.file == "data/contacts.csv"
    assert str(err.value) == f"data/contacts.csv: cannot decode as windows-1251 at byte {bad_at} (0x98)"


def test_forced_utf8_on_cp1251_file(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", ["Code;Name", "1;Иванов"])
    src = FlatFileSource("a.csv", base_dir=tmp_path, encoding="utf-8")
    with pytest.raises(BadInputError) as err:
        list(src.read(None, 10))
    assert err.value.offset == len(b"Code;Name\r\n1;")
    assert "cannot decode as utf-8 at byte 13 (0xC8)" in str(err.value)


def test_decode_error_offset_across_scan_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.onec import flat

    good = "Код;Имя\n1;Ёлкин Пётр\n2;Щукина\n".encode("utf-8")
    (tmp_path / "u.csv").write_bytes(good + b"3;\xd0A\n")  # a lead byte without its continuation
    for chunk in range(1, 12):  # the rescan's chunks split multi-byte letters everywhere
        monkeypatch.setattr(flat, "_CHUNK", chunk)
        with pytest.raises(BadInputError) as err:
            list(FlatFileSource("u.csv", base_dir=tmp_path, encoding="utf-8").read(None, 10))
        assert err.value.offset == len(good) + 2, chunk
        assert str(err.value).endswith(f"at byte {len(good) + 2} (0xD0)")


def test_runaway_quote_is_bad_input(tmp_path: Path) -> None:
    write(tmp_path / "q.csv", ["Код;Имя", '1;"не закрыта'] + ["x" * 1000] * 200)
    with pytest.raises(BadInputError, match=r"q\.csv, line \d+: malformed"):
        list(FlatFileSource("q.csv", base_dir=tmp_path).read(None, 10))


# --- XLSX --------------------------------------------------------------------------------------------------


def make_xlsx(path: Path, rows: list[list], *, sheet: str = "Контрагенты", extra_sheet: bool = False) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    if extra_sheet:
        ws.title = "Сводка"
        ws.append(["не то"])
        ws = wb.create_sheet(sheet)
    else:
        ws.title = sheet
    for row in rows:
        ws.append(row)
    wb.save(path)
    return path


def test_xlsx_cells_and_types(tmp_path: Path) -> None:
    make_xlsx(tmp_path / "k.xlsx", [
        ["Наименование", "ИНН", None, "Дата", "Сумма", "Активен", "Кол"],
        [" ООО Ромашка ", 7701234567.0, "x", dt.datetime(2021, 3, 5, 9, 7), 1234567.89, True, 3],
        [None, None, None, None, None, None, None],  # an empty sheet row: no record
        ["ИП Петров", "500100732259", None, "01.01.0001 0:00:00", "1 234,5", "Нет", 4.0],
        ["ЗАО Вектор", None, None, "31.02.2020", 1, "да", 5],
    ], extra_sheet=True)
    src = FlatFileSource("*.xlsx", base_dir=tmp_path, sheet="Контрагенты",
                         types={"Дата": "datetime", "Сумма": "number", "Активен": "boolean", "Кол": "integer"})
    assert src.columns() == ["Наименование", "ИНН", "column_3", "Дата", "Сумма", "Активен", "Кол"]
    _, table, rejects = read_all(src)
    assert rows_of(table) == [
        {"Наименование": "ООО Ромашка", "ИНН": "7701234567", "column_3": "x", "Дата": dt.datetime(2021, 3, 5, 9, 7),
         "Сумма": 1234567.89, "Активен": True, "Кол": 3, "_file": "k.xlsx", "_line": 2},
        {"Наименование": "ИП Петров", "ИНН": "500100732259", "column_3": None, "Дата": None, "Сумма": 1234.5,
         "Активен": False, "Кол": 4, "_file": "k.xlsx", "_line": 4},
    ]
    (rej,) = rejects.to_pylist()
    assert rej["message"] == "k.xlsx, line 5, column «Дата»: bad datetime '31.02.2020'"
    assert (rej["reason"], rej["line"]) == ("bad_date", 5)


def test_xlsx_first_sheet_by_default_and_missing_sheet(tmp_path: Path) -> None:
    make_xlsx(tmp_path / "k.xlsx", [["A"], ["1"]], extra_sheet=True)
    assert FlatFileSource("k.xlsx", base_dir=tmp_path).columns() == ["не то"]
    with pytest.raises(TerminalError, match="Нет такого|no sheet"):
        FlatFileSource("k.xlsx", base_dir=tmp_path, sheet="Нет такого").check()


def test_xlsx_resume_and_progress(tmp_path: Path) -> None:
    make_xlsx(tmp_path / "k.xlsx", [["Код", "Имя"]] + [[i, f"Имя {i}"] for i in range(1, 8)])
    src = FlatFileSource("k.xlsx", base_dir=tmp_path)
    batches, full, _ = read_all(src, batch_size=3)
    assert [b.read_count for b in batches] == [3, 3, 1]
    assert full.column("Код").to_pylist() == [str(i) for i in range(1, 8)]
    assert full.column(LINE_COLUMN).to_pylist() == list(range(2, 9))
    assert batches[-1].progress == src.total() == (tmp_path / "k.xlsx").stat().st_size
    _, rest, _ = read_all(src, cursor=batches[0].cursor, batch_size=2)
    assert rest.equals(full.slice(3))


def test_broken_xlsx_is_terminal(tmp_path: Path) -> None:
    (tmp_path / "bad.xlsx").write_bytes(b"not a zip at all")
    with pytest.raises(TerminalError, match="bad.xlsx"):
        FlatFileSource("bad.xlsx", base_dir=tmp_path).check()


# --- globs, cursors, batches -------------------------------------------------------------------------------


def make_parts(tmp_path: Path) -> list[Path]:
    paths = []
    counter = 0
    for name, n in (("b_part.csv", 9), ("a_part.csv", 12), ("c_part.csv", 5)):
        lines = ["Код;Наименование;Комментарий"]
        for _ in range(n):
            counter += 1
            if counter % 4 == 0:
                lines.append(f'{name}-{counter};Контрагент {counter};"много\r\nстрок"')
            else:
                lines.append(f"{name}-{counter};Контрагент {counter};")
            if counter % 5 == 0:
                lines.append("")
        paths.append(write(tmp_path / "in" / name, lines))
    return paths


def test_glob_several_files_sorted(tmp_path: Path) -> None:
    make_parts(tmp_path)
    src = FlatFileSource(["in/c_*.csv", "in/[ab]_*.csv"], base_dir=tmp_path)
    src.check()
    assert src.total() == sum(p.stat().st_size for p in (tmp_path / "in").iterdir())
    batches, table, _ = read_all(src, batch_size=4)
    files = table.column(FILE_COLUMN).to_pylist()
    assert files == ["in/a_part.csv"] * 12 + ["in/b_part.csv"] * 9 + ["in/c_part.csv"] * 5
    assert all(b.table.column(FILE_COLUMN).unique().to_pylist() == [b.cursor["file"]] for b in batches)
    assert [b.cursor["row"] for b in batches if b.cursor["file"] == "in/a_part.csv"][-1] == 12  # records only
    progress = [b.progress for b in batches]
    assert progress == sorted(progress) and progress[-1] == src.total()


def test_absolute_pattern_keeps_absolute_path(tmp_path: Path) -> None:
    paths = make_parts(tmp_path)
    src = FlatFileSource(str(tmp_path / "in" / "a_*.csv"), base_dir="/nonexistent")
    _, table, _ = read_all(src)
    assert set(table.column(FILE_COLUMN).to_pylist()) == {str(paths[1])}


def test_batch_size_bounds(tmp_path: Path) -> None:
    make_parts(tmp_path)
    src = FlatFileSource("in/*.csv", base_dir=tmp_path)
    for size in (1, 3, 7, 100):
        batches, table, _ = read_all(src, batch_size=size)
        assert table.num_rows == 26
        assert all(1 <= b.read_count <= size for b in batches)


def test_resume_from_every_cursor(tmp_path: Path) -> None:
    make_parts(tmp_path)
    src = FlatFileSource("in/*.csv", base_dir=tmp_path)
    batches, full, _ = read_all(src, batch_size=5)
    keys = list(zip(full.column(FILE_COLUMN).to_pylist(), full.column(LINE_COLUMN).to_pylist()))
    assert len(set(keys)) == 26
    seen = 0
    for b in batches:
        seen += b.table.num_rows
        cursor = json.loads(json.dumps(b.cursor))  # JSON-able
        assert set(cursor) == {"file", "file_index", "row", "size", "mtime_ns"}
        _, rest, _ = read_all(src, cursor=cursor, batch_size=3)
        rest_keys = [] if rest is None else list(zip(rest.column(FILE_COLUMN).to_pylist(),
                                                     rest.column(LINE_COLUMN).to_pylist()))
        assert keys[:seen] + rest_keys == keys  # the union is the full read, nothing twice
        if rest is not None:
            assert rest.equals(full.slice(seen))


def test_cursor_at_end_of_file_moves_on(tmp_path: Path) -> None:
    make_parts(tmp_path)
    src = FlatFileSource("in/*.csv", base_dir=tmp_path)
    first = next(iter(src.read(None, 1000)))
    assert first.cursor["file"] == "in/a_part.csv" and first.cursor["file_index"] == 0
    _, rest, _ = read_all(src, cursor=first.cursor)
    assert rest.column(FILE_COLUMN).to_pylist()[0] == "in/b_part.csv"
    assert rest.num_rows == 14
    # a cursor naming a file that is gone resumes at the next file in order
    _, rest, _ = read_all(src, cursor={"file": "in/b_0.csv", "file_index": 7, "row": 3})
    assert rest.column(FILE_COLUMN).to_pylist()[0] == "in/b_part.csv" and rest.num_rows == 14
    assert src.next_pass(first.cursor) is None


def test_check_errors(tmp_path: Path) -> None:
    with pytest.raises(TerminalError, match=r"nothing/\*\.csv"):
        FlatFileSource("nothing/*.csv", base_dir=tmp_path).check()
    write(tmp_path / "h" / "1.csv", ["Код;Имя", "1;a"])
    write(tmp_path / "h" / "2.csv", ["Код;Фамилия", "2;b"])
    src = FlatFileSource("h/*.csv", base_dir=tmp_path)
    with pytest.raises(TerminalError, match="h/2.csv"):
        src.check()
    with pytest.raises(TerminalError, match="h/2.csv"):
        list(src.read(None, 10))
    (tmp_path / "e.csv").write_bytes(b"")
    with pytest.raises(TerminalError, match="e.csv"):
        FlatFileSource("e.csv", base_dir=tmp_path).check()
