"""The goals of issue 16 re-measured over seeds on images no setting was chosen on (issue 26).

    nice python experiments/frontier_seeds.py --case gradient-cross [--seeds 0,1,2] [--worker]

The settings of docs/manipulate.md's goal table were chosen among ~28 configurations by their figures on MNIST
test images 0-499 (single runs, seed 0), so those figures are in-sample. Here each chosen setting is run again
with fine-tune seeds 0, 1, 2 (the batch order, the budget's draws), every figure on test images **500-999**, which
no choice looked at; a budgeted run validates its budget on images 0-499 (``frontier.py --validation
test-half-swapped``). Cases (MNIST CNN, bundled; batch 64, lr 1e-3, keep kl, checks every 10 steps,
observed agreement, ``dual_lr`` 0.1; 3000 steps unless said):

  gradient-cross  Gradient, TargetMap("cross"), min_agreement 0.985, start alpha 0.5   (goal PCC >= 0.85 at <= 0.5 pt)
  lrp-cross       LRP epsilon_plus + z^B, TargetMap("cross"), min_agreement 0.975, start alpha 0.3
                                                                                       (goal PCC >= 0.75 at <= 1 pt)
  gradient-com    Gradient, CenterOfMass((0, 0)), fixed alpha 0.1                      (goal <= 0.6 px at <= 0.5 pt)
  push-down-conv  all-channel push-down (Nanfack et al. 2024, Eq. 3) of the last conv layer's output (the ReLU's
                  input), frontier.PUSH_DOWN's settings, min_agreement 0.995, start alpha 0.3, 800 steps
                  (goal <= 10% held-out top-10 overlap at <= 0.5 pt)

Each run checkpoints under ``runs/frontier_seeds/<case>/seed<s>`` and resumes. ``--worker`` measures the given
seeds into the study's cache without writing a summary (two processes share the cores: give each its seeds); a run
without it writes ``experiments/results/frontier_seeds_<case>.json`` and ``.md``.
"""

from __future__ import annotations

from pathlib import Path

from frontier import PUSH_DOWN, point, push_down_point
from runner import measure_seeds, parse_seeds, print_summary, run_study, seeds_parser
from veneer.models import pretrained

BUDGET = {"check_every": 10, "confidence": 0.5, "dual_lr": 0.1}
CASES = {
    "gradient-cross": {"method": "gradient", "objective": "cross",
                       "options": {"alpha": 0.5, "min_agreement": 0.985, **BUDGET},
                       "goal": "PCC >= 0.85 at <= 0.5 pt"},
    "lrp-cross": {"method": "lrp-zb", "objective": "cross",
                  "options": {"alpha": 0.3, "min_agreement": 0.975, **BUDGET},
                  "goal": "PCC >= 0.75 at <= 1 pt"},
    "gradient-com": {"method": "gradient", "objective": "com", "options": {"alpha": 0.1},
                     "goal": "<= 0.6 px at <= 0.5 pt"},
    "push-down-conv": {"method": None, "objective": "push-down", "steps": 800,
                       "options": {"alpha": 0.3, "min_agreement": 0.995, **BUDGET},
                       "goal": "<= 10% at <= 0.5 pt"},
}
# each goal as numbers: (the measure's bound, "max" when the measure must reach it or "min" when it must stay at
# or under it, the largest accuracy drop in points)
GOALS = {"gradient-cross": (0.85, "max", 0.5), "lrp-cross": (0.75, "max", 1.0), "gradient-com": (0.6, "min", 0.5),
         "push-down-conv": (0.10, "min", 0.5)}
LABELS = {"gradient-cross": "Gradient cross, min_agreement 0.985",
          "lrp-cross": "LRP z^B cross, min_agreement 0.975",
          "gradient-com": "Gradient centre of mass, fixed alpha 0.1",
          "push-down-conv": "push-down, conv output, min_agreement 0.995, 800 steps"}
STEPS, OUT = 3000, Path(__file__).resolve().parents[1] / "runs" / "frontier_seeds"


def config(case: str) -> dict:
    found = CASES[case]
    return {"case": case, "model": "mnist-cnn (bundled)", "method": found["method"], "objective": found["objective"],
            "steps": found.get("steps", STEPS), "batch_size": 64, "lr": 1e-3, "keep": "kl", **found["options"],
            **(PUSH_DOWN if found["objective"] == "push-down" else {}), "goal": found["goal"],
            "training_images": "MNIST train, 4000",
            **({"budget_validation": "MNIST test images 0-499"} if "min_agreement" in found["options"] else {})}


def measurer(case: str):
    def measure(seed: int, split: str) -> dict[str, float]:
        assert split == "test", split  # no setting is chosen here: test images 500-999 report
        found = CASES[case]
        original, steps = pretrained("mnist-cnn", progress=False), found.get("steps", STEPS)
        if found["objective"] == "push-down":
            row = push_down_point(OUT / case, f"seed{seed}", original, steps, "test-half-swapped", True, seed=seed,
                                  progress=False, keep="kl", **found["options"])
        else:
            row = point(OUT / case, f"seed{seed}", original, found["method"], found["objective"], steps,
                        "test-half-swapped", seed=seed, progress=False, keep="kl", lr=1e-3, **found["options"])
        fooled = {"success_rate": row["success_rate"]} if "success_rate" in row else {}
        return {"measure": row["measure"], "measure_original": row["measure_original"], **fooled,
                "accuracy_drop_points": row["accuracy_drop_points"], "test_agreement": row["test_agreement"],
                "seconds": row["seconds"]}
    return measure


def goal_met(case: str, measure: float, drop: float) -> bool:
    bound, kind, largest_drop = GOALS[case]
    return (measure >= bound if kind == "max" else measure <= bound) and drop <= largest_drop + 1e-6


def doc_row(case: str, summary: dict) -> str:
    """The row of docs/manipulate.md's table over seeds for ``case``, from its committed summary."""
    m = summary["metrics"]
    percent = CASES[case]["objective"] == "push-down"
    scale, digits = (100, 1) if percent else (1, 3 if CASES[case]["objective"] == "cross" else 2)
    unit = "%" if percent else (" px" if CASES[case]["objective"] == "com" else "")
    values = ", ".join(f"{scale * v:.{digits}f}" for v in m["measure"]["values"])
    met = sum(goal_met(case, v, d) for v, d in zip(m["measure"]["values"], m["accuracy_drop_points"]["values"]))
    drops = ", ".join(f"{d:.1f}" for d in m["accuracy_drop_points"]["values"])
    return (f"| {LABELS[case]} | {CASES[case]['goal']} | {scale * m['measure']['mean']:.{digits}f} +- "
            f"{scale * m['measure']['half_width']:.{digits}f}{unit} ({values}) | "
            f"{m['accuracy_drop_points']['mean']:.1f} +- {m['accuracy_drop_points']['half_width']:.1f} pt ({drops}) | "
            f"{100 * m['test_agreement']['mean']:.1f}% | {met} of {len(m['measure']['values'])} |")


def main() -> None:
    parser = seeds_parser(__doc__)
    parser.add_argument("--case", required=True, choices=sorted(CASES))
    options, seeds = parse_seeds(parser)
    name = f"frontier_seeds_{options.case.replace('-', '_')}"
    if options.worker:
        measure_seeds(name, measurer(options.case), seeds, config=config(options.case))
        return
    found = CASES[options.case]
    measure = {"cross": "PCC with the cross", "com": "centre-of-mass distance (px) to the corner",
               "push-down": "held-out top-10 overlap of the 64 channels"}[found["objective"]]
    summary = run_study(name, measurer(options.case), seeds, config=config(options.case),
                        what=f"{options.case}: {measure} (measure), accuracy drop and label agreement after "
                             f"{found.get('steps', STEPS)} steps; goal {found['goal']}",
                        splits={"test": "MNIST test images 500-999 (no setting was chosen on them; the budget "
                                        "validates on 0-499)"})
    print_summary(summary)


if __name__ == "__main__":
    main()
