"""Ctrl-C and SIGTERM under the ``syncviz`` console script: 130 / 143 and one line, no abort.

The script is written exactly as pip generates it for ``syncviz = "syncviz.cli:main"``.
Each signal goes out at a seeded random moment once the command's handlers are in
place (read from /proc: SIGTERM caught), so what is asserted never depends on the
machine's speed: the exit code and the one line. tests/bad_inputs_table.py replays
many more moments, counted from the start.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncviz.cli.interrupts import checkpoint, handle_signals, running

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--preset", "llama3-70b", "--src-tp", "8", "--dst-tp", "16"]
COMMANDS = {
    "check": ["check", *SIZES],  # the whole model: still running when the signal comes
    "render": ["render", *SIZES, "--param", "qkv", "-o", "signal.png"],
}
CONSOLE_SCRIPT = (
    "# -*- coding: utf-8 -*-\n"
    "import re\n"
    "import sys\n"
    "from syncviz.cli import main\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(main())\n"
)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin") / "syncviz"
    path.write_text(f"#!{sys.executable}\n{CONSOLE_SCRIPT}")
    path.chmod(0o755)
    return path


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _interrupt(cmd: list[str], cwd: Path, sig: int, delay: float):
    """Run ``cmd``, send ``sig`` ``delay`` s after its handlers are in place; (rc, out, err)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not _catches_sigterm(proc.pid):
        assert time.monotonic() < deadline, "the command never installed its handlers"
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "the command ended before the signal was sent"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


MOMENTS = [
    (name, sig, round(random.Random(f"{name}{sig}").uniform(0.0, 1.0), 2))
    for name in COMMANDS
    for sig in (signal.SIGINT, signal.SIGTERM)
]


@pytest.mark.parametrize(("name", "sig", "delay"), MOMENTS)
def test_console_script_ends_130_or_143_with_one_line(script, tmp_path, name, sig, delay):
    """SIGINT / SIGTERM into check or render under the console script: 130 / 143, one line."""
    rc, _, err = _interrupt([str(script), *COMMANDS[name]], tmp_path, sig, delay)
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert "terminate called" not in err and "Traceback" not in err, err[-1000:]
    assert rc == 128 + sig, (rc, err[-1000:])
    assert err.strip().splitlines() == [f"syncviz: {word}"], err[-1000:]


def test_python_m_ends_the_same_way(tmp_path):
    """`python -m syncviz check` interrupted: the same 130 and the same one line."""
    cmd = [sys.executable, "-m", "syncviz", *COMMANDS["check"]]
    rc, _, err = _interrupt(cmd, tmp_path, signal.SIGINT, 0.5)
    assert (rc, err.strip().splitlines()) == (130, ["syncviz: interrupted"]), err[-1000:]


def test_signal_inside_an_import_is_raised_once_the_import_is_done(tmp_path, monkeypatch):
    """A Ctrl-C that comes while a module is imported stops the command after the import."""
    (tmp_path / "slow_start_mod.py").write_text(
        "import signal\nsignal.raise_signal(signal.SIGINT)\ndone = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt), handle_signals(), running():
        importlib.import_module("slow_start_mod")
        end = time.monotonic() + 30
        while time.monotonic() < end:  # the signal comes back from a watcher thread
            time.sleep(0.01)
    assert sys.modules["slow_start_mod"].done is True  # the import itself ran to its end


def test_swallowed_signal_still_stops_the_command():
    """A library that swallows the KeyboardInterrupt does not let the command end as if
    nothing came: the end of the command raises it again."""
    with pytest.raises(KeyboardInterrupt), handle_signals(), running():
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # what torch's start-up does to an exception in its numpy import
    checkpoint()  # nothing left pending afterwards


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_script_starts_ends_it_with_one_line(tmp_path, sig):
    """A signal once syncviz is first imported, before main runs: 130 / 143, one line."""
    script = tmp_path / "syncviz"
    script.write_text(
        f"import os, signal, time\nimport syncviz\nos.kill(os.getpid(), {int(sig)})\n"
        "time.sleep(60)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert (done.returncode, done.stderr.splitlines()) == (128 + sig, [f"syncviz: {word}"])
