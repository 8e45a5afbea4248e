"""CommerceML 2.x / 3.x (1C <-> sites, Bitrix) as a Source: counterparties, their contact persons, orders and their lines.

Read by local element name, with no namespace, ``urn:1C.ru:commerceml_2`` or ``urn:1C.ru:commerceml_3`` (another one
is read too, with a warning); never validated against the XSD, because real files break it: ``ИНН``/``КПП`` directly
under ``Контрагент`` (Bitrix) as well as in ``РеквизитыЮрЛица``/``РеквизитыФизЛица``, ``КодПоОКПО`` for ``ОКПО``,
``Электронная почта`` for ``Почта``, flat or nested ``Представитель``, ``Контрагенты`` right under the root (2.09),
documents inside ``Контейнер`` (3.x), empty tags, padded values, ``Адрес/Представление`` that is just ``,``.

``kind:`` selects the rows (all columns are strings; see ``COLUMNS``):

* ``counterparties`` — one row per counterparty: those of every ``Контрагенты`` list outside documents, then
  those embedded in documents (``Документ/Контрагенты/Контрагент``) whose key the file has not given yet;
* ``contacts`` — one row per contact person (``Представители/Представитель``) of those counterparties;
* ``documents`` — one row per ``Документ`` (an order, an invoice...), with its main counterparty's key;
* ``document_items`` — one row per ``Документ/Товары/Товар``.

A counterparty's ``key`` is its ``Ид``, else ``inn:<ИНН>:<КПП>`` (``inn:<ИНН>`` without КПП); documents and contact
persons refer to counterparties by the same key. Values are stripped; empty tags are NULL; dates come out as ISO
(``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS``; ``Время`` joined to ``Дата``; the empty date -> NULL); numbers keep
their dot decimal. A date or number that cannot be read rejects its record (reason ``bad_date``/``bad_number``,
naming file, line, element and value).
"""

from __future__ import annotations

import re
from connectors.base import BadInputError
from connectors.onec.xmlstream import (
    BadValue,
    Element,
    FileContext,
    Item,
    XmlRecordSource,
    _Stream,
    as_json,
    clean,
    find_first,
    join_unique,
    norm_bool,
    norm_date,
    norm_number,
    split_fio,
    text_of,
)

__all__ = ["CommerceMLSource", "COLUMNS", "NAMESPACES"]

NAMESPACES = ("", "urn:1C.ru:commerceml_2", "urn:1C.ru:commerceml_3")
ROOT = "КоммерческаяИнформация"

COUNTERPARTY_COLUMNS = [
    "key", "id", "name", "full_name", "type", "inn", "kpp", "ogrn", "okpo", "last_name", "first_name",
    "middle_name", "birth_date", "gender", "address", "legal_address", "actual_address", "postal_address", "phone",
    "fax", "email", "web", "other_contacts", "role", "comment", "responsible", "parent_key", "deleted", "version",
]
CONTACT_COLUMNS = [
    "key", "id", "counterparty_key", "counterparty_id", "counterparty_name", "relation", "name", "last_name",
    "first_name", "middle_name", "position", "phone", "email", "other_contacts", "address", "comment", "version",
]
DOCUMENT_COLUMNS = [
    "key", "id", "number", "date", "operation", "role", "currency", "currency_code", "rate", "amount", "comment",
    "counterparty_key", "counterparty_id", "counterparty_name", "counterparty_inn", "counterparty_kpp",
    "counterparty_role", "organization", "number_1c", "date_1c", "status", "status_id", "status_changed_at", "paid",
    "posted", "cancelled", "shipped_at", "payment_method", "delivery_address", "responsible", "attributes",
    "version",
]
ITEM_COLUMNS = [
    "key", "document_key", "document_id", "line_no", "section", "item_id", "article", "name", "unit", "quantity",
    "price", "amount", "vat_rate", "vat_amount", "version",
]
COLUMNS = {
    "counterparties": COUNTERPARTY_COLUMNS,
    "contacts": CONTACT_COLUMNS,
    "documents": DOCUMENT_COLUMNS,
    "document_items": ITEM_COLUMNS,
}

# ЗначенияРеквизитов of a document that get their own column: name (lower case) -> (column, how)
_DOC_ATTRIBUTES = {
    "статус заказа": ("status", None),
    "статуса заказа ид": ("status_id", None),
    "статус заказа ид": ("status_id", None),
    "дата изменения статуса": ("status_changed_at", "date"),
    "заказ оплачен": ("paid", "bool"),
    "оплачен": ("paid", "bool"),
    "проведен": ("posted", "bool"),
    "отменен": ("cancelled", "bool"),
    "дата отгрузки по 1с": ("shipped_at", "date"),
    "метод оплаты": ("payment_method", None),
    "адрес доставки": ("delivery_address", None),
}

_PUNCT_ONLY = re.compile(r"^[\s,.;:\-–—/\\]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def contact_column(kind: str | None, value: str) -> str | None:
    """The column a ``Контакт`` goes to by its ``Тип`` (None: ``other_contacts``)."""
    t = (kind or "").strip().lower().replace("ё", "е")
    if t.startswith("телефон") or t in ("phone", "тел", "тел.", "мобильный"):
        return "phone"
    if t.startswith("факс") or t == "fax":
        return "fax"
    if t == "почта" or "электронн" in t or t.replace("-", "") in ("email", "mail"):
        return "email"
    if t.replace("-", "").replace(" ", "") in ("вебсайт", "сайт", "web", "www", "url", "website"):
        return "web"
    if not t and _EMAIL.match(value):
        return "email"
    return None


class CommerceMLSource(XmlRecordSource):
    """CommerceML 2.x / 3.x exchange files (``КоммерческаяИнформация``)."""

    KINDS = COLUMNS

    # --- walking

    def _root(self, el: Element, ctx: FileContext, stream: _Stream) -> None:
        if el.tag != ROOT:
            raise BadInputError(f"{ctx.rel}, line {el.line}: not a CommerceML file: the root element is <{el.tag}>, "
                                f"not <{ROOT}>", file=ctx.rel)
        ctx.version = clean(el.get("ВерсияСхемы"))
        ns = stream.builder.namespaces.get(ROOT, "")
        if ns not in NAMESPACES:
            ctx.warn("namespace", el.line, f"unknown CommerceML namespace {ns!r}: read by local names anyway")
        if ctx.version is None:
            ctx.warn("version", el.line, "no ВерсияСхемы on the root")

    def _record_type(self, el: Element, names: list[str], ctx: FileContext, phase: str) -> str | None:
        tag = el.tag
        if tag == "Документ":
            return "document" if phase == "documents" else None
        if tag == "Контрагент" and names and names[-1] == "Контрагенты":
            if phase != "list":
                return None
            return "embedded" if "Документ" in names else "counterparty"
        return None

    # --- counterparties

    def counterparty_key(self, el: Element) -> str | None:
        cid = text_of(el, "Ид")
        if cid is not None:
            return cid
        inn = text_of(el, "ИНН", "РеквизитыЮрЛица/ИНН", "РеквизитыФизЛица/ИНН")
        if inn is None:
            return None
        kpp = text_of(el, "КПП", "РеквизитыЮрЛица/КПП")
        return f"inn:{inn}:{kpp}" if kpp else f"inn:{inn}"

    def embedded_counterparties(self, doc: Element) -> list[Element]:
        return doc.findall("Контрагенты/Контрагент")

    def _address(self, addr: Element | None, ctx: FileContext, what: str) -> str | None:
        """``Представление`` of an address; when it is empty or punctuation only, its ``АдресноеПоле`` values."""
        if addr is None:
            return None
        if len(addr) == 0:
            return clean(addr.text)  # a plain-text address
        pres = text_of(addr, "Представление")
        if pres is not None and not _PUNCT_ONLY.match(pres):
            return pres
        parts = [text_of(f, "Значение") for f in addr.findall("АдресноеПоле")]
        built = join_unique(parts, ", ")
        if built:
            ctx.warn("address_rebuilt", addr.line,
                     f"{what}/Представление is {'empty' if pres is None else repr(pres)}: the address is made of "
                     f"its АдресноеПоле values")
        return built

    def _contacts(self, el: Element, ctx: FileContext) -> dict[str, str | None]:
        found: dict[str, list[str]] = {"phone": [], "fax": [], "email": [], "web": [], "other_contacts": []}
        for c in el.findall("Контакты/Контакт"):
            value = text_of(c, "Значение")
            if value is None:
                continue
            kind = text_of(c, "Тип")
            col = contact_column(kind, value)
            if col is None:
                if kind is not None:
                    ctx.warn(f"contact_type:{kind}", c.line, f"contact type {kind!r} is not a phone, fax, e-mail or "
                                                             f"site: kept in other_contacts")
                found["other_contacts"].append(f"{kind}: {value}" if kind else value)
            else:
                found[col].append(value)
        return {k: join_unique(v) for k, v in found.items()}

    def counterparty_row(self, el: Element, key: str | None, ctx: FileContext) -> Item:
        ul = el.find("РеквизитыЮрЛица")
        fl = el.find("РеквизитыФизЛица")
        v: dict[str, str | None] = {"key": key, "id": text_of(el, "Ид"), "version": ctx.version}
        v["name"] = text_of(el, "Наименование")
        v["full_name"] = (text_of(ul, "ОфициальноеНаименование") or text_of(fl, "ПолноеНаименование")
                          or text_of(el, "ОфициальноеНаименование", "ПолноеНаименование"))
        v["inn"] = text_of(ul, "ИНН") or text_of(fl, "ИНН") or text_of(el, "ИНН")
        v["kpp"] = text_of(ul, "КПП") or text_of(el, "КПП")
        v["ogrn"] = text_of(ul, "ОГРН") or text_of(fl, "ОГРНИП", "ОГРН") or text_of(el, "ОГРН", "ОГРНИП")
        okpo = text_of(ul, "ОКПО") or text_of(el, "ОКПО")
        if okpo is None:
            okpo = text_of(ul, "КодПоОКПО") or text_of(el, "КодПоОКПО")
        v["okpo"] = okpo
        v["last_name"] = text_of(fl, "Фамилия") or text_of(el, "Фамилия")
        v["first_name"] = text_of(fl, "Имя") or text_of(el, "Имя")
        v["middle_name"] = text_of(fl, "Отчество") or text_of(el, "Отчество")
        v["gender"] = text_of(fl, "Пол") or text_of(el, "Пол")
        person_fields = any(v[k] for k in ("last_name", "first_name", "middle_name", "gender"))
        if ul is not None or el.find("ОфициальноеНаименование") is not None:
            v["type"] = "company"
        elif fl is not None or person_fields:
            v["type"] = "person"
        elif v["kpp"]:
            v["type"] = "company"
        elif v["inn"] and len(v["inn"]) == 10:
            v["type"] = "company"
        elif v["inn"] and len(v["inn"]) == 12:
            v["type"] = "person"
        else:
            v["type"] = None
        if v["type"] == "person" and not (v["last_name"] or v["first_name"]):
            v["last_name"], v["first_name"], v["middle_name"] = split_fio(v["full_name"] or v["name"])
        actual = self._address(el.find("Адрес"), ctx, "Адрес")
        legal_el = next((e for e in (find_first(ul, "ЮридическийАдрес"), find_first(fl, "АдресРегистрации"),
                                     find_first(el, "ЮридическийАдрес", "АдресРегистрации")) if e is not None), None)
        legal = self._address(legal_el, ctx, legal_el.tag if legal_el is not None else "")
        v["actual_address"], v["legal_address"] = actual, legal
        v["address"] = actual or legal
        v.update(self._contacts(el, ctx))
        v["role"] = text_of(el, "Роль")
        v["comment"] = text_of(el, "Комментарий")
        v["deleted"] = None
        row = self.row(ctx, el, v)
        birth = text_of(fl, "ДатаРождения") or text_of(el, "ДатаРождения")
        deleted = text_of(el, "ПометкаУдаления")
        try:
            row["birth_date"] = norm_date(birth)
        except BadValue as e:
            return self.reject(ctx, el.line, "bad_date", f"Контрагент {key or ''!s}: ДатаРождения: bad date "
                               f"{e.value!r}", field="ДатаРождения", value=e.value, row={**row, "birth_date": birth})
        try:
            row["deleted"] = norm_bool(deleted)
        except BadValue:
            ctx.warn("deleted", el.line, f"ПометкаУдаления {deleted!r} is not a boolean: kept as is")
            row["deleted"] = deleted
        return Item(row=row)

    def counterparty_items(self, el: Element, key: str | None, ctx: FileContext) -> list[Item]:
        if self.kind == "contacts":
            return self.representative_items(el, key, ctx)
        if key is None:
            name = text_of(el, "Наименование")
            row = self.row(ctx, el, {"name": name, "version": ctx.version})
            return [self.reject(ctx, el.line, "missing_id",
                                f"Контрагент {name!r} has no Ид and no ИНН: it cannot be identified",
                                field="Ид", row=row)]
        return [self.counterparty_row(el, key, ctx)]

    def representative_items(self, el: Element, cp_key: str | None, ctx: FileContext) -> list[Item]:
        out = []
        cp_id = text_of(el, "Ид")
        cp_name = text_of(el, "Наименование")
        for rep in el.findall("Представители/Представитель"):
            inner = rep.find("Контрагент")
            who = inner if inner is not None else rep
            v: dict[str, str | None] = {
                "counterparty_key": cp_key, "counterparty_id": cp_id, "counterparty_name": cp_name,
                "relation": text_of(rep, "Отношение") or text_of(who, "Отношение"), "version": ctx.version,
            }
            v["id"] = text_of(who, "Ид")
            v["last_name"] = text_of(who, "Фамилия", "РеквизитыФизЛица/Фамилия")
            v["first_name"] = text_of(who, "Имя", "РеквизитыФизЛица/Имя")
            v["middle_name"] = text_of(who, "Отчество", "РеквизитыФизЛица/Отчество")
            v["name"] = (text_of(who, "Наименование", "ПолноеНаименование", "РеквизитыФизЛица/ПолноеНаименование")
                         or join_unique([v["last_name"], v["first_name"], v["middle_name"]], " "))
            if not (v["last_name"] or v["first_name"]):
                v["last_name"], v["first_name"], v["middle_name"] = split_fio(v["name"])
            v["position"] = text_of(who, "Должность", "МестоРаботы/Должность")
            c = self._contacts(who, ctx)
            v["phone"], v["email"] = c["phone"], c["email"]
            v["other_contacts"] = join_unique([c["other_contacts"], c["fax"] and f"Факс: {c['fax']}",
                                               c["web"] and f"Сайт: {c['web']}"])
            v["address"] = self._address(who.find("Адрес"), ctx, "Представитель/Адрес")
            v["comment"] = text_of(who, "Комментарий") or text_of(rep, "Комментарий")
            if v["id"]:
                v["key"] = v["id"]
            elif cp_key and v["name"]:
                v["key"] = f"{cp_key}/{v['name']}"
            else:
                v["key"] = None
            row = self.row(ctx, rep, v)
            if v["key"] is None:
                out.append(self.reject(ctx, rep.line, "missing_id", "Представитель has no Ид and no Наименование"
                                       + ("" if cp_key else ", or its Контрагент has no key"), field="Ид", row=row))
            else:
                out.append(Item(row=row))
        return out

    # --- documents

    def _main_counterparty(self, doc: Element, role: str | None) -> Element | None:
        cps = self.embedded_counterparties(doc)
        if not cps:
            return None
        own = (role or "").lower()
        for cp in cps:
            r = text_of(cp, "Роль")
            if r and r.lower() != own:
                return cp
        return cps[0]

    def document_items(self, doc: Element, ctx: FileContext) -> list[Item]:
        doc_id = text_of(doc, "Ид")
        if self.kind == "documents":
            return [self.document_row(doc, doc_id, ctx)]
        out = []
        for i, good in enumerate(doc.findall("Товары/Товар"), 1):
            v: dict[str, str | None] = {
                "key": f"{doc_id}/{i}" if doc_id else None, "document_key": doc_id, "document_id": doc_id,
                "line_no": str(i), "section": "Товары", "item_id": text_of(good, "Ид"),
                "article": text_of(good, "Артикул"), "name": text_of(good, "Наименование"), "version": ctx.version,
            }
            unit = good.find("БазоваяЕдиница")
            v["unit"] = (clean(unit.text) or clean(unit.get("НаименованиеПолное"))) if unit is not None else None
            v["vat_rate"] = text_of(good, "СтавкиНалогов/СтавкаНалога/Ставка")
            raw = {"quantity": text_of(good, "Количество"), "price": text_of(good, "ЦенаЗаЕдиницу"),
                   "amount": text_of(good, "Сумма"), "vat_amount": text_of(good, "Налоги/Налог/Сумма")}
            row = self.row(ctx, good, {**v, **raw})
            if doc_id is None:
                out.append(self.reject(ctx, good.line, "missing_id", f"Товар {i} of a Документ without Ид "
                                       f"(line {doc.line})", field="Ид", row=row))
                continue
            bad = _numbers(row, raw, {"quantity": "Количество", "price": "ЦенаЗаЕдиницу", "amount": "Сумма",
                                      "vat_amount": "Налоги/Налог/Сумма"})
            if bad:
                elem, value = bad
                out.append(self.reject(ctx, good.line, "bad_number", f"Товар {i} of Документ {doc_id}: {elem}: "
                                       f"bad number {value!r}", field=elem, value=value, row=row))
                continue
            out.append(Item(row=row))
        return out

    def document_row(self, doc: Element, doc_id: str | None, ctx: FileContext) -> Item:
        role = text_of(doc, "Роль")
        v: dict[str, str | None] = {
            "key": doc_id, "id": doc_id, "number": text_of(doc, "Номер"), "operation": text_of(doc, "ХозОперация"),
            "role": role, "currency": text_of(doc, "Валюта"), "comment": text_of(doc, "Комментарий"),
            "number_1c": text_of(doc, "Номер1С"), "version": ctx.version,
        }
        cp = self._main_counterparty(doc, role)
        if cp is not None:
            v["counterparty_key"] = self.counterparty_key(cp)
            v["counterparty_id"] = text_of(cp, "Ид")
            v["counterparty_name"] = text_of(cp, "Наименование", "ОфициальноеНаименование", "ПолноеНаименование",
                                             "РеквизитыЮрЛица/ОфициальноеНаименование")
            v["counterparty_inn"] = text_of(cp, "ИНН", "РеквизитыЮрЛица/ИНН", "РеквизитыФизЛица/ИНН")
            v["counterparty_kpp"] = text_of(cp, "КПП", "РеквизитыЮрЛица/КПП")
            v["counterparty_role"] = text_of(cp, "Роль")
        attrs: list[tuple[str, str | None]] = []
        for a in doc.findall("ЗначенияРеквизитов/ЗначениеРеквизита"):
            name = text_of(a, "Наименование")
            if name is None:
                continue
            values = [clean(x.text) for x in a.findall("Значение")]
            attrs.append((name, join_unique(values)))
        v["attributes"] = as_json(attrs)
        raw_date = {"date": (text_of(doc, "Дата"), text_of(doc, "Время")), "date_1c": (text_of(doc, "Дата1С"), None)}
        raw_num = {"rate": text_of(doc, "Курс"), "amount": text_of(doc, "Сумма")}
        row = self.row(ctx, doc, {**v, **raw_num, "date": raw_date["date"][0], "date_1c": raw_date["date_1c"][0]})
        for name, value in attrs:
            spec = _DOC_ATTRIBUTES.get(name.lower())
            if spec is None or value is None or row.get(spec[0]) is not None:
                continue
            col, how = spec
            try:
                row[col] = norm_date(value) if how == "date" else norm_bool(value) if how == "bool" else value
            except BadValue:
                ctx.warn(f"attr:{name}", doc.line, f"ЗначениеРеквизита {name!r} = {value!r} is not a "
                                                   f"{'date' if how == 'date' else 'boolean'}: kept as is")
                row[col] = value
        label = f"Документ {doc_id or v['number'] or ''}".rstrip()
        if doc_id is None:
            return self.reject(ctx, doc.line, "missing_id", f"{label} has no Ид", field="Ид", row=row)
        for col, (value, time) in raw_date.items():
            try:
                row[col] = norm_date(value, time)
            except BadValue as e:
                elem = {"date": "Дата", "date_1c": "Дата1С"}[col]
                if e.kind == "time":
                    elem = "Время"
                return self.reject(ctx, doc.line, "bad_date", f"{label}: {elem}: bad {e.kind} {e.value!r}",
                                   field=elem, value=e.value, row=row)
        bad = _numbers(row, raw_num, {"rate": "Курс", "amount": "Сумма"})
        if bad:
            elem, value = bad
            return self.reject(ctx, doc.line, "bad_number", f"{label}: {elem}: bad number {value!r}", field=elem,
                               value=value, row=row)
        return Item(row=row)


def _numbers(row: dict, raw: dict[str, str | None], elements: dict[str, str]) -> tuple[str, str] | None:
    """Normalise the number columns of ``row`` in place; (element, value) of the first that is not a number."""
    for col, value in raw.items():
        try:
            row[col] = norm_number(value)
        except BadValue as e:
            return elements[col], e.value
    return None

