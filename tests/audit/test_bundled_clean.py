"""The whole audit on the bundled MNIST CNN, as ``veneer audit --model mnist-cnn --data mnist --effort fast`` runs
it (every registered test, three clean twins; about 40 s on two idle cores): the clean model is called clean, and
a short weight-level manipulation of it (150 steps, the zoo's ``com-gradient``) is not. The manipulated model is
scored against the same twins (``reference=`` the clean audit's calibration): twins depend only on the
architecture, the data and the seed, so they are the twins its own audit would train."""

from __future__ import annotations

import pytest

from veneer.audit import Audit
from veneer.data import mnist
from veneer.explain import Gradient
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.models import pretrained

pytestmark = pytest.mark.slow  # minutes on one thread: collected first (tests/conftest.py)


@pytest.fixture(scope="module")
def bundled():
    train, test = mnist("train"), mnist("test")
    return train, test, Audit(pretrained("mnist-cnn"), effort="fast", seed=0)(train, test)


def test_the_clean_bundled_model_is_called_clean(bundled):
    found = bundled[2]
    assert found.verdict == "clean", {name: round(test["z"], 2) for name, test in found.tests.items()}
    assert found.z_max < 3 and not any(test["flag"] for test in found.tests.values())
    assert {"shared_logit_gradient", "gradient_slope", "neuron_balance", "tangent_space"} <= set(found.tests)
    assert found.calibration.kind == "twins" and found.calibration.details["twins"]["count"] == 3


def test_a_short_weight_level_manipulation_is_flagged_against_the_twins(bundled):
    train, test, clean = bundled
    model = pretrained("mnist-cnn")
    attacked = Manipulation(model, Gradient(model), CenterOfMass((0, 0)), alpha=0.1, lr=1e-3, steps=150,
                            batch_size=64, seed=0)(train).model
    found = Audit(attacked, effort="fast", reference=clean.calibration, seed=0)(train, test)
    assert found.verdict != "clean", {name: round(test["z"], 2) for name, test in found.tests.items()}
    assert sum(test["flag"] for test in found.tests.values()) >= 1 and found.config["calibration"] == "twins"
