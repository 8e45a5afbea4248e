"""Addresses typed by hand, each with the clean answer a standardiser should find."""

from __future__ import annotations

import random

from . import data as D

_CITY_WEIGHTS = [c[6] for c in D.CITIES]


def pick_city(rng: random.Random) -> tuple:
    return rng.choices(D.CITIES, weights=_CITY_WEIGHTS)[0]


def city_by_name(name: str) -> tuple:
    return next(c for c in D.CITIES if c[0] == name)


def typo(rng: random.Random, word: str) -> str:
    """One slip of the fingers: two letters swapped, one dropped or doubled, a vowel confused."""
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    swaps = {"и": "е", "е": "и", "а": "о", "о": "а", "я": "е"}
    for j in range(1, len(word)):
        if word[j] in swaps:
            return word[:j] + swaps[word[j]] + word[j + 1 :]
    return word[:i] + word[i + 1 :]


def make_address(rng: random.Random, city: tuple | None = None, flat: bool | None = None, formal: bool = False):
    """(the address as typed, the clean parts) — the parts: region, city, street, house, flat, address."""
    city = city or pick_city(rng)
    name, region, shorts, _codes, _reg, postal_prefix, _w = city
    street, stype = rng.choice(D.STREETS)
    house = str(rng.randint(1, 150))
    r = rng.random()
    if r < 0.08:
        house += rng.choice("АБВ")
    elif r < 0.13:
        house += f"/{rng.randint(1, 4)}"
    has_flat = (rng.random() < 0.5) if flat is None else flat
    flat_no = str(rng.randint(1, 350)) if has_flat else None
    postal = (postal_prefix + "".join(str(rng.randrange(10)) for _ in range(6 - len(postal_prefix))))
    written = rng.choice(D.STREET_TYPE_WRITTEN[stype])
    st = typo(rng, street) if rng.random() < 0.12 else street
    city_region = region if region != f"г {name}" else None
    fl = flat_no

    if formal:
        style = rng.choice((0, 2, 2, 3, 3, 8))
    else:
        style = rng.randrange(10)
    if style == 0:
        raw = f"г {name}, {written} {st} д {house}" + (f" кв {fl}" if fl else "")
    elif style == 1:
        raw = f"{rng.choice(shorts)} {st.lower()} {house}" + (f"-{fl}" if fl else "")
    elif style == 2:
        raw = (f"{city_region}, " if city_region else "") + f"г {name}, {written} {st}, д. {house}"
        raw += f", кв. {fl}" if fl else ""
    elif style == 3:
        raw = f"{postal}, г. {name}, {written} {st}, {house}" + (f"-{fl}" if fl else "")
    elif style == 4:
        raw = f"{name} {st} {house}" + (f" кв{fl}" if fl else "")
    elif style == 5:
        raw = f"г.{name} {written}{st} д.{house}" + (f" кв.{fl}" if fl else "")
    elif style == 6:
        raw = f"{written} {st}, {house}" + (f", кв {fl}" if fl else "") + f", {name}"
    elif style == 7:
        raw = (f"{city_region} " if city_region else "") + f"{name} {st} дом {house}"
        raw += f" квартира {fl}" if fl else ""
    elif style == 8:
        raw = "Россия, " + (f"{city_region}, " if city_region else "") + f"{name}, {written} {st} {house}"
        raw += f", кв. {fl}" if fl else ""
    else:
        raw = f"{rng.choice(shorts)}, {st} {house}" + (f" кв {fl}" if fl else "")
    if rng.random() < 0.05:
        raw = raw.replace(" ", "  ", 1)
    if rng.random() < 0.03:
        raw += " "

    clean = (f"{region}, " if city_region else "") + f"г {name}, {stype} {street}, д {house}"
    clean += f", кв {flat_no}" if flat_no else ""
    parts = {
        "region": region,
        "city": name,
        "street": f"{stype} {street}",
        "house": house,
        "flat": flat_no,
        "address": clean,
    }
    return raw, parts
