"""The sandbox's CRM: paging, filters, multi-fields, bindings, pipelines and stages, user fields, duplicates,
smart processes (crm.type / crm.item), universal lists and users, all over HTTP."""

from __future__ import annotations

import httpx
import pytest

from connectors.bitrix24.sandbox import start_sandbox


@pytest.fixture
def sb():
    with start_sandbox(limits="off") as s:
        yield s


@pytest.fixture
def http(sb):
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        yield c


def call(http, method, **params):
    r = http.post(method, json=params)
    assert r.status_code == 200, r.text
    return r.json()


def add_contacts(http, n, **extra):
    cmd = {f"c{i}": "crm.contact.add?" + str(httpx.QueryParams({
        "fields[NAME]": f"Name{i:03d}", "fields[LAST_NAME]": "Иванов" if i % 2 else "Петров",
        "fields[ORIGINATOR_ID]": "1c", "fields[ORIGIN_ID]": f"K{i:03d}", **extra})) for i in range(n)}
    ids = []
    keys = list(cmd)
    for k in range(0, n, 50):
        part = {key: cmd[key] for key in keys[k:k + 50]}
        res = call(http, "batch", cmd=part)["result"]
        assert res["result_error"] == []
        ids += list(res["result"].values())
    return ids


def test_list_pages_are_50_rows_with_total_and_next_and_start_minus_1_skips_the_count(http):
    ids = add_contacts(http, 120)
    p1 = call(http, "crm.contact.list", order={"ID": "ASC"}, select=["ID"])
    assert len(p1["result"]) == 50 and p1["total"] == 120 and p1["next"] == 50
    p3 = call(http, "crm.contact.list", order={"ID": "ASC"}, select=["ID"], start=100)
    assert len(p3["result"]) == 20 and p3["total"] == 120 and "next" not in p3
    assert [int(r["ID"]) for r in p3["result"]] == ids[100:]
    # keyset export: start=-1, >ID, no count (total 0, no next)
    seen, last = [], 0
    while True:
        page = call(http, "crm.contact.list", order={"ID": "ASC"}, filter={">ID": last}, select=["ID"], start=-1)
        assert page["total"] == 0 and "next" not in page
        seen += [int(r["ID"]) for r in page["result"]]
        if len(page["result"]) < 50:
            break
        last = seen[-1]
    assert seen == ids
    # past the end: an empty page
    assert call(http, "crm.contact.list", start=500)["result"] == []


def test_filter_operators_order_and_select(http):
    ids = add_contacts(http, 10)
    def names(**kw):
        return [r["NAME"] for r in call(http, "crm.contact.list", select=["NAME"], **kw)["result"]]
    assert names(filter={"ORIGIN_ID": "K003"}) == ["Name003"]
    assert names(filter={"=ORIGIN_ID": ["K001", "K002"]}) == ["Name001", "Name002"]
    assert names(filter={"@ORIGIN_ID": ["K001", "K009"]}) == ["Name001", "Name009"]
    assert len(names(filter={"!ORIGIN_ID": "K001"})) == 9
    assert names(filter={">ID": ids[7]}) == ["Name008", "Name009"]
    assert names(filter={">=ID": ids[8], "<=ID": ids[9]}) == ["Name008", "Name009"]
    assert names(filter={"<ID": ids[1]}) == ["Name000"]
    assert names(filter={"%NAME": "me00"}) == [f"Name00{i}" for i in range(10)]
    assert names(filter={"%LAST_NAME": "ван", "<ID": ids[4]}) == ["Name001", "Name003"]
    assert names(order={"ID": "DESC"})[:2] == ["Name009", "Name008"]
    assert names(filter={"ORIGIN_ID": "nope"}) == []
    assert names(filter={"ID": "not-a-number"}) == []
    row = call(http, "crm.contact.list", filter={"ID": ids[0]})["result"][0]
    assert "PHONE" not in row and "NAME" in row and "UF_CRM_X" not in row  # default select: * + UF_*
    only = call(http, "crm.contact.list", filter={"ID": ids[0]}, select=["LAST_NAME"])["result"][0]
    assert only == {"ID": str(ids[0]), "LAST_NAME": "Петров"}


def test_multi_field_update_adds_entries_without_id_overwrites_and_deletes_by_id(http):
    cid = call(http, "crm.contact.add", fields={"NAME": "M", "PHONE": [{"VALUE": "+70000000001", "VALUE_TYPE": "WORK"}],
                                               "EMAIL": [{"VALUE": "m@example.com"}]})["result"]
    # resending the same phone without ID ADDS a duplicate (the trap of a naive rerun)
    call(http, "crm.contact.update", id=cid, fields={"PHONE": [{"VALUE": "+70000000001", "VALUE_TYPE": "WORK"}]})
    phones = call(http, "crm.contact.get", id=cid)["result"]["PHONE"]
    assert [p["VALUE"] for p in phones] == ["+70000000001", "+70000000001"]
    first, second = phones
    # {ID, VALUE} overwrites, {ID, DELETE: Y} deletes, entries not mentioned stay
    call(http, "crm.contact.update", id=cid, fields={"PHONE": [
        {"ID": first["ID"], "VALUE": "+70000000009", "VALUE_TYPE": "MOBILE"},
        {"ID": second["ID"], "DELETE": "Y"}, {"VALUE": "+70000000002"}]})
    got = call(http, "crm.contact.get", id=cid)["result"]
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in got["PHONE"]] == [("+70000000009", "MOBILE"), ("+70000000002", "WORK")]
    assert [e["VALUE"] for e in got["EMAIL"]] == ["m@example.com"]
    # {ID, VALUE: ""} deletes too; the last phone gone, PHONE disappears from get and HAS_PHONE is N
    call(http, "crm.contact.update", id=cid, fields={"PHONE": [{"ID": p["ID"], "VALUE": ""} for p in got["PHONE"]]})
    got = call(http, "crm.contact.get", id=cid)["result"]
    assert "PHONE" not in got and got["HAS_PHONE"] == "N"
    # a multi-field filter matches exactly
    assert call(http, "crm.contact.list", filter={"EMAIL": "m@example.com"})["total"] == 1
    assert call(http, "crm.contact.list", filter={"EMAIL": "m@example"})["total"] == 0


def test_import_params_keep_historical_dates_while_they_ascend(http):
    a = call(http, "crm.contact.add", fields={"NAME": "old", "DATE_CREATE": "2019-05-01T10:00:00+03:00",
                                             "CREATED_BY_ID": 3}, params={"IMPORT": "Y"})["result"]
    got = call(http, "crm.contact.get", id=a)["result"]
    assert got["DATE_CREATE"] == "2019-05-01T10:00:00+03:00" and got["CREATED_BY_ID"] == "3"
    b = call(http, "crm.contact.add", fields={"NAME": "plain", "DATE_CREATE": "2018-01-01"})["result"]
    assert call(http, "crm.contact.get", id=b)["result"]["DATE_CREATE"] != "2018-01-01T00:00:00+03:00"
    # after a record created now, an earlier historical date is not kept (not before the last created record)
    c = call(http, "crm.contact.add", fields={"NAME": "late", "DATE_CREATE": "2019-06-01T10:00:00+03:00"},
             params={"IMPORT": "Y"})["result"]
    assert not call(http, "crm.contact.get", id=c)["result"]["DATE_CREATE"].startswith("2019")
    assert call(http, "crm.contact.list", filter={"<DATE_CREATE": "2020-01-01"}, select=["ID"])["result"] == [
        {"ID": str(a)}]


def test_bindings_contact_companies_and_deal_contacts(http):
    co1 = call(http, "crm.company.add", fields={"TITLE": "ООО Ромашка", "ORIGINATOR_ID": "1c", "ORIGIN_ID": "F1"})["result"]
    co2 = call(http, "crm.company.add", fields={"TITLE": "ЗАО Лютик"})["result"]
    cid = call(http, "crm.contact.add", fields={"NAME": "B", "COMPANY_ID": co1})["result"]
    assert call(http, "crm.contact.get", id=cid)["result"]["COMPANY_ID"] == str(co1)
    call(http, "crm.contact.company.items.set", id=cid, items=[{"COMPANY_ID": co2}, {"COMPANY_ID": co1, "IS_PRIMARY": "Y"}])
    items = call(http, "crm.contact.company.items.get", id=cid)["result"]
    assert items == [{"COMPANY_ID": co2, "SORT": 10, "ROLE_ID": 0, "IS_PRIMARY": "N"},
                     {"COMPANY_ID": co1, "SORT": 20, "ROLE_ID": 0, "IS_PRIMARY": "Y"}]
    call(http, "crm.contact.company.items.set", id=cid, items=[{"COMPANY_ID": co2}])  # REPLACES the set
    assert call(http, "crm.contact.company.items.get", id=cid)["result"] == [
        {"COMPANY_ID": co2, "SORT": 10, "ROLE_ID": 0, "IS_PRIMARY": "Y"}]
    assert call(http, "crm.contact.list", filter={"COMPANY_ID": co2}, select=["ID"])["result"] == [{"ID": str(cid)}]
    c2 = call(http, "crm.contact.add", fields={"NAME": "C"})["result"]
    deal = call(http, "crm.deal.add", fields={"TITLE": "Сервис", "COMPANY_ID": co1, "CONTACT_IDS": [cid, c2]})["result"]
    got = call(http, "crm.deal.get", id=deal)["result"]
    assert got["CONTACT_ID"] == str(cid) and got["COMPANY_ID"] == str(co1) and got["CATEGORY_ID"] == "0"
    assert got["STAGE_ID"] == "NEW" and got["OPPORTUNITY"] == "0.00" and got["CURRENCY_ID"] == "RUB"
    call(http, "crm.deal.contact.items.set", id=deal, items=[{"CONTACT_ID": c2}])
    assert [x["CONTACT_ID"] for x in call(http, "crm.deal.contact.items.get", id=deal)["result"]] == [c2]
    # deleting a company removes its bindings
    call(http, "crm.company.delete", id=co2)
    assert call(http, "crm.contact.company.items.get", id=cid)["result"] == []


def test_deal_pipelines_and_stages(http):
    assert call(http, "crm.category.list", entityTypeId=2)["result"]["categories"][0] == {
        "id": 0, "name": "General", "sort": 0, "entityTypeId": 2, "isDefault": "Y", "originId": "", "originatorId": ""}
    cat = call(http, "crm.category.add", entityTypeId=2, fields={"name": "Сервис", "sort": 200})["result"]["category"]
    n = cat["id"]
    stages = call(http, "crm.status.list", filter={"ENTITY_ID": f"DEAL_STAGE_{n}"})["result"]
    assert [s["STATUS_ID"] for s in stages][:2] == [f"C{n}:NEW", f"C{n}:PREPARATION"]
    assert {s["EXTRA"]["SEMANTICS"] for s in stages} == {"process", "success", "failure", "apology"}
    sid = call(http, "crm.status.add", fields={"ENTITY_ID": f"DEAL_STAGE_{n}", "STATUS_ID": "DECISION",
                                              "NAME": "Decision", "SORT": 25})["result"]
    assert isinstance(sid, int)
    deal = call(http, "crm.deal.add", fields={"TITLE": "T", "CATEGORY_ID": n, "STAGE_ID": f"C{n}:DECISION"})["result"]
    got = call(http, "crm.deal.get", id=deal)["result"]
    assert got["CATEGORY_ID"] == str(n) and got["STAGE_ID"] == f"C{n}:DECISION" and got["STAGE_SEMANTIC_ID"] == "P"
    call(http, "crm.deal.update", id=deal, fields={"STAGE_ID": f"C{n}:WON", "CATEGORY_ID": 0})  # CATEGORY_ID immutable
    got = call(http, "crm.deal.get", id=deal)["result"]
    assert got["CATEGORY_ID"] == str(n) and got["STAGE_SEMANTIC_ID"] == "S" and got["CLOSED"] == "Y"
    r = http.post("crm.deal.add", json={"fields": {"CATEGORY_ID": n, "STAGE_ID": "WON"}})  # a stage of pipeline 0
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"
    r = http.post("crm.deal.add", json={"fields": {"CATEGORY_ID": 777}})
    assert r.status_code == 400
    # the pipeline changes through crm.item.update
    item = call(http, "crm.item.update", entityTypeId=2, id=deal, fields={"categoryId": 0})["result"]["item"]
    assert item["categoryId"] == 0 and item["stageId"] == "NEW"
    assert call(http, "crm.deal.get", id=deal)["result"]["TITLE"] == "T"
    assert call(http, "crm.deal.add", fields={})["result"]  # default title
    assert call(http, "crm.deal.list", filter={"%TITLE": "Deal #"})["total"] == 1


def test_user_fields_are_created_then_accepted_and_filterable(http):
    uf = call(http, "crm.contact.userfield.add", fields={"FIELD_NAME": "snils", "USER_TYPE_ID": "string",
                                                         "EDIT_FORM_LABEL": "СНИЛС"})["result"]
    assert isinstance(uf, int)
    r = http.post("crm.contact.userfield.add", json={"fields": {"FIELD_NAME": "UF_SNILS"}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"  # UF_SNILS -> UF_CRM_SNILS exists
    r = http.post("crm.contact.userfield.add", json={"fields": {"FIELD_NAME": "bad-name"}})
    assert r.json()["error"] == "ERROR_CORE"
    call(http, "crm.deal.userfield.add", fields={"FIELD_NAME": "UF_CRM_10_AMOUNT", "USER_TYPE_ID": "double"})
    fields = call(http, "crm.contact.fields")["result"]
    assert fields["UF_CRM_SNILS"]["isDynamic"] is True and fields["UF_CRM_SNILS"]["formLabel"] == "СНИЛС"
    cid = call(http, "crm.contact.add", fields={"NAME": "U", "UF_CRM_SNILS": "112-233-445 95"})["result"]
    assert call(http, "crm.contact.get", id=cid)["result"]["UF_CRM_SNILS"] == "112-233-445 95"
    assert call(http, "crm.contact.list", filter={"UF_CRM_SNILS": "112-233-445 95"})["total"] == 1
    d = call(http, "crm.deal.add", fields={"UF_CRM_10_AMOUNT": "12.5"})["result"]
    assert call(http, "crm.deal.get", id=d)["result"]["UF_CRM_10_AMOUNT"] == "12.5"
    item = call(http, "crm.item.get", entityTypeId=2, id=d)["result"]["item"]
    assert item["ufCrm10Amount"] == 12.5  # crm.item: camel name, native number
    orig = call(http, "crm.item.get", entityTypeId=3, id=cid, useOriginalUfNames="Y")["result"]["item"]
    assert orig["UF_CRM_SNILS"] == "112-233-445 95"


def test_duplicates_by_phone_and_email(http):
    c1 = call(http, "crm.contact.add", fields={"NAME": "D", "PHONE": [{"VALUE": "8 (916) 123-45-67"}]})["result"]
    co = call(http, "crm.company.add", fields={"TITLE": "T", "EMAIL": [{"VALUE": "Info@Firm.ru"}]})["result"]
    assert call(http, "crm.duplicate.findbycomm", type="PHONE", values=["+79161234567"])["result"] == {"CONTACT": [c1]}
    assert call(http, "crm.duplicate.findbycomm", type="EMAIL", values=["info@firm.ru"],
                entity_type="COMPANY")["result"] == {"COMPANY": [co]}
    assert call(http, "crm.duplicate.findbycomm", type="EMAIL", values=["none@x.ru"])["result"] == []
    r = http.post("crm.duplicate.findbycomm", json={"type": "PHONE", "values": [str(i) for i in range(21)]})
    assert r.status_code == 400


def test_smart_processes_with_stages_parent_links_and_batch_import(http):
    site = call(http, "crm.type.add", fields={"title": "Объекты", "isStagesEnabled": "Y", "isClientEnabled": "Y",
                                             "isCategoriesEnabled": "Y"})["result"]["type"]
    ticket = call(http, "crm.type.add", fields={"title": "Заявки", "isStagesEnabled": "Y",
                                               "relations": {"parent": [{"entityTypeId": site["entityTypeId"]}]}}
                  )["result"]["type"]
    s_et, t_et = site["entityTypeId"], ticket["entityTypeId"]
    assert s_et >= 1030 and s_et % 2 == 0 and t_et != s_et
    listed = call(http, "crm.type.list", filter={"title": "Заявки"})["result"]["types"]
    assert [t["entityTypeId"] for t in listed] == [t_et]
    assert {"entityTypeId": s_et, "isChildrenListEnabled": "N", "isPredefined": "N"} in listed[0]["relations"]["parent"]
    r = http.post("crm.type.list", json={"order": {"ID": "ASC"}})
    assert r.json() == {"error": "100", "error_description": "Unknown field definition `I_D`"}
    co = call(http, "crm.company.add", fields={"TITLE": "Owner"})["result"]
    item = call(http, "crm.item.add", entityTypeId=s_et, fields={
        "title": "ул. Ленина, 1", "companyId": co, "originatorId": "1c", "originId": "S-1",
        "opportunity": 1500.5})["result"]["item"]
    assert isinstance(item["id"], int) and item["companyId"] == co and item["opportunity"] == 1500.5
    assert item["stageId"].startswith(f"DT{s_et}_") and item["stageId"].endswith(":NEW")
    assert item["entityTypeId"] == s_et and item["begindate"] is None  # a disabled feature: null
    cat = item["categoryId"]
    stages = call(http, "crm.status.list", filter={"ENTITY_ID": f"DYNAMIC_{s_et}_STAGE_{cat}"})["result"]
    done = [s["STATUS_ID"] for s in stages if s["SEMANTICS"] == "S"][0]
    upd = call(http, "crm.item.update", entityTypeId=s_et, id=item["id"], fields={"stageId": done})["result"]["item"]
    assert upd["stageId"] == done and upd["previousStageId"] == item["stageId"]
    tk = call(http, "crm.item.add", entityTypeId=t_et, fields={"title": "Протечка", f"parentId{s_et}": item["id"]}
              )["result"]["item"]
    assert tk[f"parentId{s_et}"] == item["id"]
    found = call(http, "crm.item.list", entityTypeId=t_et, filter={f"parentId{s_et}": item["id"]},
                 select=["id", "title"])
    assert found["result"]["items"] == [{"id": tk["id"], "title": "Протечка", "entityTypeId": t_et}]
    assert found["total"] == 1
    by_key = call(http, "crm.item.list", entityTypeId=s_et, filter={"originatorId": "1c", "originId": "S-1"})
    assert [i["id"] for i in by_key["result"]["items"]] == [item["id"]]
    logic = call(http, "crm.item.list", entityTypeId=s_et, filter={"0": {"logic": "OR", "0": {"originId": "S-1"},
                                                                         "1": {"originId": "S-2"}}})
    assert logic["total"] == 1
    fields = call(http, "crm.item.fields", entityTypeId=t_et)["result"]["fields"]
    assert fields["stageId"]["upperName"] == "STAGE_ID" and f"parentId{s_et}" in fields
    # batchImport: historical times, per-row results, 20 at most
    imp = call(http, "crm.item.batchImport", entityTypeId=t_et, data=[
        {"title": "old", "createdTime": "2030-01-01T00:00:00+03:00"},  # in the future: refused
        {"title": "ok"}, "not a row"])["result"]["items"]
    assert imp[0]["error"] == "CRM_FIELD_ERROR_VALUE_NOT_VALID" and "item" in imp[1] and imp[2]["error"] == "100"
    r = http.post("crm.item.batchImport", json={"entityTypeId": t_et, "data": [{"title": "x"}] * 21})
    assert r.json()["error"] == "MAX_IMPORT_BATCH_SIZE_EXCEEDED"
    assert call(http, "crm.item.delete", entityTypeId=t_et, id=tk["id"])["result"] == []
    assert http.post("crm.item.get", json={"entityTypeId": t_et, "id": tk["id"]}).json()["error"] == "NOT_FOUND"


def test_batch_import_keeps_ascending_historical_times(http):
    t = call(http, "crm.type.add", fields={"title": "Hist"})["result"]["type"]["entityTypeId"]
    res = call(http, "crm.item.batchImport", entityTypeId=t, data=[
        {"title": "a", "createdTime": "2020-01-01T10:00:00+03:00", "updatedTime": "2020-02-01T10:00:00+03:00",
         "createdBy": 4},
        {"title": "b", "createdTime": "2019-01-01T10:00:00+03:00"},  # earlier than the last created: refused
        {"title": "c", "createdTime": "2021-01-01T10:00:00+03:00", "updatedTime": "2020-01-01T10:00:00+03:00"}])
    items = res["result"]["items"]
    assert "item" in items[0] and "error" in items[1] and "error" in items[2]
    got = call(http, "crm.item.get", entityTypeId=t, id=items[0]["item"]["id"])["result"]["item"]
    assert got["createdTime"] == "2020-01-01T10:00:00+03:00" and got["createdBy"] == 4
    assert got["updatedTime"] == "2020-02-01T10:00:00+03:00"


def test_universal_list_elements_with_unique_codes_and_overwrite_all_update(http):
    ib = call(http, "lists.add", IBLOCK_TYPE_ID="lists", IBLOCK_CODE="sites", FIELDS={"NAME": "Объекты"})["result"]
    r = http.post("lists.add", json={"IBLOCK_TYPE_ID": "lists", "IBLOCK_CODE": "sites", "FIELDS": {"NAME": "again"}})
    assert r.json()["error"] == "ERROR_IBLOCK_ALREADY_EXISTS"
    addr = call(http, "lists.field.add", IBLOCK_TYPE_ID="lists", IBLOCK_ID=ib,
                FIELDS={"NAME": "Адрес", "TYPE": "S", "IS_REQUIRED": "Y"})["result"]
    area = call(http, "lists.field.add", IBLOCK_TYPE_ID="lists", IBLOCK_ID=ib, FIELDS={"NAME": "Площадь", "TYPE": "N"}
                )["result"]
    tags = call(http, "lists.field.add", IBLOCK_TYPE_ID="lists", IBLOCK_CODE="sites",
                FIELDS={"NAME": "Метки", "TYPE": "S", "MULTIPLE": "Y"})["result"]
    assert addr.startswith("PROPERTY_")
    base = {"IBLOCK_TYPE_ID": "lists", "IBLOCK_CODE": "sites"}
    eid = call(http, "lists.element.add", **base, ELEMENT_CODE="site-1",
               FIELDS={"NAME": "Дом 1", addr: "Москва", area: "120.5", tags: ["a", "b"]})["result"]
    assert isinstance(eid, int)
    r = http.post("lists.element.add", json={**base, "ELEMENT_CODE": "site-1", "FIELDS": {"NAME": "dup", addr: "x"}})
    assert r.json()["error"] == "ERROR_ELEMENT_ALREADY_EXISTS"
    r = http.post("lists.element.add", json={**base, "FIELDS": {"NAME": "no code"}})
    assert r.json()["error"] == "ERROR_REQUIRED_PARAMETERS_MISSING"
    r = http.post("lists.element.add", json={**base, "ELEMENT_CODE": "site-2", "FIELDS": {"NAME": "no addr"}})
    assert r.json()["error"] == "ERROR_ADD_ELEMENT"  # a required property missing
    r = http.post("lists.element.add", json={**base, "ELEMENT_CODE": "site-3",
                                             "FIELDS": {"NAME": "n", addr: "x", area: "много"}})
    assert r.json()["error"] == "ERROR_ELEMENT_FIELD_VALUE"
    el = call(http, "lists.element.get", **base, ELEMENT_CODE="site-1")
    assert el["total"] == 1
    row = el["result"][0]
    assert row["ID"] == str(eid) and row["CODE"] == "site-1" and row["NAME"] == "Дом 1"
    assert list(row[addr].values()) == ["Москва"] and list(row[tags].values()) == ["a", "b"]
    assert all(k.isdigit() for k in row[addr])  # maps by value id
    assert row["DATE_CREATE"][2] == "." and row["DATE_CREATE"][5] == "."  # locale dates
    # update overwrites the whole element: a property not sent is cleared
    call(http, "lists.element.update", **base, ELEMENT_CODE="site-1", FIELDS={"NAME": "Дом 1А", addr: "Тверь"})
    row = call(http, "lists.element.get", **base, ELEMENT_ID=eid)["result"][0]
    assert row["NAME"] == "Дом 1А" and list(row[addr].values()) == ["Тверь"] and area not in row and tags not in row
    assert call(http, "lists.element.get", **base, FILTER={addr: "Тверь"})["total"] == 1
    assert call(http, "lists.element.get", **base, FILTER={"=CODE": "site-1"}, SELECT=["ID", "NAME"])["result"] == [
        {"ID": str(eid), "NAME": "Дом 1А"}]
    assert call(http, "lists.element.delete", **base, ELEMENT_CODE="site-1")["result"] is True
    r = http.post("lists.element.get", json={**base, "ELEMENT_CODE": "site-1"})
    assert r.json()["error"] == "ERROR_ELEMENT_NOT_FOUND"
    r = http.post("lists.element.get", json={"IBLOCK_TYPE_ID": "lists", "IBLOCK_CODE": "nope"})
    assert r.json()["error"] == "ERROR_IBLOCK_NOT_FOUND"


def test_users(sb, http):
    uid = sb.add_user("Ольга", "Менеджерова", "olga@sandbox.local", position="Sales")
    rows = call(http, "user.get", filter={"EMAIL": "olga@sandbox.local"})["result"]
    assert [(r["ID"], r["ACTIVE"], r["UF_DEPARTMENT"]) for r in rows] == [(str(uid), True, [1])]
    everyone = call(http, "user.get")
    assert everyone["total"] == 7 and everyone["result"][0]["ID"] == "1"
    assert call(http, "user.get", ID=2)["result"][0]["EMAIL"] == "manager1@sandbox.local"
    assert call(http, "user.get", filter={"NAME": "Оль%"})["total"] == 1


def test_crm_item_multi_fields_add_as_a_list_and_update_as_an_object_and_ids_are_never_reused(http):
    item = call(http, "crm.item.add", entityTypeId=3, fields={"name": "F", "fm": [
        {"typeId": "PHONE", "valueType": "WORK", "value": "+70000000001"},
        {"valueType": "WORK", "value": "no typeId: skipped"},
        {"typeId": "EMAIL", "valueType": "WORK", "value": "f@example.com"}]})["result"]["item"]
    assert [(e["typeId"], e["value"]) for e in item["fm"]] == [("PHONE", "+70000000001"), ("EMAIL", "f@example.com")]
    assert item["phone"] == "+70000000001" and item["emailWork"] == "f@example.com" and isinstance(item["id"], int)
    phone, email = item["fm"]
    upd = call(http, "crm.item.update", entityTypeId=3, id=item["id"], fields={"fm": {
        "n0": {"typeId": "PHONE", "valueType": "MOBILE", "value": "+70000000002"},
        str(phone["id"]): {"value": "+70000000009"}, str(email["id"]): {"value": ""}}})["result"]["item"]
    assert [(e["typeId"], e["valueType"], e["value"]) for e in upd["fm"]] == [
        ("PHONE", "WORK", "+70000000009"), ("PHONE", "MOBILE", "+70000000002")]
    assert email["id"] not in [e["id"] for e in upd["fm"]]  # the deleted entry's id is not given out again
    listed = call(http, "crm.item.list", entityTypeId=3, select=["*"])["result"]["items"][0]
    assert len(listed["fm"]) == 2 and "fm" not in call(http, "crm.item.list", entityTypeId=3)["result"]["items"][0]
    # the same for records: delete the newest contact, the next one gets a new id
    call(http, "crm.contact.delete", id=item["id"])
    assert call(http, "crm.contact.add", fields={"NAME": "next"})["result"] == item["id"] + 1
