"""gpt-oss-20b exact checks with interleaved expert rows, the periodic fold off and on.

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_gpt_oss_check.py``
(``--whole`` adds the whole model under destination EP 4, round_robin). Each case runs
twice, each time in a fresh process running ``syncviz check ... --json``: once as the
package does (a flat map of many regions that repeat with a period is kept as rows of it,
:func:`syncviz.provenance.regions._folded`) and once with that fold switched off
(``FOLD_MIN`` past any map), the way maps were kept before it. CPU s is the child's CPU
time (all threads), peak RSS its own ``ru_maxrss``; on the busy shared machine CPU time
says what a run costs when wall time does not. The two runs' JSON reports are hashed: the
fold changes how maps are kept, never what the report says, so the hashes must be equal.

>>> [c[0] for c in CASES]
['layer 0, dst tp 4', 'layer 0, dst tp 4 ep 4']
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

_BASE = ("check", "--preset", "gpt-oss-20b", "--src-tp", "2", "--src-ep", "4", "--dst-tp", "4")
_HOW = ("--synchronizer", "corrected", "--json")
CASES = [
    ("layer 0, dst tp 4", (*_BASE, "--layers", "0", *_HOW)),
    ("layer 0, dst tp 4 ep 4", (*_BASE, "--layers", "0", "--dst-ep", "4", *_HOW)),
]
WHOLE = (
    "whole model, dst tp 4 ep 4 round_robin",
    (*_BASE, "--dst-ep", "4", "--dst-expert-placement", "round_robin", *_HOW),
)


def _child(fold: str, argv: list[str]) -> None:
    """One check in this process; prints its costs and the report's hash as JSON."""
    from syncviz.cli import main
    from syncviz.provenance import regions

    if fold == "off":
        regions.FOLD_MIN = sys.maxsize
    out = io.StringIO()
    cpu, wall = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as stop:
            rc = stop.code
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    report = out.getvalue()
    result = {
        "rc": rc,
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "sha256": hashlib.sha256(report.encode()).hexdigest()[:16],
        "statuses": _statuses(report),
    }
    print(json.dumps(result))


def _statuses(report: str) -> dict[str, int]:
    """How many parameters the report gives each status (``ok``, ``wrong``, ...)."""
    counts: dict[str, int] = {}
    for param in json.loads(report)["params"] if report.startswith("{") else []:
        counts[param["status"]] = counts.get(param["status"], 0) + 1
    return counts


def run_case(argv: tuple[str, ...], fold: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", fold, *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    )
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"child failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--whole", action="store_true", help="add the whole model, dst ep 4")
    args = parser.parse_args()
    import syncviz

    print(f"syncviz from {Path(syncviz.__file__).parent}")
    print("\n| case | fold | exit | CPU s | wall s | peak RSS GiB | params | report sha256 |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    same = True
    for label, argv in CASES + ([WHOLE] if args.whole else []):
        runs = {fold: run_case(argv, fold) for fold in ("off", "on")}
        for fold, r in runs.items():
            print(
                f"| {label} | {fold} | {r['rc']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} |"
                f" {r['rss_gib']:.2f} | {json.dumps(r['statuses'])} | {r['sha256']} |"
            )
        # A run that failed (exit 2 or 3) proves nothing: it counts as a difference.
        same &= runs["off"]["sha256"] == runs["on"]["sha256"]
        same &= runs["off"]["rc"] == runs["on"]["rc"] and runs["on"]["rc"] in (0, 1)
    print(f"\nreports identical, fold off and on (both runs judged): {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
