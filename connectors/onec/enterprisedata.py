"""EnterpriseData (1C's universal exchange format, "Обмен через универсальный формат") as a Source.

A message is ``Message`` (``http://www.1c.ru/SSL/Exchange/Message``) with a ``Header`` (``Format`` names the version,
e.g. ``http://v8.1c.ru/edi/edi_stnd/EnterpriseData/1.8``) and a ``Body`` whose namespace carries the version too;
the objects are the children of ``Body``. Everything is found by local name; the version (1.0 ... 1.22) comes from
``Format``, else from the ``Body`` namespace, into the ``version`` column.

``kind:`` selects the rows (strings; the same column names as the CommerceML source, so that a pipeline swaps one
for the other by its ``source:`` block alone):

* ``counterparties`` — one row per ``Справочник.Контрагенты`` (its ``КлючевыеСвойства``: ``Ссылка``,
  ``Наименование``, ``НаименованиеПолное``, ``ИНН``, ``КПП``, ``ЮридическоеФизическоеЛицо``,
  ``РегистрационныйНомер``...; ``КонтактнаяИнформация``), then one per counterparty embedded in a document
  (``Документ.*/Контрагент``: key properties only) whose key the file has not given yet;
* ``documents`` — one row per ``Документ.*`` (``operation`` is the document type, e.g. ``ЗаказКлиента``);
* ``document_items`` — one row per ``Документ.*/Товары/Строка`` and ``Документ.*/Услуги/Строка``.

``КонтактнаяИнформация/Строка``: ``ЗначенияПолей`` holds escaped XML (``<КонтактнаяИнформация Представление="..."
xmlns="http://www.v8.1c.ru/ssl/contactinfo">``); it is parsed again (hardened the same way) and its
``Представление`` is the value: the raw address for addresses (``legal_address``, ``actual_address``,
``postal_address``), the number or e-mail for the others. Without it: ``Значение``, a ``Представление=`` line of
the older key=value form, or the text itself.

A counterparty's ``key`` is its ``Ссылка`` (1C UUID), else ``inn:<ИНН>:<КПП>``; documents refer to counterparties by
the same key. Empty or absent elements are NULL; dates are ISO text; numbers keep their dot decimal; a date or number
that cannot be read rejects the record.
"""

from __future__ import annotations

import re

from connectors.base import BadInputError
from connectors.onec.commerceml import COLUMNS as _CML_COLUMNS
from connectors.onec.commerceml import contact_column
from connectors.onec.xmlstream import (
    BadValue,
    Element,
    FileContext,
    Item,
    XmlRecordSource,
    _Stream,
    clean,
    join_unique,
    norm_bool,
    norm_date,
    norm_number,
    parse_inner_xml,
    split_fio,
    text_of,
)

__all__ = ["EnterpriseDataSource", "COLUMNS", "contact_info_value"]

COLUMNS = {k: v for k, v in _CML_COLUMNS.items() if k != "contacts"}
COUNTERPARTY_OBJECT = "Справочник.Контрагенты"
_VERSION = re.compile(r"EnterpriseData/(\d+(?:\.\d+){1,2})")

# ВидКонтактнойИнформации -> column
_CI_KINDS = {
    "юридическийадрес": "legal_address",
    "фактическийадрес": "actual_address",
    "почтовыйадрес": "postal_address",
    "телефон": "phone",
    "факс": "fax",
    "адресэлектроннойпочты": "email",
    "вебстраница": "web",
}


def _ref_text(el: Element | None) -> str | None:
    """A value that is either text or a reference with key properties (``Наименование``, ``Код``)."""
    if el is None:
        return None
    if len(el) == 0:
        return clean(el.text)
    return text_of(el, "Наименование", "КлючевыеСвойства/Наименование", "Код", "КлючевыеСвойства/Код",
                   "НаименованиеПолное")


def _key_props(el: Element) -> Element:
    kp = el.find("КлючевыеСвойства")
    return kp if kp is not None else el


def contact_info_value(fields: str | None, value: str | None) -> tuple[str | None, str]:
    """(value, how) of one contact-information line: ``Представление`` of the XML in ``ЗначенияПолей``, else
    ``Значение``, else a ``Представление=`` line of the old key=value form, else the text."""
    fields = clean(fields)
    if fields is not None and fields.startswith("<"):
        try:
            root = parse_inner_xml(fields)
        except Exception:  # noqa: BLE001 - any parse failure, refused entities included: fall back below
            root = None
        if root is not None:
            pres = clean(root.get("Представление") or root.get("Presentation"))
            if pres:
                return pres, "presentation"
            for child in root.iter():
                for attr in ("Значение", "Value"):
                    v = clean(child.get(attr))
                    if v:
                        return v, "value_attribute"
        if value:
            return value, "value"
        return None, "unreadable" if root is None else "empty"
    if value:
        return value, "value"
    if fields is None:
        return None, "empty"
    for line in fields.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() in ("Представление", "Presentation"):
            return clean(v), "key_value"
    return fields, "text"


class EnterpriseDataSource(XmlRecordSource):
    """EnterpriseData exchange messages (``Message/Body``)."""

    KINDS = COLUMNS

    # --- walking

    def _root(self, el: Element, ctx: FileContext, stream: _Stream) -> None:
        if el.tag != "Message":
            raise BadInputError(f"{ctx.rel}, line {el.line}: not an EnterpriseData message: the root element is "
                                f"<{el.tag}>, not <Message>", file=ctx.rel)
        ctx.namespaces = stream.builder.namespaces

    def _record_type(self, el: Element, names: list[str], ctx: FileContext, phase: str) -> str | None:
        if len(names) == 1 and el.tag == "Body":
            if ctx.version is None:
                m = _VERSION.search(ctx.namespaces.get("Body", ""))
                ctx.version = m.group(1) if m else None
            return None
        if len(names) != 2 or names[1] != "Body":
            if phase == "list" and el.tag == "Контрагент" and any(n.startswith("Документ.") for n in names):
                return "embedded"
            return None
        if el.tag == COUNTERPARTY_OBJECT:
            return "counterparty" if phase == "list" else None
        if el.tag.startswith("Документ."):
            return "document" if phase == "documents" else None
        return None

    def _on_end(self, el: Element, names: list[str], ctx: FileContext) -> None:
        if el.tag == "Format" and names[-1:] == ["Header"]:
            m = _VERSION.search(el.text or "")
            if m:
                ctx.version = m.group(1)

    # --- counterparties

    def counterparty_key(self, el: Element) -> str | None:
        kp = _key_props(el)
        ref = text_of(kp, "Ссылка")
        if ref is not None:
            return ref
        inn = text_of(kp, "ИНН")
        if inn is None:
            return None
        kpp = text_of(kp, "КПП")
        return f"inn:{inn}:{kpp}" if kpp else f"inn:{inn}"

    def embedded_counterparties(self, doc: Element) -> list[Element]:
        out = []
        stack = [doc]
        while stack:  # every Контрагент below the document, not those inside another one
            node = stack.pop()
            for child in reversed(node):
                if child.tag == "Контрагент":
                    out.append(child)
                else:
                    stack.append(child)
        out.sort(key=lambda e: e.line)
        return out

    def _contact_info(self, obj: Element, ctx: FileContext) -> dict[str, str | None]:
        found: dict[str, list[str]] = {c: [] for c in ("legal_address", "actual_address", "postal_address",
                                                         "phone", "fax", "email", "web", "other_contacts")}
        ci = obj.find("КонтактнаяИнформация")
        if ci is None:
            return {k: None for k in found}
        for line in ci:
            kind = _ref_text(line.find("ВидКонтактнойИнформации"))
            fields_el = line.find("ЗначенияПолей")
            value, how = contact_info_value(fields_el.text if fields_el is not None else None,
                                            text_of(line, "Значение"))
            if how == "unreadable":
                ctx.warn("contact_info_xml", line.line, "ЗначенияПолей is not readable XML and there is no Значение: "
                                                        "the line is left out")
            elif how in ("value", "key_value", "text") and fields_el is not None and clean(fields_el.text):
                source = {"value": "Значение", "key_value": "its Представление= line"}.get(how, "its text")
                ctx.warn(f"contact_info_{how}", line.line, f"ЗначенияПолей is not XML with a Представление: the "
                                                           f"value is taken from {source}")
            if value is None:
                continue
            col = _CI_KINDS.get((kind or "").replace(" ", "").lower())
            if col is None:
                col = contact_column(kind, value)
            if col is None:
                if kind is not None:
                    ctx.warn(f"contact_kind:{kind}", line.line, f"ВидКонтактнойИнформации {kind!r} is not known: "
                                                                f"kept in other_contacts")
                found["other_contacts"].append(f"{kind}: {value}" if kind else value)
            else:
                found[col].append(value)
        return {k: join_unique(v) for k, v in found.items()}

    def counterparty_items(self, el: Element, key: str | None, ctx: FileContext) -> list[Item]:
        kp = _key_props(el)
        v: dict[str, str | None] = {"key": key, "id": text_of(kp, "Ссылка"), "version": ctx.version}
        v["name"] = text_of(kp, "Наименование")
        v["full_name"] = text_of(kp, "НаименованиеПолное")
        v["inn"] = text_of(kp, "ИНН")
        v["kpp"] = text_of(kp, "КПП")
        v["ogrn"] = text_of(kp, "РегистрационныйНомер")
        v["okpo"] = text_of(el, "ОКПО") or text_of(kp, "ОКПО")
        legal = text_of(kp, "ЮридическоеФизическоеЛицо", "ЮрФизЛицо")
        low = (legal or "").lower()
        if low in ("юридическоелицо", "юрлицо"):
            v["type"] = "company"
        elif low in ("физическоелицо", "физлицо"):
            v["type"] = "person"
        else:
            v["type"] = None
            if legal is not None:
                ctx.warn(f"legal_form:{legal}", el.line, f"ЮридическоеФизическоеЛицо {legal!r} is neither "
                                                         f"ЮридическоеЛицо nor ФизическоеЛицо: type left empty")
        person = el.find("ФизическоеЛицо")
        if person is not None and len(person):
            pk = _key_props(person)
            v["last_name"] = text_of(pk, "Фамилия")
            v["first_name"] = text_of(pk, "Имя")
            v["middle_name"] = text_of(pk, "Отчество")
        if v["type"] == "person" and not (v.get("last_name") or v.get("first_name")):
            v["last_name"], v["first_name"], v["middle_name"] = split_fio(v["full_name"] or v["name"])
        v.update(self._contact_info(el, ctx))
        v["address"] = v["actual_address"] or v["legal_address"] or v["postal_address"]
        common = el.find("ОбщиеСвойстваОбъектовФормата")
        v["comment"] = text_of(common, "Комментарий") or text_of(el, "Комментарий")
        v["responsible"] = _ref_text(common.find("Ответственный")) if common is not None else None
        if v["responsible"] is None:
            v["responsible"] = _ref_text(el.find("Ответственный"))
        head = el.find("ГоловнойКонтрагент")
        if head is None:
            v["parent_key"] = None
        elif len(head):
            v["parent_key"] = self.counterparty_key(head)
        else:
            v["parent_key"] = clean(head.text)
        row = self.row(ctx, el, v)
        if key is None:
            return [self.reject(ctx, el.line, "missing_id", f"{el.tag} {v['name']!r} has no Ссылка and no ИНН: it "
                                f"cannot be identified", field="Ссылка", row=row)]
        deleted = text_of(el, "ПометкаУдаления")
        try:
            row["deleted"] = norm_bool(deleted)
        except BadValue:
            ctx.warn("deleted", el.line, f"ПометкаУдаления {deleted!r} is not a boolean: kept as is")
            row["deleted"] = deleted
        return [Item(row=row)]

    # --- documents

    def document_items(self, doc: Element, ctx: FileContext) -> list[Item]:
        kp = _key_props(doc)
        doc_id = text_of(kp, "Ссылка")
        operation = doc.tag.partition(".")[2] or doc.tag
        if self.kind == "documents":
            return [self.document_row(doc, kp, doc_id, operation, ctx)]
        out = []
        n = 0
        for section in ("Товары", "Услуги"):
            for line in doc.findall(f"{section}/Строка"):
                n += 1
                nom = line.find("Номенклатура")
                nk = _key_props(nom) if nom is not None else None
                line_no = text_of(line, "НомерСтроки") or str(n)
                v: dict[str, str | None] = {
                    "key": f"{doc_id}/{line_no}" if doc_id else None, "document_key": doc_id, "document_id": doc_id,
                    "line_no": line_no, "section": section, "item_id": text_of(nk, "Ссылка"),
                    "article": text_of(nk, "Артикул"),
                    "name": text_of(nk, "Наименование", "НаименованиеПолное") or text_of(line, "Содержание"),
                    "unit": _ref_text(line.find("ЕдиницаИзмерения")), "vat_rate": _ref_text(line.find("СтавкаНДС")),
                    "version": ctx.version,
                }
                raw = {"quantity": text_of(line, "Количество"), "price": text_of(line, "Цена"),
                       "amount": text_of(line, "Сумма"), "vat_amount": text_of(line, "СуммаНДС")}
                row = self.row(ctx, line, {**v, **raw})
                if doc_id is None:
                    out.append(self.reject(ctx, line.line, "missing_id", f"{section} line {line_no} of a {doc.tag} "
                                           f"without Ссылка (line {doc.line})", field="Ссылка", row=row))
                    continue
                bad = None
                for col, value in raw.items():
                    try:
                        row[col] = norm_number(value)
                    except BadValue as e:
                        bad = ({"quantity": "Количество", "price": "Цена", "amount": "Сумма",
                                "vat_amount": "СуммаНДС"}[col], e.value)
                        break
                if bad:
                    out.append(self.reject(ctx, line.line, "bad_number", f"{section} line {line_no} of {doc.tag} "
                                           f"{doc_id}: {bad[0]}: bad number {bad[1]!r}", field=bad[0], value=bad[1],
                                           row=row))
                    continue
                out.append(Item(row=row))
        return out

    def document_row(self, doc: Element, kp: Element, doc_id: str | None, operation: str, ctx: FileContext) -> Item:
        v: dict[str, str | None] = {
            "key": doc_id, "id": doc_id, "number": text_of(kp, "Номер") or text_of(doc, "Номер"),
            "operation": operation, "organization": _ref_text(kp.find("Организация")), "version": ctx.version,
        }
        cur = doc.find("Валюта")
        if cur is not None and len(cur):
            ck = _key_props(cur)
            v["currency"] = text_of(ck, "Наименование", "НаименованиеПолное")
            v["currency_code"] = text_of(ck, "Код")
        elif cur is not None:
            v["currency"] = clean(cur.text)
        cp = doc.find("Контрагент")
        if cp is None:
            embedded = self.embedded_counterparties(doc)
            cp = embedded[0] if embedded else None
        if cp is not None:
            ck = _key_props(cp)
            v["counterparty_key"] = self.counterparty_key(cp)
            v["counterparty_id"] = text_of(ck, "Ссылка")
            v["counterparty_name"] = text_of(ck, "Наименование", "НаименованиеПолное")
            v["counterparty_inn"] = text_of(ck, "ИНН")
            v["counterparty_kpp"] = text_of(ck, "КПП")
        addr = doc.find("АдресДоставки")
        if addr is not None:
            if len(addr):
                v["delivery_address"] = contact_info_value(text_of(addr, "ЗначенияПолей"),
                                                           text_of(addr, "Представление", "Значение"))[0]
            else:
                v["delivery_address"] = contact_info_value(addr.text, None)[0]
        common = doc.find("ОбщиеСвойстваОбъектовФормата")
        v["comment"] = text_of(common, "Комментарий") or text_of(doc, "Комментарий")
        v["responsible"] = (_ref_text(common.find("Ответственный")) if common is not None else None) or _ref_text(
            doc.find("Ответственный"))
        raw_date = text_of(kp, "Дата") or text_of(doc, "Дата")
        raw_num = {"rate": text_of(doc, "Курс", "КурсВзаиморасчетов"), "amount": text_of(doc, "Сумма")}
        row = self.row(ctx, doc, {**v, **raw_num, "date": raw_date})
        label = f"{doc.tag} {doc_id or v['number'] or ''}".rstrip()
        if doc_id is None:
            return self.reject(ctx, doc.line, "missing_id", f"{label} has no Ссылка", field="Ссылка", row=row)
        try:
            row["date"] = norm_date(raw_date)
        except BadValue as e:
            return self.reject(ctx, doc.line, "bad_date", f"{label}: Дата: bad date {e.value!r}", field="Дата",
                               value=e.value, row=row)
        for col, value in raw_num.items():
            try:
                row[col] = norm_number(value)
            except BadValue as e:
                elem = {"rate": "Курс", "amount": "Сумма"}[col]
                return self.reject(ctx, doc.line, "bad_number", f"{label}: {elem}: bad number {e.value!r}",
                                   field=elem, value=e.value, row=row)
        for col, elem in (("posted", "Проведен"), ("deleted", "ПометкаУдаления")):
            if col in row:
                raw = text_of(doc, elem)
                try:
                    row[col] = norm_bool(raw)
                except BadValue:
                    ctx.warn(col, doc.line, f"{elem} {raw!r} is not a boolean: kept as is")
                    row[col] = raw
        return Item(row=row)
