"""Figures and tables written into run directories."""

from veneer.report.figures import explanation_grid, save_figure

__all__ = ["explanation_grid", "save_figure"]
