"""The clean bundled model is called clean by the whole audit (every registered test, twin calibration), as
``veneer audit --model mnist-cnn --data mnist --effort fast`` runs it (about 40 s on two idle cores)."""

from __future__ import annotations

from veneer.audit import Audit
from veneer.data import mnist
from veneer.models import pretrained


def test_the_clean_bundled_model_is_called_clean():
    found = Audit(pretrained("mnist-cnn"), effort="fast", seed=0)(mnist("train"), mnist("test"))
    assert found.verdict == "clean", {name: round(test["z"], 2) for name, test in found.tests.items()}
    assert found.z_max < 3 and not any(test["flag"] for test in found.tests.values())
    assert {"shared_logit_gradient", "neuron_balance", "tangent_space"} <= set(found.tests)
