"""A whole DeepSeek-V3 exact check (corrected), timed beside llama3-70b's whole model.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_deepseek_check.py``.
Each case is a fresh process running what ``syncviz check`` runs (``run_sync`` with
symbolic ids at the true sizes, then ``check``), so each peak resident memory is that
case's own and start-up costs count on both sides. CPU s is the process's CPU time (all
threads): on a busy shared machine it says what the run costs when wall time does not.

Cases: llama3-70b (80 layers) trainer tp 8 -> vLLM tp 16, and DeepSeek-V3 (61 layers:
3 dense, 58 MoE with 256 routed experts, a shared expert and the router bias; MLA with
the low-rank query) trainer tp 2 ep 8 -> vLLM tp 8 (a Megatron DeepSeek-V3 layout: small
tp, experts over ep). Targets for DeepSeek-V3: at most 60 s and 2 GiB on the 2-core
machine, exit 0 (an exact OK). ``--heavy`` adds trainer tp 8 ep 8: the routed experts'
all-gather then runs over a group of 64 ranks, each making 64 buffers per expert tensor,
so its cost grows with (tp * ep)^2. The machine's load average is printed at the start
and the end (the machine is shared: wall time follows the load, CPU s much less).

>>> [c[0] for c in CASES]
['llama3-70b exact', 'deepseek-v3 exact']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.bench_exact import run_case

# bench_exact's cases (label, preset, src tp, src ep, dst tp, then how), timed by its child
# process; every one the corrected synchronizer, exact sizes, the whole model.
_HOW = ("corrected", "exact", "all")
CASES = [
    ("llama3-70b exact", "llama3-70b", 8, 1, 16, *_HOW),
    ("deepseek-v3 exact", "deepseek-v3", 2, 8, 8, *_HOW),
]
HEAVY = ("deepseek-v3 exact, trainer tp 8 ep 8", "deepseek-v3", 8, 8, 8, *_HOW)
TARGET_S, TARGET_GIB = 60.0, 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heavy", action="store_true", help="add trainer tp 8 ep 8")
    args = parser.parse_args()
    import syncviz

    print(f"syncviz from {Path(syncviz.__file__).parent}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    rows = [(c, run_case(c)) for c in CASES + ([HEAVY] if args.heavy else [])]
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print("\n| case | params | wall s | of which sync s | CPU s | peak RSS GiB | verdict |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for case, r in rows:
        verdict = "OK" if r["ok"] else "MISMATCH " + json.dumps(r["counts"])
        print(
            f"| {case[0]} | {r['params']} | {r['wall_s']:.1f} | {r['sync_s']:.1f} |"
            f" {r['cpu_s']:.1f} | {r['rss_gib']:.2f} | {verdict} |"
        )
    llama, deepseek = rows[0][1], rows[1][1]
    print(
        f"\ndeepseek-v3 / llama3-70b: wall {deepseek['wall_s'] / llama['wall_s']:.2f}x,"
        f" peak RSS {deepseek['rss_gib'] / llama['rss_gib']:.2f}x"
    )
    met = deepseek["ok"] and deepseek["wall_s"] <= TARGET_S and deepseek["rss_gib"] <= TARGET_GIB
    verdict = "met" if met else "MISSED"
    print(f"targets (<= {TARGET_S:.0f} s, <= {TARGET_GIB:.0f} GiB, OK): {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
