"""The figures the docs cite equal the committed summaries they come from (no number typed by hand).

Each entry: the doc, the text in it, and how that text is derived from a summary JSON under
``experiments/results/``. A re-run that changes a summary fails here until the docs say the new figure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from runner import cite, doc_text, load_summary, seed_range  # noqa: E402  (experiments/runner.py)


def summary(name: str) -> dict:
    return load_summary(name)


def rebalance(field: str, statistic: str = "mean", digits: int = 3) -> str:
    return f"{summary('rebalance_evasion')[field][statistic]:.{digits}f}"


def shared_logit() -> dict:
    rows = summary("shared_logit_gradient")["rows"]
    held_out = [r for r in rows if r["kind"] == "clean" and r["split"] == "held-out"]
    shared = [r for r in rows if r["kind"] != "clean"]
    return {"clean_low": f"{min(r['median_ratio'] for r in held_out):.3f}",
            "clean_high": f"{max(r['median_ratio'] for r in held_out):.3f}",
            "clean_z": f"{max(r['z'] for r in held_out):.2f}",
            "shared_low": f"{min(r['median_ratio'] for r in shared):.3f}",
            "shared_z": f"{min(r['z'] for r in shared):.1f}",
            "shared_flagged": summary("shared_logit_gradient")["shared_term_flagged"],
            "clean_flagged": summary("shared_logit_gradient")["held_out_clean_flagged"]}


def architecture(name: str) -> str:
    return f"{summary('audit_any_architecture')['audits'][name]['wall_seconds']:.1f} s"


def vit_accuracy() -> str:
    """The bundled ViT's test accuracy, from its training run in audit_any_architecture.json."""
    return f"test accuracy {summary('audit_any_architecture')['vit']['test_accuracy']:.3f}"


def vit_training() -> str:
    vit = summary("audit_any_architecture")["vit"]
    return f"| training `mnist-vit` (30 epochs on 4000 images; {vit_accuracy()}) | {vit['train_seconds']:.0f} s |"


def scaffolding_cost() -> str:
    found = summary("tabular_zoo")
    return (f"| {found['seconds_per_detection_mean']:.1f} s mean over the "
            f"{found['clean'] + found['scaffolds']}-model zoo |")


def zoo() -> dict:
    found = summary("tabular_zoo")
    held_out = found["leave_one_dataset_out"].values()
    return {"held_out": f"{sum(d['clean_flagged'] for d in held_out)} of {found['clean']} clean and "
                        f"{sum(d['scaffolds_flagged'] for d in held_out)} of {sum(d['scaffolds'] for d in held_out)} "
                        "scaffolds flagged",
            "auroc": f"AUROC {found['auroc']['surrogate']:.3f}", "cad": f"KNN-CAD alone {found['auroc']['knn_cad']:.3f}",
            "flagged": f"0 of {found['clean']} clean and {found['scaffolds_flagged']} of {found['scaffolds']} scaffolds"}


def benign_row(model: str) -> str:
    row = next(r for r in summary("benign_controls")["rows"] if r["model"] == model)
    return f"| {model} | {100 * row['test_accuracy']:.1f}% | {row['verdict']} | {row['z_max']:.2f} ({row['largest']}) |"


def lime_noise() -> str:
    found = summary("lime_noise")
    low, high = found["config"]["lime_samples"]
    return (f"{seed_range(found['seeds'])}, `experiments/results/lime_noise.json`): {cite(found, f'lime_{low}')} at "
            f"{low} samples, {cite(found, f'lime_{high}')} at {high}; KernelSHAP {cite(found, 'kernel_shap_512', 5)} "
            "at 512)")


def adult_agreement() -> str:
    found = summary("adult_agreement")
    pairs = ", ".join(f"{label} {cite(found, metric, 3 if metric == 'gradient~ig' else 2)}" for label, metric in (
        ("LIME-KernelSHAP", "lime~kernel-shap"), ("IG-KernelSHAP", "ig~kernel-shap"), ("IG-LIME", "ig~lime"),
        ("Gradient-LIME", "gradient~lime"), ("Gradient-KernelSHAP", "gradient~kernel-shap"),
        ("Gradient-IG", "gradient~ig")))
    z = found["metrics"]["largest_z"]
    return (f"mean +- 95% t-interval over audit {seed_range(found['seeds'])}, which draw the rows, the background "
            "and the twins, `experiments/adult_agreement.py`, summary `experiments/results/adult_agreement.json`): "
            f"{pairs}; "
            f"the cross-method test's largest component z {cite(found, 'largest_z')} "
            f"({min(z['values']):.2f}-{max(z['values']):.2f} over the seeds; flag above 3)")


SCAFFOLD_COLUMNS = ("detector_accuracy", "fidelity", "top1/kernel-shap, 20 centroids",
                    "top1/kernel-shap, 50 centroids, 2048", "top1/kernel-shap, 200 raw rows", "top1/lime, width x0.5",
                    "top1/lime, width x2", "audit_statistic")


def scaffold_row(data: str, kind: str, label: str) -> str:
    found = summary("scaffold_seeds")
    cells = " | ".join(cite(found, f"{data.lower()}/{kind}/{column}") for column in SCAFFOLD_COLUMNS)
    return f"| {data} | {label} | {cells} |"


DEFENCE = "conditional-shap (defence)"


def scaffold_values(prefix: str, defence: bool = False) -> list[float]:
    """Every seed's value of the scaffold_seeds metrics named ``prefix`` or below it ("compas/standard/top1");
    the on-manifold defence's top-1 share only when ``defence``."""
    return [v for name, figure in summary("scaffold_seeds")["metrics"].items()
            if (name == prefix or name.startswith(prefix + "/")) and (DEFENCE in name) == defence
            for v in figure["values"]]


def span(values: list[float], percent: bool = False) -> str:
    low, high = (100 * min(values), 100 * max(values)) if percent else (min(values), max(values))
    digits, unit = (0, " %") if percent else (2, "")
    return f"{low:.{digits}f}{unit}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else \
        f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def scaffold_bullets() -> list[str]:
    found = summary("scaffold_seeds")
    held_out = scaffold_values("compas/standard/top1") + scaffold_values("german/standard/top1")
    hiding = ("compas/standard", "compas/centroids", "german/standard", "german/centroids", "german/robust")
    statistic = [v for case in hiding for v in scaffold_values(f"{case}/audit_statistic")]
    defence = [v for case in hiding for v in scaffold_values(f"{case}/top1", defence=True)]
    return [f"at most {100 * max(held_out):.0f} % of the rows under any held-out setting, data set and seed "
            f"({sum(v <= 0.1 + 1e-9 for v in held_out)} of {len(held_out)} setting-seed pairs at 10 % or less)",
            f"got weaker ({cite(found, 'compas/centroids/detector_accuracy')} against "
            f"{cite(found, 'compas/standard/detector_accuracy')}) and leaks under raw rows "
            f"({span(scaffold_values('compas/centroids/top1/kernel-shap, 200 raw rows'), True)} over the seeds)",
            f"its balanced accuracy fell to {span(scaffold_values('compas/robust/detector_accuracy'))} on every seed",
            f"German the robust scaffold still hides ({span(scaffold_values('german/robust/top1'), True)}) and is "
            f"flagged ({cite(found, 'german/robust/audit_statistic')})",
            f"audit's statistic ({span(statistic)} > 0.33 on every seed); on-manifold KernelSHAP shows the sensitive "
            f"attribute for {span(defence, True)} of rows"]


def fairwash_row(data: str, weight: int) -> str:
    """A row of docs/tabular.md's GroupRates table (experiments/tabular_fairwash_seeds.py)."""
    m = summary(f"tabular_fairwash_{data}_weight{weight}")["metrics"]
    chosen = " (chosen)" if summary(f"tabular_fairwash_{data}")["chosen"]["keep_rates"] == weight else ""
    change = [f"{100 * m[k]['mean']:+.0f}% +- {100 * m[k]['half_width']:.0f}%" for k in ("ddi_change", "deo_change")]
    falls = [f"{100 * m['fall_' + k]['mean']:.0f}%" for k in ("gradient", "gradient_x_input", "ig", "smoothgrad", "lrp")]
    return " | ".join([f"| {data} | {weight}{chosen}", *change, *falls,
                       f"{m['accuracy_change_points']['mean']:+.2f} pt |"])


def budget_horizon(metric: str) -> str:
    return cite(summary("budget_short_horizon"), metric)


def frontier_row(group: str) -> str:
    """A row of docs/audit.md's evasion-frontier table, from experiments/results/evasion_frontier.json."""
    row = next(r for r in summary("evasion_frontier")["aggregate"] if r["group"] == group)
    kept, z = row["strength_kept"], row["combined_z"]
    kept_text = "100%" if group == "none" else (f"{100 * kept['mean']:.0f}% ({100 * kept['min']:.0f}-"
                                                f"{100 * kept['max']:.0f}%)")
    verdicts = set(row["verdicts"])
    verdict = f"{verdicts.pop()} x{row['seeds']}" if len(verdicts) == 1 else ", ".join(row["verdicts"])
    cells = [kept_text, f"{z['mean']:.2f} ({z['min']:.2f}-{z['max']:.2f})", verdict]
    if group == "all":  # the headline row is in bold
        cells = [f"**{cell}**" for cell in cells]
    return " | ".join(cells) + f" | {100 * row['test_accuracy']['mean']:.1f}% |"


def audit_zoo() -> dict:
    return summary("audit_zoo")


def zoo_headline(key: str) -> str:
    from audit_zoo import headline  # experiments/audit_zoo.py: how summary.md and docs/audit.md state a half

    found = audit_zoo()
    return headline(found[key] if key != "held_out_as_frozen" else found[key]["held_out"])


def zoo_rows(kind: str) -> str:
    from audit_zoo import family_rows, test_rows

    return " ".join((family_rows if kind == "family" else test_rows)(audit_zoo()["held_out"]))


def adversarial_sparsity() -> str:
    rows = summary("adversarial_sparsity")["rows"]
    attacked = [r for r in rows if r["model"] == "adversarial"]
    others = [r for r in rows if r["model"] != "adversarial"]

    def span(values, scale=1, digits=0):
        low, high = f"{min(values) * scale:.{digits}f}", f"{max(values) * scale:.{digits}f}"
        return low if low == high else f"{low}-{high}"

    return (f"{span([r['near_zero_share'] for r in attacked], 100)}% of the features lie below 1% of the row's largest "
            f"gradient, against {span([r['near_zero_share'] for r in others], 100)}% for the clean and fine-tuned "
            f"models, and the component reads {span([r['beta_smoothing_gradient'] for r in attacked], digits=2)} "
            f"against {span([r['beta_smoothing_gradient'] for r in others], digits=2)}")


def frontier_seeds_row(case: str) -> str:
    from frontier_seeds import doc_row  # experiments/frontier_seeds.py: the row docs/manipulate.md prints

    return doc_row(case, summary(f"frontier_seeds_{case.replace('-', '_')}"))


def readme_budget() -> str:
    from frontier_seeds import goal_met

    cross, lrp = summary("frontier_seeds_gradient_cross"), summary("frontier_seeds_lrp_cross")
    met = sum(goal_met("lrp-cross", v, d) for v, d in zip(lrp["metrics"]["measure"]["values"],
                                                        lrp["metrics"]["accuracy_drop_points"]["values"]))
    return (f"draws the cross target at PCC {cite(cross, 'measure', 2)} at an accuracy drop of "
            f"{cite(cross, 'accuracy_drop_points', 1)} pt, {seed_range(cross['seeds'])}, on test images no setting was "
            f"chosen on; the LRP z^B budget of 0.975 met its goal on {met} of {len(lrp['seeds'])} seeds")


def readme_push_down() -> str:
    relu, chose = summary("neurons_push_down_relu"), summary("neurons_push_down_relu_validation")
    conv = summary("frontier_seeds_push_down_conv")
    return (f"keeps {cite(relu, 'live_overlap', 3)} of the live channels' post-ReLU top-10 at an accuracy drop of "
            f"{cite(relu, 'accuracy_drop_points', 1)} pt, though it lost {cite(chose, 'accuracy_drop_points', 1)} pt "
            f"on the images that chose it; with `--pre-activation` the third line keeps {cite(conv, 'measure', 3)} "
            f"of the top-10 of every channel of the last conv layer's output at "
            f"{cite(conv, 'accuracy_drop_points', 1)} pt")


def readme_slingshot() -> str:
    found = summary("slingshot_seeds")
    return (f"largest SSIM to the target over the visualiser variants {cite(found, 'logit.slingshot.max_ssim')} for "
            f"the slingshot of a logit and {cite(found, 'logit.fooling_circuit.max_ssim')} for the fooling circuit, "
            f"{seed_range(found['seeds'])}; goal 0.8")


def resnet_lrp() -> str:
    found = summary("resnet_lrp_seeds")
    m = found["metrics"]
    return (f"COM {m['com_distance_original']['mean']:.2f} -> **{cite(found, 'com_distance')} px** (per seed "
            f"{', '.join(f'{v:.2f}' for v in m['com_distance']['values'])}), fooled (<= 3 px) "
            f"**{cite(found, 'fooled', 3)}**, accuracy drop {cite(found, 'accuracy_drop_points', 1)} pt, agreement "
            f"{cite(found, 'label_agreement', 3)}")


def test_the_resnet_figure_is_cited_in_the_table_and_the_paragraph():
    text = doc_text("docs/explain_graphs.md")
    assert text.count(resnet_lrp()) == 2


def test_the_false_positive_rate_in_audit_json_is_the_zoo_s_held_out_figure():
    from veneer.audit.calibration import MEASURED_FALSE_POSITIVES

    flagged, audited = MEASURED_FALSE_POSITIVES
    assert audit_zoo()["held_out"]["clean_flagged"] == f"{flagged} of {audited}"


CITED = [
    ("docs/audit.md", lambda: f"(`--effort fast`, twins, every registered test): {summary('benign_controls')['benign_flagged']} flagged"),
    *[("docs/audit.md", lambda model=model: benign_row(model))
      for model in ("original", "fine-tune", "distilled", "pruned", "int8", "adversarial", "augmented")],
    ("docs/audit.md", lambda: f"keeps {rebalance('top10_overlap_attacked')} of the live"),
    ("docs/audit.md", lambda: f"from {rebalance('balance_spread_original')} to {rebalance('balance_spread_attacked')} "
                              f"({rebalance('balance_spread_attacked', 'min')}-"
                              f"{rebalance('balance_spread_attacked', 'max')})"),
    ("docs/audit.md", lambda: f"brings the spread to {rebalance('balance_spread_rebalanced')} "
                              f"({rebalance('balance_spread_rebalanced', 'min')}-"
                              f"{rebalance('balance_spread_rebalanced', 'max')})"),
    ("docs/audit.md", lambda: "clean, lie at {clean_low}-{clean_high} (largest z {clean_z}; {clean_flagged} flagged)"
                              .format(**shared_logit())),
    ("docs/audit.md", lambda: "at {shared_low} or more (z >= {shared_z}; {shared_flagged} flagged)".format(**shared_logit())),
    *[("docs/audit.md", lambda group=group: frontier_row(group))
      for group in ("none", "sanity", "geometry", "fidelity", "defences", "invariance", "neurons", "all")],
    *[("docs/audit.md", lambda key=key: zoo_headline(key)) for key in ("held_out", "held_out_2", "held_out_as_frozen")],
    ("docs/audit.md", lambda: zoo_rows("family")),
    ("docs/audit.md", adversarial_sparsity),
    ("BENCHMARKS.md", lambda: zoo_headline("held_out")),
    ("docs/audit.md", lambda: zoo_rows("test")),
    ("docs/audit.md", lambda: lime_noise()),
    ("docs/audit.md", adult_agreement),
    ("docs/tabular.md", lambda: f"{seed_range(summary('scaffold_seeds')['seeds']).capitalize()} "
                                "(`experiments/scaffold_seeds.py`, summary `experiments/results/scaffold_seeds.json`"),
    *[("docs/tabular.md", lambda data=data, kind=kind, label=label: scaffold_row(data, kind, label))
      for data in ("COMPAS", "German")
      for kind, label in (("standard", "standard (10 centroids)"), ("centroids", "centroids 5/10/25"),
                          ("robust", "robust (`ROBUST_SETTINGS`)"))],
    *[("docs/tabular.md", lambda i=i: scaffold_bullets()[i]) for i in range(5)],
    ("BENCHMARKS.md", lambda: f"| {architecture('shift')} |"),
    ("BENCHMARKS.md", lambda: f"| {architecture('gated')} |"),
    ("BENCHMARKS.md", lambda: f"| {architecture('mnist-vit')} |"),
    ("BENCHMARKS.md", vit_training),
    ("BENCHMARKS.md", scaffolding_cost),
    ("README.md", vit_accuracy),
    ("BENCHMARKS.md", lambda: zoo()["auroc"] + f" ({zoo()['cad']}), threshold-free"),
    ("BENCHMARKS.md", lambda: zoo()["flagged"]),
    ("BENCHMARKS.md", lambda: zoo()["held_out"]),
    ("README.md", lambda: zoo()["held_out"]),
    *[("docs/tabular.md", lambda data=data, weight=weight: fairwash_row(data, weight))
      for data in ("compas", "adult") for weight in (0, 300, 1000)],
    ("docs/tabular.md", lambda: f"GroupRates weight ({seed_range(summary('tabular_fairwash_compas')['seeds'])},"),
    ("docs/manipulate.md", lambda: f"alpha 0.3 gains PCC {budget_horizon('unbudgeted.pcc_gain')}"),
    ("docs/manipulate.md", lambda: f"(12 checks, warned) {budget_horizon('budget_every10.pcc_gain')} (per seed "
                                   + ", ".join(f"{v:.2f}" for v in summary("budget_short_horizon")["metrics"]
                                               ["budget_every10.pcc_gain"]["values"])),
    ("docs/manipulate.md", lambda: f"(25 checks) {budget_horizon('budget_auto.pcc_gain')}, i.e. "
                                   f"{budget_horizon('auto_share_of_unbudgeted')} of the unbudgeted gain"),
    ("docs/manipulate.md", lambda: f"PCC gain on test images 0-499; {seed_range(summary('budget_short_horizon')['seeds'])},"),
    ("README.md", readme_budget),
    ("README.md", readme_push_down),
    ("README.md", readme_slingshot),
    ("docs/explain_graphs.md", lambda: f"3000 steps, {seed_range(summary('resnet_lrp_seeds')['seeds'])}, on test "
                                       "images **200-999**"),
    ("docs/explain_graphs.md", resnet_lrp),
    *[("docs/manipulate.md", lambda case=case: frontier_seeds_row(case))
      for case in ("gradient-cross", "lrp-cross", "gradient-com", "push-down-conv")],
]


@pytest.mark.parametrize("doc, derive", CITED, ids=[f"{doc}:{i}" for i, (doc, _) in enumerate(CITED)])
def test_a_cited_figure_equals_its_committed_summary(doc, derive):
    text = doc_text(doc)
    assert derive() in text, f"{doc} does not cite {derive()!r} (from experiments/results)"


def notebook_anchors(notebook: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.strip("# ").lower()).replace(" ", "-")
            for line in notebook.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("doc", sorted(path.name for path in (ROOT / "docs").glob("*.md")))
def test_every_link_into_a_lab_notebook_names_a_heading_it_has(doc):
    """The docs send a reader to experiments/notebook/<doc>.md for the single development runs behind a lesson."""
    links = re.findall(r"\(\.\./experiments/notebook/(\w+\.md)(?:#([^)]+))?\)", (ROOT / "docs" / doc).read_text())
    for notebook, anchor in links:
        path = ROOT / "experiments" / "notebook" / notebook
        assert path.is_file(), f"docs/{doc} links {notebook}, which experiments/notebook/ does not have"
        assert not anchor or anchor in notebook_anchors(path), f"docs/{doc}: no heading #{anchor} in {notebook}"

