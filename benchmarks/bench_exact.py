"""Exact sizes with symbolic provenance vs today's scaled check, measured side by side.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_exact.py``
(``--quick`` skips the 405B case). Every case is a fresh process running what
``syncviz check`` runs (``run_sync`` with tracing, then ``check``), so each
peak resident memory is that case's own and start-up costs count on both sides.

Cases (issue 13):

1. whole-model llama3-70b s=8 -> d=16, corrected: scaled (materialized ids,
   today's default) vs exact (symbolic ids). Targets: exact <= 3x scaled time,
   exact peak RSS <= 2 GiB, exit 0.
2. the faithful port on the same exact sizes, layer 0 (it must find wrong blocks;
   describing its wrong rows at real sizes is the slow part, see the README).
3. llama3-8b s=2 -> d=4 layer 0, exact (was 44 s / 11.3 GB materialized).
4. qwen2-57b-a14b s=2 ep=2 -> d=4, exact, corrected, whole model.
5. Llama-3.1-405B s=8 -> d=16, exact, corrected, whole model.

>>> case_argv(CASES[0])[-3:]
['corrected', 'scaled', 'all']
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# (label, preset, s, ep, d, synchronizer, sizes, layers)
CASES = [
    ("llama3-70b scaled (today)", "llama3-70b", 8, 1, 16, "corrected", "scaled", "all"),
    ("llama3-70b exact", "llama3-70b", 8, 1, 16, "corrected", "exact", "all"),
    ("llama3-70b exact layer 0, faithful", "llama3-70b", 8, 1, 16, "chatlearn", "exact", "0"),
    ("llama3-8b exact layer 0", "llama3-8b", 2, 1, 4, "corrected", "exact", "0"),
    ("llama3-8b exact layer 0, faithful", "llama3-8b", 2, 1, 4, "chatlearn", "exact", "0"),
    ("qwen2-57b-a14b exact", "qwen2-57b-a14b", 2, 2, 4, "corrected", "exact", "all"),
    ("llama3.1-405b exact", "llama3.1-405b", 8, 1, 16, "corrected", "exact", "all"),
]
TARGET_RATIO, TARGET_GIB = 3.0, 2.0


def case_argv(case) -> list[str]:
    _, name, s, ep, d, sync, sizes, layers = case
    return [name, str(s), str(ep), str(d), sync, sizes, layers]


def _child(name: str, s: str, ep: str, d: str, sync: str, sizes: str, layers: str) -> None:
    """One case in this process: print wall, CPU and sync time, peak RSS and the verdict
    as JSON."""
    start, cpu = time.perf_counter(), time.process_time()
    from syncviz import Parallel, preset
    from syncviz.check import check
    from syncviz.run.inprocess import run_sync

    spec = preset(name)
    src, dst = Parallel(tp=int(s), ep=int(ep)), Parallel(tp=int(d))
    if sizes == "scaled":
        spec = spec.scaled(src, dst)
    result = run_sync(
        spec,
        src,
        dst,
        synchronizer=sync,
        layers=None if layers == "all" else [int(x) for x in layers.split(",")],
        provenance="materialized" if sizes == "scaled" else "symbolic",
    )
    synced = time.perf_counter() - start
    report = check(result, sync)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    wrong = [p for p in report.bad()]
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": time.process_time() - cpu,
                "sync_s": synced,
                "rss_gib": rss,
                "ok": report.ok,
                "params": len(result.plan.layout),
                "counts": report.counts(),
                "first_problem": (wrong[0].lines() or [""])[0].strip()[:160] if wrong else "",
            }
        )
    )


def run_case(case) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *case_argv(case)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 405B case")
    parser.add_argument("--child", nargs=7, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    import syncviz

    print(f"syncviz from {Path(syncviz.__file__).parent}")
    cases = [c for c in CASES if not (args.quick and "405b" in c[1])]
    rows = [(c, run_case(c)) for c in cases]
    print("\n| case | wall s | peak RSS GiB | verdict | first problem |")
    print("|---|---:|---:|---|---|")
    for case, r in rows:
        verdict = "OK" if r["ok"] else "MISMATCH " + json.dumps(r["counts"])
        print(
            f"| {case[0]} | {r['wall_s']:.1f} | {r['rss_gib']:.2f} | {verdict} |"
            f" {r['first_problem']} |"
        )
    scaled, exact = rows[0][1], rows[1][1]
    ratio = exact["wall_s"] / scaled["wall_s"]
    print(
        f"\nllama3-70b whole model: exact / scaled wall time = {ratio:.2f}x"
        f" (target <= {TARGET_RATIO}x): {'met' if ratio <= TARGET_RATIO else 'NOT met'};"
        f" exact peak RSS {exact['rss_gib']:.2f} GiB (target <= {TARGET_GIB}):"
        f" {'met' if exact['rss_gib'] <= TARGET_GIB else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
