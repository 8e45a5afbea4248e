"""A migration engineer points crm-etl at a Bitrix24 database dump: every value comes back exactly as MySQL stored
it, whatever the dumper (CBackup or mysqldump), the charset, the escaping, and wherever the chunks are cut."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from connectors.bitrix24.backup.dump import DumpReader, Rows, StatementError, TableDef, typed_table, unescape
from connectors.bitrix24.backup.phpser import PhpSerializeError, unserialize
from tests.backup_writer import Table, cbackup_dump, mysql_escape, mysqldump

COLUMNS = [("ID", "int(10) unsigned"), ("TITLE", "varchar(255)"), ("AMOUNT", "decimal(18,2)"),
           ("CREATED", "datetime"), ("BORN", "date"), ("RATE", "double"), ("PHOTO", "longblob"),
           ("COMMENTS", "text")]

TRICKY = ["It's", 'say "hi"', "back\\slash", "line\nbreak\r\nwin", "tab\there", "nul\x00byte", "ctrl-z\x1a",
          "),(", "');\nDROP TABLE x; --", "ООО «Ромашка»", "100% _wild_", "\\'", "''", "NULL", "0x41",
          "_binary 'x'", "trailing \\", "", " lead and trail ", "€ № ё", ";\n", "a,b,c"]


def make_rows(n: int, seed: int = 1, cp1251: bool = False) -> list[list]:
    rnd = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        title = rnd.choice(TRICKY) + (f" #{i}" if rnd.random() < 0.5 else "")
        if cp1251:
            title = title.encode("cp1251", "replace").decode("cp1251")
        rows.append([
            i,
            None if rnd.random() < 0.1 else title,
            None if rnd.random() < 0.2 else Decimal(rnd.randint(-10**6, 10**8)) / 100,
            None if rnd.random() < 0.1 else dt.datetime(2020, 1, 1) + dt.timedelta(seconds=rnd.randint(0, 10**8)),
            None if rnd.random() < 0.3 else dt.date(1950, 1, 1) + dt.timedelta(days=rnd.randint(0, 20000)),
            None if rnd.random() < 0.2 else rnd.choice([0.5, -1.25, 1e20, 3.0]),
            None if rnd.random() < 0.3 else bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40))),
            None if rnd.random() < 0.3 else "\n".join(rnd.choice(TRICKY) for _ in range(rnd.randint(1, 4))),
        ])
    return rows


def expected(rows: list[list]) -> list[dict]:
    names = [c for c, _ in COLUMNS]
    out = []
    for r in rows:
        d = dict(zip(names, r))
        d["AMOUNT"] = None if d["AMOUNT"] is None else Decimal(d["AMOUNT"]).quantize(Decimal("0.01"))
        out.append(d)
    return out


def read_all(dump: bytes, tables=("b_crm_test",), chunk: int = 1 << 20, fast: bool = True):
    chunks = [("x.sql", dump[i:i + chunk]) for i in range(0, len(dump), chunk)]
    reader = DumpReader(chunks, set(tables), fast=fast)
    rows, errors, bad = [], [], []
    for ev in reader.events():
        if isinstance(ev, Rows):
            t, problems = typed_table(reader.schemas[ev.table], ev.columns, reader.codec, ev.names)
            assert not problems
            rows += t.to_pylist()
            bad += ev.bad
        elif isinstance(ev, StatementError):
            errors.append(ev)
    return rows, errors, bad, reader


@pytest.mark.parametrize("dumper", ["cbackup", "mysqldump", "mysqldump-hex"])
@pytest.mark.parametrize("charset", ["utf8", "cp1251"])
def test_every_value_comes_back_exactly(dumper, charset):
    rows = make_rows(600, seed=3, cp1251=charset == "cp1251")
    t = Table("b_crm_test", COLUMNS, rows)
    other = Table("b_crm_other", [("ID", "int(11)"), ("V", "text")], [[1, "x');\n"], [2, "y"]])
    if dumper == "cbackup":
        dump = cbackup_dump([other, t, other], charset=charset, insert_limit=3000)
    else:
        dump = mysqldump([other, t], charset="cp1251" if charset == "cp1251" else "utf8mb4", rows_per_insert=70,
                         hex_blob=dumper.endswith("hex"))
    got, errors, bad, reader = read_all(dump, chunk=4093)
    assert not errors and not bad
    assert got == expected(rows)
    assert reader.charset.startswith("cp1251" if charset == "cp1251" else "utf8")


def test_the_fast_pass_and_the_exact_tokenizer_agree_wherever_the_stream_is_cut():
    rows = make_rows(150, seed=11)
    dump = cbackup_dump([Table("b_crm_test", COLUMNS, rows)], insert_limit=2500)
    reference, _, _, r = read_all(dump, fast=False)
    assert reference == expected(rows)
    for chunk in (1, 7, 512, 65536):
        got, errors, bad, reader = read_all(dump, chunk=chunk)
        assert got == reference, chunk
        assert reader.fast_regions > 0


def test_hand_made_shapes_take_the_exact_path():
    dump = (b"CREATE TABLE `t` (\n `ID` int, `S` varchar(10), `B` varbinary(4), `F` bit(3)\n);\n"
            b"INSERT INTO `t` (`ID`, `S`, `B`, `F`) VALUES (1, 'it''s', X'4142', b'101'), "
            b"(2, \"dq \\\"x\\\"\", _latin1'z', b'0');\n"
            b"INSERT IGNORE INTO t VALUES (3,'a\\%b\\_c\\qd',0x00ff,NULL);\n")
    got, errors, bad, _ = read_all(dump, tables=("t",))
    assert not errors
    assert got == [
        {"ID": 1, "S": "it's", "B": b"AB", "F": 5},
        {"ID": 2, "S": 'dq "x"', "B": b"z", "F": 0},
        {"ID": 3, "S": "a\\%b\\_cqd", "B": b"\x00\xff", "F": None},
    ]


def test_a_row_with_the_wrong_number_of_values_is_reported_and_the_rest_is_read():
    dump = (b"CREATE TABLE `t` (\n `ID` int, `S` varchar(10)\n);\n"
            b"INSERT INTO `t` VALUES\n(1, 'a'),\n(2, 'b', 'extra'),\n(3, 'c');\n"
            b"INSERT INTO `t` VALUES\n(4, 'unterminated);\nINSERT INTO `t` VALUES (5, 'e');\n")
    got, errors, bad, _ = read_all(dump, tables=("t",))
    assert [r["ID"] for r in got] == [1, 3, 5]
    assert [(b[0], b[1]) for b in bad] == [(1, 6)]  # second row of the statement, line 6
    assert "3 values, the table has 2 columns" in bad[0][2]
    assert len(errors) == 1 and errors[0].line == 10  # where the runaway string ends: reported, then skipped


def test_unescape_follows_mysql_string_literal_rules():
    assert unescape(b"\\0\\'\\\"\\b\\n\\r\\t\\Z\\\\\\%\\_\\x") == b"\x00'\"\b\n\r\t\x1a\\\\%\\_x"
    for s in TRICKY:
        raw = s.encode()
        assert unescape(mysql_escape(raw)) == raw


def test_columns_come_from_the_dumps_own_create_table():
    cols = [("ID", "int(11)"), ("NEW_COLUMN", "varchar(5)"), ("TITLE", "varchar(255)")]
    dump = cbackup_dump([Table("b_crm_test", cols, [[1, "n", "t"]])])
    chunks = [("x.sql", dump)]
    reader = DumpReader(chunks, {"b_crm_test"})
    defs = [ev for ev in reader.events() if isinstance(ev, TableDef)]
    assert defs[0].schema.names == ["ID", "NEW_COLUMN", "TITLE"]


def test_php_unserialize_is_safe_and_byte_exact():
    assert unserialize('a:2:{i:0;s:4:"Да";i:1;i:5;}') == ["Да", 5]
    assert unserialize(b'a:1:{s:1:"k";a:1:{i:0;d:1.5;}}') == {"k": [1.5]}
    assert unserialize("s:2:\"Да\";".encode("cp1251"), "cp1251") == "Да"
    assert unserialize("b:1;") is True and unserialize("N;") is None
    for bad in ('O:8:"stdClass":0:{}', "a:1:{i:0;r:1;}", 's:5:"abc";', "a:99999999:{}", "i:1"):
        with pytest.raises(PhpSerializeError):
            unserialize(bad)
