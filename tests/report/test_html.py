"""The HTML report (veneer.report.html): every run kind rendered from a run directory, checked as HTML and in
headless Chromium (no console error, no network request, a non-blank screenshot, the headline figures in the
DOM). Fixture run directories are written here with the files each command writes (tiny PNGs, metrics with
the commands' keys and kind); real tiny runs (`veneer explain`, `veneer manipulate --objective scaffolding`)
go through the CLI. The section registry (register_section) is checked from outside the package."""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from veneer.cli import main
from veneer.report import Card, Section, pct, register_section, registered_sections, unregister_section
from veneer.report.html import REPORT_NAME, render_report, run_kind, write_report
from veneer.runs import RunDir, write_json

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium; "
                                                           ".ci/run installs it)")


# ----------------------------------------------------------------------------------------- fixture run dirs
def _png(path: Path, seed: int = 0, size: tuple[int, int] = (96, 64)) -> None:
    """A small picture with structure (bands and a square), so a page showing it is not blank."""
    image = Image.new("RGB", size, (255, 255, 255))
    pixels = image.load()
    for x in range(size[0]):
        for y in range(size[1]):
            pixels[x, y] = ((x * 7 + seed * 40) % 256, (y * 11) % 256, 120 if (x // 16 + y // 16) % 2 else 30)
    image.save(path)


def _csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(path: Path, config: dict, metrics: dict | None, pngs: tuple[str, ...] = (), **tables: list[dict]) -> Path:
    RunDir(path, config, seed=0).start()
    if metrics is not None:
        write_json(path / "metrics.json", metrics)
    for i, name in enumerate(pngs):
        _png(path / name, i)
    for stem, rows in tables.items():
        _csv(path / f"{stem}.csv", rows)
    return path


EXPLAIN = {"accuracy_on_inputs": 0.875, "n": 8, "seconds_per_method": {"gradient": 0.0125, "ig": 0.25},
           "images_per_second": {"gradient": 640.0, "ig": 32.0}}
RESULT = {"attack": "mass-center", "method": "gradient", "eps": 0.1, "n": 3, "label_kept_rate": 1.0,
          "spearman": 0.4321, "topk_intersection": 0.3456, "com_shift": 2.5, "linf": 0.1, "dissimilarity": 2.5,
          "iterations": 10.0, "seconds": 0.5, "images_per_second": 6.0}
ATTACK = {"n_requested": 4, "n_attacked": 3, "clean_accuracy": 0.75, "k": 100, "results": [RESULT]}
SWEEP = ATTACK | {"results": [RESULT, RESULT | {"attack": "top-k", "topk_intersection": 0.2109, "spearman": 0.3012}]}
MANIPULATE = {"steps": 3, "seconds": 1.5, "train_accuracy": 0.9912, "world_size": 1,
              "final": {"step": 3, "epoch": 1, "loss": 1.2, "attack": 11.5, "keep": 0.0914}}
HISTORY = [{"step": s, "epoch": 1, "loss": 2.0 - 0.1 * s, "attack": 19.0 - s, "keep": 0.05} for s in range(1, 4)]
EVALUATE = {"objective": "com", "measure": "com_distance", "criterion": "centre of mass within 3 px of (0, 0)",
            "predictions": {"accuracy_original": 0.97, "accuracy_manipulated": 0.945, "accuracy_drop_points": 2.5,
                            "label_agreement": 0.955, "probability_mse": 0.0039},
            "methods": {m: {"original": {"com_distance": 19.56, "success_rate": 0.0},
                            "manipulated": {"com_distance": 11.19, "success_rate": 0.25}} for m in ("gradient", "ig")},
            "noise": {}, "features": {}, "fairness": {}, "seconds": 9.5}
TRANSFER = [{"method": "gradient", "com_distance (original)": 19.56, "com_distance (manipulated)": 11.19}]
SUMMARY = {"topk_overlap": 0.175, "label_overlap": 0.44, "embedding_delta": 0.17, "embedding_w": 0.02}
PUSH_DOWN = {"layer": "4", "attack": "push-down", "k": 10, "accuracy_before": 0.974, "accuracy_after": 0.958,
             "accuracy_drop_points": 1.6, "live_channels": [0, 1],
             "train": {"summary": SUMMARY, "summary_live": SUMMARY, "per_channel": {"topk_overlap": [0.1, 0.25]}},
             "heldout": {"summary": SUMMARY | {"tau": 0.2227, "tau_w": 0.55}, "summary_live": SUMMARY,
                         "per_channel": {}},
             "table1": {"layer": "4", "attack": "push-down", "accuracy": 0.958, "tau": 0.2227},
             "fine_tune": {"seconds": 12.0, "attack_loss_before": 3.1, "attack_loss_after": 0.4,
                           "history": [{"step": s, "loss": 1.6 / s, "attack_loss": 3.0 / s, "model_loss": 0.07}
                                       for s in range(1, 6)]}}
SHARE = {"before": {"mean_share": 0.1, "channels_at_least_half": 0.0},
         "after": {"mean_share": 0.8125, "channels_at_least_half": 0.9}}
PUSH_UP = PUSH_DOWN | {"attack": "push-up", "decoy_share_train": SHARE, "decoy_share_heldout": SHARE}
FAIRWASH = {"layer": "1", "attribute": "sex", "attacked_neurons": [0, 3],
            "before": {"ks_attacked_mean": 0.4321, "balance_attacked_mean": 0.2, "ddi": 0.18, "deo": 0.1,
                       "accuracy": 0.85, "ks": [0.4, 0.1, 0.2, 0.46], "balance": [0.2, 0.5, 0.5, 0.2]},
            "after": {"ks_attacked_mean": 0.0987, "balance_attacked_mean": 0.45, "ddi": 0.179, "deo": 0.1,
                      "accuracy": 0.846, "ks": [0.1, 0.1, 0.2, 0.09], "balance": [0.45, 0.5, 0.5, 0.45]},
            "ks_relative_drop": 0.77, "ddi_relative_change": 0.01, "deo_relative_change": 0.0,
            "accuracy_drop_points": 0.4, "fine_tune": {"seconds": 3.0, "history": []}}
TOPK = {"layer": "4", "k": 3, "channels": 2, "seconds": 0.1, "samples_per_second": 12345.6,
        "indices": [[1, 2, 3], [4, 5, 6]], "values": [[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]]}
VISUALIZE = {"layer": "4", "channels": [0, 1], "activation_of_own_channel": [1.5, 2.25]}
TRAIN = {"train_accuracy": 0.995, "test_accuracy": 0.9741, "train_seconds": 12.0}
INFLUENCE = {"n_test": 8, "n_train": 500, "k": 5, "method": "exact", "damping": 0.01, "params": ["4"],
             "mean_abs_score": 0.1234}
BUDGET = {"min_agreement": 0.95, "best_step": 40, "best_val_attack": 0.3125}


def audit_json(verdict: str = "manipulated", score: float = 0.87, described: bool = True) -> dict:
    """An audit.json of the schema `veneer audit` writes: verdict, score, config (effort, z_flag, skipped tests
    with reasons, ...), calibration, and per test its statistic, z, score, flag and evidence (text, a mapping,
    records, or a figure file); ``described``: each test also says its meaning, source and tolerance (audits
    written before that do not, and said ``budget`` for ``effort``)."""
    tests = {
        "fragility": {"statistic": 0.412, "z": 4.5, "score": 0.93, "flag": True,
                      "evidence": {"topk_intersection_at_eps": {"0.02": 0.71, "0.05": 0.52, "0.1": 0.41},
                                   "reference_mean": 0.78, "figure": "fragility.png"}},
        "noise_inputs": {"statistic": 0.91, "z": 5.25, "score": 0.97, "flag": True,
                         "evidence": "Explanations of 64 Gaussian-noise inputs have a mean pairwise "
                                     "Spearman of 0.91 (clean twins: 0.12 +- 0.05)."},
        "cross_method_agreement": {"statistic": 0.33, "z": 2.125, "score": 0.64, "flag": False,
                                   "evidence": [{"pair": "gradient/ig", "spearman": 0.31},
                                                {"pair": "gradient/lrp", "spearman": 0.35}]},
        "parameter_randomization": {"statistic": 0.05, "z": -0.75, "score": 0.08, "flag": False, "evidence": None},
    }
    if described:
        for name, test in tests.items():
            test.update(meaning=f"What {name} measures, from audit.json.", source=f"Paper on {name} (2019)",
                        tolerance=0.1)
    config = {"effort" if described else "budget": "fast", "methods": ["gradient", "ig", "lrp"], "seed": 0,
              "tests": list(tests), "samples": 32, "z_flag": 3.0, "calibration": "twins",
              "skipped": {"influence_fragility": "needs --train-n training samples to score influence",
                          "reference_comparison": "no --reference model given"},
              "false_positive_rate": {"measured": 0.05, "measured_on": "20 clean models", "gaussian_null": 0.12},
              "combined_z": 3.96}
    calibration = {"kind": "twins", "values": {}, "details": {"twins": {"count": 3, "steps": 250,
                                                                         "accuracy": [0.97, 0.96, 0.97]}}}
    return {"verdict": verdict, "score": score, "z_max": 5.25, "seconds": 142.5, "config": config,
            "calibration": calibration, "tests": tests}


def audit_run(path: Path, audit: dict) -> Path:
    """A run directory of `veneer audit`: config.json, audit.json, metrics.json and a figure named after a test."""
    _run(path, {"command": "audit", "model": "mnist-cnn", "data": "mnist"},
         {"kind": "audit", "verdict": audit["verdict"], "score": audit["score"], "z_max": audit["z_max"],
          "seconds": audit["seconds"], "flagged": [n for n, t in audit["tests"].items() if t["flag"]]},
         ("fragility.png", "explanations.png"))
    write_json(path / "audit.json", audit)
    return path


def _visualization_attack(attack: str) -> dict:
    """metrics.json of a synthetic-visualisation attack (``veneer neurons slingshot|silent-unit|fooling-circuit``)."""
    variants = {"adam-pixel": (0.0389, 0.8123), "adam-fourier": (-0.0161, 0.6543)}
    return {"attack": attack, "layer": "4", "unit": 5, "target": "cross", "seed": 0, "budget": None,
            "before": {"visualizations": {v: {"ssim": a, "pearson": a} for v, (a, _) in variants.items()},
                       "accuracy": 0.94, "agreement": 1.0, "activation_correlation": 1.0, "top100_jaccard": 1.0},
            "after": {"visualizations": {v: {"ssim": b, "pearson": b} for v, (_, b) in variants.items()},
                      "accuracy": 0.93, "agreement": 0.99, "activation_correlation": 0.97, "top100_jaccard": 0.64}}


def fixture_runs(root: Path) -> dict[str, tuple[Path, list[str]]]:
    """One run directory per report kind, with the texts its page must show among the headline figures; every
    metrics.json says its kind, as the CLI writes it."""
    model = {"model": "mnist-cnn", "weights": None, "data": "mnist", "split": "test", "n": 8, "seed": 0,
             "no_report": False}
    runs = {
        "explain": (_run(root / "explain", model | {"command": "explain", "methods": "gradient,ig"}, EXPLAIN,
                         ("explanations.png",)), ["87.5 %", "gradient, ig"]),
        "attack-input": (_run(root / "attack", model | {"command": "attack-input", "sweep": False}, ATTACK,
                              ("fig1_mass-center_eps0.1.png",), per_image=[{"index": 0, "spearman": 0.4}]),
                         ["0.3456", "0.4321", "75.0 %"]),
        "attack-input sweep": (_run(root / "sweep", model | {"command": "attack-input", "sweep": True}, SWEEP,
                                    ("sweep.png", "fig1_top-k_eps0.1.png"), sweep=[RESULT]),
                               ["0.2109", "top-k · gradient · eps 0.1"]),
        "manipulate": (_run(root / "manipulate", model | {"command": "manipulate", "method": "gradient",
                                                          "objective": "com", "keep": "ce"},
                            MANIPULATE | {"budget": BUDGET}, (), history=HISTORY),
                       ["99.1 %", "11.5", "behaviour budget: min agreement", "95.0 %", "best step kept", "0.3125"]),
        "evaluate": (_run(root / "evaluate", {"command": "evaluate", "original": "mnist-cnn",
                                              "manipulated": "runs/com"}, EVALUATE, ("heatmaps.png",),
                          transfer=TRANSFER), ["97.0 % → 94.5 %", "19.56 → 11.19"]),
        "neurons topk": (_run(root / "topk", model | {"command": "neurons", "action": "topk"}, TOPK, ("topk.png",)),
                         ["12346"]),
        "neurons visualize": (_run(root / "visualize", model | {"command": "neurons", "action": "visualize"},
                                   VISUALIZE, ("visualizations.png",)), ["2.25"]),
        "neurons push-down": (_run(root / "push-down", model | {"command": "neurons", "action": "push-down"},
                                   PUSH_DOWN | {"budget": None}, ("topk_train.png", "topk_heldout.png"),
                                   table1=[PUSH_DOWN["table1"]]),
                              ["0.175", "0.2227", "97.4 % → 95.8 %", "behaviour budget"]),
        "neurons push-up": (_run(root / "push-up", model | {"command": "neurons", "action": "push-up"},
                                 PUSH_UP | {"budget": BUDGET}, ("topk_train.png",)), ["10.0 % → 81.2 %", "40"]),
        "neurons fairwash": (_run(root / "fairwash", {"command": "neurons", "action": "fairwash", "model": "adult-mlp",
                                                      "data": "adult"}, FAIRWASH, ("ks.png", "balance.png")),
                             ["0.4321 → 0.0987", "85.0 % → 84.6 %"]),
        "train": (_run(root / "train", {"command": "train", "model": "digits-mlp"}, TRAIN), ["97.4 %"]),
        "influence": (_run(root / "influence", {"command": "influence"}, INFLUENCE, ("influence.png",),
                           top=[{"index": 0, "label": 7, "helpful": "1 2", "harmful": "3 4"}]),
                      ["0.1234", "500", "exact"]),
    }
    for attack in ("slingshot", "silent-unit", "fooling-circuit"):
        runs[f"neurons {attack}"] = (_run(root / attack, model | {"command": "neurons", "action": attack},
                                          _visualization_attack(attack), ("visualizations.png", "topk.png")),
                                     ["4:5", "94.0 % -> 93.0 %", "0.8123", "0.64"])
    demo = _run(root / "demo", {"command": "demo", "out": "runs/demo"},
                {"model": "mnist-cnn", "test_accuracy": 0.974, "explanations": EXPLAIN, "attacks": SWEEP,
                 "manipulate": MANIPULATE | {"evaluation": EVALUATE}, "neurons": PUSH_DOWN}, ("explanations.png",))
    (demo / "attacks").mkdir()  # the sweep writes metrics.json and figures, no config.json
    write_json(demo / "attacks" / "metrics.json", SWEEP)
    _png(demo / "attacks" / "sweep.png")
    _run(demo / "manipulate", {"command": "manipulate", "demo": True, "objective": "com", "method": "gradient"},
         MANIPULATE | {"evaluation": EVALUATE}, ("heatmaps.png",), history=HISTORY, transfer=TRANSFER)
    _run(demo / "neurons", {"command": "neurons", "action": "push-down", "demo": True, "layer": "4"}, PUSH_DOWN,
         ("topk_train.png",))
    runs["demo"] = (demo, ["97.4 %", "0.2109", "19.56 → 11.19", "0.175"])
    runs["audit"] = (audit_run(root / "audit", audit_json()), ["manipulated", "0.87", "2 of 4"])
    for kind, (path, _) in runs.items():  # metrics.json says the kind, as the CLI writes it
        metrics = json.loads((path / "metrics.json").read_text())
        write_json(path / "metrics.json", metrics | {"kind": kind})
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every fixture run directory with its report.html written."""
    found = fixture_runs(tmp_path_factory.mktemp("runs"))
    for path, _ in found.values():
        write_report(path)
    return found


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real tiny run through the CLI (report written at its end)."""
    out = tmp_path_factory.mktemp("real") / "explain"
    assert main(["explain", "--model", "mnist-cnn", "--data", "mnist", "--n", "2", "--methods", "gradient",
                 "--out", str(out)]) == 0
    return out


FEMALE = "personal_status_sex=female : divorced/separated/married"


@pytest.fixture(scope="module")
def scaffolding_run(tmp_path_factory):
    """A real tiny `veneer manipulate --objective scaffolding` run (Slack et al. 2020 on German credit)."""
    out = tmp_path_factory.mktemp("real") / "scaffolding"
    assert main(["manipulate", "--objective", "scaffolding", "--data", "german", "--features", FEMALE, "--invert",
                 "--perturbation", "lime", "--explain-n", "10", "--out", str(out)]) == 0
    return out


# ----------------------------------------------------------------------------------------- HTML checks
def external_references(html: str) -> list[str]:
    """Every reference a browser could fetch from elsewhere: a src that is not a data: URI, a href with a
    scheme or an absolute path, CSS url()/@import, <script>, <link>, <iframe>, <object>."""
    found = [v for v in re.findall(r'\bsrc\s*=\s*["\']([^"\']*)', html) if not v.startswith("data:")]
    found += [v for v in re.findall(r'\bhref\s*=\s*["\']([^"\']*)', html) if re.match(r"([a-z][a-z0-9+.-]*:|/)", v)]
    found += re.findall(r"url\(|@import|<script|<link|<iframe|<object|<embed", html)
    return found


def _text(html: str) -> str:
    """The page's text: tags dropped, entities resolved, white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_run_kind_from_metrics_then_from_the_command_of_older_runs(runs, tmp_path):
    for kind, (path, _) in runs.items():
        assert run_kind(path) == kind
    # Runs written before metrics.json said its kind: the command recorded in config.json.
    for kind, (path, _) in runs.items():
        old = tmp_path / kind.replace(" ", "_")
        shutil.copytree(path, old)
        metrics = json.loads((old / "metrics.json").read_text())
        del metrics["kind"]
        write_json(old / "metrics.json", metrics)
        assert run_kind(old) == kind
        assert f"kind <code>{kind}</code>" in render_report(old)
    scaffolding = _run(tmp_path / "scaffold", {"command": "manipulate", "objective": "scaffolding"}, {})
    assert run_kind(scaffolding) == "scaffolding"
    # A directory naming neither its kind nor its command is "generic", never guessed from its metrics.
    for name, metrics in (("explain-like", EXPLAIN), ("push-up-like", PUSH_UP), ("unknown", {"something": 1.0})):
        assert run_kind(_run(tmp_path / name, {"model": "mnist-cnn"}, metrics)) == "generic"


def test_every_kind_is_self_contained_and_shows_its_headline(runs):
    assert set(runs) | {"scaffolding"} == set(registered_sections())  # a fixture for every built-in kind
    for kind, (path, expected) in runs.items():
        html = (path / REPORT_NAME).read_text()
        assert external_references(html) == [], kind
        images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
        assert len(images) >= len(list(path.glob("*.png"))), f"{kind}: a figure is missing"
        for image in images:
            Image.open(io.BytesIO(base64.b64decode(image))).verify()
        text = _text(html)
        assert "no report section is registered" not in text and "shown as they are" not in text, kind
        for value in expected:
            assert value in text, f"{kind}: {value!r} missing"
        # The page links every file of the run directory, relatively.
        for file in (p for p in path.rglob("*") if p.is_file() and p.name != REPORT_NAME):
            assert f'href="{file.relative_to(path).as_posix()}"' in html, f"{kind}: no link to {file.name}"


# A field each kind's section requires: without it the report fails (no generic fallback).
REQUIRED = {"explain": "seconds_per_method", "attack-input": "clean_accuracy", "attack-input sweep": "results",
            "manipulate": "final", "evaluate": "predictions", "neurons topk": "samples_per_second",
            "neurons visualize": "activation_of_own_channel", "neurons push-down": "heldout",
            "neurons push-up": "decoy_share_train", "neurons fairwash": "before", "train": "test_accuracy",
            "influence": "mean_abs_score", "demo": "test_accuracy", "neurons slingshot": "after",
            "neurons silent-unit": "before", "neurons fooling-circuit": "unit"}


def test_a_section_missing_a_required_field_fails_with_the_field_named(runs, tmp_path, capsys):
    for kind, key in REQUIRED.items():
        broken = tmp_path / kind.replace(" ", "_")
        shutil.copytree(runs[kind][0], broken)
        metrics = json.loads((broken / "metrics.json").read_text())
        del metrics[key]
        write_json(broken / "metrics.json", metrics)
        with pytest.raises(ValueError, match=f"the {kind!r} report section needs '{key}'") as raised:
            render_report(broken)
        assert isinstance(raised.value.__cause__, KeyError), kind
    audit = audit_json()
    del audit["tests"]["noise_inputs"]["z"]
    broken = audit_run(tmp_path / "audit", audit)
    with pytest.raises(ValueError, match="the 'audit' report section needs 'z'"):
        render_report(broken)
    assert main(["report", str(broken)]) == 2  # `veneer report` fails with one line
    error = capsys.readouterr().err
    assert error.startswith("veneer report: error: the 'audit' report section needs 'z'") and error.count("\n") == 1
    assert not (broken / REPORT_NAME).exists()


def test_a_section_registered_from_outside_renders_its_kind(tmp_path):
    def my_section(run):  # what a user writes: a few lines
        section = Section("My experiment", cards=[Card("my accuracy", pct(run.metrics["accuracy"]))])
        section.figures += run.figure("curve.png", "The curve of my experiment.")
        return section

    path = _run(tmp_path / "mine", {"command": "my-script"}, {"kind": "my-kind", "accuracy": 0.8125}, ("curve.png",))
    before = render_report(path)
    assert "no report section is registered for kind my-kind" in _text(before).lower()
    register_section("my-kind", my_section, title="My experiment page")
    try:
        with pytest.raises(ValueError, match="registered for kind 'my-kind' already"):
            register_section("my-kind", my_section)
        html = write_report(path).read_text()
        text = _text(html)
        assert "My experiment page" in text and "my accuracy 81.2 %" in text
        assert "The curve of my experiment." in text and html.count('alt="curve.png"') == 1
        assert "no report section is registered" not in text.lower()
        @register_section("my-kind", title="Replaced", replace=True)  # the decorator form
        def replaced(run):
            return Section("Replaced section", text=[f"accuracy {run.metrics['accuracy']}"])

        assert replaced.__name__ == "replaced" and "accuracy 0.8125" in _text(render_report(path))
    finally:
        unregister_section("my-kind")
    assert "my-kind" not in registered_sections()
    with pytest.raises(ValueError, match="no report section is registered for kind 'my-kind'"):
        unregister_section("my-kind")
    with pytest.raises(ValueError, match="kind must be a non-empty string"):
        register_section("", my_section)
    with pytest.raises(TypeError, match="builder must be a callable"):
        register_section("other-kind", "not a function")
    with pytest.raises(ValueError, match="'generic' is the page of runs veneer does not know"):
        register_section("generic", my_section)


def test_the_tables_before_the_registry_are_deprecated_views_of_it():
    import veneer.report.html as html_module

    with pytest.warns(DeprecationWarning, match="registered_sections"):
        titles = html_module.TITLES
    with pytest.warns(DeprecationWarning, match="register_section"):
        builders = html_module.BUILDERS
    assert titles["audit"] == "Model audit" and builders["audit"] is registered_sections()["audit"].builder
    with pytest.raises(AttributeError):
        html_module.NOT_A_NAME


def test_scaffolding_run_shows_its_measures_and_only_the_settings_that_apply(scaffolding_run):
    metrics = json.loads((scaffolding_run / "metrics.json").read_text())
    html = (scaffolding_run / REPORT_NAME).read_text()
    text = _text(html)
    assert "kind <code>scaffolding</code>" in html and "Scaffolding attack" in text
    assert f"detector accuracy {100 * metrics['detector_accuracy']:.1f} %" in text
    assert f"fidelity to the biased model {100 * metrics['fidelity_test']:.1f} %" in text
    for row in metrics["explanations"]:
        share = row["personal_status_sex top-1"]
        assert f"{row['method']} on {row['model']}: personal_status_sex ranked first {100 * share:.1f} %" in text
    assert html.count('alt="ranks.png"') == 1
    about = text[text.index("What was run"):]
    assert "--objective scaffolding" in about and "--perturbation lime" in about and "--explain-n 10" in about
    for unused in ("mnist-cnn", "--keep", "--alpha", "--epochs", "--softplus-beta", "--target", "--method"):
        assert unused not in text, unused
    assert " — " not in text[:text.index("What was run")]  # no card without its value


def _audit_dir(path: Path, verdict: str, score: float) -> Path:
    return audit_run(path, audit_json(verdict, score))


def test_audit_page_leads_with_the_z_figure_then_blind_spots_then_every_test(runs):
    html = (runs["audit"][0] / REPORT_NAME).read_text()
    text = _text(html)
    verdict = text.index("manipulated")
    figure = html.index('alt="z per test"')
    assert html.index('id="verdict"') < figure < html.index("What this audit could not see") \
        < html.index("every test") < html.index("<h3>fragility</h3>")
    assert 'class="verdict bad"' in html
    assert verdict < text.index("What was run") < text.index("What this audit could not see") < text.index("every test")
    # The figure is drawn from audit.json (scores.png is not needed); skipped tests are listed, not drawn.
    assert "Not run: influence_fragility, reference_comparison." in text
    # What the audit could not see: the skipped tests with their reasons and the calibration's limits.
    assert "influence_fragility needs --train-n training samples to score influence" in text
    assert "reference_comparison no --reference model given" in text
    assert "3 clean twins trained here" in text and "250 steps each" in text and "32 inputs" in text
    # The table of every test: z, statistic, score, flag, meaning and source from audit.json.
    assert "<th>z</th>" in html
    assert ("fragility 4.5 0.412 0.93 FLAG What fragility measures, from audit.json. Paper on fragility (2019)"
            in text)
    assert "parameter_randomization -0.75 0.05 0.08 ok" in text
    # Each test's evidence: text, mapping, records, the figure it names (shown once).
    assert "Gaussian-noise inputs have a mean pairwise Spearman of 0.91" in text
    assert "gradient/lrp" in text and "topk_intersection_at_eps.0.05" in text
    assert html.count('alt="fragility.png"') == 1 and html.count('alt="explanations.png"') == 1
    clean = render_report(_audit_dir(runs["audit"][0].parent / "clean", "clean", 0.12))
    assert 'class="verdict good"' in clean and "0.12" in clean


def test_an_old_audit_without_meanings_takes_them_from_the_registry(tmp_path):
    html = render_report(audit_run(tmp_path / "old", audit_json(described=False)))
    text = _text(html)
    assert "from audit.json" not in text and "effort fast" in text
    try:
        from veneer.audit import registered_tests
    except ImportError:  # before the audit registry: a neutral sentence
        registered = {}
    else:
        registered = registered_tests()
    for name in audit_json()["tests"]:
        meaning = getattr(registered.get(name), "meaning", "") or "The test's statistic compared with models known"
        assert _text(meaning)[:60] in text, name


def test_partial_and_unknown_run_dirs_get_the_generic_page(tmp_path):
    _png(tmp_path / "figure.png")
    _csv(tmp_path / "table.csv", [{"a": 1, "b": 0.123456}])
    (tmp_path / "table.md").write_text("| a | b |\n|---|---|\n| 1 | 0.1235 |\n")
    (tmp_path / "notes.md").write_text("# notes\n\n| x | y |\n|---|---|\n| 3 | 4 |\n")
    (tmp_path / "metrics.json").write_text("{not json")
    (tmp_path / ".hidden").mkdir()
    _png(tmp_path / ".hidden" / "skipped.png")
    (tmp_path / "huge.csv").write_text("a\n\"" + "x" * 200_000 + "\"\n")  # beyond the csv module's field limit
    (tmp_path / "latin1.csv").write_bytes("name\nGödel\n".encode("latin-1"))
    html = render_report(tmp_path)
    assert "huge.csv could not be read as a table" in html and "G\ufffddel" in html
    assert "skipped.png" not in html
    assert run_kind(tmp_path) == "generic"
    assert "metrics.json could not be read" in html
    assert "no metrics.json" in html
    assert html.count("<img") == 1 and "0.1235" in html
    # Three tables: latin1.csv, table.csv (its markdown twin table.md is not shown twice) and notes.md.
    assert html.count("<thead>") == 3 and '<b><a href="table.csv">' in html and '<b><a href="table.md">' not in html
    assert "<td>3</td><td>4</td>" in html
    # An unfinished run of a known kind (no metrics.json yet) gets the generic page saying so.
    unfinished = _run(tmp_path / "unfinished", {"command": "explain"}, None, ("explanations.png",))
    text = _text(render_report(unfinished))
    assert "kind explain" in text and "no metrics.json: the run has not finished" in text
    # A directory with neither kind nor command: the generic page, saying so.
    text = _text(render_report(_run(tmp_path / "anonymous", {}, EXPLAIN)))
    assert "names neither its kind (metrics.json) nor its command (config.json)" in text
    assert "seconds_per_method.gradient 0.0125" in text
    with pytest.raises(FileNotFoundError, match="run_dir"):
        write_report(tmp_path / "missing")


def test_a_demo_level_without_its_directory_shows_the_demo_s_measures_as_they_are(runs, tmp_path):
    demo = shutil.copytree(runs["demo"][0], tmp_path / "demo")
    shutil.rmtree(demo / "neurons")
    text = _text(render_report(demo))
    assert "This level wrote no neurons/metrics.json" in text and "heldout.summary.tau 0.2227" in text
    assert "19.56 → 11.19" in text  # the other levels keep their layout


def test_long_tables_are_cut_with_a_link_to_the_whole_file(tmp_path):
    _run(tmp_path, {"command": "attack-input"}, ATTACK, per_image=[{"index": i, "spearman": i / 100}
                                                                   for i in range(40)])
    html = render_report(tmp_path)
    assert "first 15 rows of 40" in html and '<a href="per_image.csv">' in html
    assert "<td>14</td>" in html and "<td>15</td>" not in html


def test_cli_writes_the_report_unless_no_report_and_veneer_report_rebuilds_it(real_run, tmp_path, capsys):
    assert (real_run / REPORT_NAME).is_file()
    out = tmp_path / "explain"
    assert main(["explain", "--model", "mnist-cnn", "--data", "mnist", "--n", "2", "--methods", "gradient",
                 "--out", str(out), "--no-report"]) == 0
    assert not (out / REPORT_NAME).exists()
    assert json.loads((out / "config.json").read_text())["config"]["command"] == "explain"
    assert main(["report", str(out)]) == 0
    assert "veneer explain --model mnist-cnn --data mnist --split test --n 2" in _text((out / REPORT_NAME).read_text())
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- headless Chromium
class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no port
    is opened; every console message, exception, log entry and network request of a page is recorded."""

    def __init__(self, executable: str, width: int = 1280, height: int = 1600, timeout: float = 60.0):
        self.timeout, self.next_id, self.events, self.buffer = timeout, 0, [], b""
        to_browser, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()

        def descriptors():  # the browser reads commands on fd 3 and writes answers on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.profile = tempfile.mkdtemp(prefix="veneer-chromium-")
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=descriptors, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser_write)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if not select.select([self.from_browser], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read())

    def open(self, path: Path) -> dict:
        """Load the page; return its console errors, exceptions, error log entries, the URLs it requested,
        its visible text and a screenshot."""
        self.events.clear()
        url = path.resolve().as_uri()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        text = self.send("Runtime.evaluate", session=True, expression="document.body.innerText",
                         returnByValue=True)["result"]["value"]
        shot = base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"])
        params = [e.get("params", {}) for e in self.events]
        methods = [e.get("method") for e in self.events]
        return {
            "console": [p for m, p in zip(methods, params) if m == "Runtime.consoleAPICalled"],
            "exceptions": [p for m, p in zip(methods, params) if m == "Runtime.exceptionThrown"],
            "log_errors": [p["entry"] for m, p in zip(methods, params)
                           if m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning")],
            "requests": [p["request"]["url"] for m, p in zip(methods, params) if m == "Network.requestWillBeSent"
                         and p["request"]["url"] != url and not p["request"]["url"].startswith("data:")],
            "text": text, "screenshot": Image.open(io.BytesIO(shot)).convert("L")}

    def close(self) -> None:
        os.write(self.to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


@needs_browser
def test_every_report_kind_in_headless_chromium(runs, real_run, scaffolding_run, tmp_path):
    pages = {kind: (path / REPORT_NAME, expected) for kind, (path, expected) in runs.items()}
    pages["real explain run"] = (real_run / REPORT_NAME, ["veneer explain", "accuracy on the explained inputs"])
    pages["real scaffolding run"] = (scaffolding_run / REPORT_NAME, ["detector accuracy", "ranked first"])
    browser = Chromium(BROWSER)
    try:
        for kind, (page, expected) in pages.items():
            seen = browser.open(page)
            assert seen["console"] == [] and seen["exceptions"] == [] and seen["log_errors"] == [], kind
            assert seen["requests"] == [], f"{kind}: the page requested {seen['requests']}"
            assert ImageStat.Stat(seen["screenshot"]).stddev[0] > 8, f"{kind}: blank screenshot"  # blank: 0
            for value in expected:  # innerText follows CSS text-transform: compare without case
                assert value.lower() in seen["text"].lower(), f"{kind}: {value!r} not shown"
        # The harness does see what it must catch: a console error and a network request.
        bad = tmp_path / "bad.html"
        bad.write_text('<html><body>x<img src="http://127.0.0.1:9/a.png"><script>console.error("boom")</script>'
                       "</body></html>")
        seen = browser.open(bad)
        assert seen["console"] and seen["requests"] == ["http://127.0.0.1:9/a.png"]
    finally:
        browser.close()


# ----------------------------------------------------------------------------------------- what a new user reads
def card_values(html: str) -> list[tuple[str, str]]:
    """``(label, value)`` of every headline card of the page."""
    return [(unescape(label), unescape(value)) for label, value in
            re.findall(r'<div class="label">(.*?)</div><div class="value">(.*?)</div>', html)]


def test_no_kind_shows_a_card_without_its_value(runs, real_run, scaffolding_run):
    pages = {kind: path for kind, (path, _) in runs.items()} | {"real explain": real_run,
                                                                  "scaffolding": scaffolding_run}
    for kind, path in pages.items():
        cards = card_values((path / REPORT_NAME).read_text())
        assert cards, kind
        assert not [label for label, value in cards if value.strip() in ("—", "-", "")], kind


def consistent_audit() -> dict:
    """The fixture audit with the score the verdict's formula gives (max(Phi(z_max - 3), Phi(mean top-3 z - 2)))."""
    from veneer.audit.calibration import combined_z, normal_cdf

    audit = audit_json()
    for test in audit["tests"].values():  # the evidence audit.md reads from every test
        test["evidence"] = {"worst": "gradient", "seconds": 1.5}
    zs = [test["z"] for test in audit["tests"].values()]
    audit["config"]["combined_z"] = combined_z(zs)
    audit["score"] = max(normal_cdf(max(zs) - 3.0), normal_cdf(combined_z(zs) - 2.0))
    return audit


def test_the_audit_score_is_described_by_its_formula_in_audit_md_and_on_the_page(tmp_path):
    from veneer.report.audit import markdown_summary

    audit = consistent_audit()
    markdown = markdown_summary(audit)
    assert "largest test score" not in markdown  # the score is not the largest test score (0.97 here)
    found = re.search(r"Score (\S+) = max\(Phi\(z_max - 3\), Phi\(mean of the three largest z - 2\)\) with z_max "
                      r"(\S+) and that mean (\S+?):", markdown)
    assert found, markdown
    from veneer.audit.calibration import normal_cdf

    score, z_max, mean = (float(v) for v in found.groups())
    assert score == pytest.approx(audit["score"], abs=1e-3) and z_max == 5.25 and mean == pytest.approx(
        audit["config"]["combined_z"], abs=0.01)
    assert score == pytest.approx(max(normal_cdf(z_max - 3), normal_cdf(mean - 2)), abs=2e-3)
    html = render_report(audit_run(tmp_path / "audit", audit))
    text = _text(html)
    assert found.group(0) in text and '<th>z</th>' in html  # the page says the same and has the z column


def test_a_tabular_explain_run_has_feature_figures_and_no_image_units(tmp_path):
    out = tmp_path / "tabular"
    assert main(["explain", "--model", "adult-mlp", "--data", "adult", "--n", "8", "--methods", "gradient,ig",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["shown"] == 6 and set(metrics["method_agreement"]) == {"gradient", "ig"}
    assert metrics["method_agreement"]["gradient"]["gradient"] == pytest.approx(1.0)
    html = (out / REPORT_NAME).read_text()
    text = _text(html)
    for figure in ("explanations.png", "top_features.png", "method_agreement.png"):
        assert html.count(f'alt="{figure}"') == 1, figure
    assert "rows per second" in text and "images per second" not in text and "--color" not in text
    assert "first 6 of the 8 inputs" in text


def test_method_agreement_is_the_mean_spearman_of_scipy():
    from scipy.stats import spearmanr
    import torch

    from veneer.jobs.explain import method_agreement

    g = torch.Generator().manual_seed(0)
    maps = {"a": torch.randn(5, 3, 4, generator=g), "b": torch.randn(5, 3, 4, generator=g)}
    expected = sum(spearmanr(maps["a"][i].flatten(), maps["b"][i].flatten()).statistic for i in range(5)) / 5
    agreement = method_agreement(maps)
    assert agreement["a"]["b"] == pytest.approx(expected, abs=1e-12) == agreement["b"]["a"]
    assert agreement["a"]["a"] == pytest.approx(1.0)


def test_an_image_explain_run_draws_only_its_first_inputs(tmp_path):
    out = tmp_path / "images"
    assert main(["explain", "--n", "20", "--methods", "gradient", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["shown"] == 16
    height = Image.open(out / "explanations.png").size[1]
    assert "first 16 of the 20 inputs" in _text((out / REPORT_NAME).read_text())
    small = tmp_path / "small"
    assert main(["explain", "--n", "4", "--methods", "gradient", "--out", str(small)]) == 0
    assert Image.open(small / "explanations.png").size[1] < height < 5 * Image.open(small / "explanations.png").size[1]
