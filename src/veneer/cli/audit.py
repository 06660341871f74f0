"""``veneer audit``: can this model's explanations be trusted? A calibrated verdict (see veneer.audit)."""

from __future__ import annotations

import argparse
import sys

from veneer.cli.common import add_model_args, add_run_args, add_table_args, load_model, load_split, run_job
from veneer.jobs.audit import EFFORTS, audit_job, audit_reference, audit_tests
from veneer.models import resolve_model


class DeprecatedBudget(argparse.Action):
    """``--budget``: the deprecated name of ``--effort`` (says so on stderr, then sets ``--effort``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("veneer audit: note: --budget is deprecated, use --effort (the same levels)", file=sys.stderr)
        setattr(namespace, self.dest, values)
        namespace.effort = values


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="audit a model for manipulated explanations (clean/suspicious/"
                                                 "manipulated, calibrated against clean twins or --reference)")
    add_model_args(parser)
    parser.add_argument("--data", default="mnist", help="data spec (a load_dataset spec); twins and tangent spaces "
                                                        "use its train split, explanations its test split")
    add_table_args(parser)
    parser.add_argument("--reference", default=None, help="reference model spec (e.g. the model before "
                                                          "fine-tuning); default: clean twins trained here")
    parser.add_argument("--reference-weights", default=None, help="weights for --reference")
    parser.add_argument("--twin-model", default=None,
                        help="model spec of an architecture you trust for the same task: the clean twins are "
                             "re-initialised copies of it instead of the audited model, whose forward code and "
                             "stored tensors every twin would copy (audit.json names them)")
    parser.add_argument("--calibration", default=None,
                        help="audit.json of an earlier audit of the same architecture, data, effort and seed: "
                             "reuse its reference values instead of training twins again")
    parser.add_argument("--methods", default=None,
                        help="comma-separated explanation methods (default: gradient, gradient_x_input, ig, lrp "
                             "and, for image CNNs, gradcam, occlusion); tabular data may add lime, kernel-shap "
                             "(cross-method test only, background from the train split)")
    parser.add_argument("--tests", default=None,
                        help="comma-separated names of registered audit tests to run (default: every one that "
                             "applies; --list-tests names them; a --plugin module may register more)")
    parser.add_argument("--effort", choices=sorted(EFFORTS), default="fast",
                        help="how much each test samples and how many clean twins are trained "
                             "(veneer.audit.EFFORTS; docs/audit.md)")
    parser.add_argument("--budget", choices=sorted(EFFORTS), default=argparse.SUPPRESS, action=DeprecatedBudget,
                        help="deprecated name of --effort")
    parser.add_argument("--list-tests", action="store_true",
                        help="print the registered audit tests (name and meaning) and exit; needs no model")
    add_run_args(parser, "runs/audit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list_tests:
        for name, meaning in audit_tests():
            print(f"{name}: {meaning}" if meaning else name)
        return 0
    methods = args.methods.split(",") if args.methods else None
    tests = [t for t in args.tests.split(",") if t] if args.tests else None

    def job(run_dir):
        model = load_model(args)
        reference = audit_reference(args.reference, args.reference_weights, args.calibration)
        train, test = load_split(args, "train"), load_split(args, "test")
        return audit_job(model, train, test, run_dir, methods=methods, effort=args.effort, reference=reference,
                         tests=tests, twin_model=resolve_model(args.twin_model) if args.twin_model else None,
                         seed=args.seed, progress=True)

    return run_job(args, job)
