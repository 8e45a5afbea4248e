"""The dadata_address stage on hand-typed addresses, through the fake over real HTTP: an address is paid for once
(the cache in the state store, across runs and databases), only distinct misses are sent, a per-run budget, the
per-pipeline qc policy, dry runs that spend nothing, and DaData's refusals."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.base import TerminalError
from connectors.dadata import DadataAuthError, DadataCache, normalise_one
from etl import secrets
from etl.config import ProjectConfig
from etl.console import JsonConsole
from etl.sample.address import make_address
from etl.stages import ROW, STAGES, StageContext
from etl.stages.geocode import DadataAddress
from tests.fakes import FakeDadata

ALL = ("address", "region", "city", "street", "house", "flat", "postal_code", "fias_id", "geo_lat", "geo_lon", "qc",
       "qc_geo")


@pytest.fixture
def fake():
    with FakeDadata(rps=1000) as f:
        yield f


@pytest.fixture
def engine(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    yield eng
    eng.dispose()


def settings(fake: FakeDadata, **kw) -> ProjectConfig:
    return ProjectConfig.model_validate({"dadata": {
        "api_key": fake.api_key, "secret": fake.secret, "base_url": fake.url, "requests_per_second": 1000,
        "retry_wait": 0.01, **kw}})


def make_stage(fake, engine, options=None, dry_run=False, console=None, **cfg) -> DadataAddress:
    opts = {"column": "Адрес", **(options or {})}
    assert DadataAddress.check_options(opts) is None, DadataAddress.check_options(opts)
    return STAGES["dadata_address"](opts, StageContext(pipeline="sites", state_engine=engine,
                                                      settings=settings(fake, **cfg), dry_run=dry_run,
                                                      console=console))


def batch(addresses: list) -> pa.Table:
    return pa.table({"Код": [f"ОБ-{i:04d}" for i in range(len(addresses))], "Адрес": pa.array(addresses, pa.string()),
                     ROW: pa.array(range(len(addresses)), pa.int64())})


def rows(table: pa.Table, cols=ALL, prefix="dadata_") -> list[dict]:
    return [{c: r[prefix + c] for c in cols} | {"status": r["dadata_status"]} for r in table.to_pylist()]


def generated(n: int, seed: int = 5) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    return [make_address(rng) for _ in range(n)]


# ---------------------------------------------------------------- paid for once
def test_only_distinct_addresses_are_sent_and_every_row_gets_the_answer(fake, engine):
    data = generated(40)
    raws = [r for r, _ in data]
    # the same places typed again: other case, other spacing, ё for е, a trailing comma
    retyped = [raws[0].upper(), "  " + raws[1].replace(" ", "   ") + " ,", raws[2].replace("е", "ё"), raws[3]]
    table = batch(raws + retyped + [None, ""])
    st = make_stage(fake, engine)
    res = st.process(table)
    st.close()
    distinct = {normalise_one(a) for a in raws + retyped} - {None}
    assert fake.billed == len(distinct) == fake.requests
    assert len(set(fake.sources)) == len(fake.sources)  # no address sent twice
    assert res.rejects.num_rows == 0 and res.kept.num_rows == table.num_rows
    out = rows(res.kept)
    for (raw, parts), got in zip(data, out):
        assert (got["address"], got["region"], got["city"], got["street"], got["house"], got["flat"]) == \
            (parts["address"], parts["region"], parts["city"], parts["street"], parts["house"], parts["flat"]), raw
        assert got["qc"] == 0 and got["qc_geo"] == 0 and got["status"] == "ok"
        assert isinstance(got["geo_lat"], float) and 40 < got["geo_lat"] < 70 and len(got["postal_code"]) == 6
        assert got["fias_id"]
    for i, j in ((40, 0), (41, 1), (43, 3)):
        assert out[i] == out[j]
    assert out[44]["status"] == out[45]["status"] == "empty" and out[44]["address"] is None


def test_a_second_run_sends_zero_requests(fake, engine):
    raws = [r for r, _ in generated(30, seed=9)]
    first = make_stage(fake, engine)
    a = first.process(batch(raws[:20]))
    b = first.process(batch(raws[10:]))  # the second batch repeats ten of the first: those come from the cache
    first.close()
    assert fake.billed == 30 and first.stats["cached"] == 10
    sent = fake.requests
    again = make_stage(fake, engine)  # a new run: a new stage, the same state store
    a2 = again.process(batch(raws[:20]))
    b2 = again.process(batch(raws[10:]))
    again.close()
    assert fake.requests == sent  # zero requests
    assert again.stats["cached"] == again.stats["distinct"] == 40 and again.stats["sent"] == 0
    assert rows(a2.kept) == rows(a.kept) and rows(b2.kept) == rows(b.kept)
    assert DadataCache(engine).count() == 30


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_the_cache_works_in_a_postgres_or_mariadb_state_store(fake, backend, request):
    url = request.getfixturevalue("pg_url" if backend == "postgres" else "maria_url")
    eng = sa.create_engine(url)
    raws = [r for r, _ in generated(12, seed=21)] + ["г Москва, ул Ленина, д 1, " + "кв 1 " * 80]  # a long one
    st = make_stage(fake, eng)
    first = st.process(batch(raws))
    st.close()
    assert fake.billed == 13
    st = make_stage(fake, eng)
    second = st.process(batch(raws))
    st.close()
    assert fake.requests == 13 and rows(second.kept) == rows(first.kept)
    # a second writer storing the same answers (two processes racing) is not an error
    cache = DadataCache(eng)
    got = cache.get_many([normalise_one(raws[0])])
    assert cache.put_many(got) == 1 and cache.count() == 13
    eng.dispose()


# ---------------------------------------------------------------- the budget
def test_the_budget_stops_paying_and_keeps_the_rest_uncleaned(fake, engine):
    raws = [r for r, _ in generated(12, seed=3)]
    st = make_stage(fake, engine, {"budget": 5})
    res = st.process(batch(raws[:8]))
    res2 = st.process(batch(raws[8:]))
    st.close()
    assert fake.billed == 5
    statuses = [r["status"] for r in rows(res.kept) + rows(res2.kept)]
    assert statuses == ["ok"] * 5 + ["not_cleaned"] * 7
    assert all(r["address"] is None for r in rows(res.kept)[5:])
    assert res.rejects.num_rows == 0 and st.stats["over_budget"] == 7
    # the next run's budget goes to the ones not cleaned yet: nothing is paid for twice
    st = make_stage(fake, engine, {"budget": 5})
    st.process(batch(raws))
    st.close()
    assert fake.billed == 10 and len(set(fake.sources)) == 10


def test_over_the_budget_rows_can_be_rejected_instead(fake, engine):
    raws = [r for r, _ in generated(6, seed=4)]
    st = make_stage(fake, engine, {"budget": 2, "on_budget": "reject"})
    res = st.process(batch(raws + raws[4:]))  # the last two addresses twice
    st.close()
    assert fake.billed == 2 and res.kept.num_rows == 2
    rej = res.rejects.to_pylist()
    assert [r["reason"] for r in rej] == ["dadata_budget"] * 6
    assert {r[ROW] for r in rej} == {2, 3, 4, 5, 6, 7}
    assert "budget (2 paid requests) is spent" in rej[0]["message"] and rej[0]["field"] == "Адрес"
    assert rej[0]["value"] == raws[2]


def test_the_projects_max_requests_per_run_caps_every_stage(fake, engine):
    raws = [r for r, _ in generated(10, seed=8)]
    st = make_stage(fake, engine, {"budget": 100}, max_requests_per_run=3)
    st.process(batch(raws))
    st.close()
    assert st.budget == 3 and fake.billed == 3


def test_a_zero_budget_uses_the_cache_only(fake, engine):
    raws = [r for r, _ in generated(4, seed=1)]
    st = make_stage(fake, engine)
    st.process(batch(raws[:2]))
    st.close()
    st = make_stage(fake, engine, {"budget": 0})
    res = st.process(batch(raws))
    st.close()
    assert fake.billed == 2 and [r["status"] for r in rows(res.kept)] == ["ok", "ok", "not_cleaned", "not_cleaned"]


# ---------------------------------------------------------------- the qc policy
def test_the_qc_policy_accepts_reviews_and_rejects_with_reasons(fake, engine):
    fake.set_quality("Лесная", qc=1)  # DaData was not sure about these
    good = "Пермь, ул Мира, д 5"
    addresses = [good, "Москва", "Ленина 5", "н/д", "адрес уточнить", "Тюмень, Лесная 3"]
    st = make_stage(fake, engine, {"qc_policy": {"accept": [0], "review": [1, 3], "reject": [2]}})
    res = st.process(batch(addresses))
    st.close()
    kept = {r["Адрес"]: r for r in res.kept.to_pylist()}
    assert set(kept) == {good, "Москва", "Ленина 5", "Тюмень, Лесная 3"}
    assert [kept[a]["dadata_status"] for a in (good, "Москва", "Ленина 5", "Тюмень, Лесная 3")] == \
        ["ok", "review", "review", "review"]
    assert [kept[a]["dadata_qc"] for a in (good, "Москва", "Ленина 5", "Тюмень, Лесная 3")] == [0, 1, 3, 1]
    assert kept["Тюмень, Лесная 3"]["dadata_address"] == "Тюменская обл, г Тюмень, ул Лесная, д 3"  # still written
    rej = res.rejects.to_pylist()
    assert [(r["reason"], r["value"]) for r in rej] == [("dadata_qc", "н/д"), ("dadata_qc", "адрес уточнить")]
    assert "qc=2 (empty or garbage)" in rej[0]["message"] and rej[0]["field"] == "Адрес"
    assert fake.billed == 6  # garbage is paid for too: it is cached like any answer


def test_a_stricter_policy_and_a_geo_policy(fake, engine):
    addresses = ["Пермь, ул Мира, д 5", "Москва", "Ленина 5", "Казань, Садовая"]
    st = make_stage(fake, engine, {"qc_policy": {"accept": [0, 1], "reject": [2, 3]},
                                   "qc_geo_policy": {"accept": [0, 1], "review": [2, 3], "reject": [4, 5]}})
    res = st.process(batch(addresses))
    st.close()
    assert [r["Адрес"] for r in res.kept.to_pylist()] == ["Пермь, ул Мира, д 5", "Казань, Садовая"]
    assert [r["dadata_status"] for r in res.kept.to_pylist()] == ["ok", "review"]  # qc_geo 2: street only
    rej = {r["value"]: r for r in res.rejects.to_pylist()}
    assert rej["Москва"]["reason"] == "dadata_qc_geo" and "qc_geo=4 (city)" in rej["Москва"]["message"]
    assert rej["Ленина 5"]["reason"] == "dadata_qc" and "qc=3 (alternatives)" in rej["Ленина 5"]["message"]


def test_a_code_no_list_names_is_reviewed_and_string_codes_are_read(engine):
    with FakeDadata(rps=1000, string_codes=True) as fake:
        st = make_stage(fake, engine, {"qc_policy": {"accept": [0], "reject": [2]}})
        res = st.process(batch(["Пермь, ул Мира, д 5", "Москва"]))
        st.close()
    out = rows(res.kept)
    assert [(r["qc"], r["qc_geo"], r["status"]) for r in out] == [(0, 0, "ok"), (1, 4, "review")]


def test_empty_addresses_are_never_sent_and_may_be_rejected(fake, engine):
    st = make_stage(fake, engine, {"on_empty": "reject"})
    res = st.process(batch(["", None, "  ", "Уфа, Ленина 1"]))
    st.close()
    assert fake.requests == 1 and res.kept.num_rows == 1
    assert [r["reason"] for r in res.rejects.to_pylist()] == ["dadata_empty"] * 3


def test_the_columns_the_options_name(fake, engine):
    into = {"address": "Адрес_Стандарт", "house": "Дом", "geo_lat": "Широта", "timezone": "Часовой_пояс",
            "qc_complete": "qc_complete"}
    st = make_stage(fake, engine, {"into": into, "status_column": "Проверка"})
    res = st.process(batch(["Новосибирск, пр-т Мира 12"]))
    st.close()
    r = res.kept.to_pylist()[0]
    assert set(r) == {"Код", "Адрес", ROW, *into.values(), "Проверка"}
    assert (r["Адрес_Стандарт"], r["Дом"], r["Часовой_пояс"], r["qc_complete"], r["Проверка"]) == \
        ("Новосибирская обл, г Новосибирск, пр-кт Мира, д 12", "12", "UTC+7", 5, "ok")
    assert isinstance(r["Широта"], float)


# ---------------------------------------------------------------- dry runs
def test_a_dry_run_spends_nothing_and_says_what_a_run_would_send(fake, tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    raws = [r for r, _ in generated(8, seed=12)]
    out = io.StringIO()
    st = make_stage(fake, eng, {"budget": 5}, dry_run=True, console=JsonConsole(out))
    res = st.process(batch(raws))
    st.close()
    assert fake.requests == 0
    assert not sa.inspect(eng).has_table("etl_dadata_cache")  # a dry run writes nothing, not even the table
    assert [r["status"] for r in rows(res.kept)] == ["not_cleaned"] * 8
    info = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "dry run: would send 5 request(s) (budget 5), 3 over the budget" in info[-1]["message"]
    # with answers in the cache a dry run uses them
    real = make_stage(fake, eng)
    real.process(batch(raws[:3]))
    real.close()
    st = make_stage(fake, eng, dry_run=True, console=JsonConsole(out))
    res = st.process(batch(raws))
    st.close()
    assert fake.requests == 3
    assert [r["status"] for r in rows(res.kept)] == ["ok"] * 3 + ["not_cleaned"] * 5
    assert "would send 5 request(s)" in json.loads(out.getvalue().splitlines()[-1])["message"]
    eng.dispose()


# ---------------------------------------------------------------- DaData's refusals
def test_answers_paid_before_dadata_stopped_the_run_are_kept(engine):
    with FakeDadata(rps=1000, balance=4) as fake:
        raws = [r for r, _ in generated(10, seed=14)]
        st = make_stage(fake, engine, workers=1)
        with pytest.raises(DadataAuthError, match="balance is empty"):
            st.process(batch(raws))
        st.close()
        assert DadataCache(engine).count() == 4
        fake.balance = None  # topped up
        st = make_stage(fake, engine, workers=1)
        res = st.process(batch(raws))
        st.close()
        assert fake.billed == 10 and len(set(fake.sources)) == 10
        assert [r["status"] for r in rows(res.kept)] == ["ok"] * 10


def test_server_errors_are_retried_inside_the_stage(fake, engine):
    fake.fail_next(503, times=2)
    fake.fail_next(429, retry_after="0")
    st = make_stage(fake, engine, workers=1)
    res = st.process(batch(["Самара, Мира 1", "Самара, Мира 2"]))
    st.close()
    assert [r["status"] for r in rows(res.kept)] == ["ok", "ok"] and fake.billed == 2


def test_an_address_too_long_for_dadata_is_rejected_alone(fake, engine):
    long = "Москва, Ленина 1, " + "пояснение " * 120
    st = make_stage(fake, engine)
    res = st.process(batch(["Москва, Ленина 2", long]))
    st.close()
    assert res.kept.num_rows == 1
    (r,) = res.rejects.to_pylist()
    assert r["reason"] == "dadata_too_long" and "413" in r["message"]


def test_without_a_key_the_stage_says_where_to_put_it(engine):
    st = DadataAddress({"column": "Адрес"}, StageContext(pipeline="sites", state_engine=engine,
                                                          settings=ProjectConfig()))
    with pytest.raises(TerminalError, match=r"needs DaData's API key.*dadata:"):
        st.process(batch(["Москва, Ленина 1"]))


def test_the_key_and_secret_are_registered_as_secrets(fake, engine):
    st = make_stage(fake, engine)
    st.process(batch(["Пермь, Мира 1"]))
    st.close()
    text = f"key {fake.api_key} secret {fake.secret}"
    assert secrets.mask(text) == "key *** secret ***"


def test_a_missing_column_is_a_clear_error(fake, engine):
    st = make_stage(fake, engine, {"column": "Адрес_доставки"})
    with pytest.raises(TerminalError, match="column «Адрес_доставки», which the source does not have"):
        st.process(batch(["Пермь, Мира 1"]))


@pytest.mark.parametrize("options, message", [
    ({}, "`column:`"),
    ({"column": "А", "qc_policy": {"accept": [0], "review": [0]}}, "code 0 is under both accept and review"),
    ({"column": "А", "qc_policy": {"accept": [7]}}, "7 is not a DaData code (0..3)"),
    ({"column": "А", "qc_geo_policy": {"acept": [0]}}, "unknown key(s) acept"),
    ({"column": "А", "into": {"adress": "x"}}, "did you mean 'address'"),
    ({"column": "А", "into": {"address": "x", "city": "x"}}, "same column"),
    ({"column": "А", "budget": -1}, "`budget:`"),
    ({"column": "А", "on_budget": "skip"}, "keep or reject"),
    ({"column": "А", "bugdet": 5}, "did you mean 'budget'"),
])
def test_bad_options_are_explained(options, message):
    err = DadataAddress.check_options(options)
    assert err is not None and message in err
