"""Run reports for machines: the JSON report (`etl run --report`) and a JUnit XML report (`etl run --junit`) that CI
systems (GitLab, Jenkins, GitHub test reporters) show as test results: one test case per pipeline, failed when the
pipeline failed or its rejects are above the project's thresholds, and one for the project's quality thresholds."""

from __future__ import annotations

import contextlib
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from etl import secrets


def row_format(path: Path, fmt: str | None = None) -> str:
    """csv or jsonl: as given, else by the file's suffix."""
    return fmt or ("jsonl" if path.suffix in (".jsonl", ".json") else "csv")


@contextlib.contextmanager
def row_file(path: Path, columns: list[str], fmt: str | None = None) -> Iterator[Callable[[dict], None]]:
    """A file of rows for people (CSV that opens in Excel: UTF-8 with BOM, ';') or for programs (JSON lines);
    yields the function that writes one row."""
    fmt = row_format(path, fmt)
    with open(path, "w", encoding="utf-8-sig" if fmt == "csv" else "utf-8", newline="") as fh:
        if fmt == "csv":
            writer = csv.DictWriter(fh, columns, delimiter=";", extrasaction="ignore")
            writer.writeheader()
            yield writer.writerow
        else:
            yield lambda row: fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def json_report(run_id: str, dry_run: bool, reports: Sequence[Any]) -> str:
    return json.dumps({"run_id": run_id, "dry_run": dry_run, "pipelines": [r.as_dict() for r in reports]},
                      ensure_ascii=False, indent=2)


def quality_problems(defaults: Any, read: int, rejected: int) -> list[str]:
    """Why ``rejected`` of ``read`` records break the thresholds of pipelines.yaml ``defaults:`` (empty: they do not)."""
    out = []
    if defaults.max_rejects is not None and rejected > defaults.max_rejects:
        out.append(f"{rejected:,} rejects, more than max_rejects {defaults.max_rejects:,}")
    if read and rejected / read > defaults.max_reject_rate:
        out.append(f"reject rate {rejected / read:.1%} above max_reject_rate {defaults.max_reject_rate:.1%}")
    return out


def junit_xml(run_id: str, dry_run: bool, reports: Sequence[Any], defaults: Any) -> str:
    suite = ET.Element("testsuite", name="crm-etl " + ("dry run" if dry_run else "run"))
    failures = errors = 0
    total_s = 0.0
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=run_id)
    ET.SubElement(props, "property", name="dry_run", value=str(dry_run).lower())
    for r in reports:
        c = r.counts
        total_s += r.seconds
        case = ET.SubElement(suite, "testcase", classname=f"pipeline.{r.entity}", name=r.pipeline,
                             time=f"{r.seconds:.3f}")
        counts = ", ".join(f"{k} {c[k]:,}" for k in ("read", "created", "updated", "unchanged", "rejected"))
        if c.get("merged"):
            counts += f" (merged {c['merged']:,})"
        reasons = "\n".join(f"  {reason}: {n:,}" for reason, n in r.reasons.most_common())
        out = ET.SubElement(case, "system-out")
        out.text = f"status {r.status}; {counts}" + (f"\nrejects by reason:\n{reasons}" if reasons else "")
        if r.status == "failed":
            errors += 1
            ET.SubElement(case, "error", message=secrets.mask(r.message or "failed"), type="failed").text = \
                secrets.mask(r.message or "")
            continue
        problems = quality_problems(defaults, r.read, r.rejected_for_quality)
        if problems:
            failures += 1
            ET.SubElement(case, "failure", message="; ".join(problems), type="quality").text = reasons
    read = sum(r.read for r in reports)
    rejected = sum(r.rejected_for_quality for r in reports)
    case = ET.SubElement(suite, "testcase", classname="project", name="quality thresholds", time="0")
    problems = quality_problems(defaults, read, rejected)
    if problems:
        failures += 1
        ET.SubElement(case, "failure", message="; ".join(problems), type="quality")
    suite.set("tests", str(len(reports) + 1))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("time", f"{total_s:.3f}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


__all__ = ["json_report", "junit_xml", "quality_problems", "row_file", "row_format"]
