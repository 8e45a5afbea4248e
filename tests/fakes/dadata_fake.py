"""A local DaData clean API: the real request and response format, errors and limits, over real HTTP.

What it speaks (../shared/reference/1c-dadata.md, sections 5 and 7):

- ``POST <prefix>/api/v1/clean/address`` with ``Authorization: Token <key>`` and ``X-Secret: <secret>``, body a JSON
  array of one string; answers an array of one object with DaData's fields (``geo_lat``/``geo_lon`` strings, qc
  codes ints, ``qc=2`` for empty/garbage, ``qc_geo=5`` without coordinates).
- 401 without the token or the secret; 403 (clean's Spring-style body) for a wrong key or secret, and
  ``Feature 'CLEAN' disabled for token <token>`` when the balance is spent; 404 for an unknown path, 405 for any
  method but POST, 400 for a body that is not a JSON array of strings (or holds more than one), 413 for an address
  longer than ``max_length``; 429 above ``rps`` requests per second or ``connections_per_minute`` new connections
  a minute; injected 5xx, 429 and delays (``fail_next``, ``delay_next``); qc codes as strings on request.
- Counters: HTTP requests, records billed, TCP connections, answers by status; the sources billed, in order.

The standardiser knows the sample generator's world (etl/sample: its cities and streets, every street in every
city): it reads hand-typed Russian addresses in any order, with or without type words, glued (``г.Москва``,
``пр-ктКомсомольский``, ``кв190``), with one typo per word, ``д``/``дом``, ``кв``/``квартира``, ``95-298``
(house-flat), ``12/2`` and ``35В``, a postal code and ``Россия``; and answers as DaData writes addresses
(``Свердловская обл, г Екатеринбург, ул Ленина, д 5, кв 7``). Unread words give qc=1, a street without a city
qc=3 (every city has it), nothing readable qc=2. ``set_quality`` overrides qc/qc_geo for inputs containing a text.
"""

from __future__ import annotations

from etl.config import edit_distance

import functools
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from etl.sample import data as D

# ----------------------------------------------------------------------------- the gazetteer
# city -> (lat, lon, timezone, federal district, kladr region code)
_CITY_FACTS = {
    "Москва": (55.755814, 37.617635, "UTC+3", "Центральный", "77"),
    "Санкт-Петербург": (59.939095, 30.315868, "UTC+3", "Северо-Западный", "78"),
    "Екатеринбург": (56.838011, 60.597474, "UTC+5", "Уральский", "66"),
    "Новосибирск": (55.030199, 82.92043, "UTC+7", "Сибирский", "54"),
    "Казань": (55.794438, 49.111451, "UTC+3", "Приволжский", "16"),
    "Нижний Новгород": (56.326797, 44.006516, "UTC+3", "Приволжский", "52"),
    "Пермь": (58.010455, 56.229443, "UTC+5", "Приволжский", "59"),
    "Челябинск": (55.160026, 61.40259, "UTC+5", "Уральский", "74"),
    "Тюмень": (57.153033, 65.534328, "UTC+5", "Уральский", "72"),
    "Уфа": (54.735147, 55.958727, "UTC+5", "Приволжский", "02"),
    "Самара": (53.195873, 50.100193, "UTC+4", "Приволжский", "63"),
    "Краснодар": (45.03547, 38.975313, "UTC+3", "Южный", "23"),
}
# what people type for a city, besides its name (DaData knows these and many more)
_CITY_ALIASES = {
    "мск": "Москва", "масква": "Москва", "спб": "Санкт-Петербург", "питер": "Санкт-Петербург",
    "с-пб": "Санкт-Петербург", "с-петербург": "Санкт-Петербург", "петербург": "Санкт-Петербург",
    "екб": "Екатеринбург", "нск": "Новосибирск", "новосиб": "Новосибирск", "члб": "Челябинск",
    "челяба": "Челябинск", "крд": "Краснодар", "кдр": "Краснодар", "н.новгород": "Нижний Новгород",
    "н новгород": "Нижний Новгород", "нижний": "Нижний Новгород", "н. новгород": "Нижний Новгород",
}
_TYPE_FULL = {"г": "город", "обл": "область", "Респ": "республика", "край": "край", "ул": "улица",
              "пр-кт": "проспект", "пер": "переулок", "ш": "шоссе", "б-р": "бульвар"}
_STREET_TYPE_WORDS = {
    "ул": "ул", "улица": "ул", "пр-кт": "пр-кт", "пр": "пр-кт", "проспект": "пр-кт", "пр-т": "пр-кт",
    "просп": "пр-кт", "пер": "пер", "переулок": "пер", "ш": "ш", "шоссе": "ш", "б-р": "б-р", "бульвар": "б-р",
    "бул": "б-р",
}
_REGION_TYPE_WORDS = {"обл", "область", "респ", "республика", "край"}
_CITY_TYPE_WORDS = {"г", "город", "гор"}
_HOUSE_WORDS = {"д", "дом"}
_FLAT_WORDS = {"кв", "квартира", "офис", "оф"}
_COUNTRY_WORDS = {"россия", "рф", "российская федерация"}
_NS = uuid.UUID("5b1f0d8e-3f7a-4a61-9a43-6f1d6c0d2d11")


def _fold(s: str) -> str:
    return s.lower().replace("ё", "е")


@dataclass(frozen=True)
class City:
    name: str
    region_with_type: str
    postal_prefix: str
    lat: float
    lon: float
    timezone: str
    district: str
    kladr: str

    @property
    def federal(self) -> bool:
        return self.region_with_type == f"г {self.name}"

    @property
    def region_parts(self) -> tuple[str, str]:
        """(region name, region type) as DaData splits them: ("Свердловская", "обл"), ("Татарстан", "Респ")."""
        a, b = self.region_with_type.split(" ", 1)
        if a in ("г", "Респ"):
            return b, a
        name, _, typ = self.region_with_type.rpartition(" ")
        return name, typ


CITIES = {c[0]: City(c[0], c[1], c[5], *_CITY_FACTS[c[0]]) for c in D.CITIES}
STREETS = {name: typ for name, typ in D.STREETS}  # every street exists in every city of this world

_city_names: dict[str, str] = {_fold(n): n for n in CITIES}
_city_names.update({_fold(a): c for a, c in _CITY_ALIASES.items()})
_region_cores: dict[str, str] = {}  # "свердловская" -> city name (one city per region in this world)
for _c in CITIES.values():
    if not _c.federal:
        _region_cores[_fold(_c.region_parts[0])] = _c.name
_street_names: dict[str, str] = {_fold(n): n for n in STREETS}


def _distance(a: str, b: str) -> int:
    """Edits between two words (a swap of two neighbours is one edit); 3 for words far apart in length."""
    return 3 if abs(len(a) - len(b)) > 2 else edit_distance(a, b)


_KINDS: dict[str, dict[str, str]] = {"city": _city_names, "region": _region_cores, "street": _street_names}


@functools.lru_cache(maxsize=65536)
def _lookup(text: str, kind: str) -> tuple[tuple[str, ...], int] | None:
    """Exact match, else the entries one typo away (two for long words): (matches, distance)."""
    names = _KINDS[kind]
    if text in names:
        return (names[text],), 0
    if len(text) < 3:
        return None
    limit = 2 if len(text) >= 9 else 1
    best: dict[int, list[str]] = {}
    for k, v in names.items():
        if len(k) < 4:
            continue
        dist = _distance(text, k)
        if dist <= limit:
            best.setdefault(dist, [])
            if v not in best[dist]:
                best[dist].append(v)
    if not best:
        return None
    d = min(best)
    return tuple(best[d]), d


_NUM = re.compile(r"^\d+[а-я]?(/\d+[а-я]?)?$")
_HOUSE_FLAT = re.compile(r"^(\d+[а-я]?(?:/\d+)?)-(\d+)$")


def _tokens(raw: str) -> list[str]:
    s = raw.replace("\u00a0", " ")
    s = re.sub(r"(?<=[а-яё-][а-яё])(?=[А-ЯЁ][а-яё])", " ", s)  # пр-ктКомсомольский -> пр-кт Комсомольский
    s = _fold(s)
    s = re.sub(r"(?<=[а-я.])(?=\d)", " ", s)  # кв190 -> кв 190, д.138 -> д. 138
    s = re.sub(r"\.(?=\S)", ". ", s)  # г.москва -> г. москва
    out = []
    for part in re.split(r"[,;\s]+", s):
        part = part.strip(".")
        if part:
            out.append(part)
    return out


@dataclass
class Parsed:
    city: City | None = None
    street: str | None = None
    house: str | None = None
    flat: str | None = None
    region_only: City | None = None
    leftovers: tuple[str, ...] = ()
    ambiguous: bool = False


def parse(raw: str) -> Parsed:
    toks = _tokens(raw)
    used = [False] * len(toks)
    p = Parsed()
    numbers: list[int] = []
    for i, t in enumerate(toks):
        if used[i]:
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if t in _COUNTRY_WORDS:
            used[i] = True
        elif re.fullmatch(r"\d{6}", t):
            used[i] = True  # a postal code: DaData answers its own
        elif t in _HOUSE_WORDS and nxt and (_NUM.match(nxt) or _HOUSE_FLAT.match(nxt)):
            used[i] = used[i + 1] = True
            _set_number(p, nxt, house=True)
        elif t in _FLAT_WORDS and nxt and nxt.isdigit():
            used[i] = used[i + 1] = True
            p.flat = nxt
        elif t in _STREET_TYPE_WORDS or t in _CITY_TYPE_WORDS or t in _REGION_TYPE_WORDS:
            used[i] = True
        elif _NUM.match(t) or _HOUSE_FLAT.match(t):
            numbers.append(i)
    for i in numbers:
        if p.house is None:
            used[i] = True
            _set_number(p, toks[i], house=True)
        elif p.flat is None and toks[i].isdigit():
            used[i] = True
            p.flat = toks[i]

    # words: the longest spans first, exact matches before typos; one region, one city, one street
    words = [i for i, t in enumerate(toks) if not used[i] and re.search(r"[а-я]", t)]
    found: list[tuple[int, int, str, tuple[str, ...], list[int]]] = []  # (distance, -span, kind, matches, indexes)
    for span in (3, 2, 1):
        for start in range(len(toks) - span + 1):
            idx = list(range(start, start + span))
            if any(used[i] or i not in words for i in idx):
                continue
            text = " ".join(toks[i] for i in idx)
            for kind in ("city", "region", "street"):
                m = _lookup(text, kind)
                if m:
                    found.append((m[1], -span, kind, m[0], idx))
    found.sort(key=lambda f: (f[0], f[1], ("city", "region", "street").index(f[2])))
    taken: set[int] = set()
    kinds: set[str] = set()
    for dist, _span, kind, matches, idx in found:
        if kind in kinds or taken & set(idx):
            continue
        kinds.add(kind)
        taken |= set(idx)
        if len(matches) > 1:
            p.ambiguous = True
        if kind == "city":
            p.city = CITIES[matches[0]]
        elif kind == "region":
            p.region_only = CITIES[matches[0]]
        else:
            p.street = matches[0]
    for i in taken:
        used[i] = True
    p.leftovers = tuple(t for i, t in enumerate(toks) if not used[i])
    if p.city is not None and p.region_only is not None and p.region_only is not p.city:
        p.ambiguous = True  # the region and the city disagree
    return p


def _set_number(p: Parsed, text: str, house: bool) -> None:
    m = _HOUSE_FLAT.match(text)
    if m:
        p.house, p.flat = m.group(1).upper(), p.flat or m.group(2)
    else:
        p.house = text.upper()


def _digits(seed: str, n: int) -> str:
    h = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    return str(h % 10 ** n).zfill(n)


def _fid(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "|".join(parts)))


def standardise(source: str) -> dict[str, Any]:
    """DaData's answer for one address, as the fake's world knows it."""
    from connectors.dadata import ADDRESS_FIELDS

    out: dict[str, Any] = {f: None for f in ADDRESS_FIELDS}
    out["source"] = source
    out.update(qc=2, qc_geo=5, qc_complete=None, qc_house=None, unparsed_parts=None, metro=None,
               fias_level="-1", country="Россия", country_iso_code="RU")
    if not source or not re.search(r"[а-яА-ЯёЁa-zA-Z]", source):
        out.update(country=None, country_iso_code=None)
        return out
    p = parse(source)
    city = p.city or p.region_only
    if city is None and p.street is None:
        out.update(unparsed_parts=", ".join(p.leftovers).upper() or None, country=None, country_iso_code=None)
        return out  # garbage: qc 2, qc_geo 5

    parts: list[str] = []
    if city is not None:
        rname, rtype = city.region_parts
        out.update(region=rname, region_type=rtype, region_type_full=_TYPE_FULL.get(rtype, rtype),
                   region_with_type=city.region_with_type, region_fias_id=_fid(city.region_with_type),
                   region_kladr_id=city.kladr + "0" * 11, region_iso_code=f"RU-{city.kladr}",
                   federal_district=city.district, timezone=city.timezone, okato=city.kladr + _digits(city.name, 9),
                   tax_office=city.kladr + _digits(city.name + "ifns", 2))
        parts.append(city.region_with_type)
    if p.city is not None:
        c = p.city
        out.update(city=c.name, city_type="г", city_type_full="город", city_with_type=f"г {c.name}",
                   city_fias_id=_fid(c.name), city_kladr_id=c.kladr + _digits(c.name, 9) + "00",
                   capital_marker="2" if not c.federal else "0", geoname_id=_digits(c.name + "geo", 6))
        if not c.federal:
            parts.append(f"г {c.name}")
    if p.street is not None:
        stype = STREETS[p.street]
        owner = p.city.name if p.city else "?"
        out.update(street=p.street, street_type=stype, street_type_full=_TYPE_FULL.get(stype, stype),
                   street_with_type=f"{stype} {p.street}", street_fias_id=_fid(owner, p.street),
                   street_kladr_id=(p.city.kladr if p.city else "00") + _digits(owner + p.street, 15))
        parts.append(f"{stype} {p.street}")
    if p.house is not None and p.street is not None:
        out.update(house=p.house, house_type="д", house_type_full="дом")
        parts.append(f"д {p.house}")
    if p.flat is not None and out["house"] is not None:
        out.update(flat=p.flat, flat_type="кв", flat_type_full="квартира")
        parts.append(f"кв {p.flat}")
    out["result"] = ", ".join(parts) if parts else None

    # quality and the most precise level found
    if p.city is None:
        qc, qc_geo, level = 3, 5, "1" if city is not None else "-1"  # a street of every city: alternatives
    elif p.street is None:
        qc, qc_geo, level = 1, 4, "4"
    elif out["house"] is None:
        qc, qc_geo, level = 0, 2, "7"
    else:
        qc, qc_geo, level = 0, 0, "8"
    if p.leftovers and qc == 0:
        qc = 1
    if p.ambiguous and qc in (0, 1):
        qc = 3
    out.update(qc=qc, qc_geo=qc_geo, fias_level=level,
               unparsed_parts=", ".join(p.leftovers).upper() if p.leftovers else None)
    if p.city is not None:
        seed = "|".join(str(x) for x in (p.city.name, p.street, out["house"]))
        out["postal_code"] = (p.city.postal_prefix + _digits(seed, 6))[:6]
        if qc_geo <= 4:
            spread = {0: 0.12, 2: 0.08, 4: 0.0}[qc_geo]
            dlat = (int(_digits(seed + "lat", 6)) / 1e6 - 0.5) * spread
            dlon = (int(_digits(seed + "lon", 6)) / 1e6 - 0.5) * spread * 2
            out["geo_lat"] = f"{p.city.lat + dlat:.7f}"
            out["geo_lon"] = f"{p.city.lon + dlon:.7f}"
        fias_parts = (p.city.name, p.street or "", out["house"] or "", out["flat"] or "")
        out["fias_id"] = _fid(*fias_parts[:{"8": 3, "7": 2, "4": 1}[level]]) if level in ("4", "7", "8") else None
        out["kladr_id"] = out["street_kladr_id"] or out["city_kladr_id"]
        out["oktmo"] = _digits(seed + "oktmo", 11)
        out["fias_actuality_state"] = "0"
        if level == "8":
            out["qc_house"] = 2
            out["qc_complete"] = 0 if out["flat"] else 5
        elif level == "7":
            out["qc_complete"] = 4
        else:
            out["qc_complete"] = 3
        if p.city.name == "Москва" and level in ("7", "8"):
            out["beltway_hit"] = "IN_MKAD"
    return out


# ----------------------------------------------------------------------------- the server
@dataclass
class _Fault:
    status: int
    times: int
    body: Any = None
    retry_after: str | None = None


class FakeDadata:
    """``with FakeDadata() as fake: ... fake.url`` — base URL to give as dadata.base_url."""

    def __init__(self, api_key: str = "fake-dadata-key-5f3a9c1e7b", secret: str = "fake-dadata-secret-0d2e4b",
                 prefix: str = "", rps: float = 20, connections_per_minute: int = 60, balance: int | None = None,
                 max_length: int = 1000, retry_after: str | None = None, string_codes: bool = False):
        self.api_key, self.secret = api_key, secret
        self.prefix = prefix.rstrip("/")
        self.rps, self.connections_per_minute = rps, connections_per_minute
        self.balance = balance  # records left to pay for; None: unlimited
        self.max_length = max_length
        self.retry_after = retry_after  # Retry-After header on rate-limit 429s (DaData's own: unconfirmed)
        self.string_codes = string_codes  # qc codes as strings ("qc": "0"), as also seen in real clean output
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._delays: deque[list] = deque()
        self._quality: list[tuple[str, int | None, int | None]] = []
        self._recent: deque[float] = deque()
        self._recent_conns: deque[float] = deque()
        self._over_limit: set = set()
        self.reset_counters()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ control
    def reset_counters(self) -> None:
        with self._lock:
            self.requests = 0  # every HTTP request received
            self.billed = 0  # records cleaned (what DaData charges for)
            self.connections = 0  # TCP connections accepted
            self.statuses: Counter = Counter()
            self.sources: list[str] = []  # billed inputs, in order

    def fail_next(self, status: int, times: int = 1, body: Any = None, retry_after: str | None = None) -> None:
        """The next ``times`` clean requests answer ``status`` (5xx, 429, ...) instead of being served."""
        with self._lock:
            self._faults.append(_Fault(status, times, body, retry_after))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` clean requests are served (and billed) ``seconds`` late."""
        with self._lock:
            self._delays.append([seconds, times])

    def set_quality(self, contains: str, qc: int | None = None, qc_geo: int | None = None) -> None:
        """Inputs containing ``contains`` (case-insensitive) get these qc / qc_geo codes."""
        with self._lock:
            self._quality.append((_fold(contains), qc, qc_geo))

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}/api/v1/"

    def start(self) -> "FakeDadata":
        fake = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request, client_address):
                with fake._lock:
                    fake.connections += 1
                    now = time.monotonic()
                    fake._recent_conns.append(now)
                    while fake._recent_conns and fake._recent_conns[0] <= now - 60:
                        fake._recent_conns.popleft()
                    over = len(fake._recent_conns) > fake.connections_per_minute
                    if over:
                        fake._over_limit.add(client_address)
                super().process_request(request, client_address)

        self._server = Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-dadata", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeDadata":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ serving
    def _rate_limited(self) -> bool:
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.rps:
                return True
            self._recent.append(now)
            return False

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            f = self._faults[0]
            f.times -= 1
            if f.times <= 0:
                self._faults.popleft()
            return f

    def _take_delay(self) -> float:
        with self._lock:
            if not self._delays:
                return 0.0
            d = self._delays[0]
            d[1] -= 1
            if d[1] <= 0:
                self._delays.popleft()
            return d[0]

    def _bill(self, source: str) -> bool:
        with self._lock:
            if self.balance is not None:
                if self.balance <= 0:
                    return False
                self.balance -= 1
            self.billed += 1
            self.sources.append(source)
            return True

    def answer(self, source: str) -> dict:
        out = standardise(source)
        with self._lock:
            rules = list(self._quality)
        for text, qc, qc_geo in rules:
            if text in _fold(source):
                if qc is not None:
                    out["qc"] = qc
                if qc_geo is not None:
                    out["qc_geo"] = qc_geo
                    if qc_geo == 5:
                        out["geo_lat"] = out["geo_lon"] = None
        if self.string_codes:
            for k in ("qc", "qc_geo", "qc_complete", "qc_house"):
                if out.get(k) is not None:
                    out[k] = str(out[k])
        return out


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def _handler(fake: FakeDadata):
    clean_path = f"{fake.prefix}/api/v1/clean/address"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as DaData's front servers do
        timeout = 30  # an idle kept-alive connection is closed after this
        server_version = "nginx"
        sys_version = ""

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: Any, headers: dict | None = None, close: bool = False) -> None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                ctype = "application/json;charset=UTF-8"
            else:
                data = str(body).encode("utf-8")
                ctype = "text/html"
            with fake._lock:
                fake.statuses[status] += 1
            self.send_response(status, _REASONS.get(status))
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _spring(self, status: int, message: str) -> dict:
            return {"timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "status": status, "error": _REASONS.get(status, ""), "message": message,
                    "path": self.path.split("?")[0]}

        def _drain(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _handle(self, method: str) -> None:
            with fake._lock:
                fake.requests += 1
            body = self._drain()
            with fake._lock:
                over = self.client_address in fake._over_limit
                fake._over_limit.discard(self.client_address)
            if over:
                self._send(429, self._spring(429, "Too many new connections per minute"), close=True)
                return
            if self.path.split("?")[0] != clean_path:
                self._send(404, self._spring(404, "No message available"))
                return
            if fake._rate_limited():
                headers = {"Retry-After": fake.retry_after} if fake.retry_after else None
                self._send(429, self._spring(429, "Too many requests"), headers)
                return
            if method != "POST":
                self._send(405, self._spring(405, f"Request method '{method}' not supported"),
                           {"Allow": "POST"})
                return
            fault = fake._take_fault()
            if fault is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                if fault.body is not None:
                    payload = fault.body
                elif fault.status == 502:
                    payload = ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
                               "</h1></center><hr><center>nginx</center></body></html>")
                else:
                    payload = self._spring(fault.status, _REASONS.get(fault.status, "error"))
                self._send(fault.status, payload, headers)
                return
            auth = self.headers.get("Authorization") or ""
            secret = self.headers.get("X-Secret")
            if not auth.startswith("Token ") or not auth[6:].strip() or not secret:
                self._send(401, self._spring(401, "Full authentication is required to access this resource: "
                                                  "Authorization: Token <api key> and X-Secret: <secret>"))
                return
            token = auth[6:].strip()
            if token != fake.api_key or secret != fake.secret:
                self._send(403, self._spring(403, "Invalid API key or secret"))
                return
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self._send(400, self._spring(400, "JSON parse error: the body is not valid JSON"))
                return
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                self._send(400, self._spring(400, "the body must be a JSON array of strings"))
                return
            if len(data) != 1:
                self._send(400, self._spring(400, f"one record per request, got {len(data)}"))
                return
            source = data[0]
            if len(source) > fake.max_length:
                self._send(413, self._spring(413, f"the address is longer than {fake.max_length} characters"))
                return
            if not fake._bill(source):
                self._send(403, self._spring(403, f"Feature 'CLEAN' disabled for token {token}"))
                return
            delay = fake._take_delay()
            if delay:
                time.sleep(delay)
            try:
                self._send(200, [fake.answer(source)])
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout): still billed
                self.close_connection = True

        def do_POST(self):
            self._handle("POST")

        def do_GET(self):
            self._handle("GET")

        def do_PUT(self):
            self._handle("PUT")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


__all__ = ["CITIES", "FakeDadata", "STREETS", "parse", "standardise"]
