"""Field values in and out: what a form string or a JSON value means for a field of a given type, and how the
two API styles write it back (legacy: nearly every scalar a string; crm.item: native numbers)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from .envelope import PORTAL_TZ, iso
from .params import as_list, to_int
from .schema import Field

_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?\s*"
                  r"(Z|[+-]\d{2}:?\d{2})?$")
_RU = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_US = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([ap]m)?)?$", re.I)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class FieldError(ValueError):
    """A value a field cannot take (code CRM_FIELD_ERROR_VALUE_NOT_VALID / REQUIRED for crm.item)."""

    def __init__(self, field: Field | None, message: str, code: str = "CRM_FIELD_ERROR_VALUE_NOT_VALID"):
        super().__init__(message)
        self.field = field
        self.code = code


def parse_datetime(v: Any) -> datetime:
    """A date or datetime (ISO 8601 with or without offset, ``DD.MM.YYYY[ HH:MM[:SS]]``, ``MM/DD/YYYY hh:mm:ss pm``)
    as naive UTC; a value without an offset is portal time."""
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, date):
        dt = datetime.combine(v, time())
    else:
        s = str(v).strip()
        m = _ISO.match(s)
        if m:
            y, mo, d, hh, mi, ss, frac, tz = m.groups()
            dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                          int((frac or "0").ljust(6, "0")))
            if tz:
                if tz == "Z":
                    dt = dt.replace(tzinfo=timezone.utc)
                else:
                    sign = 1 if tz[0] == "+" else -1
                    digits = tz[1:].replace(":", "")
                    dt = dt.replace(tzinfo=timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))))
        else:
            m = _RU.match(s)
            if m:
                d, mo, y, hh, mi, ss = m.groups()
                dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0))
            else:
                m = _US.match(s)
                if not m:
                    raise ValueError(f"not a date: {s!r}")
                mo, d, y, hh, mi, ss, ampm = m.groups()
                h = int(hh or 0)
                if ampm:
                    h = h % 12 + (12 if ampm.lower() == "pm" else 0)
                dt = datetime(int(y), int(mo), int(d), h, int(mi or 0), int(ss or 0))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=PORTAL_TZ)
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def portal_today() -> datetime:
    """Today's portal midnight, as naive UTC."""
    now = datetime.now(PORTAL_TZ)
    return datetime.combine(now.date(), time(), PORTAL_TZ).astimezone(timezone.utc).replace(tzinfo=None)


def _scalar(f: Field, v: Any) -> Any:
    t = f.type
    if isinstance(v, (dict, list)):
        raise FieldError(f, f'Field "{f.title}" takes one value, not an array')
    if t == "double":
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, (int, float)):
            return float(v)
        s = str(v).strip().replace(" ", "").replace(",", ".")
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            raise FieldError(f, f'Invalid value "{v}" of field "{f.title}": a number is expected') from None
    if t in ("date", "datetime"):
        if isinstance(v, str) and v.strip() == "":
            return None
        try:
            dt = parse_datetime(v)
        except (ValueError, TypeError):
            raise FieldError(f, f'Invalid value "{v}" of field "{f.title}": a date is expected') from None
        if t == "date":
            local = dt.replace(tzinfo=timezone.utc).astimezone(PORTAL_TZ)
            dt = datetime.combine(local.date(), time(), PORTAL_TZ).astimezone(timezone.utc).replace(tzinfo=None)
        return dt
    if t == "boolean":
        if isinstance(v, bool):
            return int(v)
        s = str(v).strip().upper()
        if s in ("1", "Y", "TRUE", "YES"):
            return 1
        if s in ("0", "N", "FALSE", "NO", ""):
            return 0
        raise FieldError(f, f'Invalid value "{v}" of field "{f.title}": Y/N or 1/0 is expected')
    if t == "char":
        if isinstance(v, bool):
            return "Y" if v else "N"
        s = str(v).strip().upper()
        if s in ("Y", "1", "TRUE"):
            return "Y"
        if s in ("N", "0", "FALSE", ""):
            return "N"
        raise FieldError(f, f'Invalid value "{v}" of field "{f.title}": Y or N is expected')
    if f.numeric:
        if isinstance(v, str) and v.strip() == "":
            return None
        n = to_int(v)
        if n is None:
            raise FieldError(f, f'Invalid value "{v}" of field "{f.title}": an integer is expected')
        return n
    if isinstance(v, bool):
        return "1" if v else ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    s = str(v)
    if not f.long and len(s) > 255:
        raise FieldError(f, f'The value of field "{f.title}" is longer than 255 characters')
    return s


def to_column(f: Field, v: Any) -> Any:
    """A field value as stored: scalars by type, a multiple field as a JSON list."""
    if v is None:
        return None
    if f.mult:
        items = [_scalar(f, x) for x in as_list(v)]
        items = [x.isoformat() if isinstance(x, datetime) else x for x in items if x is not None]
        return json.dumps(items, ensure_ascii=False)
    return _scalar(f, v)


def money(v: float) -> str:
    return f"{v:.2f}"


def _num_text(v: float) -> str:
    if float(v).is_integer():
        return str(int(v)) if abs(v) < 1e15 else repr(v)
    return repr(round(v, 10))


def legacy_out(f: Field, v: Any) -> Any:
    """Legacy CRM: every scalar a string, ``null`` when unset; dates in ISO with the portal's offset."""
    if v is None:
        return [] if f.mult else None
    if f.mult:
        items = json.loads(v) if isinstance(v, str) else v
        return [legacy_out_scalar(f, _restore(f, x)) for x in items]
    return legacy_out_scalar(f, v)


def legacy_out_scalar(f: Field, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, float):
        return money(v) if f.money else _num_text(v)
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _restore(f: Field, x: Any) -> Any:
    if f.is_date and isinstance(x, str):
        try:
            return datetime.fromisoformat(x)
        except ValueError:
            return x
    return x


def item_out(f: Field, v: Any) -> Any:
    """crm.item: native numbers, ``Y``/``N`` flags, ISO dates, arrays for multiple fields."""
    if f.mult:
        if v is None:
            return []
        items = json.loads(v) if isinstance(v, str) else v
        return [item_out_scalar(f, _restore(f, x)) for x in items]
    return item_out_scalar(f, v)


def item_out_scalar(f: Field, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, datetime):
        return iso(v)
    if f.type == "boolean":
        return bool(v)
    if f.type == "double":
        return float(v)
    if f.numeric:
        return int(v)
    return v


def is_email(s: str) -> bool:
    return bool(_EMAIL.match(s.strip()))


def norm_phone(s: str) -> str:
    """Digits of a phone; a Russian 8XXXXXXXXXX or 10-digit number becomes 7XXXXXXXXXX (our choice for
    crm.duplicate.findbycomm: open question 6)."""
    d = re.sub(r"\D", "", s or "")
    if len(d) == 11 and d[0] == "8":
        d = "7" + d[1:]
    elif len(d) == 10:
        d = "7" + d
    return d


def norm_comm(type_id: str, value: str) -> str:
    if type_id == "PHONE":
        return norm_phone(value)
    return (value or "").strip().lower()
