"""The README's Python examples run as written: every ```python block of README.md, in order, in one namespace
(the blocks of a section continue each other), in a temporary working directory (they write checkpoints under
``runs/``). To keep this test to seconds, and only that, the number in every ``epochs=N`` becomes 1 and in every
``steps=N`` 2 (the README shows the settings of real runs; this checks that the code runs, not what it finds)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def shortened(code: str) -> str:
    """``code`` with ``epochs=N`` -> ``epochs=1`` and ``steps=N`` -> ``steps=2`` (nothing else changes)."""
    return re.sub(r"\bsteps=\d+", "steps=2", re.sub(r"\bepochs=\d+", "epochs=1", code))


def test_the_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4 and any("train_loader" in block for block in blocks)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(shortened(block), f"README.md python block:\n{block[:80]}", "exec"), namespace)
    # What the examples promise: the attributions' shapes, and fine-tunes that return a model and a history.
    assert namespace["attr"].shape == (8, 1, 28, 28) and namespace["h"].shape == (8, 28, 28)
    assert namespace["x_adv"].shape == namespace["x"].shape
    assert isinstance(namespace["manipulated"], torch.nn.Module) and namespace["result"].history
    assert (tmp_path / "runs" / "com").is_dir() and (tmp_path / "runs" / "pd").is_dir()


def test_shortening_only_touches_epochs_and_steps():
    assert shortened("f(epochs=20, steps=800, max_steps=5, ig_steps=3, lr=1e-3)") == \
        "f(epochs=1, steps=2, max_steps=5, ig_steps=3, lr=1e-3)"
