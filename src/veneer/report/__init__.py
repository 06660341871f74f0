"""Figures and tables written into run directories, and the self-contained ``report.html`` of every run, laid
out by the report section registered for its kind (:func:`register_section`)."""

from veneer.report.figures import explanation_grid, save_figure
from veneer.report.html import render_report, write_report
from veneer.report.page import (Card, Figure, Run, Section, SectionBuilder, Table, fmt, pct, register_section,
                                registered_sections, run_kind, unregister_section)

__all__ = ["explanation_grid", "save_figure", "render_report", "write_report", "Card", "Figure", "Run", "Section",
           "SectionBuilder", "Table", "fmt", "pct", "register_section", "registered_sections", "run_kind",
           "unregister_section"]
