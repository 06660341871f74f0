"""``veneer audit``: can this model's explanations be trusted? A calibrated verdict (see veneer.audit)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from veneer.audit import BUDGETS, Audit, Calibration
from veneer.cli.common import add_model_args, add_run_args, load_model, open_run, report_run
from veneer.data import load_dataset
from veneer.models import resolve_model
from veneer.report.audit import write_audit
from veneer.runs import seed_everything


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="audit a model for manipulated explanations (clean/suspicious/"
                                                 "manipulated, calibrated against clean twins or --reference)")
    add_model_args(parser)
    parser.add_argument("--data", default="mnist", help="data spec (a load_dataset spec); twins and tangent spaces "
                                                        "use its train split, explanations its test split")
    parser.add_argument("--reference", default=None, help="reference model spec (e.g. the model before "
                                                          "fine-tuning); default: clean twins trained here")
    parser.add_argument("--reference-weights", default=None, help="weights for --reference")
    parser.add_argument("--calibration", default=None,
                        help="audit.json of an earlier audit of the same architecture, data, budget and seed: "
                             "reuse its reference values instead of training twins again")
    parser.add_argument("--methods", default=None,
                        help="comma-separated explanation methods (default: gradient, gradient_x_input, ig, lrp "
                             "and, for image CNNs, gradcam, occlusion); tabular data may add lime, kernel-shap "
                             "(cross-method test only, background from the train split)")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="fast")
    add_run_args(parser, "runs/audit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    seed_everything(args.seed)
    run_dir = open_run(args)
    model = load_model(args)
    reference = None
    if args.reference is not None and args.calibration is not None:
        raise ValueError("pass either --reference or --calibration, not both")
    if args.reference is not None:
        reference = resolve_model(args.reference, args.reference_weights)
    elif args.calibration is not None:
        reference = Calibration.from_json(json.loads(Path(args.calibration).read_text())["calibration"])
    methods = args.methods.split(",") if args.methods else None
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    run_dir.start()
    result = Audit(model, methods=methods, budget=args.budget, reference=reference, seed=args.seed,
                   progress=True)(train, test)
    paths = write_audit(result, run_dir.path)
    run_dir.write_metrics({"verdict": result.verdict, "score": result.score, "z_max": result.z_max,
                           "seconds": result.seconds, "flagged": [n for n, t in result.tests.items() if t["flag"]]})
    print(result)
    print(f"calibration: {result.config['calibration']}; {result.seconds:.0f} s; wrote {paths['json']}, "
          f"{paths['markdown']}")
    report_run(args, run_dir.path)
    return 0
