"""What a fresh portal has: its users, the deal stages of the default pipeline and the standard dictionaries.

The users are placeholders (``Admin Sandbox``, ``Manager N``, addresses on ``sandbox.local``), not people.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from .storage import utcnow

DEAL_STAGES = [  # (code, name, semantics: None = in progress, S = success, F = failure), sort
    ("NEW", "New", None), ("PREPARATION", "Preparing documents", None),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", None), ("EXECUTING", "In progress", None),
    ("FINAL_INVOICE", "Final invoice", None), ("WON", "Deal won", "S"), ("LOSE", "Deal lost", "F"),
    ("APOLOGY", "Analyze failure", "F"),
]
ITEM_STAGES = [("NEW", "New", None), ("PREPARATION", "Preparation", None), ("CLIENT", "Waiting for client", None),
               ("SUCCESS", "Success", "S"), ("FAIL", "Failure", "F")]
COLORS = {None: "#39A8EF", "S": "#7BD500", "F": "#FF5752"}

DICTIONARIES = {
    "SOURCE": ["CALL", "EMAIL", "WEB", "ADVERTISING", "PARTNER", "RECOMMENDATION", "TRADE_SHOW", "WEBFORM",
               "CALLBACK", "RC_GENERATOR", "STORE", "OTHER"],
    "CONTACT_TYPE": ["CLIENT", "SUPPLIER", "PARTNER", "OTHER"],
    "COMPANY_TYPE": ["CUSTOMER", "SUPPLIER", "COMPETITOR", "PARTNER", "OTHER"],
    "DEAL_TYPE": ["SALE", "COMPLEX", "GOODS", "SERVICES", "SERVICE"],
    "INDUSTRY": ["IT", "TELECOM", "MANUFACTURING", "BANKING", "CONSULTING", "FINANCE", "GOVERNMENT", "DELIVERY",
                 "ENTERTAINMENT", "NOTPROFIT", "OTHER"],
    "EMPLOYEES": ["EMPLOYEES_1", "EMPLOYEES_2", "EMPLOYEES_3", "EMPLOYEES_4"],
    "HONORIFIC": ["HNR_RU_1", "HNR_RU_2"],
    "STATUS": ["NEW", "IN_PROCESS", "PROCESSED", "JUNK", "CONVERTED"],
}

USERS = [(1, "Admin", "Sandbox", "admin@sandbox.local", "Administrator")] + [
    (i, "Manager", str(i - 1), f"manager{i - 1}@sandbox.local", "Sales manager") for i in range(2, 7)]


def stage_rows(entity_id: str, prefix: str, category_id: int | None, stages) -> list[dict]:
    rows = []
    for n, (code, name, sem) in enumerate(stages):
        rows.append({"ENTITY_ID": entity_id, "STATUS_ID": prefix + code, "NAME": name, "NAME_INIT": name,
                     "SORT": (n + 1) * 10, "SYSTEM": "Y" if code in ("NEW", "WON", "LOSE", "SUCCESS", "FAIL") else "N",
                     "CATEGORY_ID": category_id, "COLOR": COLORS[sem], "SEMANTICS": sem})
    return rows


def ensure(store, conn) -> None:
    if store.meta_get(conn, "seeded") == "1":
        return
    t = store.t
    now = utcnow()
    for uid, name, last, email, post in USERS:
        conn.execute(sa.insert(t["user"]).values(ID=uid, ACTIVE="Y", NAME=name, LAST_NAME=last, SECOND_NAME="",
                                                 EMAIL=email, WORK_POSITION=post, UF_DEPARTMENT=json.dumps([1]),
                                                 USER_TYPE="employee", DATE_REGISTER=now, LAST_LOGIN=now))
    rows = stage_rows("DEAL_STAGE", "", None, DEAL_STAGES)
    for entity_id, codes in DICTIONARIES.items():
        for n, code in enumerate(codes):
            name = code.replace("_", " ").capitalize()
            rows.append({"ENTITY_ID": entity_id, "STATUS_ID": code, "NAME": name, "NAME_INIT": name,
                         "SORT": (n + 1) * 10, "SYSTEM": "Y", "CATEGORY_ID": None, "COLOR": None, "SEMANTICS": None})
    conn.execute(sa.insert(t["status"]), rows)
    store.meta_set(conn, "seeded", "1")
