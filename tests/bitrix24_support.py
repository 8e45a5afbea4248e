"""Shared by the tests/test_bitrix24_*.py files: a sample project switched to a Bitrix24 target (the sandbox),
and readers of what the portal holds, through its own REST API."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import yaml

from connectors.bitrix24.client import Bitrix24Client

ENV = "ETL_B24_WEBHOOK"
PIPELINES = ["companies", "contacts", "deals", "sites", "tickets"]

DEAL_STAGES = {
    "Продажа автомобилей": {"Новая": "NEW", "Первичный контакт": "NEW", "Тест-драйв": "PREPARATION",
                            "Подбор автомобиля": "PREPARATION", "Оформление договора": "PREPAYMENT_INVOICE",
                            "Ожидание оплаты": "EXECUTING", "Автомобиль выдан": "WON", "Сделка провалена": "LOSE"},
    "Сервис": {"Запись на сервис": "NEW", "Приёмка": "PREPARATION", "Диагностика": "PREPARATION",
               "Согласование работ": "PREPAYMENT_INVOICE", "В ремонте": "EXECUTING",
               "Автомобиль выдан клиенту": "WON", "Отказ от ремонта": "LOSE"},
    "Запчасти": {"Новый заказ": "NEW", "Подбор запчастей": "PREPARATION", "Ожидание поставки": "EXECUTING",
                 "Счёт выставлен": "FINAL_INVOICE", "Отгружен": "WON", "Отменён": "LOSE"},
}
TICKET_STAGES = {"Новая": "NEW", "В работе": "PREPARATION", "Выполнена": "SUCCESS", "Закрыта": "SUCCESS",
                 "Отменена": "FAIL"}


def use_bitrix24(project: Path, *, limits: str | dict = "off", store_as: str = "smart_process",
                 max_in_flight: int | None = None, timeout: float | None = None) -> None:
    """Point the sample project at a `type: bitrix24` target whose webhook URL comes from $ETL_B24_WEBHOOK, and
    give each pipeline its target_options."""
    cfg = yaml.safe_load((project / "pipelines.yaml").read_text(encoding="utf-8"))
    target = {"type": "bitrix24", "webhook": "${%s}" % ENV, "limits": limits}
    if max_in_flight:
        target["max_in_flight"] = max_in_flight
    if timeout:
        target["timeout"] = timeout
    cfg["targets"]["crm"] = target
    cfg["target"] = "crm"
    (project / "pipelines.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False),
                                            encoding="utf-8")
    if store_as == "list":
        sites = {"store_as": "list", "list": {"iblock_code": "sites", "name": "Объекты"}}
        tickets = {"store_as": "list", "list": {"iblock_code": "tickets", "name": "Заявки"}}
    else:
        sites = {"smart_process": {"title": "Объекты"}}
        tickets = {"smart_process": {"title": "Заявки"}, "stages": TICKET_STAGES}
    options = {
        "companies": {"fields": {"inn": "UF_CRM_INN", "kpp": "UF_CRM_KPP", "ogrn": "UF_CRM_OGRN"}},
        "contacts": {},
        "deals": {"stages": DEAL_STAGES},
        "sites": sites,
        "tickets": tickets,
    }
    for name, opts in options.items():
        p = project / "pipelines" / f"{name}.yaml"
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
        d["target_options"] = opts
        p.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False), encoding="utf-8")


def truth(project: Path) -> dict:
    return json.loads((project / "data" / "truth.json").read_text(encoding="utf-8"))


def add_managers(sb, project: Path) -> dict[str, int]:
    """The sample's managers as portal users (placeholders from the generated truth.json): fio -> user id."""
    out = {}
    for m in truth(project)["managers"]:
        out[m["fio"]] = sb.add_user(m["first_name"], m["last_name"], m["email"])
    return out


def crosswalk(project: Path, pipeline: str) -> dict[str, str]:
    db = sqlite3.connect(project / ".etl" / "state.db")
    try:
        return dict(db.execute("SELECT source_id, target_id FROM etl_crosswalk WHERE pipeline=?", (pipeline,)))
    finally:
        db.close()


def dead_letters(project: Path, pipeline: str) -> Counter:
    db = sqlite3.connect(project / ".etl" / "state.db")
    try:
        return Counter(db.execute("SELECT source_id, reason FROM etl_dead_letters WHERE pipeline=? AND "
                                  "status='open'", (pipeline,)).fetchall())
    finally:
        db.close()


def portal(sb) -> Bitrix24Client:
    return Bitrix24Client(sb.url, limits="off")


def type_ids(c: Bitrix24Client) -> dict[str, int]:
    types = c.call("crm.type.list", {}).result["types"]
    return {t["title"]: int(t["entityTypeId"]) for t in types}


def records(c: Bitrix24Client, pipeline: str, store_as: str = "smart_process") -> list[dict]:
    """Every record of the pipeline's kind the portal holds, as {key, id, links...} (keys: ORIGIN_ID)."""
    legacy = {"companies": "crm.company.list", "contacts": "crm.contact.list", "deals": "crm.deal.list"}
    out = []
    if pipeline in legacy:
        sel = {"companies": ["ORIGIN_ID", "ORIGINATOR_ID", "TITLE", "ASSIGNED_BY_ID", "PHONE", "EMAIL", "COMMENTS",
                             "UF_CRM_INN", "DATE_CREATE"],
               "contacts": ["ORIGIN_ID", "ORIGINATOR_ID", "COMPANY_ID", "PHONE", "EMAIL"],
               "deals": ["ORIGIN_ID", "ORIGINATOR_ID", "CONTACT_ID", "COMPANY_ID", "CATEGORY_ID", "STAGE_ID"]}[pipeline]
        for r in c.list_all(legacy[pipeline], {"select": sel}):
            out.append({"key": r.get("ORIGIN_ID"), "origin": r.get("ORIGINATOR_ID"), "id": str(r["ID"]),
                        "company": _id(r.get("COMPANY_ID")), "contact": _id(r.get("CONTACT_ID")), "raw": r})
        return out
    title = {"sites": "Объекты", "tickets": "Заявки"}[pipeline]
    if store_as == "list":
        code = pipeline
        for r in c.list_pages("lists.element.get", {"IBLOCK_TYPE_ID": "lists", "IBLOCK_CODE": code}):
            out.append({"key": r.get("CODE"), "origin": None, "id": str(r["ID"]), "raw": r})
        return out
    tids = type_ids(c)
    etid = tids[title]
    site_etid = tids.get("Объекты")
    for r in c.list_all("crm.item.list", {"entityTypeId": etid, "select": ["*"]}):
        out.append({"key": r.get("originId"), "origin": r.get("originatorId"), "id": str(r["id"]),
                    "company": _id(r.get("companyId")), "contact": _id(r.get("contactId")),
                    "site": _id(r.get(f"parentId{site_etid}")), "raw": r})
    return out


def _id(v) -> str | None:
    try:
        return str(int(v)) if v not in (None, "", 0, "0") else None
    except (TypeError, ValueError):
        return None


def source_rows(project: Path, pipeline: str) -> dict[str, dict]:
    """The first row of each key in the pipeline's source file (as the engine reads it)."""
    from etl.config import load_project
    from etl.factory import build_source
    from etl.transform import KEY_SEP

    proj = load_project(project)
    p = proj.pipelines[pipeline]
    src = build_source(proj, p)
    out: dict[str, dict] = {}
    for batch in src.read(None, 10_000):
        for row in batch.table.to_pylist():
            key = KEY_SEP.join(str(row.get(k) or "").strip() for k in p.config.key)
            out.setdefault(key, row)
    return out


def assert_exactly_once(project: Path, c: Bitrix24Client, pipelines=PIPELINES, store_as="smart_process") -> dict:
    """One portal record per crosswalk entry (same ids), none without one, no key twice; returns {pipeline: n}."""
    counts = {}
    for name in pipelines:
        xw = crosswalk(project, name)
        recs = [r for r in records(c, name, store_as) if r["origin"] in ("onec", None)]
        keys = Counter(r["key"] for r in recs)
        twice = [k for k, n in keys.items() if n > 1]
        assert not twice, f"{name}: {len(twice)} keys held by more than one CRM record, e.g. {twice[:3]}"
        by_key = {r["key"]: r["id"] for r in recs}
        assert by_key == xw, (f"{name}: the portal and the crosswalk differ: only in the portal "
                              f"{sorted(set(by_key) - set(xw))[:5]}, only in the crosswalk "
                              f"{sorted(set(xw) - set(by_key))[:5]}, other ids "
                              f"{[k for k in set(xw) & set(by_key) if xw[k] != by_key[k]][:5]}")
        counts[name] = len(recs)
    return counts


LINKS = {"contacts": {"company": "companies"}, "deals": {"contact": "contacts", "company": "companies"},
         "sites": {"company": "companies", "contact": "contacts"}, "tickets": {"site": "sites", "company": "companies"}}


def assert_links_intact(project: Path, c: Bitrix24Client) -> int:
    """Every link of every loaded record points at the CRM record of the linked source key. Returns links checked."""
    from etl.config import load_project

    proj = load_project(project)
    checked = 0
    for name, links in LINKS.items():
        xw = crosswalk(project, name)
        rows = source_rows(project, name)
        recs = {r["key"]: r for r in records(c, name)}
        for lname, other in links.items():
            col = proj.pipelines[name].config.links[lname].column
            other_xw = crosswalk(project, other)
            for key in xw:
                link_key = rows[key].get(col)
                link_key = str(link_key).strip() if link_key not in (None, "") else None
                want = other_xw.get(link_key) if link_key else None
                assert recs[key][lname] == want, (f"{name} {key}: {lname} is {recs[key][lname]}, want {want} "
                                                 f"({other} key {link_key!r})")
                checked += want is not None
    return checked
