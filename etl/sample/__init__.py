"""Deterministic, dirty Russian CRM sample data written the way 1C and Excel write exports.

Used by ``etl init`` (a sample project), the tests and the benchmarks.

    generate(out_dir, companies=200, seed=42, xlsx=True) -> dict   # a whole data set + its ground truth
    write_contacts_csv(path, rows, seed=42, encoding="cp1251")      # a big contacts file, constant memory
"""

from .generator import (
    BASE_DATE,
    COMPANIES_HEADER,
    CONTACTS_HEADER,
    DEALS_HEADER,
    MANAGERS_HEADER,
    SITES_HEADER,
    TICKETS_HEADER,
    generate,
    write_contacts_csv,
)
from .ru import inn_is_valid, ogrn_is_valid

__all__ = [
    "BASE_DATE",
    "COMPANIES_HEADER",
    "CONTACTS_HEADER",
    "DEALS_HEADER",
    "MANAGERS_HEADER",
    "SITES_HEADER",
    "TICKETS_HEADER",
    "generate",
    "inn_is_valid",
    "ogrn_is_valid",
    "write_contacts_csv",
]
