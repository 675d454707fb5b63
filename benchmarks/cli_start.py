"""Seconds until `deepcluster` answers `--help` and option or recipe errors, and whether it
imported Keras or TensorFlow to do so.

Each command runs as a fresh process (the installed `deepcluster` script), once to warm
the file cache and then `--repeats` times; the median wall time is reported. A second
run of each, with Python's import-time report (``PYTHONPROFILEIMPORTTIME``), records which of
keras/tensorflow ended up imported.

    python benchmarks/cli_start.py --out docs/benchmarks/cli_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    "--help",
    "train --help",
    "show --help",
    "export --help",
    "select --help",
    "recipes",
    "train no_such_recipe",
    "train digits --clusters 0",
    "train digits --no-such-option",
)


def seconds(command: list[str], repeats: int) -> float:
    subprocess.run(command, capture_output=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported(command: list[str]) -> list[str]:
    """Which of keras and tensorflow `command` imported (from Python's import-time report)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    report = subprocess.run(command, capture_output=True, text=True, env=env).stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in report.splitlines() if "|" in line}
    return [name for name in ("keras", "tensorflow") if name in modules]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    script = str(Path(sys.executable).with_name("deepcluster"))
    rows = []
    for command in COMMANDS:
        arguments = command.split()
        row = {
            "command": f"deepcluster {command}",
            "seconds": round(seconds([script, *arguments], args.repeats), 3),
            "imported": imported([script, *arguments]),
        }
        rows.append(row)
        print(f"{row['command']:<40} {row['seconds']:6.2f} s  imported: {row['imported']}")
    if args.out:
        result = {"machine": cpu_name(), "rows": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
