"""veneer.progress: a live bar on a terminal, whole lines (no carriage return) in a log."""

from __future__ import annotations

import io

from veneer import progress
from veneer.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_without_carriage_returns(monkeypatch):
    clock = iter(float(t) for t in range(0, 10_000, 3))  # 3 s between two redraws
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    with progress_bar(total=20, desc="fine-tune", stream=log) as bar:
        for _ in range(20):
            bar.update(1)
            bar.set_postfix(loss="0.5")  # forces a redraw on every step
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first state, then one line per LOG_INTERVAL seconds (not one per redraw), then the last state
    assert 2 <= len(lines) <= 2 + 20 * 3 // progress.LOG_INTERVAL + 1 < 21
    assert lines[0].startswith("fine-tune:") and "0/20" in lines[0]
    assert "20/20" in lines[-1] and "loss=0.5" in lines[-1]


def test_a_terminal_keeps_the_live_bar():
    screen = Terminal()
    for _ in progress_bar(range(3), desc="audit", stream=screen):
        pass
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()


def test_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(3), disable=True, stream=log):
        pass
    assert log.getvalue() == ""
