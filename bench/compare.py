"""Before and after: run benches in two checkouts, alternating, and print each figure's median and spread.

    .venv/bin/python bench/compare.py --before ../before --after . [--rounds 3] [--out var/compare]
                                      bench_booking.py bench_engine.py "bench_slots.py --appointments 20000"

Each round runs every bench once in `--before`, then once in `--after` (so a change in the machine's
load hits both alike), each in its own checkout with this interpreter. A bench prints tables: a line
is a label followed by numbers. Lines with the same label and the same count of numbers are the same
figure across runs; for each one this prints, per checkout, the median and the min–max of the rounds
(a number that is the same in every run on both sides is taken for a parameter and left out).
Every run's whole output is kept in `--out` (the numbers here are only what the tables say: read the
bench's own notes there, e.g. which figures count only 2xx answers).
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def figures(output: str) -> dict[str, list[float]]:
    """label -> the numbers on its line (first occurrence of each label)."""
    found: dict[str, list[float]] = {}
    for line in output.splitlines():
        numbers = NUMBER.findall(line)
        if not numbers:
            continue
        label = " ".join(NUMBER.sub("#", line).split())
        found.setdefault(label, [float(n) for n in numbers])
    return found


def run(checkout: Path, bench: str, timeout_s: float) -> str:
    script, *args = shlex.split(bench)
    command = [sys.executable, str(checkout / "bench" / script), *args]
    try:
        done = subprocess.run(
            command, cwd=checkout, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return f"TIMEOUT after {timeout_s:.0f} s"
    return done.stdout + (f"\n[exit {done.returncode}]\n{done.stderr[-2000:]}" if done.returncode else "")


def spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):g} [{min(values):g}–{max(values):g}]"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("var/compare"))
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("benches", nargs="+")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    # (bench, side) -> label -> one list of values per column
    seen: dict[tuple[str, str], dict[str, list[list[float]]]] = defaultdict(dict)
    for round_no in range(1, args.rounds + 1):
        for bench in args.benches:
            for side, checkout in sides.items():
                output = run(checkout, bench, args.timeout)
                name = re.sub(r"\W+", "_", bench).strip("_")
                (args.out / f"{name}.{side}.{round_no}.txt").write_text(output)
                for label, numbers in figures(output).items():
                    columns = seen[(bench, side)].setdefault(label, [[] for _ in numbers])
                    if len(columns) == len(numbers):
                        for column, value in zip(columns, numbers, strict=True):
                            column.append(value)
                print(f"round {round_no}: {bench} ({side}) done", file=sys.stderr, flush=True)
    for bench in args.benches:
        print(f"\n## {bench}: {args.rounds} rounds, median [min–max], before → after")
        labels = dict.fromkeys([*seen[(bench, "before")], *seen[(bench, "after")]])
        for label in labels:
            before = seen[(bench, "before")].get(label, [])
            after = seen[(bench, "after")].get(label, [])
            cells = []
            for n in range(max(len(before), len(after))):
                b = before[n] if n < len(before) else []
                a = after[n] if n < len(after) else []
                if len(set(b) | set(a)) == 1:  # the same constant everywhere: a parameter, not a result
                    continue
                cells.append(f"{spread(b)} → {spread(a)}")
            if cells:
                print(f"{label[:60]:60} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
