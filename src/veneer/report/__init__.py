"""Figures and tables written into run directories."""

from veneer.report.figures import explanation_grid, save_figure
from veneer.report.html import render_report, write_report

__all__ = ["explanation_grid", "save_figure", "render_report", "write_report"]
