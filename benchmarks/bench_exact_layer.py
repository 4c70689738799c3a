"""One layer at exact sizes vs the same command scaled, side by side: ``syncviz check``
as a user runs it, for the faithful and the corrected synchronizer.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_exact_layer.py``
(``--runs N``, default 5; ``--preset``/``--src-tp``/``--dst-tp``/``--layers`` pick
another case; ``--before PATH`` also times the exact runs of another checkout, e.g.
the previous commit, in the same loop). Each run is a fresh ``python -m syncviz
check`` process, so start-up (importing torch) counts; its wall time and peak
resident memory (the child's own, from ``wait4``) are taken, runs of the cases
interleave so load drifts hit all of them alike, and the p50 of each case is
printed with its ratio to the scaled run of the same synchronizer. Issue 13's
target for the exact runs: under 2 s and 1 GiB.

>>> argv("corrected", scaled=True, preset="llama3-8b", src=2, dst=4, layers="0")[-5:]
['--layers', '0', '--synchronizer', 'corrected', '--scaled']
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SYNCS = ("chatlearn", "corrected")  # the faithful port (the default) and the fixed one
TARGET_S, TARGET_GIB = 2.0, 1.0


def argv(sync: str, *, scaled: bool, preset: str, src: int, dst: int, layers: str) -> list[str]:
    """The ``syncviz check`` command line of one case."""
    cmd = [sys.executable, "-m", "syncviz", "check", "--preset", preset]
    cmd += ["--src-tp", str(src), "--dst-tp", str(dst), "--layers", layers]
    cmd += ["--synchronizer", sync]
    return cmd + (["--scaled"] if scaled else [])


def run_once(cmd: list[str], root: str) -> tuple[float, float, int, float]:
    """(wall s, peak RSS GiB, exit code, CPU s) of one fresh process importing ``root``.

    CPU time (user + system) is what the process itself spent: on a loaded machine
    it stays near the idle wall time while the wall time grows."""
    env = {**os.environ, "PYTHONPATH": root}
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=root
    )  # cwd too: python -m puts it first on sys.path
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 2**20, proc.returncode, cpu  # KiB -> GiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--preset", default="llama3-8b")
    parser.add_argument("--src-tp", type=int, default=2)
    parser.add_argument("--dst-tp", type=int, default=4)
    parser.add_argument("--layers", default="0")
    parser.add_argument("--before", help="another checkout whose exact runs are timed too")
    args = parser.parse_args()
    where = dict(preset=args.preset, src=args.src_tp, dst=args.dst_tp, layers=args.layers)
    here = str(Path(__file__).parents[1])
    cases = [(sync, scaled) for sync in SYNCS for scaled in (True, False)]
    samples: dict[tuple[str, bool], list[tuple]] = {c: [] for c in cases}
    before: dict[str, list[tuple]] = {sync: [] for sync in SYNCS}
    for _ in range(args.runs):
        for sync, scaled in cases:
            samples[(sync, scaled)].append(run_once(argv(sync, scaled=scaled, **where), here))
            if args.before and not scaled:
                before[sync].append(run_once(argv(sync, scaled=False, **where), args.before))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.runs} runs per case, p50 shown")
    print(f"syncviz check --preset {args.preset} --src-tp {args.src_tp} --dst-tp {args.dst_tp}"
          f" --layers {args.layers} --synchronizer S [--scaled]\n")  # fmt: skip
    print(
        "| synchronizer | sizes | wall s p50 (min-max) | CPU s p50 | peak RSS GiB p50 | exit"
        " | wall vs scaled |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for sync, scaled in cases:
        walls = [w for w, *_ in samples[(sync, scaled)]]
        rss = statistics.median(r for _, r, *_ in samples[(sync, scaled)])
        codes = sorted({c for _, _, c, _ in samples[(sync, scaled)]})
        base = statistics.median(w for w, *_ in samples[(sync, True)])
        cpu = statistics.median(c[3] for c in samples[(sync, scaled)])
        wall = statistics.median(walls)
        ratio = "1.00x" if scaled else f"{wall / base:.2f}x"
        print(
            f"| {sync} | {'scaled' if scaled else 'exact'} | {wall:.2f} ({min(walls):.2f}-"
            f"{max(walls):.2f}) | {cpu:.2f} | {rss:.2f} | {','.join(map(str, codes))} | {ratio} |"
        )
        if before[sync] and not scaled:
            old = [w for w, *_ in before[sync]]
            old_rss = statistics.median(r for _, r, *_ in before[sync])
            old_cpu = statistics.median(c[3] for c in before[sync])
            print(
                f"| {sync} | exact, {args.before} | {statistics.median(old):.2f} ({min(old):.2f}-"
                f"{max(old):.2f}) | {old_cpu:.2f} | {old_rss:.2f} | - |"
                f" {statistics.median(old) / base:.2f}x |"
            )
    for sync in SYNCS:
        wall = statistics.median(w for w, *_ in samples[(sync, False)])
        cpu = statistics.median(c[3] for c in samples[(sync, False)])
        rss = statistics.median(r for _, r, *_ in samples[(sync, False)])
        met = wall < TARGET_S and rss < TARGET_GIB
        print(
            f"\n{sync} exact: {wall:.2f} s wall ({cpu:.2f} s CPU), {rss:.2f} GiB (target <"
            f" {TARGET_S} s, < {TARGET_GIB} GiB): {'met' if met else 'NOT met'}",
            end="",
        )
    print()


if __name__ == "__main__":
    main()
