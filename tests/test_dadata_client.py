"""DaData's clean API through the `dadata` package, over real HTTP to the local fake: the request and answer format,
a configurable base URL, keep-alive and the rate limit, retries of what is retryable only, and messages a person
can act on (with the key never shown)."""

from __future__ import annotations

import random
import threading

import dadata.sync
import httpx
import pytest

from connectors.base import TerminalError
from connectors.dadata import (CLOUD_URL, DadataAuthError, DadataClient, DadataRecordError, DadataTransientError,
                               Throttle, WindowLimit, as_float, as_int, normalise_base_url, normalise_one)
from etl.sample.address import make_address
from tests.fakes import FakeDadata


@pytest.fixture
def fake():
    with FakeDadata() as f:
        yield f


def client(fake: FakeDadata, **kw) -> DadataClient:
    kw.setdefault("retry_wait", 0.01)
    return DadataClient(kw.pop("api_key", fake.api_key), kw.pop("secret", fake.secret),
                        base_url=kw.pop("base_url", fake.url), **kw)


# ---------------------------------------------------------------- the fake speaks DaData's protocol
def test_the_fake_answers_an_array_of_one_object_as_dadata_does(fake):
    r = httpx.post(fake.url + "clean/address", json=["мск, ул. Садовая д.5 кв 12"],
                   headers={"Authorization": f"Token {fake.api_key}", "X-Secret": fake.secret})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    a = body[0]
    assert a["source"] == "мск, ул. Садовая д.5 кв 12"
    assert a["result"] == "г Москва, ул Садовая, д 5, кв 12"
    assert (a["region_with_type"], a["city"], a["street_with_type"], a["house"], a["flat"]) == \
        ("г Москва", "Москва", "ул Садовая", "5", "12")
    assert isinstance(a["geo_lat"], str) and isinstance(a["geo_lon"], str)  # strings, as DaData sends them
    assert isinstance(a["qc"], int) and isinstance(a["qc_geo"], int) and (a["qc"], a["qc_geo"]) == (0, 0)
    assert len(a["postal_code"]) == 6 and a["fias_id"] and a["fias_level"] == "8"
    assert fake.billed == 1


def test_the_fake_refuses_what_dadata_refuses(fake):
    url = fake.url + "clean/address"
    auth = {"Authorization": f"Token {fake.api_key}", "X-Secret": fake.secret}
    assert httpx.get(url, headers=auth).status_code == 405
    assert httpx.post(url, content=b"{not json", headers=auth).status_code == 400
    assert httpx.post(url, json={"query": "x"}, headers=auth).status_code == 400
    assert httpx.post(url, json=["a", "b"], headers=auth).status_code == 400  # one record per request
    no_secret = httpx.post(url, json=["Москва"], headers={"Authorization": f"Token {fake.api_key}"})
    assert no_secret.status_code == 401 and no_secret.json()["status"] == 401
    wrong = httpx.post(url, json=["Москва"], headers={**auth, "Authorization": "Token nope"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "Forbidden"
    assert httpx.post(fake.url + "clean/adress", json=["x"], headers=auth).status_code == 404
    assert httpx.post(url, json=["д" * 1001], headers=auth).status_code == 413
    assert fake.billed == 0


def test_the_fake_reads_generated_hand_typed_addresses_like_a_standardiser():
    from tests.fakes import standardise

    rng = random.Random(11)
    for _ in range(2000):
        raw, parts = make_address(rng)
        a = standardise(raw)
        assert (a["region_with_type"], a["city"], a["street_with_type"], a["house"], a["flat"], a["result"]) == \
            (parts["region"], parts["city"], parts["street"], parts["house"], parts["flat"], parts["address"]), raw
        assert a["qc"] == 0
    for garbage in ("", "   ", "н/д", "-", "адрес уточнить у клиента", "12345"):
        a = standardise(garbage)
        assert (a["qc"], a["qc_geo"], a["result"], a["geo_lat"]) == (2, 5, None, None), garbage
    assert standardise("Ленина 5")["qc"] == 3  # a street of every city: alternatives
    assert standardise("Москва")["qc"] == 1  # too little data
    assert standardise("Москва, Ленина 5, 2 подъезд, у шлагбаума")["qc"] == 1  # leftovers


# ---------------------------------------------------------------- the client
def test_the_package_cleans_through_a_configurable_base_url(fake):
    with FakeDadata(prefix="/self-hosted/dadata") as other:
        a = client(fake)
        b = client(other, base_url=other.url.rstrip("/"))  # host AND path; the trailing slash is added
        assert b.base_url.endswith("/self-hosted/dadata/api/v1/")
        assert a.clean_address("Пермь, Мира 3")["result"] == "Пермский край, г Пермь, пр-кт Мира, д 3"
        assert b.clean_address("Уфа Ленина 7-12")["result"] == "Респ Башкортостан, г Уфа, ул Ленина, д 7, кв 12"
        assert (fake.billed, other.billed) == (1, 1)
        a.close()
        b.close()
    # nothing global was patched: the package still points at DaData's cloud, which is our default
    assert dadata.sync.CleanClient.BASE_URL == CLOUD_URL == normalise_base_url(None)
    with pytest.raises(TerminalError, match="http:// or https://"):
        normalise_base_url("127.0.0.1:8080/api/v1")


def test_requests_reuse_kept_alive_connections_and_stay_under_20_per_second(fake):
    c = client(fake, workers=4)  # DaData's limits are the defaults: 20 req/s, 60 new connections/min
    rng = random.Random(3)
    sources = list(dict.fromkeys(make_address(rng)[0] for _ in range(45)))
    out = c.clean_addresses(sources)
    c.close()
    assert out.error is None and len(out.results) == len(sources)
    assert fake.statuses[429] == 0  # the fake answers 429 above 20 req/s: never hit
    assert fake.billed == len(sources)
    assert fake.connections <= 4 and c.stats["connections"] == fake.connections  # keep-alive: one per worker
    assert c.throttle.waited > 0  # the throttle did the spacing


def test_429_and_5xx_and_timeouts_are_retried_until_they_pass(fake):
    c = client(fake, timeout=0.5, workers=1)
    fake.fail_next(429, times=2, retry_after="0")
    fake.fail_next(503)
    fake.fail_next(502)  # nginx's HTML page, not JSON
    assert c.clean_address("Казань, Советская 12")["house"] == "12"
    assert c.stats["retries"] == 4 and fake.billed == 1
    fake.delay_next(1.5)  # longer than the timeout: the client gives up on it and asks again
    assert c.clean_address("Тюмень Садовая 1")["city"] == "Тюмень"
    assert c.stats["retries"] == 5
    # DaData may bill the request that timed out: the fake does; the client paid for one answer it got
    assert fake.billed == 3 and c.stats["paid"] == 2
    c.close()


def test_a_lasting_server_error_gives_up_after_the_configured_retries(fake):
    c = client(fake, retries=2)
    fake.fail_next(500, times=10)
    with pytest.raises(DadataTransientError, match=r"server error 500.*gave up after 3 attempts"):
        c.clean_address("Самара Мира 5")
    assert fake.requests == 3
    c.close()


def test_the_rate_limit_of_the_server_is_retried_when_the_client_is_set_too_fast():
    with FakeDadata(rps=5) as fake:
        c = client(fake, requests_per_second=1000, workers=1, retries=8, retry_wait=0.05)
        out = c.clean_addresses([f"Москва, Ленина {i}" for i in range(1, 11)])
        c.close()
    assert out.error is None and len(out.results) == 10
    assert fake.statuses[429] > 0 and c.stats["retries"] == fake.statuses[429]
    assert fake.billed == 10


def test_401_says_key_and_secret_are_needed_and_is_not_retried(fake):
    c = client(fake, secret=None)
    with pytest.raises(DadataAuthError) as e:
        c.clean_address("Москва, Ленина 1")
    msg = str(e.value)
    assert "401" in msg and "dadata.api_key" in msg and "dadata.secret" in msg
    assert fake.api_key not in msg
    assert fake.requests == 1  # not retried
    c.close()


def test_403_names_the_likely_causes_and_never_shows_the_key(fake):
    c = client(fake, api_key="a-wrong-but-long-key-123456")
    with pytest.raises(DadataAuthError, match="403.*key or the secret is wrong") as e:
        c.clean_address("Москва, Ленина 1")
    assert "a-wrong-but-long-key-123456" not in str(e.value)
    c.close()
    assert fake.requests == 1

    fake.balance = 1  # one record left on the balance
    c = client(fake)
    assert c.clean_address("Москва, Ленина 2")["house"] == "2"
    with pytest.raises(DadataAuthError) as e:
        c.clean_address("Москва, Ленина 3")
    msg = str(e.value)
    assert "balance is empty" in msg and "Feature 'CLEAN' disabled for token ***" in msg
    assert fake.api_key not in msg and fake.secret not in msg
    c.close()


def test_404_and_405_point_at_the_base_url(fake):
    c = client(fake, base_url=fake.url.replace("/api/v1/", "/api/v2/"))
    with pytest.raises(TerminalError, match="404.*check dadata.base_url"):
        c.clean_address("Москва")
    assert fake.requests == 1
    c.close()


def test_a_record_dadata_finds_too_long_is_refused_alone(fake):
    c = client(fake)
    long = "Москва, Ленина 1, " + "очень длинное примечание " * 60
    with pytest.raises(DadataRecordError) as e:
        c.clean_address(long)
    assert e.value.reason == "dadata_too_long" and fake.requests == 1
    out = c.clean_addresses(["Москва, Ленина 1", long, "Пермь Мира 1"])
    assert set(out.results) == {"Москва, Ленина 1", "Пермь Мира 1"} and set(out.failed) == {long}
    assert out.error is None
    c.close()


def test_a_terminal_error_stops_the_rest_and_keeps_what_was_got(fake):
    fake.balance = 3
    c = client(fake, workers=1)
    sources = [f"Челябинск, Кирова {i}" for i in range(1, 11)]
    out = c.clean_addresses(sources)
    c.close()
    assert isinstance(out.error, DadataAuthError)
    assert len(out.results) == 3 and fake.billed == 3
    assert len(out.not_sent) == 7  # the one refused and the six never sent
    assert fake.requests == 4


def test_concurrent_workers_share_one_limit(fake):
    c = client(fake, workers=4, requests_per_second=40)
    threads = [threading.Thread(target=c.clean_addresses, args=([f"Уфа, Мира {i}-{j}" for j in range(1, 6)],))
               for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.close()
    assert fake.billed == 20 and fake.statuses[429] == 0


# ---------------------------------------------------------------- small parts
def test_throttle_spaces_calls_evenly():
    now = [0.0]
    slept = []

    def sleep(d):
        slept.append(d)
        now[0] += d

    t = Throttle(20, clock=lambda: now[0], sleep=sleep)
    for _ in range(21):
        t.acquire()
    assert now[0] == pytest.approx(1.0)  # 21 calls: the 21st one second after the first
    assert all(d == pytest.approx(0.05) for d in slept)


def test_new_connections_are_held_back_past_60_a_minute():
    now = [0.0]

    def sleep(d):
        now[0] += d

    w = WindowLimit(60, 60.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(60):
        w.acquire()
    assert now[0] == 0.0
    w.acquire()  # the 61st waits until the first leaves the window
    assert now[0] == pytest.approx(60.0)


def test_qc_codes_and_coordinates_are_read_as_sent():
    assert [as_int(v) for v in (0, "0", " 3 ", None, "", "x")] == [0, 0, 3, None, None, None]
    assert as_float("55.8782557") == pytest.approx(55.8782557) and as_float(None) is None and as_float("") is None


def test_cache_keys_ignore_case_spacing_and_yo():
    assert normalise_one("  Мск ,Зелёная  5\u00a0кв 3. ") == normalise_one("мск, зеленая 5 кв 3") == \
        "мск, зеленая 5 кв 3"
    assert normalise_one(" , ") is None and normalise_one(None) is None
