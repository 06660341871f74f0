"""The shared fine-tuning engine: every model- and neuron-level attack on every data form, the model passed in
never changed, bit-identical resume, Ctrl-C checkpoints, no wasted forward pass, one package-wide naming."""

from __future__ import annotations

import ast
import copy
import pathlib

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veneer.data import LabeledData
from veneer.explain import Gradient, GradientXInput
from veneer.finetune import FineTuneResult, Interrupted
from veneer.manipulate import CenterOfMass, Manipulation, TargetMap
from veneer.neurons import Fairwash, PushDown, PushUp

ROOT = pathlib.Path(__file__).resolve().parents[2]


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7 * 7, 3)).eval()


def images(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 14, 14, generator=g), torch.randint(0, 3, (n,), generator=g)


DATA_FORMS = {
    "tensors": lambda x, y: (x, y),
    "dataset": lambda x, y: TensorDataset(x, y),
    "dataloader": lambda x, y: DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True),
    "labeled": lambda x, y: LabeledData(x, y, "toy", ["a", "b", "c"]),
}

ATTACKS = {
    "manipulation": lambda m, d, x: Manipulation(m, Gradient(m), CenterOfMass((0, 0)), steps=3, batch_size=8,
                                                 lr=1e-2)(d),
    "push-down": lambda m, d, x: PushDown(m, "4", k=3, steps=3, batch_size=8, attack_batch=4)(d),
    "push-up": lambda m, d, x: PushUp(m, "4", k=3, steps=3, batch_size=8, attack_batch=4)(d, x[:3] * 0.5),
    "fairwash": lambda m, d, x: Fairwash(m, "4", steps=3, batch_size=8, attack_batch=8)(
        d, torch.arange(len(x)) % 2),
}


@pytest.mark.parametrize("form", list(DATA_FORMS))
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_attack_takes_every_data_form_and_never_changes_the_model(attack, form):
    model = small_cnn()
    before = copy.deepcopy(model.state_dict())
    x, y = images()
    result = ATTACKS[attack](model, DATA_FORMS[form](x, y), x)
    assert isinstance(result, FineTuneResult) and result.model is not model and result.seconds > 0
    assert [row["step"] for row in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"step", "epoch", "phase", "loss", "attack", "keep"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    assert isinstance(result.model[1], nn.ReLU) and not result.model.training


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for t in model.state_dict().values()]


@pytest.mark.parametrize("recalibrate", [0, 3])
def test_push_down_interrupted_by_max_steps_and_resumed_ends_at_the_uninterrupted_weights(tmp_path, recalibrate):
    x, y = images(32)
    options = dict(k=3, steps=6, batch_size=8, attack_batch=4, lr=1e-2, seed=4, checkpoint_every=2,
                   recalibrate_steps=recalibrate)
    whole = PushDown(small_cnn(), "4", **options)((x, y))
    partial = PushDown(small_cnn(), "4", checkpoint_dir=tmp_path, max_steps=5, **options)((x, y))
    assert len(partial.history) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]
    resumed = PushDown(small_cnn(), "4", checkpoint_dir=tmp_path, resume=True, **options)((x, y))
    assert resumed.history == whole.history and len(whole.history) == 6 + recalibrate
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole.model), _weights(resumed.model)))


def test_push_up_resume_restores_its_refreshed_hard_rows(tmp_path):
    x, y = images(32)
    decoys = x[:4] * 0.5
    options = dict(k=3, steps=6, batch_size=8, attack_batch=4, refresh=2, lr=1e-2, seed=2, checkpoint_every=1)
    whole = PushUp(small_cnn(), "4", **options)((x, y), decoys)
    PushUp(small_cnn(), "4", checkpoint_dir=tmp_path, max_steps=3, **options)((x, y), decoys)
    resumed = PushUp(small_cnn(), "4", checkpoint_dir=tmp_path, resume=True, **options)((x, y), decoys)
    assert all(torch.equal(a, b) for a, b in zip(_weights(whole.model), _weights(resumed.model)))


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    x, y = images(32)
    model = small_cnn()
    calls = []

    def interrupt(module, inputs):
        calls.append(1)
        if len(calls) == 3:  # during the second step's forward passes
            raise KeyboardInterrupt

    attack = Manipulation(model, GradientXInput(model), TargetMap("cross"), steps=4, batch_size=8,
                          checkpoint_dir=tmp_path)
    handle = model.register_forward_pre_hook(interrupt)  # deep-copied into the student
    with pytest.raises(Interrupted, match="interrupted at step 1 of 4; resume with resume=True"):
        attack((x, y))
    handle.remove()
    assert (tmp_path / "checkpoint.safetensors").is_file()


def test_a_manipulation_step_runs_the_model_once_for_gradient_and_ce():
    """The keep loss reuses the logits of the explainer's forward pass: one model call per step."""
    x, y = images(16)
    model = small_cnn()
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[0]))
    Manipulation(model, Gradient(model), CenterOfMass((0, 0)), steps=2, batch_size=8)((x, y))
    # one 1-sample pass to learn the number of classes (cached), then one pass of 8 rows per step
    assert calls == [1, 8, 8]


def test_alpha_is_checked_and_step_size_is_the_input_attacks_word():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        Manipulation(model, Gradient(model), CenterOfMass(), alpha=1.5)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        PushDown(model, "4", resume=True)
    with pytest.raises(ValueError, match="data is empty"):
        PushDown(model, "4", k=1)((torch.zeros(0, 1, 14, 14), torch.zeros(0, dtype=torch.long)))


# ---------------------------------------------------------------- one meaning per name, a thin CLI


def _public_classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in (ROOT / "src" / "veneer").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return found


def test_no_two_public_classes_share_a_name():
    duplicated = {name: where for name, where in _public_classes().items() if len(where) > 1}
    assert duplicated == {}


def test_argparse_lives_only_in_the_cli_and_nothing_imports_the_cli():
    for path in (ROOT / "src" / "veneer").rglob("*.py"):
        if "cli" not in path.relative_to(ROOT / "src" / "veneer").parts:
            assert "argparse" not in path.read_text(), path
    for folder in ("experiments", "bench"):
        for path in (ROOT / folder).glob("*.py"):
            assert "veneer.cli" not in path.read_text(), path


def test_one_spelling_and_one_word_per_meaning():
    for path in (ROOT / "src" / "veneer").rglob("*.py"):
        text = path.read_text()
        assert "normali" + "s" not in text and "surrogate_beta" not in text, path  # one spelling: normalize
