"""Arguments shared by the subcommands: model, data, run directory, seed."""

from __future__ import annotations

import argparse

import torch

from veneer.data import DATASETS, LabeledData, load_dataset
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
