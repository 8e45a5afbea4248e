"""Field definitions of the CRM objects the sandbox keeps: contacts, companies, deals (legacy UPPER_SNAKE names,
also reachable through crm.item with camelCase names) and smart-process items; plus user-field naming rules.

A field is a column of the entity's table unless it is ``virtual``: ``fm`` (multi-fields PHONE, EMAIL.. in the
crm_fm table), ``binding`` (COMPANY_IDS of a contact, CONTACT_IDS of a deal or item, in crm_binding),
``primary`` (COMPANY_ID of a contact, CONTACT_ID of a deal: the primary binding), ``parent`` (PARENT_ID_<etid> /
parentId<etid>, in crm_parent_link), ``has`` (HAS_PHONE.., computed) or ``const`` (entityTypeId).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

CONTACT, COMPANY, DEAL = 3, 4, 2
LEGACY_NAMES = {CONTACT: "contact", COMPANY: "company", DEAL: "deal"}
LEGACY_BY_NAME = {v: k for k, v in LEGACY_NAMES.items()}
TYPE_CODES = {1: "L", 2: "D", 3: "C", 4: "CO", 7: "Q", 8: "RQ", 31: "SI", 36: "DO"}
TYPE_NAMES = {1: "LEAD", 2: "DEAL", 3: "CONTACT", 4: "COMPANY", 5: "INVOICE", 7: "QUOTE", 8: "REQUISITE",
              31: "SMART_INVOICE", 36: "SMART_DOCUMENT"}
MULTI_TYPES = ("PHONE", "EMAIL", "WEB", "IM", "LINK")
VALUE_TYPES = {
    "PHONE": ("WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"),
    "EMAIL": ("WORK", "HOME", "MAILING", "OTHER"),
    "WEB": ("WORK", "HOME", "FACEBOOK", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"),
    "IM": ("TELEGRAM", "VK", "SKYPE", "VIBER", "INSTAGRAM", "BITRIX24", "OPENLINE", "IMOL", "ICQ", "MSN", "JABBER",
           "OTHER"),
    "LINK": ("USER", "OTHER"),
}
NUMERIC_TYPES = frozenset({"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_category", "location",
                           "crm_quote", "crm_entity"})


@dataclass(frozen=True)
class Field:
    upper: str
    type: str
    title: str = ""
    camel: str = ""
    ro: bool = False  # read-only
    imm: bool = False  # immutable after add
    req: bool = False
    mult: bool = False
    virtual: str | None = None
    status_type: str | None = None
    import_only: bool = False  # writable on add with params[IMPORT]=Y (crm.item.batchImport for items)
    long: bool = False  # a TEXT column
    money: bool = False  # legacy writes it with two decimals
    uf: dict | None = None  # a user field's definition row
    feature: str | None = None  # smart process: the is*Enabled flag it depends on

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES or self.type == "double"

    @property
    def is_date(self) -> bool:
        return self.type in ("date", "datetime")


def auto_camel(upper: str) -> str:
    parts = upper.lower().split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def uf_camel(name: str) -> str:
    """crm.item's name of a user field (reference 5.5): UF_CRM_10_5186744711 -> ufCrm10_5186744711,
    UF_CRM_10_DIGIT -> ufCrm10Digit, UF_CRM_3_DIGIT10 -> ufCrm_3_DIGIT10, UF_CRM_1747309879 -> ufCrm_1747309879."""
    rest = name[len("UF_CRM_"):] if name.startswith("UF_CRM_") else name
    parts = rest.split("_")
    if len(parts) >= 2 and parts[0].isdigit():
        tail = parts[1:]
        if all(p.isdigit() for p in tail):
            return f"ufCrm{parts[0]}_" + "_".join(tail)
        if all(p.isalpha() for p in tail):
            return f"ufCrm{parts[0]}" + "".join(p[:1].upper() + p[1:].lower() for p in tail)
    return "ufCrm_" + rest


def camel_to_snake(name: str) -> str:
    """What Bitrix does to an unknown camelCase name in an order (``ID`` -> ``I_D``)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).upper()


def F(upper, type_, title="", **kw) -> Field:  # noqa: N802 - a table-like constructor
    return Field(upper, type_, title or upper.replace("_", " ").capitalize(), **kw)


_UTM = [F(n, "string", n) for n in ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")]
_MULTI = [F(t, "crm_multifield", t.capitalize(), mult=True, virtual="fm") for t in MULTI_TYPES]
_HAS = [F("HAS_PHONE", "char", "Has phone", ro=True, virtual="has"),
        F("HAS_EMAIL", "char", "Has e-mail", ro=True, virtual="has"),
        F("HAS_IMOL", "char", "Has open line", ro=True, virtual="has")]
_AUDIT = [
    F("ASSIGNED_BY_ID", "user", "Responsible person", camel="assignedById"),
    F("CREATED_BY_ID", "user", "Created by", ro=True, import_only=True, camel="createdBy"),
    F("MODIFY_BY_ID", "user", "Modified by", ro=True, import_only=True, camel="updatedBy"),
    F("DATE_CREATE", "datetime", "Created", ro=True, import_only=True, camel="createdTime"),
    F("DATE_MODIFY", "datetime", "Modified", ro=True, import_only=True, camel="updatedTime"),
]
_ORIGIN = [F("ORIGINATOR_ID", "string", "External source"), F("ORIGIN_ID", "string", "Item ID in data source"),
           F("ORIGIN_VERSION", "string", "Original version")]
_ADDRESS = [F(n, "string", n.replace("_", " ").capitalize(), long=n == "ADDRESS") for n in (
    "ADDRESS", "ADDRESS_2", "ADDRESS_CITY", "ADDRESS_POSTAL_CODE", "ADDRESS_REGION", "ADDRESS_PROVINCE",
    "ADDRESS_COUNTRY")] + [F("ADDRESS_LOC_ADDR_ID", "integer", "Location address")]
_ACTIVITY = [F("LAST_ACTIVITY_TIME", "datetime", "Last activity", ro=True),
             F("LAST_ACTIVITY_BY", "user", "Last activity by", ro=True)]

CONTACT_FIELDS = [
    F("ID", "integer", "ID", ro=True),
    F("HONORIFIC", "crm_status", "Salutation", status_type="HONORIFIC"),
    F("NAME", "string", "First name"), F("SECOND_NAME", "string", "Second name"), F("LAST_NAME", "string", "Last name"),
    F("PHOTO", "file", "Photo", long=True), F("BIRTHDATE", "date", "Date of birth"),
    F("TYPE_ID", "crm_status", "Contact type", status_type="CONTACT_TYPE"),
    F("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
    F("SOURCE_DESCRIPTION", "string", "Source information", long=True),
    F("POST", "string", "Position"), F("COMMENTS", "string", "Comment", long=True),
    F("OPENED", "char", "Available to everyone"), F("EXPORT", "char", "Included in export"),
    *_AUDIT,
    F("COMPANY_ID", "crm_company", "Company", virtual="primary"),
    F("COMPANY_IDS", "crm_company", "Companies", mult=True, virtual="binding"),
    F("LEAD_ID", "crm_lead", "Lead", ro=True), F("FACE_ID", "integer", "Face ID", ro=True),
    *_ORIGIN, *_HAS, *_ACTIVITY, *_UTM, *_ADDRESS, *_MULTI,
]

COMPANY_FIELDS = [
    F("ID", "integer", "ID", ro=True),
    F("TITLE", "string", "Company name", req=True),
    F("COMPANY_TYPE", "crm_status", "Company type", status_type="COMPANY_TYPE"),
    F("LOGO", "file", "Logo", long=True),
    F("INDUSTRY", "crm_status", "Industry", status_type="INDUSTRY"),
    F("EMPLOYEES", "crm_status", "Employees", status_type="EMPLOYEES"),
    F("CURRENCY_ID", "crm_currency", "Currency"),
    F("REVENUE", "double", "Annual revenue", money=True),
    F("OPENED", "char", "Available to everyone"), F("COMMENTS", "string", "Comment", long=True),
    F("IS_MY_COMPANY", "char", "My company"),
    F("BANKING_DETAILS", "string", "Payment details", long=True),
    *_AUDIT,
    F("LEAD_ID", "crm_lead", "Lead", ro=True),
    *_ORIGIN, *_HAS, *_ACTIVITY, *_UTM, *_ADDRESS,
    F("ADDRESS_LEGAL", "string", "Legal address", long=True),
    *_MULTI,
]

DEAL_FIELDS = [
    F("ID", "integer", "ID", ro=True),
    F("TITLE", "string", "Name"),
    F("TYPE_ID", "crm_status", "Type", status_type="DEAL_TYPE"),
    F("CATEGORY_ID", "crm_category", "Pipeline", imm=True),
    F("STAGE_ID", "crm_status", "Stage", status_type="DEAL_STAGE"),
    F("STAGE_SEMANTIC_ID", "string", "Stage group", ro=True),
    F("IS_NEW", "char", "New deal", ro=True),
    F("IS_RECURRING", "char", "Recurring deal"), F("IS_RETURN_CUSTOMER", "char", "Repeat deal"),
    F("IS_REPEATED_APPROACH", "char", "Repeated inquiry"),
    F("PROBABILITY", "integer", "Probability"),
    F("CURRENCY_ID", "crm_currency", "Currency"),
    F("OPPORTUNITY", "double", "Amount", money=True),
    F("IS_MANUAL_OPPORTUNITY", "char", "Manual amount"),
    F("TAX_VALUE", "double", "Tax rate", money=True),
    F("COMPANY_ID", "crm_company", "Company"),
    F("CONTACT_ID", "crm_contact", "Contact", virtual="primary"),
    F("CONTACT_IDS", "crm_contact", "Contacts", mult=True, virtual="binding"),
    F("QUOTE_ID", "crm_quote", "Quote", ro=True),
    F("BEGINDATE", "date", "Start date"), F("CLOSEDATE", "date", "End date"),
    F("OPENED", "char", "Available to everyone"), F("CLOSED", "char", "Closed"),
    F("COMMENTS", "string", "Comment", long=True),
    *_AUDIT,
    F("MOVED_BY_ID", "user", "Stage changed by", ro=True, camel="movedBy"),
    F("MOVED_TIME", "datetime", "Stage changed on", ro=True, camel="movedTime"),
    F("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
    F("SOURCE_DESCRIPTION", "string", "Source information", long=True),
    F("LEAD_ID", "crm_lead", "Lead", ro=True),
    F("ADDITIONAL_INFO", "string", "Additional information", long=True),
    F("LOCATION_ID", "location", "Location"),
    F("ORIGINATOR_ID", "string", "External source"), F("ORIGIN_ID", "string", "Item ID in data source"),
    *_ACTIVITY, *_UTM,
]

# smart-process items (crm.item); UPPER names are what crm.item accepts "but do not rely on it"
ITEM_FIELDS = [
    F("ID", "integer", "ID", ro=True),
    F("XML_ID", "string", "External ID"),
    F("TITLE", "string", "Name"),
    F("CREATED_BY", "user", "Created by", ro=True, import_only=True),
    F("UPDATED_BY", "user", "Updated by", ro=True, import_only=True),
    F("MOVED_BY", "user", "Moved by", ro=True, import_only=True),
    F("CREATED_TIME", "datetime", "Created on", ro=True, import_only=True),
    F("UPDATED_TIME", "datetime", "Updated on", ro=True, import_only=True),
    F("MOVED_TIME", "datetime", "Moved on", ro=True, import_only=True),
    F("CATEGORY_ID", "crm_category", "Pipeline"),
    F("OPENED", "char", "Available to everyone"),
    F("STAGE_ID", "crm_status", "Stage", feature="isStagesEnabled"),
    F("PREVIOUS_STAGE_ID", "crm_status", "Previous stage", ro=True, feature="isStagesEnabled"),
    F("BEGINDATE", "date", "Start date", feature="isBeginCloseDatesEnabled"),
    F("CLOSEDATE", "date", "End date", feature="isBeginCloseDatesEnabled"),
    F("COMPANY_ID", "crm_company", "Company", feature="isClientEnabled"),
    F("CONTACT_ID", "crm_contact", "Contact", virtual="primary", feature="isClientEnabled"),
    F("CONTACT_IDS", "crm_contact", "Contacts", mult=True, virtual="binding", feature="isClientEnabled"),
    F("OPPORTUNITY", "double", "Amount"),
    F("IS_MANUAL_OPPORTUNITY", "char", "Manual amount"),
    F("TAX_VALUE", "double", "Tax"),
    F("CURRENCY_ID", "crm_currency", "Currency"),
    F("MYCOMPANY_ID", "crm_company", "Your company details", feature="isMycompanyEnabled"),
    F("SOURCE_ID", "crm_status", "Source", status_type="SOURCE", feature="isSourceEnabled"),
    F("SOURCE_DESCRIPTION", "string", "Source information", long=True, feature="isSourceEnabled"),
    F("WEBFORM_ID", "integer", "CRM form", ro=True),
    F("ASSIGNED_BY_ID", "user", "Responsible person"),
    F("OBSERVERS", "user", "Observers", mult=True, feature="isObserversEnabled"),
    F("ORIGINATOR_ID", "string", "External source"),
    F("ORIGIN_ID", "string", "Item ID in data source"),
    F("LAST_ACTIVITY_TIME", "datetime", "Last activity", ro=True),
    F("LAST_ACTIVITY_BY", "user", "Last activity by", ro=True),
    F("ENTITY_TYPE_ID", "integer", "Entity type", ro=True, virtual="const"),
]

BASE_FIELDS = {CONTACT: CONTACT_FIELDS, COMPANY: COMPANY_FIELDS, DEAL: DEAL_FIELDS}
UF_ENTITY_IDS = {CONTACT: "CRM_CONTACT", COMPANY: "CRM_COMPANY", DEAL: "CRM_DEAL"}

UF_TYPES = ("string", "integer", "double", "boolean", "datetime", "date", "money", "url", "address", "enumeration",
            "file", "employee", "crm_status", "iblock_section", "iblock_element", "crm")


@dataclass
class EntityDef:
    """One CRM object type: its fields (by UPPER and by camel name) and, for a smart process, its type row."""

    etid: int
    table_name: str
    legacy: bool
    fields: dict[str, Field]
    type_row: dict | None = None
    by_camel: dict[str, Field] = field(default_factory=dict)

    def __post_init__(self):
        self.by_camel = {f.camel: f for f in self.fields.values()}

    @property
    def name(self) -> str:
        return LEGACY_NAMES.get(self.etid, f"dynamic_{self.etid}")

    @property
    def uf_entity_id(self) -> str:
        if self.etid in UF_ENTITY_IDS:
            return UF_ENTITY_IDS[self.etid]
        return f"CRM_{self.type_row['id']}" if self.type_row else f"CRM_{self.etid}"

    @property
    def has_fm(self) -> bool:
        return self.etid in (CONTACT, COMPANY)

    @property
    def date_create(self) -> str:
        return "CREATED_TIME" if not self.legacy else "DATE_CREATE"

    def columns(self) -> list[Field]:
        return [f for f in self.fields.values() if f.virtual is None]

    def feature_on(self, f: Field) -> bool:
        if f.feature is None or self.type_row is None:
            return True
        return self.type_row.get(f.feature) == "Y"

    def resolve(self, name: str, camel_ok: bool = True, upper_ok: bool = True) -> Field | None:
        """A field by its name: UPPER (legacy, and crm.item tolerates it) or camel (crm.item)."""
        if camel_ok:
            f = self.by_camel.get(name)
            if f is not None:
                return f
        if upper_ok:
            f = self.fields.get(name)
            if f is not None:
                return f
        return None


def uf_field(row: dict) -> Field:
    """A Field for a user-field definition row of crm_userfield."""
    utype = row["user_type_id"]
    kind = {"integer": "integer", "double": "double", "datetime": "datetime", "date": "date",
            "boolean": "boolean", "employee": "user"}.get(utype, "string")
    label = row.get("label") or row["field_name"]
    return Field(row["field_name"], kind, label, camel=uf_camel(row["field_name"]), req=row.get("mandatory") == "Y",
                 mult=row.get("multiple") == "Y", long=kind == "string", uf=row)


def build_entity(etid: int, table_name: str, ufs: list[dict], type_row: dict | None = None) -> EntityDef:
    base = BASE_FIELDS.get(etid, ITEM_FIELDS)
    fields: dict[str, Field] = {}
    for f in base:
        fields[f.upper] = f if f.camel else replace(f, camel=auto_camel(f.upper))
    for row in ufs:
        f = uf_field(row)
        fields[f.upper] = f
    return EntityDef(etid, table_name, etid in BASE_FIELDS, fields, type_row)


def parent_field(etid: int, legacy: bool) -> Field:
    """The link to a parent element of type ``etid``: PARENT_ID_<etid> (legacy) / parentId<etid> (crm.item)."""
    return Field(f"PARENT_ID_{etid}", "crm_entity", f"Parent {etid}", camel=f"parentId{etid}", virtual="parent")
