"""`syncviz render` at real sizes: today's path (ids kept as maps, drawn from the maps) beside
the materialized path it replaces (every id a float64, the diagram read element by element,
the steps replayed eagerly), each in its own process, wall time and peak resident memory
from /usr/bin/time.

    python benchmarks/bench_render_exact.py            # the three cases below
    python benchmarks/bench_render_exact.py --new-only # skip the materialized path

A materialized run that cannot fit is refused by its memory estimate before it allocates
(run.memory.check_memory); the table then says so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("llama3-8b", 1, 2, "o_proj"),
    ("llama3-8b", 1, 2, "qkv"),
    ("llama3-70b", 8, 16, "qkv"),
]
OLD = """
import sys
from syncviz import Parallel, preset
from syncviz.check import check
from syncviz.cli.render import resolve_param
from syncviz.diagram import layout_diagram, render
from syncviz.journey import param_steps
from syncviz.run.inprocess import run_sync
name, s, d, param, out = sys.argv[1:]
result = run_sync(preset(name), Parallel(tp=int(s)), Parallel(tp=int(d)), layers=[0])
key = resolve_param(result.plan.layout.keys(), param)
d = layout_diagram(result, key, check(result), steps=param_steps(result, key))
render(d).save(out)
print(out)
"""


def timed(argv: list[str]) -> tuple[str, str]:
    """(wall s and peak RSS, or why it stopped) of one process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as stats:
        done = subprocess.run(
            ["/usr/bin/time", "-o", stats.name, "-f", "%e %M", *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        wall, kib = stats.read().split()[-2:]
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"exit {done.returncode} after {float(wall):.1f} s", last[:140]
    return f"{float(wall):.1f} s, {int(kib) / 2**20:.2f} GiB", done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, s, d, param in CASES:
            out = str(Path(tmp) / f"{name}-{param}.png")
            sizes = ["--src-tp", str(s), "--dst-tp", str(d)]
            argv = [sys.executable, "-m", "syncviz", "render", "--preset", name, *sizes]
            argv += ["--param", param, "-o", out]
            new, said = timed(argv)
            print(f"{name} {s}->{d} {param}: new {new}  [{said[:100]}]", flush=True)
            if not args.new_only:
                old, said = timed([sys.executable, "-c", OLD, name, str(s), str(d), param, out])
                print(f"{name} {s}->{d} {param}: old {old}  [{said[:100]}]", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
