"""Arguments shared by the subcommands: model, data, run directory, seed."""

from __future__ import annotations

import argparse

import torch

from veneer.data import DATASETS, LabeledData, load_dataset
from veneer.explain import BACKGROUND_METHODS, METHODS, Explainer, make_explainer
from veneer.models import RECIPES, resolve_model


def add_model_args(parser: argparse.ArgumentParser, flag: str = "--model") -> None:
    parser.add_argument(flag, default="mnist-cnn",
                        help=f"bundled model ({', '.join(RECIPES)}), 'module:function' or a TorchScript file")
    parser.add_argument("--weights", default=None, help="weights (.safetensors or a state dict) for --model")


def add_data_args(parser: argparse.ArgumentParser, n: int | None = 64) -> None:
    parser.add_argument("--data", default="mnist",
                        help=f"{', '.join(DATASETS)}, image-folder:PATH, cifar10:PATH or tensors:PATH")
    parser.add_argument("--split", default="test", help="train, test or all")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=n,
                        help="number of samples (the first n of the split); --num-samples under torchrun")


def add_run_args(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--out", default=out, help="run directory (config.json, metrics.json, figures)")
    parser.add_argument("--seed", type=int, default=0)


def load_data(args: argparse.Namespace, split: str | None = None, n: int | None = None) -> LabeledData:
    data = load_dataset(args.data, split or args.split)
    n = args.n if n is None else n
    if n is not None:
        if n < 1:
            raise SystemExit(f"--n must be >= 1, got {n}")
        data = data.subset(slice(0, n))
    return data


def load_model(args: argparse.Namespace, spec_attr: str = "model") -> torch.nn.Module:
    return resolve_model(getattr(args, spec_attr), getattr(args, "weights", None))


def default_layer(model: torch.nn.Module) -> str:
    """Name of the last Conv2d module (Grad-CAM's usual layer)."""
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not names:
        raise SystemExit("the model has no Conv2d layer for gradcam; pass a layer name")
    return names[-1]


def build_explainers(model: torch.nn.Module, names: list[str], ig_steps: int = 32,
                     background: LabeledData | None = None) -> dict[str, Explainer]:
    """Explainers by CLI name with the defaults used in reports (Grad-CAM on the last conv layer; LIME and
    KernelSHAP with ``background``, the training split)."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    options = {"ig": {"steps": ig_steps}, "smoothgrad": {"seed": 0}}
    built = {}
    for name in names:
        kwargs = dict(options.get(name, {}))
        if name == "gradcam":
            kwargs["layer"] = default_layer(model)
        if name in BACKGROUND_METHODS:
            if background is None:
                raise SystemExit(f"method {name} needs background data (the training split)")
            kwargs["background"] = background
        built[name] = make_explainer(name, model, **kwargs)
    return built
