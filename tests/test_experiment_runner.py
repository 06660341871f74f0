"""experiments/runner.py: the 95% interval is Student's t (scipy), selection reads the validation split only,
a resumed study skips the seeds it finished, bad input is refused naming the argument."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from runner import cite, markdown_table, measure_seeds, run_study, seed_range, t_interval  # noqa: E402

SPLITS = {"validation": "rows 0-9", "test": "rows 10-19"}


class Recorder:
    """A measure whose value depends on the split and the setting; it records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, seed, split, lr=1.0):
        self.calls.append((seed, split, lr))
        # validation prefers lr 0.1; the test split would prefer lr 10 (so a leak would change the choice)
        score = -abs(math.log10(lr) + 1) if split == "validation" else math.log10(lr)
        return {"score": score + 0.01 * seed, "seed": seed}


def study(tmp_path, measure, seeds=(0, 1, 2), **options):
    options = {"what": "a toy", "config": {"toy": 1}, "splits": SPLITS, "results": tmp_path / "results",
               "cache": tmp_path / "cache", "progress": False, **options}
    return run_study("toy", measure, list(seeds), **options)


def test_the_interval_is_scipys_student_t_interval():
    values = [1.0, 2.0, 3.0]
    found = t_interval(values)
    low, high = stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem(values))
    assert (found["mean"], found["sd"]) == pytest.approx((2.0, 1.0))
    assert (found["low"], found["high"]) == pytest.approx((low, high), rel=1e-12)
    # closed form of Student's t quantile at 2 degrees of freedom: t_p = (2p - 1) / sqrt(2 p (1 - p))
    t = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    assert found["half_width"] == pytest.approx(t * 1.0 / math.sqrt(3), rel=1e-12)
    values = [0.58, 0.61, 0.55, 0.6, 0.57]
    low, high = stats.t.interval(0.9, 4, loc=sum(values) / 5, scale=stats.sem(values))
    assert (t_interval(values, 0.9)["low"], t_interval(values, 0.9)["high"]) == pytest.approx((low, high), rel=1e-12)


def test_selection_reads_the_validation_split_only_and_reports_on_the_test_split(tmp_path):
    measure = Recorder()
    summary = study(tmp_path, measure, grid=[{"lr": 0.01}, {"lr": 0.1}, {"lr": 10.0}], select_metric="score")
    assert summary["chosen"] == {"lr": 0.1}  # the test split alone would choose lr 10
    test_calls = [c for c in measure.calls if c[1] == "test"]
    assert test_calls == [(0, "test", 0.1), (1, "test", 0.1), (2, "test", 0.1)]
    assert sorted(c for c in measure.calls if c[1] == "validation") == sorted(
        (s, "validation", lr) for s in (0, 1, 2) for lr in (0.01, 0.1, 10.0))
    assert summary["metrics"]["score"]["values"] == pytest.approx([-1.0, -0.99, -0.98])
    assert summary["selection"]["split"] == "validation" and summary["splits"] == SPLITS
    assert [s["setting"] for s in summary["selection"]["scores"]] == summary["grid"]
    written = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert written["metrics"]["score"]["mean"] == pytest.approx(-0.99)
    assert written["seeds"] == [0, 1, 2] and "torch" in written["versions"]
    table = (tmp_path / "results" / "toy.md").read_text()
    assert "| score | -0.9900 | 0.0100 |" in table and '{"lr": 0.1} chosen on the validation split' in table


def test_goal_min_chooses_the_smallest_validation_mean(tmp_path):
    summary = study(tmp_path, Recorder(), grid=[{"lr": 0.01}, {"lr": 0.1}], select_metric="score", goal="min")
    assert summary["chosen"] == {"lr": 0.01}


def test_a_resumed_study_skips_the_seeds_it_finished(tmp_path):
    first = Recorder()
    study(tmp_path, first, seeds=(0, 1))
    assert first.calls == [(0, "test", 1.0), (1, "test", 1.0)]
    again = Recorder()
    summary = study(tmp_path, again, seeds=(0, 1, 2))
    assert again.calls == [(2, "test", 1.0)]
    assert summary["metrics"]["seed"]["values"] == [0.0, 1.0, 2.0]


def test_workers_fill_the_cache_and_one_study_reads_every_seed_back(tmp_path):
    first, second = Recorder(), Recorder()
    options = {"config": {"toy": 1}, "cache": tmp_path / "cache"}
    assert measure_seeds("toy", first, [1], **options) == [{"score": 0.01, "seed": 1.0}]
    measure_seeds("toy", second, [0, 2], **options)
    assert not (tmp_path / "results").exists()  # a worker writes no summary
    reader = Recorder()
    summary = study(tmp_path, reader)
    assert reader.calls == []
    assert summary["metrics"]["seed"]["values"] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="another config"):
        measure_seeds("toy", Recorder(), [3], config={"toy": 2}, cache=tmp_path / "cache")


def test_a_study_killed_mid_way_keeps_the_seeds_it_finished(tmp_path):
    def dies_on_seed_1(seed, split):
        if seed == 1:
            raise KeyboardInterrupt
        return {"score": float(seed)}

    with pytest.raises(KeyboardInterrupt):
        study(tmp_path, dies_on_seed_1)
    assert not (tmp_path / "results" / "toy.json").exists()
    again = Recorder()
    study(tmp_path, again)
    assert again.calls == [(1, "test", 1.0), (2, "test", 1.0)]


def test_a_resumption_with_another_config_is_refused(tmp_path):
    study(tmp_path, Recorder())
    with pytest.raises(ValueError, match="cache=.*another config.*toy"):
        study(tmp_path, Recorder(), config={"toy": 2})


@pytest.mark.parametrize("options, message", [
    ({"seeds": (0,)}, "seeds must be at least 2 distinct integers"),
    ({"seeds": (0, 0)}, "seeds must be at least 2 distinct integers"),
    ({"goal": "best"}, "goal must be one of"),
    ({"grid": [{"lr": 0.1}]}, "grid= needs select_metric="),
    ({"select_metric": "score"}, "select_metric chooses among a grid"),
    ({"grid": [], "select_metric": "score"}, "grid must be a non-empty list"),
    ({"grid": [{"lr": 0.1}], "select_metric": "score", "selection_split": "test"}, "must differ"),
    ({"grid": [{"lr": 0.1}], "select_metric": "score", "splits": {"test": "rows"}}, "missing \\['validation'\\]"),
])
def test_bad_input_is_refused_naming_the_argument(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        study(tmp_path, Recorder(), **options)


def test_a_measure_that_returns_no_metrics_is_refused(tmp_path):
    with pytest.raises(TypeError, match="measure must return a non-empty dict"):
        study(tmp_path, lambda seed, split: {})


@pytest.mark.parametrize("values, message", [([1.0], "at least 2 numbers"), ([1.0, float("nan")], "finite")])
def test_an_interval_of_bad_values_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        t_interval(values)


def test_cite_and_seed_range_say_what_the_docs_print(tmp_path):
    summary = study(tmp_path, Recorder())
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert cite(summary, "score", 3) == f"0.010 +- {half:.3f}"
    assert seed_range([0, 1, 2, 3]) == "seeds 0-3" and seed_range([0, 2]) == "seeds 0, 2"
    assert markdown_table(summary).startswith("# toy\n")
