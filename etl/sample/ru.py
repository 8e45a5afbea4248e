"""Russian registry numbers, phones, e-mails and 1C value formats, as the sample generator writes them."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import lru_cache

NBSP = "\u00a0"

# --- INN / KPP / OGRN -------------------------------------------------------------------------------------------

_INN10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_1 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_2 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


def _control(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(d) * w for d, w in zip(digits, weights)) % 11 % 10


def inn_is_valid(inn: str | None) -> bool:
    """A 10-digit (organisation) or 12-digit (person) INN whose check digits are right."""
    if not inn or not inn.isascii() or not inn.isdigit():
        return False
    if len(inn) == 10:
        return _control(inn, _INN10) == int(inn[9])
    if len(inn) == 12:
        return _control(inn, _INN12_1) == int(inn[10]) and _control(inn, _INN12_2) == int(inn[11])
    return False


def make_inn(rng: random.Random, region: str, person: bool) -> str:
    head = region + f"{rng.randint(1, 99):02d}"
    if person:
        body = head + "".join(str(rng.randrange(10)) for _ in range(6))
        body += str(_control(body, _INN12_1))
        return body + str(_control(body, _INN12_2))
    body = head + "".join(str(rng.randrange(10)) for _ in range(5))
    return body + str(_control(body, _INN10))


def break_last_digit(rng: random.Random, number: str) -> str:
    """Change the last (check) digit to another one, so the checksum fails."""
    return number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)


def make_kpp(rng: random.Random, inn: str) -> str:
    reason = "01" if rng.random() < 0.9 else rng.choice(("43", "45", "50"))
    return inn[:4] + reason + f"{1 if rng.random() < 0.95 else rng.randint(2, 5):03d}"


def ogrn_is_valid(ogrn: str | None) -> bool:
    """13-digit OGRN (check = first 12 mod 11 mod 10) or 15-digit OGRNIP (first 14 mod 13 mod 10)."""
    if not ogrn or not ogrn.isascii() or not ogrn.isdigit():
        return False
    if len(ogrn) == 13:
        return int(ogrn[:12]) % 11 % 10 == int(ogrn[12])
    if len(ogrn) == 15:
        return int(ogrn[:14]) % 13 % 10 == int(ogrn[14])
    return False


def make_ogrn(rng: random.Random, region: str, year: int, person: bool) -> str:
    yy = f"{year % 100:02d}"
    if person:
        body = "3" + yy + region + "".join(str(rng.randrange(10)) for _ in range(9))
        return body + str(int(body) % 13 % 10)
    body = rng.choice("15") + yy + region + "".join(str(rng.randrange(10)) for _ in range(7))
    return body + str(int(body) % 11 % 10)


# --- transliteration --------------------------------------------------------------------------------------------

_TR = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya",
}


@lru_cache(maxsize=1024)  # names repeat: bounded, so memory stays constant
def translit(text: str) -> str:
    """Lower-case Latin letters, digits and '-' only."""
    out = []
    for ch in text.lower():
        if ch in _TR:
            out.append(_TR[ch])
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ch in " -" and out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-")


# --- phones -----------------------------------------------------------------------------------------------------


def mobile_number(rng: random.Random) -> str:
    """10-digit national number of a mobile: 9XX XXX XX XX."""
    return f"9{rng.randint(0, 99):02d}{rng.randint(0, 9999999):07d}"


def landline_number(rng: random.Random, area_codes: tuple[str, ...]) -> str:
    code = rng.choice(area_codes)
    rest = 10 - len(code)
    return code + f"{rng.randint(2 * 10 ** (rest - 1), 10 ** rest - 1)}"


def _split_local(local: str) -> str:
    return f"{local[:-4]}-{local[-4:-2]}-{local[-2:]}"


# Styles take (code, local, national number) and give the text.
_STYLES = (
    (20, lambda c, l, n: f"+7 ({c}) {_split_local(l)}"),
    (12, lambda c, l, n: f"8 ({c}) {_split_local(l)}"),
    (8, lambda c, l, n: f"8({c}){_split_local(l)}"),
    (10, lambda c, l, n: f"8 {c} {l}"),
    (10, lambda c, l, n: f"8{n}"),
    (8, lambda c, l, n: f"+7{n}"),
    (5, lambda c, l, n: f"7{n}"),
    (8, lambda c, l, n: n),
    (6, lambda c, l, n: f"8-{c}-{_split_local(l)}"),
    (5, lambda c, l, n: f"+7 {c} {l[:-4]} {l[-4:-2]} {l[-2:]}"),
    (4, lambda c, l, n: f"({c}) {_split_local(l)}"),
    (4, lambda c, l, n: f"+7-{c}-{l}"),
)
_STYLE_FUNCS = [f for w, f in _STYLES for _ in range(w)]


def format_phone(rng: random.Random, national: str, code_len: int = 3) -> str:
    """The 10-digit national number written as people type it (never mangled, always recoverable)."""
    return rng.choice(_STYLE_FUNCS)(national[:code_len], national[code_len:], national)


def with_extension(rng: random.Random, text: str) -> str:
    ext = str(rng.randint(1, 9999))
    return text + rng.choice((f" доб. {ext}", f" доб {ext}", f" (доб. {ext})", f" вн. {ext}"))


def excel_mangled(rng: random.Random, national: str) -> str:
    """What Excel shows for a phone typed as a number: 7,91235E+10 (a Russian locale, 6 significant digits)."""
    value = int(rng.choice("78") + national)
    return f"{value:.5E}".replace(".", ",")


def e164(national: str) -> str:
    return "+7" + national


# --- numbers, dates, booleans -----------------------------------------------------------------------------------


def money(value: float, grouping: bool = True) -> str:
    """1C's number format: 1 234 567,89 with no-break spaces (or 1234567,89 without grouping)."""
    text = f"{value:,.2f}" if grouping else f"{value:.2f}"
    return text.replace(",", NBSP).replace(".", ",")


def decimal_comma(value: float) -> str:
    """35 / 35,5 / 1 250,25: as few decimals as needed, comma, no-break-space grouping."""
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return text.replace(",", NBSP).replace(".", ",")


def dt_1c(value: datetime) -> str:
    """dd.mm.yyyy H:MM:SS with a one-digit hour below 10, as 1C writes date-times."""
    return f"{value.day:02d}.{value.month:02d}.{value.year:04d} {value.hour}:{value.minute:02d}:{value.second:02d}"


def date_1c(value: datetime) -> str:
    return f"{value.day:02d}.{value.month:02d}.{value.year:04d}"


EMPTY_DATE = "01.01.0001"
EMPTY_DATETIME = "01.01.0001 0:00:00"

BAD_DATETIMES = (
    "31.02.{y} 10:15:00", "29.02.2023 12:00:00", "32.01.{y} 0:00:00", "15.13.{y} 9:30:00", "{y}-13-45",
    "не указана", "31.04.{y} 18:00:00", "2.3.{y}г.",
)
BAD_DATES = ("31.02.{y}", "{y}-13-45", "не указана", "30.02.{y}", "15.15.{y}", "??.??.{y}", "31.06.{y}")
BAD_NUMBERS = ("12,3,4", "н/д", "нет данных", "—", "#ЗНАЧ!", "1,234,5", "12.3.4")
BAD_BOOLEANS = ("?", "Неизвестно", "2", "Да/Нет", "Д.")


def random_datetime(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A moment between start and end, mostly in working hours, to the second."""
    span_days = max((end - start).days, 1)
    day = start + timedelta(days=rng.randrange(span_days))
    r = rng.random()
    if r < 0.05:
        hour, minute, second = 0, 0, 0  # a date entered without a time
    elif r < 0.85:
        hour, minute, second = rng.randint(8, 19), rng.randrange(60), rng.randrange(60)
    else:
        hour, minute, second = rng.randrange(24), rng.randrange(60), rng.randrange(60)
    return day.replace(hour=hour, minute=minute, second=second)
