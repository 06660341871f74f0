"""The page model of ``report.html`` and the registry of report sections (one per run kind).

A run directory is read into a :class:`Run` (its config, metrics, audit.json and files); a *section builder*
``builder(run) -> Section`` lays it out as :class:`Card` (headline figures), :class:`Figure`,
:class:`Table` and nested :class:`Section` objects, which :mod:`veneer.report.html` renders. Every built-in run
kind registers its builder with :func:`register_section` next to the module that draws its figures
(``report/attacks.py``, ``report/neurons.py``, ...); a user registers a new kind the same way::

    from veneer.report import Card, Section, pct, register_section

    def my_section(run):
        section = Section("My experiment", cards=[Card("accuracy", pct(run.metrics["accuracy"]))])
        section.figures += run.figure("curve.png", "What the curve shows.")
        return section

    register_section("my-kind", my_section, title="My experiment")

and every run directory whose ``metrics.json`` says ``"kind": "my-kind"`` gets that section.
A builder reads the metrics it needs strictly (``run.metrics["key"]``): a renamed key fails loudly instead of
degrading the page.
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

from veneer.report.figures import plt

__all__ = ["Card", "Figure", "Table", "Section", "Run", "SectionBuilder", "register_section",
           "unregister_section", "registered_sections", "section_title", "run_kind", "fmt", "pct", "arrow", "tone",
           "inline_figure", "budget_cards", "history_chart", "flatten", "key_values", "records_table", "REPORT_NAME",
           "GENERIC"]

REPORT_NAME = "report.html"
GENERIC = "generic"  # the kind of a run directory that names neither its kind nor its command
MAX_ROWS = 15  # table rows shown inline; the whole table is one link away
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
    """A figure shown inline: ``src`` is a ``data:`` URI (see :meth:`Run.figure`, :func:`inline_figure`)."""

    name: str
    src: str
    caption: str = ""
    href: str = ""
    size: str = ""  # "" (full width) or "half" (two in a row)


@dataclass
class Table:
    """A table: column names and rows of cell texts."""

    name: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    note: str = ""
    href: str = ""


@dataclass
class Section:
    """A part of the page: text paragraphs, headline cards, figures, tables and nested sections."""

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


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys and leaf values of nested dicts (lists stay leaves)."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in flatten(inner, f"{prefix}{key}.")]
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
    """What a run directory holds, as a section builder reads it: ``config`` (the recorded arguments),
    ``metrics`` (``metrics.json``, or the ``metrics`` given), ``audit`` (``audit.json`` or None), ``seed``,
    ``versions``, ``files``, ``kind`` (:func:`run_kind`). :meth:`figure`, :meth:`figures` and :meth:`table`
    hand out each file once, so the page can list the rest (:meth:`rest`)."""

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
        self.has_metrics = isinstance(self.metrics, dict)  # False: no (readable) metrics.json, an unfinished run
        if not self.has_metrics:
            self.metrics = {}
        self.audit = stored["audit"] if isinstance(stored["audit"], dict) else None
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
        self.files = [p for p in files if p.name != REPORT_NAME and not p.name.startswith(".")]
        self.used: set[str] = set()
        # The config keys that apply to this kind of run (None: all); a section builder may narrow them, so
        # that "What was run" leaves out settings the command recorded but did not use.
        self.applies: set[str] | None = None

    @property
    def kind(self) -> str:
        """``metrics.json``'s ``"kind"``; for runs written before it was recorded, the command of ``config.json``
        (``config.action`` for ``neurons``, ``config.sweep`` for ``attack-input``, ``config.objective``
        ``scaffolding`` for ``manipulate``); :data:`GENERIC` when neither says."""
        kind = self.metrics.get("kind")
        if isinstance(kind, str) and kind:
            return kind
        command = self.config.get("command")
        if not command:
            return GENERIC
        if command == "neurons" and self.config.get("action"):
            return f"neurons {self.config['action']}"
        if command == "attack-input":
            return "attack-input sweep" if self.config.get("sweep") else "attack-input"
        if command == "manipulate" and self.config.get("objective") == "scaffolding":
            return "scaffolding"
        return str(command)

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
    return [inline_figure(fig, name, caption, href)]


def inline_figure(fig, name: str, caption: str = "", href: str = "", size: str = "") -> Figure:
    """A matplotlib figure as an inline PNG :class:`Figure` (the figure is closed)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Figure(name, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), caption, href, size)


def key_values(title: str, pairs: list[tuple[str, Any]], caption: str = "") -> Table:
    return Table(title, ["name", "value"], [[key, fmt(value)] for key, value in pairs], caption)


def records_table(title: str, records: list[dict[str, Any]], caption: str = "") -> Table:
    columns = list(dict.fromkeys(key for row in records for key in row))
    return Table(title, columns, [[fmt(row.get(c)) for c in columns] for row in records], caption)


def tone(value: Any, bad: float, warn: float, low_is_bad: bool = True) -> str:
    """"bad" when the value is at or below ``bad`` (above, when not ``low_is_bad``), "warn" up to ``warn``."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return ""
    if not low_is_bad:
        value, bad, warn = -value, -bad, -warn
    return "bad" if value <= bad else "warn" if value <= warn else "good"




def budget_cards(metrics: dict[str, Any]) -> list[Card]:
    """The behaviour budget of a fine-tuning run (:class:`veneer.finetune.BehaviourBudget`): its minimum
    agreement with the original model's labels and the iterate it kept, from ``metrics["budget"]`` (``None``:
    no budget, the last iterate is the result). Runs written before the budget was recorded show nothing."""
    if "budget" not in metrics:
        return []
    budget = metrics["budget"]
    if budget is None:
        return [Card("behaviour budget", "none", "no agreement constraint: the last iterate is the result")]
    return [Card("behaviour budget: min agreement", pct(budget["min_agreement"]),
                 "with the original model's labels on the validation inputs"),
            Card("best step kept", fmt(budget["best_step"]),
                 f"validation attack loss {fmt(budget['best_val_attack'])}; the lowest among the steps that "
                 f"met the budget")]


# ----------------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class SectionBuilder:
    """A registered report section: ``builder(run) -> Section`` and the page title of its kind."""

    builder: Callable[[Run], Section]
    title: str


SECTIONS: dict[str, SectionBuilder] = {}


def register_section(kind: str, builder: Callable[[Run], Section] | None = None, *, title: str | None = None,
                     replace: bool = False):
    """Lay out every run of ``kind`` (the ``"kind"`` of its ``metrics.json``) with ``builder(run) -> Section``
    under the page title ``title`` (default: the kind, capitalised). Without ``builder`` it returns a decorator.
    A kind registered already is refused unless ``replace`` is true. Returns ``builder``."""
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if kind == GENERIC:
        raise ValueError(f"kind {GENERIC!r} is the page of runs veneer does not know; register another name")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {type(title).__name__}")
    if builder is None:
        return lambda function: register_section(kind, function, title=title, replace=replace)
    if not callable(builder):
        raise TypeError(f"builder must be a callable builder(run) -> Section, got {type(builder).__name__}")
    if kind in SECTIONS and not replace:
        raise ValueError(f"a report section is registered for kind {kind!r} already; pass replace=True to "
                         f"replace it or unregister_section({kind!r}) first")
    SECTIONS[kind] = SectionBuilder(builder, title if title is not None else kind.capitalize())
    return builder


def unregister_section(kind: str) -> SectionBuilder:
    """Remove the section registered for ``kind``; return it."""
    if kind not in SECTIONS:
        raise ValueError(f"no report section is registered for kind {kind!r}; registered: {sorted(SECTIONS)}")
    return SECTIONS.pop(kind)


def registered_sections() -> dict[str, SectionBuilder]:
    """Every registered kind with its section (a copy)."""
    return dict(SECTIONS)


def section_title(kind: str) -> str:
    """The page title of ``kind``: its registered title, "Run" for :data:`GENERIC`, else the kind capitalised."""
    if kind in SECTIONS:
        return SECTIONS[kind].title
    return "Run" if kind == GENERIC else kind.capitalize()


def run_kind(path: str | os.PathLike) -> str:
    """The kind of the run in ``path`` (see :attr:`Run.kind`)."""
    return Run(Path(path), Path(path)).kind
