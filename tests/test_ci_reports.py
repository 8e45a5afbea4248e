"""CI dry-run validation: a merge request changes a mapping; the pipeline job runs `etl run --dry-run --junit` on
the sample data and the CI shows one test per pipeline, failed when its rejects break the project's thresholds,
with the counts and the rejects by reason beside it. Nothing is written to the CRM or the state store."""

from __future__ import annotations

from pathlib import Path

import defusedxml.ElementTree as DET

PIPELINES = ["companies", "contacts", "deals", "sites", "tickets"]


def cases(path: Path) -> tuple[dict, dict[str, dict]]:
    root = DET.parse(path).getroot()
    out = {}
    for c in root.iter("testcase"):
        out[c.get("name")] = {"failure": c.find("failure"), "error": c.find("error"),
                              "out": (c.findtext("system-out") or "")}
    return dict(root.attrib), out


def test_a_dry_run_writes_a_junit_report_with_a_test_per_pipeline(project, cli, tmp_path):
    junit = tmp_path / "report.xml"
    res = cli("run", "--dry-run", "--quiet", "--junit", junit, "-C", project)
    assert res.exit_code == 0, res.output
    suite, by_name = cases(junit)
    assert suite["name"] == "crm-etl dry run" and suite["tests"] == str(len(PIPELINES) + 1)
    assert suite["failures"] == "0" and suite["errors"] == "0"
    assert set(by_name) == {*PIPELINES, "quality thresholds"}
    assert "status planned; read " in by_name["contacts"]["out"]
    assert "rejects by reason:" in by_name["deals"]["out"]  # the sample has orphan links and bad dates


def test_a_change_that_rejects_too_much_fails_its_pipeline_in_ci(project, cli, tmp_path):
    p = project / "pipelines" / "contacts.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace("key: Код", "key: Должность"),
                 encoding="utf-8")  # a wrong key: job titles repeat, so most contacts are now duplicate keys
    junit = tmp_path / "report.xml"
    res = cli("run", "--dry-run", "--quiet", "--junit", junit, "-C", project)
    assert res.exit_code == 1, res.output  # rejects above max_reject_rate
    suite, by_name = cases(junit)
    assert int(suite["failures"]) >= 2
    fail = by_name["contacts"]["failure"]
    assert fail is not None and "above max_reject_rate" in fail.get("message")
    assert "duplicate_key" in (fail.text or "")
    assert by_name["quality thresholds"]["failure"] is not None
    assert by_name["companies"]["failure"] is None
