"""How fast the command line answers when it has nothing heavy to do.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_cli_startup.py``
(``--runs N``, default 15). Each command runs in a fresh interpreter, the three in
rotating order, and the medians are printed beside a bare ``python -c pass`` so the
ratio says what syncviz adds to Python's own start-up. Target (issue 12): ``--help``
and ``presets`` well under one second; neither imports torch.

>>> round(median_seconds([sys.executable, "-c", "pass"], runs=1), 0) >= 0
True
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "syncviz --help": [sys.executable, "-m", "syncviz", "--help"],
    "syncviz presets": [sys.executable, "-m", "syncviz", "presets"],
}


def median_seconds(argv: list[str], runs: int) -> float:
    """Median wall time of ``argv`` over ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="processes per command")
    runs = parser.parse_args().runs
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):  # rotate so a busy moment hits every command alike
        for name, argv in COMMANDS.items():
            samples[name].append(median_seconds(argv, 1))
    base = statistics.median(samples["python -c pass"])
    print(f"| command | median s ({runs} runs) | ratio to python -c pass |")
    print("|---|---|---|")
    for name, times in samples.items():
        value = statistics.median(times)
        print(f"| `{name}` | {value:.3f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
