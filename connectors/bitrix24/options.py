"""`target_options:` of a pipeline that loads into Bitrix24: the keys, their meaning and their checks.

    target_options:
      fields: {inn: UF_CRM_INN, industry: null}     # canonical field -> Bitrix24 field (null: do not send)
      values: {company_type: {Клиент: CUSTOMER}}    # canonical field -> {source value: Bitrix24 value}
      responsible: {map: {"Иванов Иван": 7}, lookup: true, default: 1, unknown: default}
      historical_dates: true                          # DATE_CREATE/DATE_MODIFY (IMPORT), createdTime (batchImport)
      # deals
      categories: {Сервис: "Сервис"}                  # direction -> category name or id (default: the direction)
      stages: {Сервис: {Диагностика: PREPARATION, "Автомобиль выдан клиенту": WON}}
      # sites / tickets
      store_as: smart_process                         # or list
      smart_process: {title: Объекты}                 # or {entity_type_id: 1032}
      list: {iblock_code: sites, iblock_type_id: lists}
      parents: {site: Объекты}                        # ticket -> site: the site's smart process (title or id)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponsibleOptions(_Model):
    """The responsible user (ASSIGNED_BY_ID / assignedById) from the record's `responsible_name`."""

    map: dict[str, int] = Field(default_factory=dict, description="name as in the source -> Bitrix24 user id")
    lookup: bool = Field(True, description="match other names against user.get (spelling, case, initials)")
    default: int | None = Field(None, description="user id for empty or unknown names (none: the portal's)")
    unknown: Literal["default", "reject"] = "default"


class SmartProcessOptions(_Model):
    title: str | None = None
    entity_type_id: int | None = None
    create: bool = Field(True, description="create the smart process (crm.type.add) when no type has this title")
    category: int | None = Field(None, description="category id (default: the type's default category)")

    @model_validator(mode="after")
    def _one(self):
        if self.title is None and self.entity_type_id is None:
            raise ValueError("give `title` or `entity_type_id`")
        return self


class ListOptions(_Model):
    iblock_type_id: Literal["lists", "bitrix_processes", "lists_socnet"] = "lists"
    iblock_code: str | None = None
    iblock_id: int | None = None
    name: str | None = Field(None, description="the list's name when it is created")
    create: bool = True
    socnet_group_id: int | None = None

    @model_validator(mode="after")
    def _one(self):
        if self.iblock_code is None and self.iblock_id is None:
            raise ValueError("give `iblock_code` or `iblock_id`")
        return self


class Bitrix24Options(_Model):
    fields: dict[str, str | None] = Field(default_factory=dict)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    create_user_fields: bool = Field(True, description="add missing UF_CRM_* fields (crm.<entity>.userfield.add)")
    responsible: ResponsibleOptions = Field(default_factory=ResponsibleOptions)
    historical_dates: bool = True
    timezone: str | None = Field(None, description="offset (+03:00) or IANA zone of the source's naive times")
    phone_type: str = "WORK"
    email_type: str = "WORK"
    web_type: str = "WORK"
    # deals
    categories: dict[str, str | int] = Field(default_factory=dict)
    default_category: str | int | None = Field(None, description="category of deals without a direction (0)")
    create_categories: bool = True
    stages: dict[str, Any] = Field(default_factory=dict)
    unknown_stage: Literal["reject", "default"] = "reject"
    # sites / tickets
    store_as: Literal["smart_process", "list"] | None = None
    smart_process: SmartProcessOptions | None = None
    list: ListOptions | None = None
    parents: dict[str, str | int] = Field(default_factory=dict)


PHONE_TYPES = {"WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"}
EMAIL_TYPES = {"WORK", "HOME", "MAILING", "OTHER"}
WEB_TYPES = {"WORK", "HOME", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"}


def parse_options(options: dict, entity: Any) -> Bitrix24Options:
    """Validated options; raises ValueError with every problem as ``path: message`` lines."""
    problems = check_options(options, entity)
    if problems:
        raise ValueError("; ".join(f"{p}: {m}" if p else m for p, m in problems))
    return Bitrix24Options.model_validate(options or {})


def check_options(options: dict, entity: Any) -> list[tuple[str, str]]:
    """Problems of a pipeline's target_options as (key path, message); ``entity`` is a schemas.Entity."""
    out: list[tuple[str, str]] = []
    try:
        opts = Bitrix24Options.model_validate(options or {})
    except ValidationError as e:
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                out.append((path, f"unknown key {err['loc'][-1]!r} (valid: "
                                  f"{', '.join(_valid_keys(err['loc'][:-1]))})"))
            else:
                out.append((path, err["msg"]))
        return out
    known = set(entity.field_names) | {l.id_field for l in entity.links}
    for f in opts.fields:
        if f not in known:
            out.append((f"fields.{f}", f"entity {entity.name} has no field {f!r}"))
    for f in opts.values:
        if f not in known:
            out.append((f"values.{f}", f"entity {entity.name} has no field {f!r}"))
    for f, target in opts.fields.items():
        if target is not None and not target.strip():
            out.append((f"fields.{f}", "empty Bitrix24 field name (use null to leave the field out)"))
    for key, allowed in (("phone_type", PHONE_TYPES), ("email_type", EMAIL_TYPES), ("web_type", WEB_TYPES)):
        v = getattr(opts, key)
        if v not in allowed:
            out.append((key, f"{v!r} is not one of {', '.join(sorted(allowed))}"))
    if opts.timezone:
        try:
            tz_of(opts.timezone)
        except ValueError as e:
            out.append(("timezone", str(e)))
    ename = entity.name
    deal_only = ("categories", "default_category", "create_categories")
    item_only = ("store_as", "smart_process", "list", "parents")
    if ename != "deal":
        for k in deal_only:
            if k in (options or {}):
                out.append((k, f"only for deals (this pipeline loads {ename} records)"))
    if ename not in ("site", "ticket"):
        for k in item_only:
            if k in (options or {}):
                out.append((k, f"only for sites and tickets (this pipeline loads {ename} records)"))
    if ename in ("company", "contact") and opts.stages:
        out.append(("stages", f"{ename} records have no stages"))
    if ename == "deal":
        for d, m in opts.stages.items():
            if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
                out.append((f"stages.{d}", "per direction a map {source stage: stage code}"))
    if ename in ("site", "ticket"):
        for s, code in opts.stages.items():
            if not isinstance(code, str):
                out.append((f"stages.{s}", "a map {source status: stage code}"))
        kind = opts.store_as or "smart_process"
        if kind == "smart_process" and opts.smart_process is None:
            out.append(("smart_process", "required when store_as is smart_process (the default): "
                                         "{title: ...} or {entity_type_id: ...}"))
        if kind == "list" and opts.list is None:
            out.append(("list", "required when store_as is list: {iblock_code: ...} or {iblock_id: ...}"))
        if kind == "list":
            for f, target in opts.fields.items():
                if target is not None and not target.upper().startswith("PROPERTY_") and target.upper() != "NAME":
                    out.append((f"fields.{f}", f"a list element field is NAME or PROPERTY_<id or code> "
                                               f"(got {target!r})"))
        links = {l.name for l in entity.links}
        for p in opts.parents:
            if p not in links:
                out.append((f"parents.{p}", f"entity {ename} has no link {p!r}"))
    return out


def _valid_keys(loc: tuple) -> list[str]:
    model: Any = Bitrix24Options
    for part in loc:
        f = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if f is None:
            return []
        ann = f.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def tz_of(name: str):
    """A tzinfo for ``+03:00`` / ``-0500`` / ``UTC`` / an IANA name."""
    import re
    from datetime import timedelta, timezone

    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name.strip())
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(delta if m[1] == "+" else -delta)
    if name.strip().upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name.strip())
    except Exception:  # noqa: BLE001
        raise ValueError(f"unknown time zone {name!r} (an offset like +03:00 or a name like Europe/Moscow)") from None


__all__ = ["Bitrix24Options", "ResponsibleOptions", "SmartProcessOptions", "ListOptions", "check_options",
           "parse_options", "tz_of"]
