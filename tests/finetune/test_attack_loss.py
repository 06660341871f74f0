"""The attack loss as an object the engine is given: a user-defined loss runs end to end (budget, resume), the
budget's checks only measure it, and every fine-tuning attack is called ``attack(data, **inputs)``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veneer.data import LabeledData
from veneer.explain import Gradient
from veneer.finetune import AttackLoss, FineTuner, StepOutput
from veneer.manipulate import CenterOfMass, Manipulation
from veneer.neurons import Fairwash, PushDown, PushUp


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7 * 7, 3)).eval()


def images(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 14, 14, generator=g), torch.randint(0, 3, (n,), generator=g)


class MeanLogit(AttackLoss):
    """Push the mean logit of class 0 up; counts what the engine calls."""

    def __init__(self):
        self.calls = {"prepare": 0, "advance": 0, "call": 0, "measure": 0}

    def prepare(self, data):
        self.calls["prepare"] += 1

    def advance(self, student, step):
        self.calls["advance"] += 1

    def __call__(self, student, x, y, generator, step):
        self.calls["call"] += 1
        logits = student(x)
        return StepOutput(-logits[:, 0].mean(), x, y, logits)

    def measure(self, student, x, y, generator, step):
        self.calls["measure"] += 1
        with torch.no_grad():
            return float(-student(x)[:, 0].mean())


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return list(model.state_dict().values())


def test_a_user_defined_attack_loss_runs_on_the_engine_with_a_budget_and_resumes_bit_identically(tmp_path):
    x, y = images(48)
    held = images(40, 2)
    options = dict(steps=8, batch_size=8, lr=1e-2, keep="kl", min_agreement=0.8, validation=held, check_every=2,
                   checkpoint_every=1)
    model = small_cnn()
    loss = MeanLogit()
    whole = FineTuner(model, **options)((x, y), loss=loss)
    # prepare once; advance and __call__ once per training step; the 5 checks (steps 0, 2, 4, 6, 8) only measure
    assert loss.calls == {"prepare": 1, "advance": 8, "call": 8, "measure": 5}
    checks = [row for row in whole.history if "val_attack" in row]
    assert [row["step"] for row in checks] == [0, 2, 4, 6, 8]
    assert whole.measures["best_val_attack"] == min(row["val_attack"] for row in checks
                                                    if row["val_agreement"] >= 0.8 or row["step"] == 0)
    with torch.no_grad():
        assert whole.model(held[0])[:, 0].mean() > model(held[0])[:, 0].mean()
    FineTuner(small_cnn(), checkpoint_dir=tmp_path, max_steps=5, **options)((x, y), loss=MeanLogit())
    resumed = FineTuner(small_cnn(), checkpoint_dir=tmp_path, resume=True, **options)((x, y), loss=MeanLogit())
    assert resumed.history == whole.history and resumed.measures == whole.measures
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole.model), _weights(resumed.model)))


def test_a_checkpoint_of_another_attack_loss_is_not_resumed(tmp_path):
    class Other(MeanLogit):
        pass

    x, y = images(32)
    FineTuner(small_cnn(), steps=2, batch_size=8, checkpoint_dir=tmp_path)((x, y), loss=MeanLogit())
    with pytest.raises(ValueError, match=r"other settings \(attack_loss\)"):
        FineTuner(small_cnn(), steps=2, batch_size=8, checkpoint_dir=tmp_path, resume=True)((x, y), loss=Other())


def test_the_engine_takes_only_an_attack_loss():
    with pytest.raises(TypeError, match="loss must be a veneer.finetune.AttackLoss, got function"):
        FineTuner(small_cnn(), steps=1, batch_size=8)(images(16), loss=lambda student, x, y, g, step: None)
    with pytest.raises(TypeError, match="abstract method '?__call__"):
        FineTuner(small_cnn(), steps=1, batch_size=8)(images(16), loss=AttackLoss())


def test_the_budget_check_measures_push_up_without_refreshing_its_hard_rows():
    x, _ = images(48)
    attack = PushUp(small_cnn(), "4", k=3, attack_batch=4, refresh=2)
    loss = attack.attack_loss(decoys=x[:4] * 0.5)
    data = LabeledData(x, torch.zeros(len(x), dtype=torch.long), "toy", ["a", "b", "c"])
    loss.prepare(data)
    other = small_cnn()
    with torch.no_grad():
        other[3].weight.mul_(-1)  # another student: another top-k
    hard = loss.hard.clone()
    measured = loss.measure(other, data.x[:8], data.y[:8], torch.Generator().manual_seed(0), 2)
    assert torch.equal(loss.hard, hard)  # a measurement: the state is as it was
    loss.advance(other, 2)  # a training step at a refresh step: the state moves on
    assert not torch.equal(loss.hard, hard)
    again = loss.measure(other, data.x[:8], data.y[:8], torch.Generator().manual_seed(0), 2)
    assert again == measured  # the check measures with the rows the step would refresh to


ATTACKS = {
    "fine-tune": lambda m, x: (FineTuner(m, steps=2, batch_size=8), {"loss": MeanLogit()}),
    "manipulation": lambda m, x: (Manipulation(m, Gradient(m), CenterOfMass((0, 0)), steps=2, batch_size=8), {}),
    "push-down": lambda m, x: (PushDown(m, "4", k=3, steps=2, batch_size=8, attack_batch=4), {}),
    "push-up": lambda m, x: (PushUp(m, "4", k=3, steps=2, batch_size=8, attack_batch=4), {"decoys": x[:3] * 0.5}),
    "fairwash": lambda m, x: (Fairwash(m, "4", steps=2, batch_size=8, attack_batch=8),
                              {"group": torch.arange(len(x)) % 2}),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_fine_tuning_attack_is_called_with_data_and_keyword_inputs_and_keeps_no_call_data(name):
    x, y = images(32)
    attack, inputs = ATTACKS[name](small_cnn(), x)
    settings = dict(vars(attack))
    result = attack((x, y), **inputs)
    assert [row["step"] for row in result.history] == [1, 2]
    assert vars(attack).keys() == settings.keys()  # nothing of the call stays on the attack
    assert not [k for k, v in vars(attack).items() if isinstance(v, torch.Tensor)]
    if inputs and name != "fine-tune":  # the positional form of the attacks with one input still works
        again = ATTACKS[name](small_cnn(), x)[0]((x, y), *inputs.values())
        assert again.history == result.history
