"""The bad-input matrix (docs/bad_input.md): every case gives a one-line error naming the argument, or a correct
result; a run directory that held a finished run is bit-identical after any refused or second run into it."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from veneer.attacks import MassCenter
from veneer.cli import main
from veneer.data import load_dataset, mnist
from veneer.explain import Gradient, GradCAM, last_conv_layer
from veneer.models import mnist_cnn, pretrained, save, with_softplus
from veneer.neurons import top_k
from veneer.runs import RunDir


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv: list[str], match: str, code: int = 2) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()  # progress bars may precede it
    errors = [line for line in lines if line.startswith("veneer ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert errors[0].startswith(f"veneer {argv[0]}: error: ") and "Traceback" not in "\n".join(lines), lines
    assert match in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def tensor_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tensors")
    g = np.random.default_rng(0)
    np.savez(folder / "int.npz", x=g.integers(0, 255, (10, 1, 28, 28)), y=np.arange(10) % 10)
    np.savez(folder / "three.npz", x=g.random((10, 28, 28)).astype("float32"), y=np.arange(10) % 10)
    np.savez(folder / "empty.npz", x=np.zeros((0, 1, 28, 28), "float32"), y=np.zeros(0, "int64"))
    np.savez(folder / "labels.npz", x=mnist("test").x[:6].numpy(), y=np.array([0, 1, 2, 3, 4, 42]))
    (folder / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    (folder / "text.pt").write_text("not a model\n")
    torch.save({"0.weight": Path("a pickled Python object")}, folder / "pickled.pt")
    nan = pretrained("mnist-cnn")
    state = {k: v.clone() for k, v in nan.state_dict().items()}
    state["0.weight"][0, 0, 0, 0] = float("nan")
    broken = mnist_cnn()
    broken.load_state_dict(state)
    save(broken, folder / "nan.safetensors", {})
    torch.jit.script(pretrained("mnist-cnn")).save(str(folder / "scripted.pt"))
    return folder


# ---------------------------------------------------------------- one-line errors, table-driven

CLI_ERRORS = [
    (["attack-input", "--n", "4", "--batch-size", "0"], "batch_size must be an int >= 1"),
    (["attack-input", "--n", "4", "--eps", "inf"], "eps must be finite"),
    (["attack-input", "--n", "4", "--eps", "1e6"], "is not below the width of input_range"),
    (["attack-input", "--n", "4", "--device", "cuda"], "no CUDA device"),
    (["attack-input", "--data", "tensors:{d}/three.npz", "--n", "4"], "need image data (N, C, H, W)"),
    (["attack-input", "--data", "tensors:{d}/labels.npz", "--n", "6"], "labels must lie in [0, 9]"),
    (["attack-input", "--data", "tensors:{d}/labels.npz"], "--n 64 exceeds the 6 samples of labels test (pass "
     "--n 6 or fewer)"),
    (["explain", "--data", "tensors:{d}/int.npz"], "x must be a floating-point tensor"),
    (["explain", "--data", "tensors:{d}/empty.npz"], "holds no samples"),
    (["explain", "--n", "2", "--weights", "{d}/garbage.safetensors"], "garbage.safetensors"),
    (["explain", "--n", "2", "--weights", "{d}/nan.safetensors"], "NaN or infinite values in '0.weight'"),
    (["explain", "--n", "2", "--weights", "{d}/text.pt"], "text.pt (--weights): not a .safetensors file nor a torch"),
    (["explain", "--n", "2", "--weights", "{d}/pickled.pt"], "pickled.pt (--weights): the file pickles the Python "
     "object pathlib"),
    (["explain", "--n", "5000", "--methods", "gradient"], "--n 5000 exceeds the 1000 samples of mnist test"),
    (["explain", "--n", "2", "--model", "{d}/scripted.pt", "--methods", "gradcam"], "TorchScript model"),
    (["explain", "--n", "2", "--model", "{d}/scripted.pt", "--methods", "lrp"],
     "TorchScript model, and LRP traces the model's forward with torch.fx"),
    (["explain", "--model", "adult-mlp", "--data", "adult", "--n", "4", "--methods", "gradcam"],
     "gradcam (the model has no Conv2d layer"),
    (["explain", "--n", "0"], "--n must be >= 1"),
    (["manipulate", "--n", "16", "--objective", "spiral"], "objective must be one of"),
    (["manipulate", "--n", "16", "--batch-size", "0", "--max-steps", "1"], "batch_size must be > 0"),
    (["manipulate", "--n", "16", "--model", "{d}/scripted.pt", "--max-steps", "1", "--batch-size", "8"],
     "TorchScript"),
    (["neurons", "topk", "--n", "20", "--layer", "nope"], "layer='nope' is not a module of the model"),
]


@pytest.mark.parametrize("argv, match", CLI_ERRORS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CLI_ERRORS])
def test_each_bad_input_is_one_line_naming_the_argument(argv, match, tensor_files, tmp_path, capsys):
    argv = [a.replace("{d}", str(tensor_files)) for a in argv] + ["--out", str(tmp_path / "run")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        error = one_line_error(capsys, argv, match)
    assert "weights_only" not in error  # never the advice to unpickle (torch's own message suggests it)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_debug_shows_the_traceback(capsys, tmp_path):
    with pytest.raises(ValueError, match="--n must be >= 1"):
        main(["--debug", "explain", "--n", "0", "--out", str(tmp_path / "run")])


def test_an_out_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("mine")
    one_line_error(capsys, ["explain", "--n", "2", "--out", str(tmp_path / "file")], "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "mine"


# ---------------------------------------------------------------- runs are never lost


def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(capsys, tmp_path):
    out = str(tmp_path / "explain")
    assert main(["explain", "--n", "2", "--methods", "gradient", "--out", out, "--no-report"]) == 0
    before = snapshot(Path(out))
    one_line_error(capsys, ["explain", "--n", "3", "--methods", "gradient", "--out", out], "holds another run")
    one_line_error(capsys, ["explain", "--n", "3", "--methods", "nope", "--out", out], "holds another run")
    assert snapshot(Path(out)) == before
    assert main(["explain", "--n", "3", "--methods", "gradient", "--out", out, "--overwrite", "--no-report"]) == 0
    assert snapshot(Path(out)) != before


def test_a_finished_manipulation_survives_refused_runs_and_evaluations(capsys, tmp_path):
    out = tmp_path / "run"
    base = ["manipulate", "--n", "32", "--batch-size", "16", "--max-steps", "2", "--out", str(out), "--no-report"]
    assert main(base) == 0
    before = snapshot(out)
    one_line_error(capsys, base, "holds another run")
    one_line_error(capsys, base + ["--resume", "--objective", "spiral"], "other settings (objective)")
    one_line_error(capsys, ["evaluate", "--manipulated", str(out), "--n", "4", "--out", str(out)],
                   "holds another run")
    assert snapshot(out) == before
    assert main(["evaluate", "--manipulated", str(out), "--n", "4", "--methods", "gradient", "--noise", "2",
                 "--no-report"]) == 0
    assert (out / "evaluation" / "metrics.json").is_file()  # its own directory, inside the run
    assert {k: v for k, v in snapshot(out).items() if not k.startswith("evaluation")} == before


def test_ctrl_c_during_a_fine_tune_checkpoints_and_says_how_to_resume(capsys, tmp_path, monkeypatch):
    from veneer.manipulate import make_objective

    objective = type(make_objective("com", target=(0, 0)))  # the default objective: its batch, once per step
    original = objective.attack_inputs
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(objective, "attack_inputs", interrupted)
    out = tmp_path / "run"
    err = one_line_error(capsys, ["manipulate", "--n", "32", "--batch-size", "16", "--out", str(out)],
                         f"interrupted at step 1 of 2; checkpoint in {out}: run the same command with --resume "
                         f"--out {out} to continue", code=130)
    assert "resume=True" not in err and "checkpoint_dir" not in err and (out / "checkpoint.safetensors").is_file()
    # The advice works: the same command with --resume finishes the run.
    assert main(["manipulate", "--n", "32", "--batch-size", "16", "--out", str(out), "--resume"]) == 0


def test_outputs_have_the_usual_mode_and_stale_temporaries_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".metrics.json.abc.tmp").write_text("left by a killed write")
    run = RunDir(out, {"command": "test"}, 0, resume=True)
    run.write_metrics({"a": 1})
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "metrics.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- never silently wrong


class FunctionalNet(nn.Module):
    """A CNN written with functional ReLUs (no nn.ReLU module anywhere)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def test_input_attack_on_functional_relus_uses_the_surrogate_and_moves_the_map():
    torch.manual_seed(0)
    model = FunctionalNet().eval()
    x = torch.rand(4, 1, 28, 28)
    surrogate = with_softplus(model, 10.0)
    assert not torch.equal(surrogate(x), model(x))  # the functional ReLU was replaced
    attack = MassCenter(model, Gradient(model), eps=0.1, steps=5)
    x_adv = attack(x)
    assert not torch.equal(x_adv, x) and bool((attack.result.dissimilarity > 0).all())


def test_a_torchscript_model_says_the_surrogate_cannot_apply(tensor_files):
    scripted = torch.jit.load(str(tensor_files / "scripted.pt")).eval()
    with pytest.warns(UserWarning, match="TorchScript model: its ReLUs cannot be replaced"):
        MassCenter(scripted, Gradient(scripted), eps=0.1, steps=1)


def test_gradcam_finds_the_convolution_of_a_torchscript_model_and_refuses_hooks_clearly(tensor_files):
    scripted = torch.jit.load(str(tensor_files / "scripted.pt")).eval()
    assert last_conv_layer(scripted) == "3"
    with pytest.raises(ValueError, match="TorchScript model, and reading layer activations needs forward hooks"):
        GradCAM(scripted, "3")(torch.rand(1, 1, 28, 28))


def test_top_k_refuses_training_mode_and_leaves_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    stats = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="model is in training mode"):
        top_k(model, "2", torch.rand(8, 1, 6, 6), 2)
    assert torch.equal(model[1].running_mean, stats)


def test_a_factory_model_without_weights_says_it_is_untrained():
    with pytest.warns(UserWarning, match="no weights file given"):
        from veneer.models import load

        load(factory="veneer.models:mnist_cnn")


# ---------------------------------------------------------------- subsets and image folders


def test_n_draws_a_seeded_stratified_subset_of_every_class():
    from argparse import Namespace

    from veneer.cli.common import load_data

    args = Namespace(data="mnist", split="train", n=256, seed=0, color="auto")
    data = load_data(args)
    counts = torch.bincount(data.y, minlength=10)
    assert counts.min() >= 25 and counts.max() <= 26
    assert torch.equal(load_data(args).y, data.y)
    assert not torch.equal(load_data(Namespace(**{**vars(args), "seed": 1})).y, data.y)


def test_image_folders_split_into_disjoint_train_and_test_and_read_gray_for_gray_models(tmp_path):
    images = mnist("test").x[:40]
    for i, image in enumerate(images):
        folder = tmp_path / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((image[0].numpy() * 255).astype("uint8")).convert("RGB").save(folder / f"{i}.png")
    train = load_dataset(f"image-folder:{tmp_path}", "train")
    test = load_dataset(f"image-folder:{tmp_path}", "test")
    assert len(train) == 32 and len(test) == 8 and train.x.shape[1] == 3
    assert not any(torch.equal(a, b) for a in train.x for b in test.x)
    assert load_dataset(f"image-folder:{tmp_path}", "test", grayscale=True).x.shape[1] == 1
    from argparse import Namespace

    from veneer.cli.common import load_data

    args = Namespace(data=f"image-folder:{tmp_path}", split="test", n=None, seed=0, color="auto")
    assert load_data(args, model=pretrained("mnist-cnn")).x.shape[1] == 1


# ---------------------------------------------------------------- defaults that apply


def test_explain_on_tabular_data_runs_every_method_that_applies(tmp_path, capsys):
    out = tmp_path / "adult"
    assert main(["explain", "--model", "adult-mlp", "--data", "adult", "--n", "8", "--out", str(out),
                 "--no-report"]) == 0
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert "gradcam" not in metrics["methods"] and {"gradient", "ig", "lrp"} <= set(metrics["methods"])


def test_metrics_are_written_before_figures(tmp_path, monkeypatch, capsys):
    import veneer.jobs.attack as job

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(job, "attack_figure", broken)
    out = tmp_path / "attack"
    one_line_error(capsys, ["attack-input", "--n", "4", "--steps", "1", "--out", str(out)], "drawing failed")
    assert (out / "metrics.json").is_file() and (out / "per_image.csv").is_file()


def test_show_zero_draws_no_figure_but_keeps_the_results(tmp_path, capsys):
    out = tmp_path / "attack"
    assert main(["attack-input", "--n", "4", "--steps", "1", "--show", "0", "--out", str(out), "--no-report"]) == 0
    assert (out / "metrics.json").is_file() and not list(out.glob("fig1_*.png"))


def test_every_output_of_a_run_has_the_usual_mode(tmp_path):
    out = tmp_path / "explain"
    assert main(["explain", "--n", "2", "--methods", "gradient", "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    files = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert {"config.json", "metrics.json", "attributions.safetensors", "explanations.png", "report.html"} <= set(files)
    assert set(files.values()) == {0o666 & ~umask}


def test_sweep_defaults_leave_out_methods_the_model_cannot_take(tensor_files, tmp_path, capsys):
    import json

    out = tmp_path / "sweep"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript surrogate warning
        assert main(["attack-input", "--sweep", "--model", str(tensor_files / "scripted.pt"), "--n", "3",
                     "--eps", "0.1", "--steps", "1", "--attack", "random", "--out", str(out), "--no-report"]) == 0
    assert json.loads((out / "metrics.json").read_text())["methods"] == ["gradient", "ig"]  # no DeepLift
