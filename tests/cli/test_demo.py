"""`veneer demo` end to end with its three long steps replaced by stubs (each is tested in its own module):
the explanation step, the run directory, the one-page report and the refusal of an existing demo."""

from __future__ import annotations

import json

import pytest

import veneer.jobs.demo as demo_job
from veneer.cli import main
from veneer.jobs.results import JobResult


class Stub(JobResult):
    kind = "stub"


@pytest.fixture
def quick_levels(monkeypatch):
    for level in ("attack", "manipulate", "neurons"):
        monkeypatch.setattr(getattr(demo_job, level), "demo", lambda run_dir, level=level: Stub({"stub": level}))


def test_demo_explains_with_every_method_that_applies_and_writes_one_report(tmp_path, quick_levels, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.95
    assert set(metrics["explanations"]["methods"]) == {"gradient", "gradient_x_input", "ig", "smoothgrad", "gradcam",
                                                       "occlusion", "lrp", "deeplift"}
    assert metrics["manipulate"] == {"stub": "manipulate"} and (out / "report.html").is_file()
    assert metrics["kind"] == "demo" and "kind" not in metrics["manipulate"]  # the levels nest their measures
    assert main(["demo", "--out", str(out)]) == 2  # an existing demo is kept unless --overwrite
    assert "holds another run" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--overwrite", "--no-report"]) == 0
