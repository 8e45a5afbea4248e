"""The cleaning stages measured on the labelled sets in tests/data (made by tests/data/make_clean_sets.py): every
phone cell and every INN/KPP/OGRN right, names at least 98% right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow as pa
import pytest

from etl.stages import STAGES

DATA = Path(__file__).parent / "data"


def _sets():
    spec = importlib.util.spec_from_file_location("make_clean_sets", DATA / "make_clean_sets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SETS = _sets()


def _table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    return pa.table({"_row": pa.array(range(n), pa.int64()), **{k: pa.array(v, pa.string()) for k, v in cols.items()}})


def _run(stage_type: str, options: dict, table: pa.Table):
    stage = STAGES[stage_type]
    assert stage.check_options(options) is None
    return stage(options).process(table)


def test_the_committed_sets_are_what_the_script_makes(tmp_path):
    made = SETS.build(tmp_path)
    for name, path in made.items():
        stale = f"{path.name} is stale: run {DATA}/make_clean_sets.py"
        assert path.read_bytes() == (DATA / path.name).read_bytes(), stale


def test_the_sets_are_big_enough_and_dirty():
    phones = SETS.read(DATA / "clean_phones.csv")
    names = SETS.read(DATA / "clean_names.csv")
    inns = [r for r in SETS.read(DATA / "clean_registry.csv") if r["what"] == "inn"]
    assert len(phones) >= 300 and len(names) >= 150 and len(inns) >= 150
    kinds = {r["kind"] for r in phones}
    assert {"extension", "two", "excel", "junk", "no_area_code", "foreign", "nbsp", "label"} <= kinds
    assert {r["status"] for r in names} == {"ok", "company", "invalid", "empty"}
    assert {"zero_lost", "checksum", "excel", "spaces"} <= {r["kind"] for r in inns}


def test_every_phone_cell_of_the_set_is_cleaned_right():
    rows = SETS.read(DATA / "clean_phones.csv")
    res = _run("phone", {"columns": ["Телефон"], "into": "e164", "on_error": "null", "flag": "why"},
               _table(Телефон=[r["cell"] for r in rows]))
    got = res.kept.select(["e164", "why"]).to_pylist()
    wrong = [(r["cell"], r["expected"], r["reason"], g) for r, g in zip(rows, got)
             if (g["e164"] or "") != r["expected"] or (g["why"] or "") != r["reason"]]
    assert not wrong, f"{len(wrong)} of {len(rows)} wrong: {wrong[:10]}"
    assert len(rows) == res.kept.num_rows


def test_rejected_phone_cells_are_exactly_the_dirty_ones():
    rows = SETS.read(DATA / "clean_phones.csv")
    res = _run("phone", {"columns": ["Телефон"]}, _table(Телефон=[r["cell"] for r in rows]))
    expected = {i: r["reason"] for i, r in enumerate(rows) if r["reason"]}
    got = dict(zip(res.rejects.column("_row").to_pylist(), res.rejects.column("reason").to_pylist()))
    assert got == expected
    assert res.kept.num_rows + res.rejects.num_rows == len(rows)


def test_names_of_the_set_are_split_right_at_least_98_percent():
    rows = SETS.read(DATA / "clean_names.csv")
    res = _run("name", {"columns": ["ФИО"], "into": {"last": "Ф", "first": "И", "middle": "О", "gender": "Пол"},
                        "companies": "keep", "on_error": "null", "flag": "why"},
               _table(ФИО=[r["cell"] for r in rows]))
    status = {"name_invalid": "invalid", "name_company": "company"}
    right, wrong = 0, []
    for r, g in zip(rows, res.kept.to_pylist()):
        st = status.get(g["why"]) or ("ok" if any((g["Ф"], g["И"], g["О"])) else "empty")
        got = (st, g["Ф"] or "", g["И"] or "", g["О"] or "", g["Пол"] or "")
        want = (r["status"], r["last"], r["first"], r["middle"], r["gender"])
        if got == want:
            right += 1
        else:
            wrong.append((r["cell"], want, got))
    accuracy = right / len(rows)
    print(f"names: {right}/{len(rows)} = {accuracy:.1%}")
    assert accuracy >= 0.98, wrong


@pytest.mark.parametrize("what", ["inn", "kpp", "ogrn"])
def test_every_registry_number_of_the_set_is_checked_right(what):
    rows = [r for r in SETS.read(DATA / "clean_registry.csv") if r["what"] == what]
    options = {"columns": ["Номер"], "on_error": "null", "flag": "why"}
    if what == "kpp":
        options["inn"] = "ИНН"
    res = _run(what, options, _table(Номер=[r["cell"] for r in rows], ИНН=[r["inn"] for r in rows]))
    got = res.kept.select(["Номер", "why"]).to_pylist()
    wrong = [(r["cell"], r["expected"], r["reason"] or r["note"], g) for r, g in zip(rows, got)
             if (g["Номер"] or "") != r["expected"] or (g["why"] or "") != (r["reason"] or r["note"])]
    assert not wrong, f"{len(wrong)} of {len(rows)} wrong: {wrong[:10]}"


def test_rejected_inns_carry_their_reason_and_a_message_naming_column_and_value():
    rows = [r for r in SETS.read(DATA / "clean_registry.csv") if r["what"] == "inn"]
    res = _run("inn", {"columns": ["ИНН"]}, _table(ИНН=[r["cell"] for r in rows]))
    rej = res.rejects.to_pylist()
    assert {x["_row"]: x["reason"] for x in rej} == {i: r["reason"] for i, r in enumerate(rows) if r["reason"]}
    broken = next(x for x in rej if x["reason"] == "inn_checksum" and x["value"] != "0000000000")
    assert broken["field"] == "ИНН" and broken["message"].startswith(f"column «ИНН»: {broken['value']!r} fails")
    kept = res.kept.column("ИНН").to_pylist()
    assert all(v is None or len(v) in (10, 12) for v in kept)
