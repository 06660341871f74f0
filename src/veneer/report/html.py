"""One self-contained HTML page per run, built from the run directory alone.

:func:`write_report` reads what a run left in its directory -- ``config.json`` (arguments, seed, versions),
``metrics.json``, ``audit.json``, the PNG/SVG figures and the CSV/markdown tables -- and writes
``report.html`` next to them: what was run, the headline figures first (accuracy before/after, attack
success, the measures of the paper each command reproduces), then the figures (inline as ``data:`` URIs),
the tables and relative links to every file. The page has no script and loads nothing: CSS is inline, so
it opens from a USB stick or an e-mail attachment. Because only the directory is read, ``veneer report DIR``
rebuilds the page for any run, including runs made before this module existed.

The run's kind (``metrics.json``'s ``"kind"``; for older runs the command recorded in ``config.json``, see
:attr:`veneer.report.page.Run.kind`) picks the section registered for it with
:func:`veneer.report.page.register_section`; every built-in kind registers itself in the module that draws
its figures. A kind nobody registered, a directory that names no kind, and an unfinished run (no
``metrics.json`` yet) get the generic page (the metrics as a table, every figure and table, the file links)
with a line saying which of these it is. An error inside a section builder propagates.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

# The modules that register the built-in sections (imported for that effect).
from veneer.report import attacks, audit, influence, manipulate, neurons, slingshot, tabular  # noqa: F401
from veneer.report.page import (GENERIC, REPORT_NAME, SECTIONS, Card, Run, Section, Table, flatten, fmt,
                                key_values, pct, records_table, register_section, run_kind, section_title)
from veneer.runs import atomic_write_bytes

__all__ = ["REPORT_NAME", "write_report", "render_report", "run_kind"]

MAX_FILES = 500  # file links listed (a run directory pointed at a large tree stays a small page)


# ----------------------------------------------------------------------------------------- sections kept here
def generic_section(run: Run) -> Section:
    """Any run: its scalar metrics as a table, lists of records as tables (the rest follows on the page)."""
    section = Section("Metrics")
    scalars = []
    for key, value in flatten(run.metrics):
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            section.tables.append(records_table(key, value))
        else:
            scalars.append((key, value))
    if scalars:
        section.tables.insert(0, key_values("metrics.json", scalars))
    return section


def explain_section(run: Run) -> Section:
    """``veneer explain``: accuracy on the explained inputs, their explanations (a heatmap grid for images; for
    tabular rows signed feature bars, the top features across rows and the methods' agreement) and the time per
    method."""
    m = run.metrics
    seconds = m["seconds_per_method"]
    section = Section("Explanations", cards=[
        Card("accuracy on the explained inputs", pct(m["accuracy_on_inputs"])),
        Card("inputs", fmt(m["n"])), Card("methods", fmt(len(seconds)), ", ".join(seconds))])
    first = f"the first {m['shown']} of the {m['n']} inputs, all of them in attributions.safetensors" \
        if m.get("shown", m["n"]) < m["n"] else "every input"
    feature_rows = (run.path / "top_features.png").is_file()  # feature rows of a table, not images
    if feature_rows:
        section.figures += run.figure("explanations.png", f"Each method's features with the largest |attribution| "
                                      f"per row, for {first}; signed: red pushes towards the explained class, blue "
                                      "away from it.")
        section.figures += run.figure("top_features.png", "The features that matter most across all explained rows: "
                                      "each method's mean share of a row's total |attribution|.", size="half")
        section.figures += run.figure("method_agreement.png", "How much the methods agree: the mean over rows of "
                                      "the Spearman rank correlation of two methods' attributions.", size="half")
    else:
        section.figures += run.figure("explanations.png", f"One row per input, for {first}: the input, then each "
                                      "method's heatmap (red: positive attribution, blue: negative).")
    if "method_agreement" in m and not feature_rows and len(seconds) > 1:
        agreement = m["method_agreement"]
        section.tables.append(Table("method agreement", ["method", *agreement],
                                    [[a, *(fmt(agreement[a][b]) for b in agreement)] for a in agreement],
                                    "Mean over inputs of the Spearman rank correlation of two methods' heatmaps."))
    speed = m["inputs_per_second"] if "inputs_per_second" in m else m["images_per_second"]  # older runs
    unit = "rows per second" if feature_rows else "inputs per second"
    section.tables.append(Table("time per method", ["method", "seconds", unit],
                                [[k, fmt(v), fmt(speed[k])] for k, v in seconds.items()]))
    return section


def train_section(run: Run) -> Section:
    """``veneer train``: test and training accuracy, training time."""
    m = run.metrics
    return Section("Training", cards=[Card("test accuracy", pct(m["test_accuracy"])),
                                      Card("training accuracy", pct(m["train_accuracy"])),
                                      Card("training time", f"{fmt(m['train_seconds'])} s")])


# The demo's levels after its explanations: (sub-directory and key in the demo's metrics, title, kind of the run
# the sub-directory holds when it does not say).
DEMO_LEVELS = (("attacks", "Input-level attacks", "attack-input sweep"),
               ("manipulate", "Model-level manipulation", "manipulate"),
               ("neurons", "Neuron-level attack", "neurons push-down"))


def demo_section(run: Run) -> Section:
    """``veneer demo``: a section per level, each laid out by the section registered for the run in the level's
    sub-directory; a level that wrote no metrics.json there shows the measures the demo's metrics hold for it,
    as they are."""
    m = run.metrics
    section = Section("Demo", cards=[Card("MNIST CNN test accuracy", pct(m["test_accuracy"]))])
    explain_run = Run(run.path, run.root, m["explanations"])
    parts = [("Explanations", build_section(explain_run, "explain"))]
    for sub, title, kind in DEMO_LEVELS:
        level = Run(run.path / sub, run.root)
        if level.has_metrics:
            parts.append((title, build_section(level, kind if level.kind == GENERIC else level.kind)))
        else:
            part = generic_section(Run(run.path / sub, run.root, m[sub]))
            part.text.append(f"This level wrote no {sub}/metrics.json: its measures are shown as the demo's "
                             "metrics.json holds them.")
            parts.append((title, part))
    for title, part in parts:
        part.title = title if part.title == title else f"{title}: {part.title}"
        section.sections.append(part)
        key = part.key or (part.cards[0] if part.cards else None)
        if key is not None:
            section.cards.append(Card(f"{title.split()[0].lower()}: {key.label}", key.value, key.detail, key.tone))
    run.used |= explain_run.used
    return section


register_section("explain", explain_section, title="Explanations")
register_section("train", train_section, title="Model training")
register_section("demo", demo_section, title="veneer demo")


def build_section(run: Run, kind: str) -> Section:
    """The section registered for ``kind`` (the generic one, saying why, for a run that has not finished, a
    directory that names no kind, or a kind nobody registered), followed by every figure and table it did
    not show."""
    if not run.has_metrics:
        section = generic_section(run)
        section.text.append("This run directory has no metrics.json: the run has not finished, or it failed.")
    elif kind == GENERIC:
        section = generic_section(run)
        section.text.append("This run directory names neither its kind (metrics.json) nor its command "
                            "(config.json): its metrics are shown as they are.")
    elif kind not in SECTIONS:
        section = generic_section(run)
        section.text.append(f"No report section is registered for kind {kind} (veneer.report.register_section): "
                            "its metrics are shown as they are.")
    else:
        try:
            section = SECTIONS[kind].builder(run)
        except KeyError as error:  # a field the section requires: say which, and where it was looked for
            raise ValueError(f"the {kind!r} report section needs {error} in the run {str(run.path)!r} "
                             "(metrics.json, config.json or audit.json), which has none: was the run written by "
                             "another version of veneer?") from error
    rest = run.rest()
    if rest is not None:
        section.sections.append(rest)
    return section


def __getattr__(name: str) -> Any:
    """``BUILDERS`` and ``TITLES``, the tables this module had before the registry: deprecated views of it."""
    views = {"BUILDERS": lambda entry: entry.builder, "TITLES": lambda entry: entry.title}
    if name in views:
        warnings.warn(f"veneer.report.html.{name} is deprecated: use veneer.report.registered_sections() (kind -> "
                      "SectionBuilder(builder, title)) and veneer.report.register_section", DeprecationWarning,
                      stacklevel=2)
        return {kind: views[name](entry) for kind, entry in SECTIONS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------- what was run
def _command_line(config: dict[str, Any], applies: set[str] | None = None) -> str:
    """The command, rebuilt from the recorded arguments (defaults included; only those in ``applies`` when the
    section said which apply to its kind of run)."""
    if not config.get("command"):
        return ""
    words = ["veneer", str(config["command"])]
    if config.get("action"):
        words.append(str(config["action"]))
    for key, value in config.items():
        if key in ("command", "action", "run", "no_report") or value is None or value is False:
            continue
        if applies is not None and key not in applies:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(words)


def _about(run: Run, kind: str) -> list[tuple[str, str]]:
    c = run.config if run.applies is None else {k: v for k, v in run.config.items()
                                                  if k in run.applies or k in ("command", "action")}
    rows = [("command", _command_line(c, run.applies) or kind)]
    model = c.get("model") or c.get("original")
    if model:
        rows.append(("model", str(model) + (f" (weights {c['weights']})" if c.get("weights") else "")
                     + (f", manipulated: {c['manipulated']}" if c.get("manipulated") else "")))
    if c.get("data"):
        details = ", ".join(f"{k} {fmt(c[k])}" for k in ("split", "n") if c.get(k) is not None)
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
    kind = run.kind
    body = build_section(run, kind)
    files, more_files = _files(path)
    template = "audit.html" if kind == "audit" and "verdict" in body.extra else "report.html"
    return _environment().get_template(template).render(
        title=section_title(kind), kind=kind, name=path.resolve().name, about=_about(run, kind),
        body=body, problems=run.problems, files=files, more_files=more_files,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) from what the directory holds; return its path."""
    html = render_report(run_dir)
    target = Path(run_dir) / REPORT_NAME
    atomic_write_bytes(target, html.encode())
    return target
