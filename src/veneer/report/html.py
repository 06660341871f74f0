"""One self-contained HTML page per run, built from the run directory alone.

:func:`write_report` reads what a run left in its directory -- ``config.json`` (arguments, seed, versions),
``metrics.json``, ``audit.json``, the PNG/SVG figures and the CSV/markdown tables -- and writes
``report.html`` next to them: what was run, the headline figures first (accuracy before/after, attack
success, the measures of the paper each command reproduces), then the figures (inline as ``data:`` URIs),
the tables and relative links to every file. The page has no script and loads nothing: CSS is inline, so
it opens from a USB stick or an e-mail attachment. Because only the directory is read, ``veneer report DIR``
rebuilds the page for any run, including runs made before this module existed; a directory of an unknown
or unfinished run gets the generic page (its metrics as a table, every figure and table, the file links).

The run kind comes from ``config.json`` (``config.command``, ``config.action`` for ``neurons``); older or
hand-made directories are recognised by the keys of their metrics.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from veneer.report.figures import plt
from veneer.runs import atomic_write_bytes

__all__ = ["REPORT_NAME", "write_report", "render_report", "run_kind"]

REPORT_NAME = "report.html"
MAX_ROWS = 15  # table rows shown inline; the whole table is one link away
MAX_FILES = 500  # file links listed (a run directory pointed at a large tree stays a small page)
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
TABLE_SUFFIXES = (".csv", ".md")


# ----------------------------------------------------------------------------------------- page model
@dataclass
class Card:
    """One headline figure: a label, its value and an optional line under it."""

    label: str
    value: str
    detail: str = ""
    tone: str = ""  # "", "good", "warn" or "bad"


@dataclass
class Figure:
    name: str
    src: str
    caption: str = ""
    href: str = ""
    size: str = ""  # "" (full width) or "half" (two in a row)


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    note: str = ""
    href: str = ""


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    sections: list["Section"] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    key: Card | None = None  # the card that sums the section up in a summary page (default: the first)


# ----------------------------------------------------------------------------------------- formatting
def fmt(value: Any) -> str:
    """A value for a table cell: 4 significant digits for floats, yes/no for booleans, a dash for None."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.0f}" if 1e4 <= abs(value) < 1e9 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 8 and all(not isinstance(v, (list, dict)) for v in value):
            return ", ".join(fmt(v) for v in value)
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(value) and numbers:
            return f"{len(value)} values, {fmt(min(numbers))} … {fmt(max(numbers))}"
        return f"{len(value)} entries"
    if isinstance(value, dict):
        return f"{len(value)} entries"
    return str(value)


def pct(value: Any) -> str:
    """A rate in [0, 1] as a percentage."""
    return fmt(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{100 * value:.1f} %"


def arrow(before: Any, after: Any, form: Callable[[Any], str] = fmt) -> str:
    return f"{form(before)} → {form(after)}"


def _cell(text: str) -> str:
    """A CSV/markdown cell: numbers re-formatted to 4 significant digits, everything else as written."""
    try:
        number = float(text)
    except ValueError:
        return text
    return text if re.fullmatch(r"-?\d+", text.strip()) else fmt(number)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys and leaf values of nested dicts (lists stay leaves)."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in _flatten(inner, f"{prefix}{key}.")]
    return [(prefix[:-1], value)]


# ----------------------------------------------------------------------------------------- the run directory
def _read_json(path: Path) -> tuple[Any, str]:
    """The parsed file, or None and a sentence saying why not."""
    if not path.is_file():
        return None, ""
    try:
        return json.loads(path.read_text()), ""
    except (ValueError, OSError) as error:
        return None, f"{path.name} could not be read ({error})."


def _mtime(path: Path) -> str:
    if not path.is_file():
        return ""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(timespec="seconds")


class Run:
    """What a run directory holds; figures and tables are handed out once, so the page can list the rest."""

    def __init__(self, path: Path, root: Path, metrics: Any = None):
        self.path, self.root = path, root
        stored, self.problems = {}, []
        for name in ("config", "metrics", "audit"):
            stored[name], problem = _read_json(path / f"{name}.json")
            if problem:
                self.problems.append(problem)
        top = stored["config"] if isinstance(stored["config"], dict) else {}
        self.config: dict[str, Any] = top.get("config") if isinstance(top.get("config"), dict) else {}
        self.seed = top.get("seed", self.config.get("seed"))
        self.versions: dict[str, Any] = top.get("versions") or {}
        self.started = top.get("started") or _mtime(path / "config.json")
        self.finished = _mtime(path / "metrics.json") or _mtime(path / "audit.json")
        self.metrics = stored["metrics"] if metrics is None else metrics
        if not isinstance(self.metrics, dict):
            self.metrics = {}
        self.audit = stored["audit"] if isinstance(stored["audit"], dict) else None
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
        self.files = [p for p in files if p.name != REPORT_NAME and not p.name.startswith(".")]
        self.used: set[str] = set()

    def href(self, path: Path) -> str:
        return quote(path.relative_to(self.root).as_posix())

    def figure(self, name: str, caption: str = "", size: str = "") -> list[Figure]:
        """The figure ``name`` inline (an empty list when the file is absent)."""
        path = self.path / name
        if not path.is_file() or path.suffix not in IMAGE_TYPES:
            return []
        self.used.add(name)
        data = base64.b64encode(path.read_bytes()).decode()
        return [Figure(name, f"data:{IMAGE_TYPES[path.suffix]};base64,{data}", caption, self.href(path), size)]

    def figures(self, pattern: str, caption: Callable[[str], str] = lambda name: "", size: str = "") -> list[Figure]:
        """Every figure whose name matches ``pattern`` and that is not shown yet."""
        return [f for p in self.files if re.fullmatch(pattern, p.name) and p.name not in self.used
                for f in self.figure(p.name, caption(p.name), size)]

    def table(self, stem: str, caption: str = "") -> list[Table]:
        """The table ``stem.csv`` (or ``stem.md``) as rows, at most :data:`MAX_ROWS` of them."""
        for suffix in TABLE_SUFFIXES:
            path = self.path / f"{stem}{suffix}"
            if path.is_file():
                break
        else:
            return []
        self.used.update(f"{stem}{suffix}" for suffix in TABLE_SUFFIXES)
        try:
            rows = _read_csv(path) if path.suffix == ".csv" else _read_markdown(path)
        except (csv.Error, OSError) as error:
            self.problems.append(f"{path.name} could not be read as a table ({error}).")
            return []
        if not rows:
            return []
        columns, body = rows[0], [[_cell(c) for c in row] for row in rows[1:]]
        note = f"first {MAX_ROWS} rows of {len(body)}" if len(body) > MAX_ROWS else ""
        return [Table(path.name, columns, body[:MAX_ROWS], caption, note, self.href(path))]

    def rest(self) -> Section | None:
        """The figures and tables no kind-specific section showed."""
        figures = [f for p in self.files if p.name not in self.used for f in self.figure(p.name)]
        tables = [t for p in self.files if p.name not in self.used and p.suffix in TABLE_SUFFIXES
                  for t in self.table(p.stem)]
        return Section("Other figures and tables", figures=figures, tables=tables) if figures or tables else None


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", errors="replace") as handle:
        return [row for row in csv.reader(handle) if row]


def _read_markdown(path: Path) -> list[list[str]]:
    """Rows of the first markdown table in the file (the separator line dropped)."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            rows.append(cells)
    return rows


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def history_chart(records: list[dict[str, Any]], name: str, caption: str = "", x: str = "step", href: str = ""
                  ) -> list[Figure]:
    """Training curves: one panel per numeric column of ``records`` against ``x`` (at most four), as an
    inline PNG; an empty list when there is nothing to draw."""
    columns = [c for c in dict.fromkeys(k for r in records for k in r)
               if c not in (x, "epoch") and any(_number(r.get(c)) is not None for r in records)][:4]
    if not columns or not records:
        return []
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 2.4), squeeze=False)
    for ax, column in zip(axes[0], columns):
        points = [(_number(r.get(x)) if x in r else i, _number(r.get(column))) for i, r in enumerate(records)]
        points = [(a, b) for a, b in points if a is not None and b is not None]
        ax.plot([a for a, _ in points], [b for _, b in points], lw=1.4)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return [Figure(name, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), caption, href)]


def _key_values(title: str, pairs: list[tuple[str, Any]], caption: str = "") -> Table:
    return Table(title, ["name", "value"], [[key, fmt(value)] for key, value in pairs], caption)


def _records(title: str, records: list[dict[str, Any]], caption: str = "") -> Table:
    columns = list(dict.fromkeys(key for row in records for key in row))
    return Table(title, columns, [[fmt(row.get(c)) for c in columns] for row in records], caption)


# ----------------------------------------------------------------------------------------- run kinds
def run_kind(path: str | os.PathLike) -> str:
    """The kind of run in ``path``: ``explain``, ``attack-input``, ``attack-input sweep``, ``manipulate``,
    ``evaluate``, ``neurons <action>``, ``demo``, ``audit``, ``train``, another recorded command name, or
    ``generic`` when neither ``config.json`` nor the metrics say."""
    run = Run(Path(path), Path(path))
    return _kind(run)


def _kind(run: Run) -> str:
    command, m = run.config.get("command"), run.metrics
    if command == "neurons" and run.config.get("action"):
        return f"neurons {run.config['action']}"
    if command == "attack-input":
        return "attack-input sweep" if run.config.get("sweep") else "attack-input"
    if command:
        return str(command)
    # Runs made before config.json recorded the command, or by library code (the demo's levels).
    if run.audit is not None:
        return "audit"
    if {"explanations", "attacks", "manipulate", "neurons"} <= set(m):
        return "demo"
    if run.config.get("demo") in ("manipulate", "evaluate"):
        return "manipulate"
    if isinstance(m.get("results"), list):
        return "attack-input sweep" if (run.path / "sweep.csv").is_file() else "attack-input"
    if m.get("attack") in ("push-down", "push-up"):
        return f"neurons {m['attack']}"
    if "attacked_neurons" in m and "attribute" in m:
        return "neurons fairwash"
    if "activation_of_own_channel" in m:
        return "neurons visualize"
    if {"layer", "indices", "values"} <= set(m):
        return "neurons topk"
    if {"predictions", "methods", "measure"} <= set(m):
        return "evaluate"
    if {"steps", "final", "train_accuracy"} <= set(m):
        return "manipulate"
    if "seconds_per_method" in m:
        return "explain"
    return "generic"


TITLES = {
    "explain": "Explanations", "attack-input": "Input attack", "attack-input sweep": "Input attack sweep",
    "manipulate": "Model manipulation", "evaluate": "Manipulation evaluation", "neurons topk": "Neuron top-k images",
    "neurons visualize": "Neuron visualisation", "neurons push-down": "Neuron push-down attack",
    "neurons push-up": "Neuron push-up attack", "neurons fairwash": "Neuron fairwashing", "demo": "veneer demo",
    "audit": "Model audit", "train": "Model training", "influence": "Influence", "generic": "Run",
}


def _generic(run: Run) -> Section:
    """Any run: its scalar metrics as a table, lists of records as tables (the rest follows on the page)."""
    section = Section("Metrics")
    scalars = []
    for key, value in _flatten(run.metrics):
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            section.tables.append(_records(key, value))
        else:
            scalars.append((key, value))
    if scalars:
        section.tables.insert(0, _key_values("metrics.json", scalars))
    if not run.metrics:
        section.text.append("This run directory has no metrics.json: the run may not have finished.")
    return section


def _explain(run: Run) -> Section:
    m = run.metrics
    seconds = m.get("seconds_per_method") or {}
    section = Section("Explanations", cards=[
        Card("accuracy on the explained inputs", pct(m.get("accuracy_on_inputs"))),
        Card("inputs", fmt(m.get("n"))), Card("methods", fmt(len(seconds)), ", ".join(seconds))])
    section.figures += run.figure("explanations.png", "One row per input: the input, then each method's "
                                  "heatmap (red: positive attribution, blue: negative).")
    if seconds:
        speed = m.get("images_per_second") or {}
        section.tables.append(Table("time per method", ["method", "seconds", "images per second"],
                                    [[k, fmt(v), fmt(speed.get(k))] for k, v in seconds.items()]))
    return section


def _attack_input(run: Run) -> Section:
    m = run.metrics
    results = [r for r in m.get("results") or [] if isinstance(r, dict)]
    section = Section("Input attack (Ghorbani et al. 2019)")
    if len(results) == 1:
        r = results[0]
        section.cards += [Card("top-k intersection", fmt(r.get("topk_intersection")),
                               f"{r.get('attack')} · {r.get('method')} · eps {fmt(r.get('eps'))}",
                               _tone(r.get("topk_intersection"), 0.5, 0.8)),
                          Card("Spearman rank correlation", fmt(r.get("spearman"))),
                          Card("centre-of-mass shift", f"{fmt(r.get('com_shift'))} px"),
                          Card("label kept", pct(r.get("label_kept_rate")))]
    elif results:
        strongest = min(results, key=lambda r: r.get("topk_intersection", math.inf))
        section.cards += [Card("lowest top-k intersection", fmt(strongest.get("topk_intersection")),
                               f"{strongest.get('attack')} · {strongest.get('method')} · eps "
                               f"{fmt(strongest.get('eps'))}", _tone(strongest.get("topk_intersection"), 0.5, 0.8)),
                          Card("lowest Spearman", fmt(min(r.get("spearman", math.inf) for r in results))),
                          Card("label kept (worst)", pct(min(r.get("label_kept_rate", 1.0) for r in results))),
                          Card("attack x method x eps", fmt(len(results)))]
    section.cards += [Card("clean accuracy", pct(m.get("clean_accuracy"))),
                      Card("images attacked", f"{fmt(m.get('n_attacked'))} of {fmt(m.get('n_requested'))}",
                           f"top-k size k = {fmt(m.get('k'))}")]
    section.text.append("Each correctly classified image is perturbed within an l-inf budget eps so that its "
                        "explanation moves while its label stays; top-k intersection and Spearman compare the "
                        "explanations before and after (1: unchanged).")
    section.figures += run.figure("sweep.png", "Ghorbani et al. Fig. 3: explanation similarity against the "
                                  "budget eps, per attack and method.")
    section.figures += run.figures(r"fig1_.*\.png", lambda name: "Fig. 1 style, " + name[5:-4].replace(
        "_eps", " at eps ") + ": clean and perturbed input with their explanations.", "half")
    if results:
        shown = ("attack", "method", "eps", "n", "label_kept_rate", "spearman", "topk_intersection", "com_shift",
                 "linf", "seconds")
        section.tables.append(_records("results", [{k: r.get(k) for k in shown} for r in results],
                                       "Means over the attacked images."))
        run.used.add("sweep.csv")
    section.tables += run.table("per_image", "Per image.")
    return section


def _tone(value: Any, bad: float, warn: float, low_is_bad: bool = True) -> str:
    """"bad" when the value is at or below ``bad`` (above, when not ``low_is_bad``), "warn" up to ``warn``."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    if not low_is_bad:
        value, bad, warn = -value, -bad, -warn
    return "bad" if value <= bad else "warn" if value <= warn else "good"


def _manipulate(run: Run) -> Section:
    m, c = run.metrics, run.config
    final = m.get("final") or {}
    section = Section("Model manipulation (fine-tuning against an explanation objective)", cards=[
        Card("training accuracy after", pct(m.get("train_accuracy"))),
        Card("final attack loss", fmt(final.get("attack")), f"objective {fmt(c.get('objective'))}"),
        Card("final keep loss", fmt(final.get("keep")), f"keep {fmt(c.get('keep', 'ce'))}"),
        Card("steps", fmt(m.get("steps")), f"{fmt(m.get('seconds'))} s")])
    settings = [(k, c[k]) for k in ("method", "objective", "target", "map", "region", "k", "classes", "features",
                                    "keep", "alpha", "lr", "epochs", "batch_size", "softplus_beta") if c.get(k) is not None]
    if settings:
        section.tables.append(_key_values("settings", settings))
    history = run.path / "history.csv"
    if history.is_file():
        with history.open(newline="") as handle:
            section.figures += history_chart(list(csv.DictReader(handle)), "history.csv",
                                             "Training curves: the attack term, the keep term and their sum.",
                                             href=run.href(history))
        run.used.update({"history.csv", "history.md"})
    if isinstance(m.get("evaluation"), dict):
        evaluation = _evaluate(run, m["evaluation"])
        section.sections.append(evaluation)
        section.key = evaluation.key
    return section


def _evaluate(run: Run, m: dict[str, Any] | None = None) -> Section:
    m = run.metrics if m is None else m
    p, measure = m.get("predictions") or {}, m.get("measure")
    section = Section("Evaluation: original against manipulated model", cards=[
        Card("accuracy original → manipulated", arrow(p.get("accuracy_original"), p.get("accuracy_manipulated"), pct),
             f"drop {fmt(p.get('accuracy_drop_points'))} points",
             _tone(p.get("accuracy_drop_points"), 5, 1, low_is_bad=False)),
        Card("label agreement", pct(p.get("label_agreement")))])
    for method, by_model in list((m.get("methods") or {}).items())[:4]:
        original, manipulated = by_model.get("original", {}), by_model.get("manipulated", {})
        section.cards.append(Card(f"{method}: {measure}", arrow(original.get(measure), manipulated.get(measure)),
                                  f"success {arrow(original.get('success_rate'), manipulated.get('success_rate'), pct)}"))
        if section.key is None or method == run.config.get("method"):
            section.key = section.cards[-1]
    if m.get("criterion"):
        section.text.append(f"Objective {m.get('objective')}; an input counts as a success when its {measure} "
                            f"meets: {m['criterion']}.")
    section.figures += run.figure("heatmaps.png", "Thesis Fig. 3.3: normalized heatmaps of the original and "
                                  "the manipulated model, per method.")
    section.figures += run.figure("feature_attribution.png", "Mean |attribution| per feature, original and "
                                  "manipulated (thesis Figs. 3.14/3.15).")
    section.tables += run.table("transfer", "Transfer to other methods on the data (thesis Tables 3.1/3.2).")
    section.tables += run.table("transfer_noise", "The same on Gaussian-noise inputs (thesis Sec. 4.1).")
    section.tables += run.table("fairness", "Demographic disparity (DDI) and equal opportunity (DEO).")
    return section


def _neuron_attack(run: Run) -> Section:
    m = run.metrics
    train, heldout = (m.get(s, {}).get("summary", {}) for s in ("train", "heldout"))
    section = Section(f"Neuron {m.get('attack', 'attack')} on layer {m.get('layer')} (Nanfack et al. 2024)", cards=[
        Card(f"top-{fmt(m.get('k'))} overlap (train)", fmt(train.get("topk_overlap")),
             "share of each channel's top-k images kept", _tone(train.get("topk_overlap"), 0.2, 0.6)),
        Card("Kendall tau (held-out)", fmt(heldout.get("tau")), "rank agreement of activations"),
        Card("accuracy before → after", arrow(m.get("accuracy_before"), m.get("accuracy_after"), pct),
             f"drop {fmt(m.get('accuracy_drop_points'))} points",
             _tone(m.get("accuracy_drop_points"), 5, 1, low_is_bad=False))])
    share = m.get("decoy_share_train")
    if isinstance(share, dict):
        section.cards.insert(0, Card("decoy share in top-k (train)", arrow(
            share.get("before", {}).get("mean_share"), share.get("after", {}).get("mean_share"), pct),
            f"channels at least half decoys: {pct(share.get('after', {}).get('channels_at_least_half'))}"))
    names = list(dict.fromkeys(k for s in ("train", "heldout") for key in ("summary", "summary_live")
                               for k in m.get(s, {}).get(key, {})))
    if names:
        columns = [(s, key) for s in ("train", "heldout") for key in ("summary", "summary_live")]
        section.tables.append(Table("summary", ["measure", "train", "train (live channels)", "held-out",
                                                "held-out (live channels)"],
                                    [[n] + [fmt(m.get(s, {}).get(key, {}).get(n)) for s, key in columns]
                                     for n in names], "Means over the attacked channels (live: whose activation "
                                    "varies over the training data)."))
    section.tables += run.table("table1", "Nanfack et al. Table 1.")
    section.figures += run.figure("topk_train.png", "Each channel's top-k training images before (left) and "
                                  "after (right) the attack (Nanfack et al. Figs. 2/3).", "half")
    section.figures += run.figure("topk_heldout.png", "The same on the held-out images.", "half")
    fine_tune = m.get("fine_tune") or {}
    if isinstance(fine_tune.get("history"), list):
        section.figures += history_chart(fine_tune["history"], "fine-tuning", "Attack loss L_A, model loss L_M "
                                         "and their weighted sum (Eq. 2) during the fine-tuning.")
    section.figures += run.figure("visualizations.png", "Synthetic visualisations before and after (Fig. 9).")
    return section


def _fairwash(run: Run) -> Section:
    m = run.metrics
    b, a = m.get("before") or {}, m.get("after") or {}
    section = Section(f"Fairwashing of layer {m.get('layer')} on {m.get('attribute')} (Nanfack et al. 2024, Eq. 5)",
                      cards=[Card("mean KS of attacked neurons", arrow(b.get("ks_attacked_mean"), a.get("ks_attacked_mean")),
                                  f"relative drop {pct(m.get('ks_relative_drop'))}"),
                             Card("top-k group balance", arrow(b.get("balance_attacked_mean"),
                                                               a.get("balance_attacked_mean"))),
                             Card("accuracy before → after", arrow(b.get("accuracy"), a.get("accuracy"), pct),
                                  f"drop {fmt(m.get('accuracy_drop_points'))} points"),
                             Card("DDI / DEO of predictions", f"{arrow(b.get('ddi'), a.get('ddi'))} / "
                                                              f"{arrow(b.get('deo'), a.get('deo'))}")])
    section.text.append("A neuron looks fair when its activations are distributed alike for both groups (small "
                        "KS distance) and its top-k holds both groups; the model's decisions (DDI, DEO) should "
                        "not change while the neurons are made to look fair.")
    section.figures += run.figure("ks.png", "KS distance per neuron before and after, neurons sorted by their "
                                  "initial KS (Fig. 10).")
    section.figures += run.figure("balance.png", "Top-k group balance of the attacked neurons (Fig. 11).")
    return section


def _topk(run: Run) -> Section:
    m = run.metrics
    channels = m.get("channels")
    section = Section(f"Top-{fmt(m.get('k'))} images of layer {m.get('layer')}", cards=[
        Card("layer", fmt(m.get("layer"))), Card("channels", fmt(channels if isinstance(channels, int) else
                                                                  len(channels or []))),
        Card("k", fmt(m.get("k"))), Card("samples per second", fmt(m.get("samples_per_second")))])
    section.figures += run.figure("topk.png", "Each channel's k most activating samples (dataset-based "
                                  "visualisation).")
    return section


def _visualize(run: Run) -> Section:
    m = run.metrics
    channels, response = m.get("channels") or [], m.get("activation_of_own_channel") or []
    section = Section(f"Synthetic visualisation of layer {m.get('layer')}", cards=[
        Card("layer", fmt(m.get("layer"))), Card("channels", fmt(len(channels)))])
    section.figures += run.figure("visualizations.png", "Activation maximisation: the input each channel "
                                  "responds to most.")
    if channels:
        section.tables.append(Table("activation of each channel on its own image", ["channel", "activation"],
                                    [[fmt(c), fmt(v)] for c, v in zip(channels, response)]))
    return section


def _train(run: Run) -> Section:
    m = run.metrics
    return Section("Training", cards=[Card("test accuracy", pct(m.get("test_accuracy"))),
                                      Card("training accuracy", pct(m.get("train_accuracy"))),
                                      Card("training time", f"{fmt(m.get('train_seconds'))} s")])


VERDICT_TONES = {"clean": "good", "suspicious": "warn", "manipulated": "bad"}
# What each audit test's score means, by words in the test's name (thesis Ch. 4; issue "veneer audit").
TEST_MEANINGS = (  # first match wins: "influence" before "fragil"
    ("influence", "How far a small input perturbation reshuffles the training samples most influential on the "
                  "prediction (Ghorbani et al. 2019, Sec. 3, Fig. 4; Koh & Liang 2017), against random noise."),
    ("fragil", "How far small input perturbations move the explanation while the label stays (Ghorbani et al. "
               "2019, Alg. 1); a manipulated model's explanations move further than a clean one's."),
    ("geometr", "Curvature of the class score around the inputs (Ghorbani Sec. 5, Dombrowski et al. 2019); "
                "sharp curvature makes gradient explanations easy to change."),
    ("hessian", "Curvature of the class score around the inputs (Dombrowski et al. 2019, Thm. 2); sharp "
                "curvature makes gradient explanations easy to change."),
    ("noise_input", "Whether explanations of unrelated noise inputs look alike (thesis Sec. 4.1): a globally "
                    "manipulated model draws the same picture for every input."),
    ("weight", "How explanations change when Gaussian noise is added to the weights (thesis Sec. 4.2); a "
               "manipulation is a fragile optimum, so its explanations change faster than accuracy."),
    ("random", "Whether explanations change when the top layers are re-initialised (Adebayo et al. 2018): "
               "explanations that survive randomisation do not depend on what the model learned."),
    ("faithful", "Whether deleting what the explanation marks as important hurts the prediction (deletion/"
                 "insertion curves, Samek et al. 2017): a manipulated map stops pointing at what the model uses."),
    ("agree", "Rank agreement between explanation methods; manipulations rarely transfer to every method "
              "(thesis Tables 3.1-3.2), so disagreement is evidence."),
    ("defen", "How much of the explanation survives beta-smoothing and tangent-space projection (Dombrowski "
              "et al. 2019; Anders et al. 2020); a manipulated explanation does not."),
    ("neuron", "Whether a layer's top-k natural images agree with its synthetic visualisations (Nanfack et al. "
               "2024, Sec. 4.1.1): after a neuron attack they decorrelate."),
    ("reference", "Explanation divergence from the reference model against their prediction agreement: same "
                  "predictions with different explanations point to a manipulation."),
)


def _meaning(name: str, test: dict[str, Any]) -> str:
    if isinstance(test.get("meaning"), str):
        return test["meaning"]
    key = name.lower().replace("-", "_")
    found = [text for word, text in TEST_MEANINGS if word in key]
    return found[0] if found else ("The test's statistic compared with models known to be clean; a score near 1 "
                                   "means it lies far outside their range.")


def _evidence(run: Run, name: str, evidence: Any) -> Section:
    """One audit test's evidence: text, a key/value table, a table of records, or figures it names."""
    section = Section("Evidence")
    if isinstance(evidence, str):
        figure = run.figure(evidence) if (run.path / evidence).suffix in IMAGE_TYPES else []
        if figure:
            section.figures += figure
        else:
            section.text.append(evidence)
    elif isinstance(evidence, dict):
        pairs = []
        for key, value in _flatten(evidence):
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                section.tables.append(_records(key, value))
            elif isinstance(value, str) and (run.path / value).suffix in IMAGE_TYPES and (run.path / value).is_file():
                section.figures += run.figure(value, key)
            else:
                pairs.append((key, value))
        if pairs:
            section.tables.insert(0, _key_values("evidence", pairs))
    elif isinstance(evidence, list) and evidence and all(isinstance(v, dict) for v in evidence):
        section.tables.append(_records("evidence", evidence))
    elif evidence is not None:
        section.text.append(fmt(evidence))
    section.figures += run.figures(rf"{re.escape(name)}([_.-].*)?\.(png|svg)")
    return section


def _audit(run: Run) -> Section:
    audit = run.audit if run.audit is not None else run.metrics
    verdict = str(audit.get("verdict", "unknown"))
    tests = {k: v for k, v in (audit.get("tests") or {}).items() if isinstance(v, dict)}
    flagged = [name for name, test in tests.items() if test.get("flag")]
    section = Section("Audit", extra={"verdict": verdict, "tone": VERDICT_TONES.get(verdict, ""),
                                      "score": fmt(audit.get("score"))})
    section.cards += [Card("tests flagged", f"{len(flagged)} of {len(tests)}", ", ".join(flagged)),
                      Card("audit time", f"{fmt(audit.get('seconds'))} s")]
    section.tables.append(Table("every test", ["test", "statistic", "score", "flag"],
                                [[name, fmt(t.get("statistic")), fmt(t.get("score")), "FLAG" if t.get("flag") else "ok"]
                                 for name, t in tests.items()],
                                "Score 0..1: how far the test's statistic lies from clean models (1: far outside)."))
    for name, test in tests.items():
        part = Section(name, text=[_meaning(name, test)], cards=[
            Card("statistic", fmt(test.get("statistic"))),
            Card("score", fmt(test.get("score")), "", _tone(test.get("score"), 0.7, 0.4, low_is_bad=False)),
            Card("flag", "flagged" if test.get("flag") else "not flagged", "", "bad" if test.get("flag") else "good")])
        evidence = _evidence(run, name, test.get("evidence"))
        part.text += evidence.text
        part.figures, part.tables = evidence.figures, evidence.tables
        section.sections.append(part)
    if isinstance(audit.get("config"), dict) and not run.config:
        run.config = audit["config"]
    run.used.add("audit.json")
    return section


def _demo(run: Run) -> Section:
    """The demo's one page: a section per level, each built like that level's own report."""
    m = run.metrics
    section = Section("Demo", cards=[Card("MNIST CNN test accuracy", pct(m.get("test_accuracy")))])
    explain_run = Run(run.path, run.root, m.get("explanations") or {})
    levels = [("Explanations", explain_run, "explain")]
    for sub, title in (("attacks", "Input-level attacks"), ("manipulate", "Model-level manipulation"),
                       ("neurons", "Neuron-level attack")):
        level = Run(run.path / sub, run.root)
        if not level.metrics and isinstance(m.get(sub), dict):
            level.metrics = m[sub]
        levels.append((title, level, _kind(level)))
    for title, level, kind in levels:
        part = _section(level, kind)
        part.title = title if part.title == title else f"{title}: {part.title}"
        section.sections.append(part)
        key = part.key or (part.cards[0] if part.cards else None)
        if key is not None:
            section.cards.append(Card(f"{title.split()[0].lower()}: {key.label}", key.value, key.detail, key.tone))
    run.used |= explain_run.used
    return section


BUILDERS: dict[str, Callable[[Run], Section]] = {
    "explain": _explain, "attack-input": _attack_input, "attack-input sweep": _attack_input,
    "manipulate": _manipulate, "evaluate": _evaluate, "neurons push-down": _neuron_attack,
    "neurons push-up": _neuron_attack, "neurons fairwash": _fairwash, "neurons topk": _topk,
    "neurons visualize": _visualize, "train": _train, "audit": _audit, "demo": _demo,
}


def _section(run: Run, kind: str) -> Section:
    """The kind's section, or the generic one, followed by every figure and table it did not show."""
    try:
        section = BUILDERS.get(kind, _generic)(run)
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # a partial or unusual metrics.json
        section = _generic(run)
        section.text.append(f"The {kind} layout could not read the metrics of this run ({type(error).__name__}: "
                            f"{error}); they are shown as they are.")
    rest = run.rest()
    if rest is not None:
        section.sections.append(rest)
    return section


# ----------------------------------------------------------------------------------------- what was run
def _command_line(config: dict[str, Any]) -> str:
    """The command, rebuilt from the recorded arguments (defaults included)."""
    if not config.get("command"):
        return ""
    words = ["veneer", str(config["command"])]
    if config.get("action"):
        words.append(str(config["action"]))
    for key, value in config.items():
        if key in ("command", "action", "run", "no_report") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(words)


def _about(run: Run, kind: str) -> list[tuple[str, str]]:
    c = run.config
    rows = [("command", _command_line(c) or kind)]
    model = c.get("model") or c.get("original")
    if model:
        rows.append(("model", str(model) + (f" (weights {c['weights']})" if c.get("weights") else "")
                     + (f", manipulated: {c['manipulated']}" if c.get("manipulated") else "")))
    if c.get("data"):
        details = ", ".join(f"{k} {fmt(c[k])}" for k in ("split", "n") if k in c)
        rows.append(("data", f"{c['data']} ({details})" if details else str(c["data"])))
    rows.append(("seed", fmt(run.seed)))
    if run.started:
        rows.append(("started", run.started))
    if run.finished:
        rows.append(("finished", run.finished))
    if run.versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in run.versions.items() if k != "platform")))
        if run.versions.get("platform"):
            rows.append(("platform", str(run.versions["platform"])))
    return rows


def _files(root: Path) -> tuple[list[dict[str, str]], int]:
    """The files of the run directory and its subdirectories (hidden ones skipped), with relative links and
    sizes: at most :data:`MAX_FILES` of them, and how many more there are."""
    found = []
    for folder, folders, names in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or path == root / REPORT_NAME or not path.is_file():
                continue
            relative, size = path.relative_to(root).as_posix(), path.stat().st_size
            found.append({"name": relative, "href": quote(relative),
                          "size": f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"})
    found.sort(key=lambda f: f["name"])
    return found[:MAX_FILES], max(0, len(found) - MAX_FILES)


def _environment() -> Environment:
    return Environment(loader=PackageLoader("veneer.report", "templates"), autoescape=select_autoescape(),
                       trim_blocks=True, lstrip_blocks=True)


def render_report(run_dir: str | os.PathLike) -> str:
    """The HTML page of the run in ``run_dir`` (see the module docstring)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run_dir {str(path)!r} is not a directory")
    run = Run(path, path)
    kind = _kind(run)
    files, more_files = _files(path)
    body = _section(run, kind)
    template = "audit.html" if kind == "audit" else "report.html"
    return _environment().get_template(template).render(
        title=TITLES.get(kind, kind.capitalize()), kind=kind, name=path.resolve().name, about=_about(run, kind),
        body=body, problems=run.problems, files=files, more_files=more_files,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) from what the directory holds; return its path."""
    html = render_report(run_dir)
    target = Path(run_dir) / REPORT_NAME
    atomic_write_bytes(target, html.encode())
    return target
