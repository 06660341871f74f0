"""Arguments shared by the subcommands (model, data, run directory, seed) and the one lifecycle of a command
that writes a run (:func:`run_job`)."""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from veneer.data import DATASETS, TABLE_KINDS, LabeledData, load_dataset
from veneer.jobs.results import JobResult
from veneer.models import RECIPES, resolve_model
from veneer.report.html import write_report
from veneer.runs import RunDir, seed_everything


def add_model_args(parser: argparse.ArgumentParser, flag: str = "--model") -> None:
    parser.add_argument(flag, default="mnist-cnn",
                        help=f"bundled model ({', '.join(RECIPES)}), 'module:function' or a TorchScript file")
    parser.add_argument("--weights", default=None, help="weights (.safetensors or a state dict) for --model")


def add_data_args(parser: argparse.ArgumentParser, n: int | None = 64, target_alias: bool = True) -> None:
    """``--data``, ``--split``, ``--n``, ``--color`` and the table options (:func:`add_table_args`; pass
    ``target_alias=False`` on a command where ``--target`` means something else)."""
    parser.add_argument("--data", default="mnist",
                        help=f"{', '.join(DATASETS)}, image-folder:PATH, cifar10:PATH, tensors:PATH, csv:PATH "
                             f"or parquet:PATH")
    parser.add_argument("--split", default="test", help="train, test or all")
    parser.add_argument("--n", "--num-samples", dest="n", type=int, default=n,
                        help="number of samples: a seeded, class-stratified subset of the split (--seed); "
                             "--num-samples under torchrun")
    parser.add_argument("--color", choices=("auto", "gray", "rgb"), default="auto",
                        help="channels of an image folder (auto: what the model's first convolution expects)")
    applies_when(parser, ("color",), reads_image_folder)
    add_table_args(parser, target_alias=target_alias)


def add_table_args(parser: argparse.ArgumentParser, target_alias: bool = True) -> None:
    """The options of ``--data csv:PATH`` / ``parquet:PATH`` (:func:`veneer.data.table`, docs/tabular.md): the
    label column ``--label-column`` (everywhere; ``--target`` is its alias only where ``target_alias``, i.e. on
    commands where ``--target`` has no other meaning), ``--protected COL`` or ``COL=VALUE`` (repeatable),
    ``--test PATH`` (a file holding the test split) and ``--dropna``; recorded in ``config.json`` only for
    table data. :func:`table_options` reads them."""
    flags = ("--label-column", "--target") if target_alias else ("--label-column",)
    parser.add_argument(*flags, dest="label_column", default=None,
                        help="csv:/parquet: data: the label column" +
                             (" (--target and --label-column are the same option here)" if target_alias else ""))
    parser.add_argument("--protected", action="append", default=None,
                        help="csv:/parquet: data: a protected attribute, a binary column COL or COL=VALUE "
                             "(the group of rows where COL is VALUE); repeatable")
    parser.add_argument("--test", dest="test_file", default=None,
                        help="csv:/parquet: data: a second file with the same columns holding the test split "
                             "(default: a seeded stratified 80/20 split of --data)")
    parser.add_argument("--dropna", action="store_true",
                        help="csv:/parquet: data: drop rows with a missing value (default: refuse them, naming "
                             "column and rows)")
    applies_when(parser, ("label_column", "protected", "test_file", "dropna"), reads_table)


def reads_table(args: argparse.Namespace) -> bool:
    return str(getattr(args, "data", "")).split(":", 1)[0] in TABLE_KINDS


def table_options(args: argparse.Namespace) -> dict:
    """The :func:`veneer.data.load_dataset` options of :func:`add_table_args` (``{}`` for data that is not a
    table, whose loaders take none)."""
    if not reads_table(args):
        return {}
    return {"target": args.label_column, "protected": args.protected, "test": args.test_file,
            "dropna": args.dropna}


def reads_image_folder(args: argparse.Namespace) -> bool:
    return str(getattr(args, "data", "")).startswith("image-folder:")


def applies_when(parser: argparse.ArgumentParser, options: tuple[str, ...],
                 when: Callable[[argparse.Namespace], bool]) -> None:
    """Declare that the options ``options`` (their ``dest`` names) are used only by runs for which ``when(args)``
    holds (e.g. one objective's options, the image-folder ``--color``): :func:`open_run` records them in
    ``config.json`` (and so in the report's "What was run") only then. Declarations accumulate per parser."""
    rules = parser.get_default("option_rules") or ()
    parser.set_defaults(option_rules=(*rules, (tuple(options), when)))


def recorded_options(args: argparse.Namespace) -> dict:
    """The command line as ``config.json`` records it: every option but those an :func:`applies_when`
    declaration says this run does not use."""
    unused = {name for options, when in getattr(args, "option_rules", ()) if not when(args) for name in options}
    return {k: v for k, v in vars(args).items() if k not in ("run", "debug", "plugin", "option_rules", *unused)}


def add_run_args(parser: argparse.ArgumentParser, out: str | None, resumable: bool = False) -> None:
    parser.add_argument("--out", default=out, help="run directory (config.json, metrics.json, figures); a "
                        "directory holding another run is refused unless --overwrite" +
                        (" or --resume" if resumable else ""))
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random draw of the run (subsets, initialisation, batches)")
    if resumable:
        parser.add_argument("--resume", action="store_true",
                            help="continue the run in --out (same settings) from its checkpoint")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write report.html (`veneer report DIR` writes it later)")



def check_every(text: str) -> int | str:
    """``--check-every``: a positive step count or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--check-every must be a step count or 'auto', got {text!r}") from None


def add_budget_args(parser: argparse.ArgumentParser) -> None:
    """The behaviour budget of a fine-tune (:class:`veneer.finetune.BehaviourBudget`) and ``keep_mixup``."""
    parser.add_argument("--min-agreement", type=float, default=None,
                        help="behaviour budget: the fraction of validation inputs whose label must stay the "
                             "original model's (e.g. 0.99); alpha becomes an adaptive multiplier, the best iterate "
                             "within the budget is returned")
    parser.add_argument("--validation", type=float, default=0.1,
                        help="share of the training data held out to measure the budget (default 0.1)")
    parser.add_argument("--check-every", type=check_every, default=10,
                        help="steps between budget checks, or 'auto': as many checks as the budget's dual ascent "
                             "needs (docs/manipulate.md, short horizons)")
    parser.add_argument("--confidence", type=float, default=0.5,
                        help="an iterate meets the budget when this one-sided lower confidence bound of its "
                             "validation agreement does (default 0.5: the observed agreement; 0.95 is stricter)")
    parser.add_argument("--keep-mixup", action="store_true",
                        help="keep loss also on mixup blends of the training images (not with --keep ce), to hold "
                             "the behaviour between them (measured: helped one budget, hurt another; "
                             "docs/manipulate.md)")
    parser.add_argument("--evade", default=None,
                        help="adaptive attacker: comma-separated audit test names (noise_inputs, "
                             "shared_logit_gradient, cross_method_agreement, neuron_balance) whose differentiable "
                             "surrogates are held at the original model's values during the attack "
                             "(veneer.finetune.evasion)")
    parser.add_argument("--evade-weight", type=float, default=None,
                        help="weight of the evasion term in the attack loss (default: veneer.finetune.EVADE_WEIGHT)")
    applies_when(parser, ("validation", "check_every", "confidence"), lambda args: args.min_agreement is not None)
    applies_when(parser, ("evade_weight",), lambda args: args.evade is not None)


def budget_options(args: argparse.Namespace) -> dict:
    evade = {} if args.evade is None else {"evade": [name.strip() for name in args.evade.split(",") if name.strip()]}
    if args.evade_weight is not None:
        evade["evade_weight"] = args.evade_weight
    return {"min_agreement": args.min_agreement, "validation": args.validation, "check_every": args.check_every,
            "confidence": args.confidence, "keep_mixup": args.keep_mixup, **evade}


def open_run(args: argparse.Namespace, **extra) -> RunDir:
    """The run directory of ``args.out`` with the command line (and ``extra``) as its config; refused before
    anything is written when it holds another run (see :class:`veneer.runs.RunDir`)."""
    config = recorded_options(args) | extra
    return RunDir(args.out, config, args.seed, resume=getattr(args, "resume", False), overwrite=args.overwrite)


def run_job(args: argparse.Namespace, job: Callable[[RunDir | None], JobResult], *, write: bool = True,
            **config) -> int:
    """The lifecycle of every command that writes a run: open the run directory of ``--out`` (refused before
    any work when it holds another run; ``config`` joins the command line in ``config.json``), seed with
    ``--seed``, call ``job(run_dir)`` (it loads the model and data it needs and calls :mod:`veneer.jobs`; nothing
    is written before the first output, so a run refused while checking its arguments leaves ``--out`` as it
    was), write its result as ``metrics.json`` (with ``"kind"``), print the result's summary and ``wrote
    DIR``, write ``report.html`` unless ``--no-report``; return the exit code. ``write=False`` (a torchrun rank
    other than 0) runs the job on ``None`` and writes and prints nothing."""
    run_dir = open_run(args, **config) if write else None
    seed_everything(args.seed)
    result = job(run_dir)
    if run_dir is None:
        return 0
    run_dir.write_result(result)
    print(result.summary())
    print(f"wrote {run_dir.path}")
    if not args.no_report:
        print(f"wrote {write_report(run_dir.path)}")
    return 0


def check_count(name: str, value: int | None, minimum: int = 1) -> None:
    """Refuse a count option below ``minimum``, naming the flag."""
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def subset(data: LabeledData, n: int | None, seed: int, split: str = "") -> LabeledData:
    """``n`` rows of ``data``: a seeded, class-stratified subset (:meth:`LabeledData.sample`); ``n`` above the
    number of samples is refused, naming it (``split``: the split's name for the message), so ``config.json``
    and ``metrics.json`` never disagree on ``n``."""
    check_count("--n", n)
    if len(data) == 0:
        raise ValueError(f"data {data.name!r} holds no samples")
    if n is not None and n > len(data):
        raise ValueError(f"--n {n} exceeds the {len(data)} samples of {' '.join(filter(None, (data.name, split)))} "
                         f"(pass --n {len(data)} or fewer)")
    return data if n is None else data.sample(n, seed)


def input_channels(model: torch.nn.Module) -> int | None:
    """The number of input channels the model's first convolution expects, when it has one."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) or getattr(module, "original_name", None) == "Conv2d":
            return int(module.weight.shape[1])
    return None


def load_data(args: argparse.Namespace, split: str | None = None, n: int | None = None,
              model: torch.nn.Module | None = None) -> LabeledData:
    """The data of ``--data``: ``--n`` rows as a seeded stratified subset; an image folder read with the
    channels of ``--color`` (``auto``: what ``model``'s first convolution expects)."""
    color = getattr(args, "color", "auto")
    grayscale = color == "gray" or (color == "auto" and model is not None and input_channels(model) == 1)
    data = load_dataset(args.data, split or args.split, grayscale=grayscale, **table_options(args))
    return subset(data, args.n if n is None else n, args.seed, split or args.split)


def load_split(args: argparse.Namespace, split: str) -> LabeledData:
    """Every row of ``split`` of ``--data``, with the table options of :func:`add_table_args` (the training
    split as background, twins' data or influence set)."""
    return load_dataset(args.data, split, **table_options(args))


def load_model(args: argparse.Namespace, spec_attr: str = "model") -> torch.nn.Module:
    return resolve_model(getattr(args, spec_attr), getattr(args, "weights", None))
