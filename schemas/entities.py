"""Company, contact, deal, site and ticket: fields, types, required fields and links.

Field names are snake_case and system-neutral; a sink maps them onto its own fields (Bitrix24 TITLE, PHONE...).
A link field holds the *source id* of a record of another pipeline; the engine resolves it through the crosswalk
into the target id and writes it into the link's ``id_field``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

STRING = pa.string()
TIMESTAMP = pa.timestamp("s")
DATE = pa.date32()
FLOAT = pa.float64()
INT = pa.int64()
BOOL = pa.bool_()


@dataclass(frozen=True)
class EntityField:
    name: str
    type: pa.DataType = STRING
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Link:
    """A reference to a record of another entity, resolved through the crosswalk."""

    name: str  # the link's name in pipeline YAML: `links: {company: ...}`
    entity: str  # the entity it points to ("user" is the responsible user, resolved by the target)
    required: bool = False
    doc: str = ""

    @property
    def id_field(self) -> str:
        return f"{self.name}_id"


@dataclass(frozen=True)
class Entity:
    name: str
    fields: tuple[EntityField, ...]
    links: tuple[Link, ...] = ()
    doc: str = ""
    by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update({f.name: f for f in self.fields})

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    def link(self, name: str) -> Link | None:
        return next((l for l in self.links if l.name == name), None)

    def arrow_schema(self, with_links: bool = True) -> pa.Schema:
        cols = [pa.field(f.name, f.type) for f in self.fields]
        if with_links:
            cols += [pa.field(l.id_field, STRING) for l in self.links]
        return pa.schema(cols)


def _f(name: str, type_: pa.DataType = STRING, required: bool = False, doc: str = "") -> EntityField:
    return EntityField(name, type_, required, doc)


_COMMON_TAIL = (
    _f("responsible_name", doc="the manager in charge, as named in the source (resolved to a CRM user by the target)"),
    _f("comments", doc="free text"),
    _f("created_at", TIMESTAMP, doc="when the record was created in the source system"),
    _f("modified_at", TIMESTAMP, doc="when the record was last changed in the source system"),
)

COMPANY = Entity(
    "company",
    (
        _f("title", required=True, doc="company name as the CRM shows it"),
        _f("company_type", doc="client, supplier, partner..."),
        _f("inn", doc="taxpayer number, 10 digits (12 for a sole trader)"),
        _f("kpp", doc="tax registration reason code, 9 digits"),
        _f("ogrn", doc="state registration number, 13 digits (15 for OGRNIP)"),
        _f("industry"),
        _f("phone", doc="one or several phones, ';'-separated"),
        _f("email", doc="one or several e-mails, ';'-separated"),
        _f("web"),
        _f("address"),
        _f("revenue", FLOAT),
        _f("is_active", BOOL),
        *_COMMON_TAIL,
    ),
    links=(Link("responsible", "user", doc="the manager in charge"),),
    doc="an organisation: client, partner, supplier",
)

CONTACT = Entity(
    "contact",
    (
        _f("last_name"),
        _f("name", required=True, doc="first name (or the whole name when it cannot be split)"),
        _f("second_name", doc="patronymic"),
        _f("full_name", doc="the name as typed in the source"),
        _f("gender"),
        _f("birthdate", DATE),
        _f("post", doc="job title"),
        _f("phone", doc="one or several phones, ';'-separated"),
        _f("email", doc="one or several e-mails, ';'-separated"),
        _f("address"),
        *_COMMON_TAIL,
    ),
    links=(
        Link("company", "company", doc="the company the person works for"),
        Link("responsible", "user"),
    ),
    doc="a person",
)

DEAL = Entity(
    "deal",
    (
        _f("title", required=True),
        _f("direction", doc="the sales direction (a Bitrix24 deal category)"),
        _f("stage", doc="the stage within its direction"),
        _f("amount", FLOAT),
        _f("currency"),
        _f("opened_at", TIMESTAMP),
        _f("closed_at", TIMESTAMP),
        _f("is_closed", BOOL),
        *_COMMON_TAIL,
    ),
    links=(
        Link("contact", "contact"),
        Link("company", "company"),
        Link("responsible", "user"),
    ),
    doc="a sale or order, in one of several directions",
)

SITE = Entity(
    "site",
    (
        _f("title", required=True, doc="the object's name: a shop, a warehouse, a flat under guard"),
        _f("site_type"),
        _f("address_raw", required=True, doc="the address as typed"),
        _f("address", doc="the cleaned, standardised address"),
        _f("region"),
        _f("city"),
        _f("street"),
        _f("house"),
        _f("flat"),
        _f("postal_code"),
        _f("fias_id"),
        _f("geo_lat", FLOAT),
        _f("geo_lon", FLOAT),
        _f("contact_persons", doc="people to call on site, free text"),
        *_COMMON_TAIL,
    ),
    links=(
        Link("company", "company", doc="owner, when a company"),
        Link("contact", "contact", doc="owner, when a person"),
        Link("responsible", "user"),
    ),
    doc="a service object: an address under guard or maintenance",
)

TICKET = Entity(
    "ticket",
    (
        _f("title", required=True),
        _f("opened_at", TIMESTAMP, required=True),
        _f("closed_at", TIMESTAMP),
        _f("reason"),
        _f("status"),
        _f("engineer", doc="who did the work, as named in the source"),
        _f("report", doc="the engineer's report"),
        _f("travel_minutes", FLOAT),
        _f("work_minutes", FLOAT),
        *_COMMON_TAIL,
    ),
    links=(
        Link("site", "site", required=True),
        Link("contact", "contact"),
        Link("company", "company"),
        Link("responsible", "user"),
    ),
    doc="a service request on a site",
)

ENTITIES: dict[str, Entity] = {e.name: e for e in (COMPANY, CONTACT, DEAL, SITE, TICKET)}


def get_entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None
