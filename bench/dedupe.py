"""How well and how fast dedupe finds the people and companies entered twice: precision and recall over pairs
against the generator's ground truth, and rows/s of the whole pipeline (read, clean, dedupe, load into SQLite),
for a few rule sets side by side.

    python bench/dedupe.py [--people 20000] [--companies 5000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from etl.sample.duplicates import pair_scores, write_duplicate_companies, write_duplicate_contacts  # noqa: E402

PROJECT = """\
version: 1
name: dedupe-bench
state: {{url: "sqlite:///.etl/state.db"}}
defaults: {{batch_size: {batch}, max_reject_rate: 0.5}}
sources: {{onec: {{type: onec_flat, dir: data}}}}
targets: {{warehouse: {{type: sql, url: "sqlite:///.etl/warehouse.db"}}}}
target: warehouse
pipelines: [{pipeline}]
"""

CONTACTS = """\
entity: contact
source: {{use: onec, files: contacts.csv, types: {{Изменен: datetime}}}}
key: Код
stages:
  - {{type: name, columns: [ФИО], into: {{last: Фамилия, first: Имя, middle: Отчество}}}}
  - {{type: phone, columns: [Телефон], on_error: null}}
  - {{type: email, columns: [ЭлПочта], on_error: null}}
mapping: {{last_name: Фамилия, name: Имя, second_name: Отчество, phone: Телефон, email: ЭлПочта,
          modified_at: Изменен}}
{dedupe}
"""

COMPANIES = """\
entity: company
source: {{use: onec, files: companies.csv}}
key: Код
stages:
  - {{type: inn, columns: [ИНН]}}
mapping: {{title: Наименование, inn: ИНН, kpp: КПП}}
{dedupe}
"""

RULES = [
    ("contacts", "no dedupe (the baseline for speed)", ""),
    ("contacts", "phone or e-mail", "  match: [[phone], [email]]"),
    ("contacts", "phone or e-mail, names must agree",
     "  match: [[phone], [email]]\n  distinct_by: [name, last_name]\n  policy: fill_empty"),
    ("contacts", "e-mail only", "  match: [[email]]"),
    ("companies", "INN alone", "  match: [[inn]]"),
    ("companies", "INN + KPP", "  match: [[inn, kpp]]\n  policy: fill_empty"),
]


def run(root: Path, pipeline: str, dedupe: str, batch: int, data: Path) -> tuple[dict, dict]:
    (root / "pipelines").mkdir(parents=True)
    (root / "data").symlink_to(data)
    (root / "pipelines.yaml").write_text(PROJECT.format(batch=batch, pipeline=pipeline), encoding="utf-8")
    tpl = CONTACTS if pipeline == "contacts" else COMPANIES
    (root / "pipelines" / f"{pipeline}.yaml").write_text(tpl.format(dedupe="dedupe:\n" + dedupe if dedupe else ""),
                                                         encoding="utf-8")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "run", "--json",
                          "-C", str(root)], capture_output=True, text=True, check=True).stdout
    done = next(e for e in map(json.loads, out.splitlines()) if e["event"] == "pipeline_finished")
    with sqlite3.connect(root / ".etl" / "state.db") as c:
        xw = dict(c.execute("SELECT source_id, target_id FROM etl_crosswalk"))
    return done, xw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--companies", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        people = write_duplicate_contacts(data / "contacts.csv", people=args.people, seed=1)
        firms = write_duplicate_companies(data / "companies.csv", companies=args.companies, seed=1)
        print(f"contacts: {people['records']:,} records of {people['people']:,} people "
              f"({people['households']} relatives share a phone); companies: {firms['records']:,} records "
              f"({firms['branches']} branches share their head office's INN)")
        print(f"{'pipeline':10} {'rules':36} {'precision':>9} {'recall':>7} {'merged':>7} {'rows/s':>8}")
        for n, (pipeline, label, dedupe) in enumerate(RULES):
            done, xw = run(Path(tmp) / f"run{n}", pipeline, dedupe, args.batch, data)
            truth = people["person"] if pipeline == "contacts" else firms["company"]
            s = pair_scores(truth, xw)
            assert done["read"] == done["created"] + done["updated"] + done["unchanged"] + done["rejected"]
            rate = done["read"] / done["seconds"] if done["seconds"] else 0
            print(f"{pipeline:10} {label:36} {s['precision']:9.3f} {s['recall']:7.3f} {done['merged']:7,} "
                  f"{rate:8,.0f}")


if __name__ == "__main__":
    main()
