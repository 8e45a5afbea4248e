"""The sandbox keeps its portal in a database through SQLAlchemy: a SQLite file survives a restart, and the same
portal runs on MariaDB (as a self-hosted Bitrix24 runs on MySQL)."""

from __future__ import annotations

import threading

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox


def call(http, method, **params):
    r = http.post(method, json=params)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def build_portal(http) -> dict:
    """A bit of everything: a user field (ALTER TABLE), a pipeline, a smart process (CREATE TABLE), a list."""
    call(http, "crm.contact.userfield.add", fields={"FIELD_NAME": "INN", "USER_TYPE_ID": "string"})
    call(http, "crm.company.userfield.add", fields={"FIELD_NAME": "RATING", "USER_TYPE_ID": "integer"})
    co = call(http, "crm.company.add", fields={"TITLE": "ООО «Север»", "UF_CRM_RATING": 5, "ORIGINATOR_ID": "1c",
                                              "ORIGIN_ID": "F-1"})
    ct = call(http, "crm.contact.add", fields={"NAME": "Ёлкин", "UF_CRM_INN": "7700000001", "COMPANY_ID": co,
                                              "PHONE": [{"VALUE": "+79990001122"}]})
    cat = call(http, "crm.category.add", entityTypeId=2, fields={"name": "Сервис"})["category"]["id"]
    deal = call(http, "crm.deal.add", fields={"TITLE": "Ремонт", "CATEGORY_ID": cat, "CONTACT_ID": ct,
                                             "OPPORTUNITY": "15000.50"})
    spa = call(http, "crm.type.add", fields={"title": "Объекты", "isStagesEnabled": "Y"})["type"]["entityTypeId"]
    item = call(http, "crm.item.add", entityTypeId=spa, fields={"title": "Дом", "originId": "S-1",
                                                                "originatorId": "1c"})["item"]["id"]
    ib = call(http, "lists.add", IBLOCK_TYPE_ID="lists", IBLOCK_CODE="tickets", FIELDS={"NAME": "Заявки"})
    prop = call(http, "lists.field.add", IBLOCK_TYPE_ID="lists", IBLOCK_ID=ib, FIELDS={"NAME": "Текст", "TYPE": "S"})
    el = call(http, "lists.element.add", IBLOCK_TYPE_ID="lists", IBLOCK_ID=ib, ELEMENT_CODE="T-1",
              FIELDS={"NAME": "Течёт кран", prop: "Срочно"})
    return {"co": co, "ct": ct, "cat": cat, "deal": deal, "spa": spa, "item": item, "ib": ib, "prop": prop, "el": el}


def check_portal(http, ids: dict) -> None:
    c = call(http, "crm.contact.get", id=ids["ct"])
    assert c["NAME"] == "Ёлкин" and c["UF_CRM_INN"] == "7700000001" and c["COMPANY_ID"] == str(ids["co"])
    assert c["PHONE"][0]["VALUE"] == "+79990001122"
    assert call(http, "crm.company.list", filter={"ORIGIN_ID": "F-1"}, select=["ID", "UF_*"]) == [
        {"ID": str(ids["co"]), "UF_CRM_RATING": "5"}]
    d = call(http, "crm.deal.get", id=ids["deal"])
    assert d["STAGE_ID"] == f"C{ids['cat']}:NEW" and d["OPPORTUNITY"] == "15000.50" and d["CONTACT_ID"] == str(ids["ct"])
    got = call(http, "crm.item.list", entityTypeId=ids["spa"], filter={"originId": "S-1"}, select=["id", "title"])
    assert got["items"] == [{"id": ids["item"], "title": "Дом", "entityTypeId": ids["spa"]}]
    el = call(http, "lists.element.get", IBLOCK_TYPE_ID="lists", IBLOCK_CODE="tickets", ELEMENT_CODE="T-1")
    assert el[0]["NAME"] == "Течёт кран" and list(el[0][ids["prop"]].values()) == ["Срочно"]
    r = http.post("lists.element.add", json={"IBLOCK_TYPE_ID": "lists", "IBLOCK_ID": ids["ib"], "ELEMENT_CODE": "T-1",
                                             "FIELDS": {"NAME": "dup"}})
    assert r.json()["error"] == "ERROR_ELEMENT_ALREADY_EXISTS"


def run_twice(url: str) -> None:
    with start_sandbox(url, limits="off", webhook_token="persist-token") as sb, \
            httpx.Client(base_url=sb.url, timeout=20) as http:
        ids = build_portal(http)
        check_portal(http, ids)
    with start_sandbox(url, limits="off", webhook_token="persist-token") as sb, \
            httpx.Client(base_url=sb.url, timeout=20) as http:
        check_portal(http, ids)  # everything is still there after a restart
        # and the schema built by the first run is used by the second (new ids follow on)
        assert call(http, "crm.contact.add", fields={"NAME": "next", "UF_CRM_INN": "1"}) == ids["ct"] + 1
        assert call(http, "user.get")[0]["ID"] == "1"  # seeded once


def test_a_sqlite_file_portal_survives_a_restart(tmp_path):
    run_twice(f"sqlite:///{tmp_path / 'portal.db'}")


@pytest.mark.mariadb
def test_the_portal_runs_on_mariadb(maria_url):
    run_twice(maria_url)


def load_in_parallel(url: str | None) -> None:
    """Four clients with batches in flight at once: every command lands once, with its own id."""
    with start_sandbox(url, limits="off") as sb:
        errors = []

        def worker(n: int) -> None:
            try:
                with httpx.Client(base_url=sb.url, timeout=30) as http:
                    for b in range(5):
                        cmd = {f"c{i}": f"crm.contact.add?fields[NAME]=W&fields[ORIGIN_ID]=w{n}-{b}-{i}"
                                        f"&fields[PHONE][0][VALUE]=%2B7{n}{b}{i:03d}" for i in range(50)}
                        r = call(http, "batch", cmd=cmd)
                        assert r["result_error"] == [] and len(r["result"]) == 50
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with httpx.Client(base_url=sb.url, timeout=30) as http:
            keys, last = [], 0
            while True:
                rows = call(http, "crm.contact.list", filter={">ID": last}, order={"ID": "ASC"},
                            select=["ID", "ORIGIN_ID", "PHONE"], start=-1)
                keys += [r["ORIGIN_ID"] for r in rows]
                assert all(len(r["PHONE"]) == 1 for r in rows)
                if len(rows) < 50:
                    break
                last = int(rows[-1]["ID"])
        assert len(keys) == 1000 and len(set(keys)) == 1000


def test_parallel_batches_on_sqlite(tmp_path):
    load_in_parallel(f"sqlite:///{tmp_path / 'portal.db'}")


@pytest.mark.mariadb
def test_parallel_batches_on_mariadb(maria_url):
    load_in_parallel(maria_url)
