"""The behaviour budget at short horizons (issue 26): how many checks the dual ascent needs, the warning at the
start of a run that has fewer, and check_every="auto"."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from veneer.explain import Gradient
from veneer.finetune.budget import check_schedule, checks_needed
from veneer.manipulate import CenterOfMass, Manipulation


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).eval()


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, small_cnn()(x).argmax(1)


def test_checks_needed_is_the_log_odds_range_over_the_largest_move_per_check():
    # each check moves log mu by at most dual_lr near the budget: a tenfold move takes ln(10) / dual_lr checks
    assert checks_needed(0.1) == math.ceil(math.log(10) / 0.1) == 24
    assert checks_needed(0.5) == 5 and checks_needed(math.log(10)) == 1
    assert checks_needed(0.1, odds=math.e) == 10
    # the run: 6 epochs of 1350 training images in batches of 64 = 126 steps
    assert check_schedule(126, 10, 0.1) == {"check_every": 10, "checks": 12, "checks_needed": 24,
                                            "short_horizon": True}
    assert check_schedule(126, "auto", 0.1) == {"check_every": 5, "checks": 25, "checks_needed": 24,
                                                "short_horizon": False}
    assert check_schedule(3000, 10, 0.1)["short_horizon"] is False
    assert check_schedule(10, "auto", 0.1) == {"check_every": 1, "checks": 10, "checks_needed": 24,
                                               "short_horizon": True}


def run(steps: int, **options):
    model = small_cnn()
    return Manipulation(model, Gradient(model), CenterOfMass((0, 0)), keep="kl", alpha=0.5, lr=1e-3, steps=steps,
                        batch_size=16, min_agreement=0.9, validation=data(40, 2), **options)(data(64, 1))


def test_a_short_budgeted_run_says_so_at_its_start_and_in_its_measures():
    with pytest.warns(UserWarning, match=r"12 steps with a check every 10 give the budget 1 checks, but its dual "
                                         r"ascent \(dual_lr=0.1.*needs 24.*check_every='auto'.*240 steps"):
        result = run(12, check_every=10)
    assert result.measures["short_horizon"] == 1.0
    assert result.measures["budget_checks"] == 1 and result.measures["budget_checks_needed"] == 24


def test_auto_checks_often_enough_and_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(48, check_every="auto", max_steps=10)  # 48 steps: a check every 2 steps, 24 checks
    checked = [row["step"] for row in result.history if "multiplier" in row]
    assert checked == [0, 2, 4, 6, 8, 10]
    assert result.measures["budget_checks"] == 24 and result.measures["short_horizon"] == 0.0


def test_check_every_must_be_a_positive_int_or_auto():
    model = small_cnn()
    with pytest.raises(ValueError, match="check_every must be an int > 0 or 'auto'"):
        Manipulation(model, Gradient(model), CenterOfMass((0, 0)), min_agreement=0.9, check_every="often")
    with pytest.raises(ValueError, match="check_every must be > 0"):
        Manipulation(model, Gradient(model), CenterOfMass((0, 0)), min_agreement=0.9, check_every=0)
