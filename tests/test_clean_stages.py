"""Each cleaning stage on realistic dirty values with known answers: the options, the on_error policies, the flag
column, and the sample generator's ground truth (truth.json) as a cross-check."""

from __future__ import annotations

import json
import random

import phonenumbers
import pyarrow as pa
import pytest

from connectors.base import TerminalError
from etl.sample import ru
from etl.stages import STAGES
from etl.stages.clean.emails import fast_cells, parse_emails
from etl.stages.clean.phones import fast_cells_ru, split_phones


def table(**cols) -> pa.Table:
    n = len(next(iter(cols.values())))
    return pa.table({"_row": pa.array(range(n), pa.int64()), **{k: pa.array(v, pa.string()) for k, v in cols.items()}})


def run(stage_type: str, tbl: pa.Table, **options):
    err = STAGES[stage_type].check_options(options)
    assert err is None, err
    return STAGES[stage_type](options).process(tbl)


# ---------------------------------------------------------------- phones

def test_a_phone_cell_becomes_e164_numbers_separated_by_semicolons():
    t = table(Тел=["8 (495) 408-45-71 доб. 4091", "+7-499-6065652, 8(984)916-39-81", "8 916 123 45 67 8 (499) 2223344",
                   "тел. 89161234567 (Иван)", None, ""])
    res = run("phone", t, columns=["Тел"])
    assert res.kept.column("Тел").to_pylist() == [
        "+74954084571;ext=4091", "+74996065652;+79849163981", "+79161234567;+74992223344", "+79161234567", None, None]
    assert split_phones("+74954084571;ext=4091;+79161234567") == [("+74954084571", "4091"), ("+79161234567", None)]


def test_extensions_inline_dropped_or_in_a_column_of_their_own():
    t = table(Тел=["8 (495) 408-45-71 доб. 4091", "84951112233, доб. 12", "+7 916 123-45-67"])
    assert run("phone", t, columns=["Тел"], extensions="drop").kept.column("Тел").to_pylist() == [
        "+74954084571", "+74951112233", "+79161234567"]
    res = run("phone", t, columns=["Тел"], extensions="column", extensions_into="Доб")
    assert res.kept.column("Тел").to_pylist() == ["+74954084571", "+74951112233", "+79161234567"]
    assert res.kept.column("Доб").to_pylist() == ["4091", "12", None]


def test_junk_and_excel_mangled_phones_are_rejected_with_a_reason_naming_the_value():
    t = table(Тел=["7,91235E+10", "нет", "123-45-67", "+7 916 123-45-67"])
    res = run("phone", t, columns=["Тел"])
    assert res.kept.column("Тел").to_pylist() == ["+79161234567"]
    rej = {r["reason"]: r for r in res.rejects.to_pylist()}
    assert set(rej) == {"phone_excel_mangled", "phone_junk", "phone_invalid"}
    assert rej["phone_excel_mangled"]["_row"] == 0 and rej["phone_excel_mangled"]["field"] == "Тел"
    assert rej["phone_excel_mangled"]["value"] == "7,91235E+10"
    assert rej["phone_excel_mangled"]["message"].startswith("column «Тел»: '7,91235E+10' is a number Excel wrote")
    assert "area code" in rej["phone_invalid"]["message"]


def test_on_error_keep_and_null_load_the_record_and_the_flag_says_why():
    t = table(Тел=["7,91235E+10", "89161234567, нет", "нет"])
    keep = run("phone", t, columns=["Тел"], on_error="keep", flag="Тел_ошибка").kept
    assert keep.column("Тел").to_pylist() == ["7,91235E+10", "+79161234567", "нет"]  # "нет" between numbers is a remark
    assert keep.column("Тел_ошибка").to_pylist() == ["phone_excel_mangled", None, "phone_junk"]
    null = run("phone", t, columns=["Тел"], on_error="null").kept
    assert null.column("Тел").to_pylist() == [None, "+79161234567", None]
    partly = table(Тел=["89161234567, 12-34"])
    assert run("phone", partly, columns=["Тел"], on_error="keep").kept.column("Тел").to_pylist() == [
        "+79161234567;12-34"]
    assert run("phone", partly, columns=["Тел"], on_error="null").kept.column("Тел").to_pylist() == ["+79161234567"]


def test_two_phone_columns_go_into_one_field_without_repeating_a_number():
    t = table(Т1=["8 916 123 45 67", None, "+7 495 111-22-33", "нет"], Т2=["+79161234567", "8 (812) 333-44-55",
                                                                          "89160000001", "89160000002"])
    res = run("phone", t, columns=["Т1", "Т2"], into="phone", on_error="reject")
    assert res.kept.column("phone").to_pylist() == ["+79161234567", "+78123334455", "+74951112233;+79160000001"]
    assert res.rejects.to_pylist()[0]["field"] == "Т1" and res.rejects.to_pylist()[0]["value"] == "нет"


def test_a_number_in_a_range_phonenumbers_does_not_know_is_accepted_only_with_strict_false():
    t = table(Тел=["8 930 0018286"])
    assert run("phone", t, columns=["Тел"]).rejects.column("reason").to_pylist() == ["phone_invalid"]
    assert run("phone", t, columns=["Тел"], strict=False).kept.column("Тел").to_pylist() == ["+79300018286"]


def test_another_default_region_reads_national_numbers_of_that_country():
    t = table(Тел=["8 029 123-45-67", "+7 916 123-45-67"])
    assert run("phone", t, columns=["Тел"], region="BY").kept.column("Тел").to_pylist() == [
        "+375291234567", "+79161234567"]


def _pn(cell: str) -> str | None:
    """What phonenumbers itself reads in a cell of one or two numbers (the reference for the fast path)."""
    out = []
    for piece in cell.replace(";", ",").replace("/", ",").split(","):
        try:
            num = phonenumbers.parse(piece.strip(), "RU")
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(num) or num.extension:
            return None
        e = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        if e not in out:
            out.append(e)
    return ";".join(out)


def test_the_vectorised_fast_path_agrees_with_phonenumbers():
    rng = random.Random(5)
    cells = []
    for _ in range(3000):
        r = rng.random()
        if r < 0.5:
            n = ru.mobile_number(rng)
        elif r < 0.8:
            n = ru.landline_number(rng, (rng.choice(("495", "812", "343", "3452", "861")),))
        else:  # any 10 digits: most are no valid number, some are
            n = f"{rng.randrange(10 ** 10):010d}"
        cell = ru.format_phone(rng, n, 4 if n.startswith("3452") else 3)
        if rng.random() < 0.2:
            cell += rng.choice((", ", "; ", "/")) + ru.format_phone(rng, ru.mobile_number(rng))
        cells.append(cell)
    fast, _ = fast_cells_ru(pa.array(cells))
    taken = 0
    for cell, got in zip(cells, fast.to_pylist()):
        if got is not None:
            taken += 1
            assert got == _pn(cell), cell
    assert taken > 2500  # the fast path does take the common formats


# ---------------------------------------------------------------- e-mails

def test_emails_are_trimmed_lowered_fixed_and_split():
    t = table(Почта=[" Ivan.Petrov@Mail.RU ", "ivan@yandex,ru", "a@x.ru; b@y.ru", "a@x.ru,b@y.ru",
                     "ivan,petrov@mail.ru", "Иван Петров <IVAN@MAIL.RU>", "mailto:info@firma.ru", "ivan @ mail.ru",
                     "info@почта.рф", "ivаn@mail.ru", "a@x.ru a@x.ru", None])
    res = run("email", t, columns=["Почта"])
    assert res.rejects.num_rows == 0
    assert res.kept.column("Почта").to_pylist() == [
        "ivan.petrov@mail.ru", "ivan@yandex.ru", "a@x.ru;b@y.ru", "a@x.ru;b@y.ru", "ivan.petrov@mail.ru",
        "ivan@mail.ru", "info@firma.ru", "ivan@mail.ru", "info@почта.рф", "ivan@mail.ru", "a@x.ru", None]


def test_bad_emails_are_rejected_with_what_is_wrong():
    t = table(Почта=["нет", "@", "ivan@mail", "ivan..petrov@mail.ru", "иван@mail.ru", "a@b@c.ru", "ok@mail.ru, нет"])
    res = run("email", t, columns=["Почта"])
    assert res.kept.num_rows == 0
    msgs = {r["value"]: r["message"] for r in res.rejects.to_pylist()}
    assert set(res.rejects.column("reason").to_pylist()) == {"email_invalid"}
    assert msgs["нет"] == "column «Почта»: 'нет' is not an e-mail address"
    assert "top-level domain" in msgs["ivan@mail"]
    assert "non-Latin" in msgs["иван@mail.ru"]
    kept = run("email", t, columns=["Почта"], on_error="null").kept.column("Почта").to_pylist()
    assert kept == [None] * 6 + ["ok@mail.ru"]


def test_the_email_fast_path_agrees_with_the_full_parser():
    rng = random.Random(9)
    words = ["ivan", "petrov", "o.smirnova", "info", "sales_2", "a+b", "x-y"]
    cells = []
    for _ in range(500):
        a = f"{rng.choice(words)}@{rng.choice(['mail.ru', 'yandex.ru', 'firma-1.com', 'sub.domain.org'])}"
        cells.append(a if rng.random() < 0.7 else a + rng.choice(("; ", " ", ";")) + "other@mail.ru")
    fast = fast_cells(pa.array(cells)).to_pylist()
    assert all(f is not None for f in fast)
    for cell, f in zip(cells, fast):
        good, bad = parse_emails(cell)
        assert not bad and ";".join(good) == f


# ---------------------------------------------------------------- names

INTO = {"last": "Фамилия", "first": "Имя", "middle": "Отчество", "gender": "Пол", "full": "ФИО_чисто"}


def names(values, **options):
    return run("name", table(ФИО=values), columns=["ФИО"], into=options.pop("into", INTO), **options)


def test_a_full_name_is_split_in_either_order_with_case_spaces_and_initials_fixed():
    res = names(["Иванова Мария Петровна", "Мария Петровна Иванова", "ИВАНОВ И.И.", "иванов иван",
                 "  Петров   Пётр  ", "И.И. Сидоров", "Мамедов Али Гасан оглы", "Иванов, Иван Иванович (бухгалтер)"])
    rows = res.kept.select(["Фамилия", "Имя", "Отчество", "Пол", "ФИО_чисто"]).to_pylist()
    assert [tuple(r.values()) for r in rows] == [
        ("Иванова", "Мария", "Петровна", "F", "Иванова Мария Петровна"),
        ("Иванова", "Мария", "Петровна", "F", "Иванова Мария Петровна"),
        ("Иванов", "И.", "И.", None, "Иванов И. И."),
        ("Иванов", "Иван", None, None, "Иванов Иван"),
        ("Петров", "Пётр", None, None, "Петров Пётр"),
        ("Сидоров", "И.", "И.", None, "Сидоров И. И."),
        ("Мамедов", "Али", "Гасан оглы", "M", "Мамедов Али Гасан оглы"),
        ("Иванов", "Иван", "Иванович", "M", "Иванов Иван Иванович"),
    ]


def test_companies_are_rejected_or_kept_in_a_column_as_the_pipeline_says():
    values = ["ООО «Ромашка»", "ИП Петров П.П.", "Сидоров Сидор"]
    res = names(values)
    assert res.rejects.column("reason").to_pylist() == ["name_company", "name_company"]
    assert "organisation" in res.rejects.column("message").to_pylist()[0]
    # with on_error: keep, a company is still rejected when companies: reject
    assert names(values, on_error="keep").rejects.num_rows == 2
    kept = names(values, companies="keep", flag="Тип", into={**INTO, "company": "Организация"}).kept
    assert kept.column("Организация").to_pylist() == ["ООО «Ромашка»", "ИП Петров П.П.", None]
    assert kept.column("Фамилия").to_pylist() == [None, None, "Сидоров"]
    assert kept.column("Тип").to_pylist() == ["name_company", "name_company", None]


def test_a_name_that_cannot_be_split_is_rejected_kept_whole_as_first_name_or_nulled():
    values = ["-", "Иванов Иван Иванович, Петров Пётр Петрович", "Иванов Иван"]
    res = names(values)
    assert res.rejects.column("reason").to_pylist() == ["name_invalid", "name_invalid"]
    assert "6 words" in res.rejects.column("message").to_pylist()[1]
    kept = names(values, on_error="keep").kept
    assert kept.column("Имя").to_pylist() == ["-", "Иванов Иван Иванович, Петров Пётр Петрович", "Иван"]
    assert kept.column("Фамилия").to_pylist() == [None, None, "Иванов"]
    assert names(values, on_error="null").kept.column("Имя").to_pylist() == [None, None, "Иван"]


def test_gender_from_the_patronymic_or_also_from_names_and_in_the_values_you_want():
    values = ["Иванова Мария Петровна", "Мамедова Лейла Ильхам кызы", "Петрова Анна", "Саша Смирнов", "Ким Ен"]
    assert names(values).kept.column("Пол").to_pylist() == ["F", "F", None, None, None]
    res = names(values, gender_from="names", gender_values={"male": "мужской", "female": "женский"})
    assert res.kept.column("Пол").to_pylist() == ["женский", "женский", "женский", "мужской", None]


def test_yo_is_kept_written_as_e_or_restored_in_first_names_and_patronymics():
    values = ["Семёнов Пётр Артемович"]
    assert names(values).kept.column("ФИО_чисто").to_pylist() == ["Семёнов Пётр Артемович"]
    assert names(values, yo="e").kept.column("ФИО_чисто").to_pylist() == ["Семенов Петр Артемович"]
    assert names(values, yo="restore").kept.column("ФИО_чисто").to_pylist() == ["Семёнов Пётр Артёмович"]


def test_latin_lookalike_letters_and_name_parts_in_separate_columns():
    t = table(Ф=["иванoва"], И=["МАРИЯ"], О=["петровна "])  # a Latin 'o' in the surname
    res = run("name", t, columns=["Ф", "И", "О"], into={"last": "Ф", "first": "И", "middle": "О"})
    assert res.kept.select(["Ф", "И", "О"]).to_pylist() == [{"Ф": "Иванова", "И": "Мария", "О": "Петровна"}]


def test_names_do_not_depend_on_how_rows_are_batched():
    rng = random.Random(3)
    pool = ["Иванова Мария Петровна", "ИВАНОВ И.И.", "Пётр Петров", "ООО Ромашка", "нет", "Смирнова", None]
    values = [rng.choice(pool) for _ in range(300)]
    whole = names(values, on_error="null").kept.drop_columns(["_row"]).to_pylist()
    parts = []
    for lo in range(0, 300, 70):
        parts += names(values[lo:lo + 70], on_error="null", companies="reject").kept.drop_columns(["_row"]).to_pylist()
    assert [r for r in whole] == [r for r in parts]


# ---------------------------------------------------------------- INN / KPP / OGRN

def test_inn_kinds_leading_zero_and_keep_with_a_flag():
    t = table(ИНН=["7707083893", "274062111", "500100732259", "7707083894", " 77 07 083893 "])
    res = run("inn", t, columns=["ИНН"], kind="company", on_error="keep", flag="ИНН_проверка")
    assert res.kept.column("ИНН").to_pylist() == ["7707083893", "0274062111", "500100732259", "7707083894",
                                                 "7707083893"]
    assert res.kept.column("ИНН_проверка").to_pylist() == [None, "inn_zero_restored", "inn_format", "inn_checksum",
                                                         None]
    msg = run("inn", t, columns=["ИНН"], kind="company").rejects.column("message").to_pylist()
    assert msg[0] == "column «ИНН»: '500100732259' has 12 digits; an INN here has 10 (an organisation)"
    assert "ends in 3, not 4" in msg[1]


def test_ogrn_and_ogrnip_checksums_and_into_another_column():
    t = table(ОГРН=["1027700132195", "304500116000157", "1027700132196", "1,0277E+12", "102770013219"])
    res = run("ogrn", t, columns=["ОГРН"], into="ogrn_clean", on_error="null", flag="why")
    assert res.kept.column("ogrn_clean").to_pylist() == ["1027700132195", "304500116000157", None, None, None]
    assert res.kept.column("ОГРН").to_pylist() == t.column("ОГРН").to_pylist()  # the source column is untouched
    assert res.kept.column("why").to_pylist() == [None, None, "ogrn_checksum", "ogrn_excel_mangled", "ogrn_format"]


def test_kpp_zero_restored_only_when_the_inn_proves_it():
    t = table(КПП=["27401001", "27401001", "7701ab001"], ИНН=["274062111", "7707083893", "7707083893"])
    res = run("kpp", t, columns=["КПП"], inn="ИНН", on_error="null", flag="why")
    assert res.kept.column("КПП").to_pylist() == ["027401001", None, "7701AB001"]
    assert res.kept.column("why").to_pylist() == ["kpp_zero_restored", "kpp_format", None]


# ---------------------------------------------------------------- options and runtime errors

@pytest.mark.parametrize("stage_type, options, message", [
    ("phone", {"columns": ["Т"], "on_eror": "keep"}, "'on_eror' (did you mean 'on_error'?)"),
    ("phone", {"columns": ["Т"], "on_error": "skip"}, "`on_error:` must be one of reject, keep, null"),
    ("phone", {"columns": ["Т"], "region": "XX"}, "`region:`"),
    ("phone", {"columns": ["Т"], "extensions": "column"}, "needs `extensions_into"),
    ("phone", {"columns": []}, "`columns:` must be a non-empty list"),
    ("name", {"columns": ["ФИО"]}, "`into:` must map the parts"),
    ("name", {"columns": ["ФИО"], "into": {"surname": "Ф"}}, "'surname'"),
    ("name", {"columns": ["ФИО"], "into": {"company": "Орг"}}, "only filled with `companies: keep`"),
    ("name", {"columns": ["ФИО"], "into": {"last": "Ф"}, "yo": "yes"}, "`yo:` must be one of keep, e, restore"),
    ("inn", {"columns": ["ИНН", "ИНН2"]}, "exactly one column"),
    ("inn", {"columns": ["ИНН"], "kind": "legal"}, "`kind:` must be one of any, company, person"),
    ("email", {"columns": ["E"], "lower": "yes"}, "`lower:` must be true or false"),
])
def test_wrong_options_are_explained(stage_type, options, message):
    err = STAGES[stage_type].check_options(options)
    assert err is not None and message in err


def test_a_missing_column_stops_the_pipeline_with_a_clear_error():
    with pytest.raises(TerminalError, match=r"no column 'Телефон' \(columns: «Тел»\)"):
        run("phone", table(Тел=["1"]), columns=["Телефон"])


# ---------------------------------------------------------------- the sample generator's ground truth

def _read(path, name):
    from connectors.onec.flat import FlatFileSource

    src = FlatFileSource(name, base_dir=path)
    t = pa.concat_tables([b.table for b in src.read(None, 100_000)])
    return t.append_column("_row", pa.array(range(t.num_rows), pa.int64()))


def _unallocated(e164: str) -> bool:
    """930-0xx mobiles: the generator writes them, but phonenumbers' metadata has most of them unallocated."""
    return e164.startswith("+79300")


def test_contacts_of_the_sample_come_out_as_truth_json_says(sample_template):
    data = sample_template / "data"
    truth = json.loads((data / "truth.json").read_text(encoding="utf-8"))["contacts"]
    t = _read(data, "contacts.csv")
    for st, opts in (("name", {"columns": ["ФИО"], "into": {"last": "l", "first": "f", "middle": "m", "gender": "g"},
                               "gender_from": "names"}),
                     ("phone", {"columns": ["Телефон"], "into": "p", "extensions": "drop", "flag": "pf"}),
                     ("email", {"columns": ["ЭлПочта"], "into": "e", "flag": "ef"})):
        t = run(st, t, on_error="null", **opts).kept
    seen, n, names_ok, phones_ok, emails_ok = set(), 0, 0, 0, 0
    for r in t.to_pylist():
        if r["Код"] in seen or r["Код"] not in truth:
            continue
        seen.add(r["Код"])
        want = truth[r["Код"]]
        n += 1
        names_ok += (r["l"], r["f"], r["m"]) == (want["last_name"], want["first_name"], want["middle_name"])
        assert r["g"] in (None, want["gender"])
        phones = [p for p in want["phones_e164"] if not _unallocated(p)]
        phones_ok += (r["p"] or "") == ";".join(phones)
        emails_ok += (r["e"] or "") == ";".join(want["emails"])
    assert n == len(truth)
    assert names_ok / n >= 0.98 and phones_ok == n and emails_ok == n


def test_companies_of_the_sample_come_out_as_truth_json_says(sample_template):
    data = sample_template / "data"
    truth = json.loads((data / "truth.json").read_text(encoding="utf-8"))["companies"]
    t = _read(data, "companies.csv")
    t = run("inn", t, columns=["ИНН"], on_error="keep", flag="inn_flag").kept
    t = run("ogrn", t, columns=["ОГРН"], on_error="keep", flag="ogrn_flag").kept
    t = run("kpp", t, columns=["КПП"], inn="ИНН", on_error="keep", flag="kpp_flag").kept
    t = run("phone", t, columns=["Телефон", "Телефон_2"], into="p", extensions="drop", on_error="null").kept
    seen = set()
    restored = 0
    for r in t.to_pylist():
        if r["Код"] in seen:
            continue
        seen.add(r["Код"])
        want = truth[r["Код"]]
        if want["inn"] is None:
            assert r["ИНН"] is None and r["inn_flag"] is None
        elif want["inn_valid"]:
            assert r["ИНН"] == want["inn"]
            restored += r["inn_flag"] == "inn_zero_restored"
            assert r["inn_flag"] == ("inn_zero_restored" if want["inn_issue"] == "leading_zero_lost" else None)
        else:
            assert r["inn_flag"] == "inn_checksum"
        assert (r["ogrn_flag"] is None) == want["ogrn_valid"]
        assert r["КПП"] == want["kpp"] and r["kpp_flag"] is None
        assert (r["p"] or "") == ";".join(p for p in want["phones_e164"] if not _unallocated(p))
    assert len(seen) == len(truth) and restored >= 1


def test_an_inn_column_the_source_typed_as_integer_gets_its_zero_back():
    t = pa.table({"_row": pa.array([0, 1, 2], pa.int64()), "ИНН": pa.array([7707083893, 274062111, None], pa.int64()),
                  "Тел": pa.array(["8 916 123 45 67", None, "нет"], pa.large_string())})
    res = run("inn", t, columns=["ИНН"], flag="why")
    assert res.kept.column("ИНН").to_pylist() == ["7707083893", "0274062111", None]
    assert res.kept.column("why").to_pylist() == [None, "inn_zero_restored", None]
    assert run("phone", t, columns=["Тел"], on_error="null").kept.column("Тел").to_pylist() == [
        "+79161234567", None, None]
