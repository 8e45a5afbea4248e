"""The responsible user: a manager's name as a source spells it -> a Bitrix24 user id.

Sources write names every which way ("Ковалёв Пётр Валерьевич", "КОВАЛЁВ П.В.", "Пётр Ковалёв", double spaces). A name
matches a user when it holds the user's last name and the first name (or its initial), and every other word is the
middle name or its initial; case, ё/е and punctuation do not matter. A name that matches no user, or several, is
unknown. Matching runs once per distinct name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def words(name: str) -> list[str]:
    return [w for w in _WORD.findall(str(name).lower().replace("ё", "е"))]


def normal(name: str) -> str:
    return " ".join(words(name))


@dataclass(frozen=True)
class User:
    id: int
    last: str
    first: str
    middle: str
    email: str = ""


class UserMatcher:
    def __init__(self, users: Iterable[User], explicit: dict[str, int] | None = None):
        self.users = [u for u in users]
        self.explicit = {normal(k): v for k, v in (explicit or {}).items()}
        self._cache: dict[str, int | None] = {}
        self._pseudo = []
        for k, uid in self.explicit.items():
            ws = k.split()
            if len(ws) >= 2:
                self._pseudo.append(User(uid, ws[0], ws[1], " ".join(ws[2:3])))

    @classmethod
    def from_api(cls, rows: Iterable[dict], explicit: dict[str, int] | None = None) -> "UserMatcher":
        users = []
        for r in rows:
            try:
                uid = int(r.get("ID"))
            except (TypeError, ValueError):
                continue
            users.append(User(uid, normal(r.get("LAST_NAME") or ""), normal(r.get("NAME") or ""),
                              normal(r.get("SECOND_NAME") or ""), str(r.get("EMAIL") or "").lower()))
        return cls(users, explicit)

    def match(self, name: str | None) -> int | None:
        if name is None or not str(name).strip():
            return None
        key = normal(name)
        if key in self._cache:
            return self._cache[key]
        found = self.explicit.get(key)
        if found is None and self._pseudo:
            # the map's names ("Фамилия Имя Отчество") match other spellings of themselves too
            hits = {u.id for u in self._pseudo if _fits(words(name), u)}
            found = hits.pop() if len(hits) == 1 else None
        if found is None:
            hits = {u.id for u in self.users if _fits(words(name), u)}
            found = hits.pop() if len(hits) == 1 else None
        self._cache[key] = found
        return found


def _fits(ws: list[str], u: User) -> bool:
    if not u.last or not u.first or not ws:
        return False
    rest = list(ws)
    last_parts = u.last.split()
    for p in last_parts:
        if p not in rest:
            return False
        rest.remove(p)
    first_ok = False
    middle_taken = False
    for w in rest:
        if w == u.first or (len(w) == 1 and u.first.startswith(w)):
            if first_ok:  # the first name twice
                if u.middle and (w == u.middle or (len(w) == 1 and u.middle.startswith(w))):
                    continue
                return False
            first_ok = True
        elif u.middle and (w == u.middle or (len(w) == 1 and u.middle.startswith(w))):
            continue
        elif not u.middle and not middle_taken:
            middle_taken = True  # the portal has no middle name: one more word (or initial) may be it
        else:
            return False
    return first_ok


__all__ = ["User", "UserMatcher", "normal", "words"]
