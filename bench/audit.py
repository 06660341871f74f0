"""Cost of ``veneer audit --effort fast`` on the bundled MNIST CNN, as a user runs it (the CLI in a subprocess).

There is no reference implementation to divide by: an audit is veneer's own. This records what a user pays: wall
time, CPU seconds (user + system of the audit process, ``resource.getrusage(RUSAGE_CHILDREN)``, what
``/usr/bin/time -v`` reports) and its share of the cores, the clean twins' cost (training them and running every
test on them: ``calibration_cost.seconds`` of ``audit.json``) and the wall seconds of each test on the audited model
(``seconds_per_test``). ``--repeats`` audits in a row with the same seed; the figures are the run with the median
wall time. The threads are set with ``OMP_NUM_THREADS``.

Writes the rows to ``bench/results/audit.json``, which BENCHMARKS.md cites.
``python bench/audit.py [--threads 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import machine, write_results

COMMAND = ["-m", "veneer", "audit", "--model", "mnist-cnn", "--data", "mnist", "--effort", "fast", "--seed", "0",
           "--no-report"]


def audit_once(threads: int) -> dict:
    """One audit in a fresh process: wall and CPU seconds, the twins' seconds and each test's seconds."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "audit"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, *COMMAND, "--out", str(out)], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        found = json.loads((out / "audit.json").read_text())
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    config = found["config"]
    return {"wall_s": wall, "user_s": user, "system_s": system, "cpu_share": (user + system) / wall,
            "twins_s": config["calibration_cost"]["seconds"], "twins": config["calibration_cost"]["twins"]["count"],
            "samples": config["samples"], "methods": len(config["methods"]), "verdict": found["verdict"],
            "seconds_per_test": config["seconds_per_test"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    started = machine()
    runs = [audit_once(options.threads) for _ in range(options.repeats)]
    median = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
    rows = [{"test": name, "seconds": seconds} for name, seconds in median["seconds_per_test"].items()]
    for run in runs:
        print(f"wall {run['wall_s']:.1f} s, CPU {run['user_s'] + run['system_s']:.1f} s "
              f"({100 * run['cpu_share']:.0f}%), twins {run['twins_s']:.1f} s, verdict {run['verdict']}")
    for row in rows:
        print(f"  {row['test']}: {row['seconds']:.2f} s")
    write_results("audit", {"threads": options.threads, "repeats": options.repeats, "statistic": "median wall",
                            "command": "veneer " + " ".join(COMMAND[2:])},
                  rows, started, median={k: v for k, v in median.items() if k != "seconds_per_test"},
                  walls=[run["wall_s"] for run in runs])


if __name__ == "__main__":
    main()
