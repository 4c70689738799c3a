"""The table of bad inputs and faults that tests/test_bad_inputs.py runs through syncviz.

Each case is a command line (or, for trace files, the trace loader behind the same
boundary; or a small Python driver for the library's own entry points), the exit
code it must end with, and the words its one-line message must hold (the field it
names). Signal cases run under a console script made exactly like the one pip
generates (``from syncviz.cli import main; sys.exit(main())``) and get SIGINT or
SIGTERM at a seeded random moment: 0.3-2.5 s after they start (half of them), or
0.5-4 s after the command's handlers are in place, into a longer run (the other
half). ``run_table(root)`` runs every case against the syncviz checkout at
``root`` and classifies it, so the same table measures any version:

    python tests/bad_inputs_table.py [ROOT [ID,ID...]]      # prints the counts

Counts: tried / clear / traceback or ``unexpected`` (an abort, a crash by signal) /
hang / silent wrong (exit 0 where it must fail, a forged line, a wrong file) /
orphaned processes (any process of the case still alive 5 s after it ended) /
unclear (wrong code or words). ``SYNCVIZ_SIGNAL_ROUNDS`` (default 4) sets how many
random moments each signal, command pair gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable
# A case still running after this is a hang (SYNCVIZ_HANG_S raises it on a loaded machine).
HANG_S = float(os.environ.get("SYNCVIZ_HANG_S", "90"))
SIGNAL_ROUNDS = int(os.environ.get("SYNCVIZ_SIGNAL_ROUNDS", "4"))
ORPHAN_WAIT_S = 5.0  # a process of the case alive this long after it ended is an orphan

# Exactly what pip writes for `syncviz = "syncviz.cli:main"` (the shebang set per run).
CONSOLE_SCRIPT = (
    "# -*- coding: utf-8 -*-\n"
    "import re\n"
    "import sys\n"
    "from syncviz.cli import main\n"
    "if __name__ == '__main__':\n"
    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "    sys.exit(main())\n"
)

# Library entry points that must refuse what is no rank or layer number (SyncvizError).
LIBRARY_DRIVER = (
    "import sys\n"
    "from syncviz.errors import SyncvizError\n"
    "try:\n"
    "    exec(sys.argv[1])\n"
    "except SyncvizError as err:\n"
    "    print('syncviz: error:', ' '.join(str(err).split()), file=sys.stderr)\n"
    "    sys.exit(2)\n"
)

# Loads a trace file the way a front end does: SyncvizError -> one line, exit 2.
TRACE_DRIVER = (
    "import sys\n"
    "from syncviz.errors import SyncvizError\n"
    "from syncviz.trace.model import SyncTrace\n"
    "try:\n"
    "    SyncTrace.load(sys.argv[1])\n"
    "except SyncvizError as err:\n"
    "    print('syncviz: error:', ' '.join(str(err).split()), file=sys.stderr)\n"
    "    sys.exit(2)\n"
)

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 500,
}
MIXTRAL = {**LLAMA, "architectures": ["MixtralForCausalLM"], "num_local_experts": 4}
QWEN2_MOE = {
    **LLAMA,
    "architectures": ["Qwen2MoeForCausalLM"],
    "num_experts": 4,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 64,
}

SYNC_MODULES = {
    "bad_syntax_sync.py": "class X(:\n    pass\n",
    "raises_sync.py": "raise RuntimeError('boom at import')\n",
    "exits_sync.py": "import sys\nsys.exit(7)\n",
    "plain_sync.py": (
        "from syncviz.sync.megatron_vllm import MegatronVllmLlamaSync\n"
        "class Good(MegatronVllmLlamaSync):\n    pass\n"
        "class NotSync:\n    pass\n"
        "value = 3\n"
    ),
}


@dataclass
class Case:
    """One bad input: its argv (after ``python -m syncviz``), exit code and message words."""

    id: str
    argv: list[str]
    code: int
    words: tuple[str, ...]
    trace: bool = False  # argv[0] is a trace file for TRACE_DRIVER
    fsize_limit: int | None = None  # RLIMIT_FSIZE for the child (EFBIG)
    script: bool = False  # run under the console script instead of `python -m syncviz`
    signal: int | None = None  # sent after `signal_at` seconds
    signal_at: float = 0.0
    signal_from: str = "start"  # or "ready": counted from when SIGTERM is caught (main runs)
    cwd: str | None = None  # the case's own folder (default: the shared scratch folder)
    absent: tuple[str, ...] = ()  # must not be printed (a forged line, an escape, a shadow)
    driver: str | None = None  # Python code run with argv (instead of syncviz)
    after: Callable[[], str | None] | None = None  # once ended: what is wrong, or None


@dataclass
class Outcome:
    case: Case
    rc: int | None
    stderr: str
    stdout: str
    seconds: float
    kind: str = field(default="")  # clear / traceback / hang / silent / orphaned / unclear
    orphans: int = 0  # processes of the case alive ORPHAN_WAIT_S after it ended
    note: str = ""  # why a case is not clear, when the output does not tell


def _config(tmp: Path, name: str, data: object | None = None, text: str | None = None) -> str:
    path = tmp / f"{name}.json"
    path.write_text(text if text is not None else json.dumps(data))
    return str(path)


def build_cases(tmp: Path) -> list[Case]:
    """Write the fixture files under ``tmp`` and return every case."""
    cases: list[Case] = []

    def add(id_: str, argv: list[str], code: int, *words: str, **kw) -> None:
        cases.append(Case(id_, argv, code, words, **kw))

    def layout_cfg(id_: str, data=None, *words: str, text=None, code: int = 2) -> None:
        add(id_, ["layout", "--config", _config(tmp, id_, data, text)], code, *words)

    # ---- configs
    layout_cfg("arch-int", {**LLAMA, "architectures": 5}, "architectures")
    layout_cfg("arch-nested", {**LLAMA, "architectures": [["LlamaForCausalLM"]]}, "architectures")
    no_arch = {k: v for k, v in LLAMA.items() if k != "architectures"}
    layout_cfg("model-type-list", {**no_arch, "model_type": ["llama"]}, "model_type")
    layout_cfg("arch-empty-no-type", {**no_arch, "architectures": []}, "architectures")
    layout_cfg("arch-unknown", {**LLAMA, "architectures": ["GPT2LMHeadModel"]}, "architecture")
    layout_cfg("deep-nesting", None, "nest", text='{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    big = "9" * 5000
    layout_cfg("int-5000-digits", None, "digits", text=json.dumps(LLAMA)[:-1] + f', "x": {big}}}')
    layout_cfg("tie-string-false", {**LLAMA, "tie_word_embeddings": "false"}, "tie_word_embeddings")
    layout_cfg("bias-string-false", {**LLAMA, "attention_bias": "false"}, "attention_bias")
    layout_cfg("tie-int", {**LLAMA, "tie_word_embeddings": 1}, "tie_word_embeddings")
    layout_cfg("qkv-bias-string", {**QWEN2_MOE, "qkv_bias": "true"}, "qkv_bias")
    heads = {**LLAMA, "num_attention_heads": 10**12, "num_key_value_heads": 10**12, "head_dim": 8}
    check_cfg = ["check", "--layers", "0", "--config"]
    add("heads-1e12", [*check_cfg, _config(tmp, "heads", heads)], 2, "num_attention_heads")
    experts = {**MIXTRAL, "num_local_experts": 10**6}
    add("experts-1e6", [*check_cfg, _config(tmp, "experts", experts)], 2, "num_local_experts")
    layout_cfg("layers-1e9", {**LLAMA, "num_hidden_layers": 10**9}, "num_hidden_layers")
    layout_cfg("hidden-1e12", {**LLAMA, "hidden_size": 10**12}, "hidden_size")
    layout_cfg("vocab-1e12", {**LLAMA, "vocab_size": 10**12}, "vocab_size")
    layout_cfg("ffn-1e12", {**LLAMA, "intermediate_size": 10**12}, "intermediate_size")
    layout_cfg("kv-heads-1e12", {**LLAMA, "num_key_value_heads": 10**12}, "num_key_value_heads")
    layout_cfg("head-dim-1e12", {**LLAMA, "head_dim": 10**12}, "head_dim")
    layout_cfg("layers-float", {**LLAMA, "num_hidden_layers": 2.0}, "num_hidden_layers")
    layout_cfg("layers-string", {**LLAMA, "num_hidden_layers": "2"}, "num_hidden_layers")
    layout_cfg("layers-bool", {**LLAMA, "num_hidden_layers": True}, "num_hidden_layers")
    layout_cfg("layers-negative", {**LLAMA, "num_hidden_layers": -1}, "num_hidden_layers")
    layout_cfg("head-dim-string", {**LLAMA, "head_dim": "8"}, "head_dim")
    layout_cfg("kv-not-dividing", {**LLAMA, "num_key_value_heads": 3}, "num_query_groups")
    layout_cfg("hidden-not-divisible", {**LLAMA, "hidden_size": 65}, "hidden_size")
    layout_cfg("vocab-missing", {k: v for k, v in LLAMA.items() if k != "vocab_size"}, "vocab_size")
    layout_cfg(
        "nan-hidden", None, "hidden_size", text=json.dumps(LLAMA)[:-1] + ', "hidden_size": NaN}'
    )
    layout_cfg("moe-experts-zero", {**MIXTRAL, "num_local_experts": 0}, "num_local_experts")
    layout_cfg(
        "sparse-step-string", {**QWEN2_MOE, "decoder_sparse_step": "1"}, "decoder_sparse_step"
    )
    layout_cfg("config-list", [LLAMA], "object")
    layout_cfg("config-not-json", None, "json", text="{not json")
    layout_cfg("config-empty", None, "json", text="")
    (tmp / "latin1.json").write_bytes(b'{"architectures": ["Llama\xe9"]}')
    add("config-not-utf8", ["layout", "--config", str(tmp / "latin1.json")], 2, "utf-8")
    add("config-missing", ["layout", "--config", str(tmp / "nope.json")], 2, "does not exist")
    (tmp / "emptydir").mkdir()
    add("config-dir-empty", ["layout", "--config", str(tmp / "emptydir")], 2, "config")
    with open(tmp / "huge.json", "wb") as fh:  # sparse: costs no disk
        fh.truncate(3 * 2**30)
    add("config-3gib", ["layout", "--config", str(tmp / "huge.json")], 2, "mib")
    # ---- sizes
    pre = ["--preset", "llama3-8b"]
    add("src-tp-zero", ["layout", *pre, "--src-tp", "0"], 2, "tp")
    add("dst-tp-negative", ["layout", *pre, "--dst-tp", "-1"], 2, "tp")
    add("src-tp-word", ["layout", *pre, "--src-tp", "abc"], 2, "--src-tp")
    add("dst-tp-3", ["layout", *pre, "--dst-tp", "3"], 2, "dst tp")
    add("src-pp-zero", ["layout", *pre, "--src-pp", "0"], 2, "pp")
    add("dst-pp-3", ["layout", *pre, "--dst-pp", "3"], 2, "pp")
    add("src-ep-zero", ["layout", *pre, "--src-ep", "0"], 2, "ep")
    add("src-tp-huge", ["layout", *pre, "--src-tp", "9" * 30], 2, "tp")
    add("preset-unknown", ["layout", "--preset", "nope"], 2, "preset")
    chk = ["check", *pre, "--src-tp", "1", "--dst-tp", "2"]
    add("vocab-div-zero", [*chk, "--layers", "0", "--src-vocab-divisible-by", "0"], 2, "divisible")
    add("vocab-div-neg", [*chk, "--layers", "0", "--src-vocab-divisible-by", "-4"], 2, "divisible")
    add("timeout-zero", [*chk, "--layers", "0", "--timeout", "0"], 2, "--timeout", "positive")
    add("timeout-neg", [*chk, "--layers", "0", "--timeout", "-3"], 2, "--timeout", "positive")
    add("timeout-nan", [*chk, "--layers", "0", "--timeout", "nan"], 2, "--timeout", "positive")
    add("timeout-word", [*chk, "--layers", "0", "--timeout", "soon"], 2, "--timeout", "seconds")
    add("executor-unknown", [*chk, "--executor", "mpi"], 2, "--executor")
    # ---- layers
    add("layers-empty", [*chk, "--layers", ""], 2, "--layers")
    add("layers-comma", [*chk, "--layers", ","], 2, "--layers")
    add("layers-out-of-range", [*chk, "--layers", "99"], 2, "--layers")
    add("layers-flag-negative", [*chk, "--layers", "-1"], 2, "--layers")
    add("layers-word", [*chk, "--layers", "a"], 2, "--layers")
    add("layout-layer-99", ["layout", *pre, "--layer", "99"], 2, "layer")
    add("layout-layer-neg", ["layout", *pre, "--layer", "-1"], 2, "layer")
    # ---- synchronizer paths
    add("sync-colon-only", [*chk, "--layers", "0", "--synchronizer", ":X"], 2, "synchronizer")
    add("sync-relative", [*chk, "--layers", "0", "--synchronizer", "..foo:X"], 2, "synchronizer")
    add(
        "sync-no-class", [*chk, "--layers", "0", "--synchronizer", "plain_sync:"], 2, "synchronizer"
    )
    add("sync-unknown-name", [*chk, "--layers", "0", "--synchronizer", "fast"], 2, "synchronizer")
    add("sync-no-module", [*chk, "--layers", "0", "--synchronizer", "nosuchmod:X"], 3, "nosuchmod")
    add("sync-syntax", [*chk, "--layers", "0", "--synchronizer", "bad_syntax_sync:X"], 3, "syntax")
    add("sync-raises", [*chk, "--layers", "0", "--synchronizer", "raises_sync:X"], 3, "boom")
    add("sync-exits", [*chk, "--layers", "0", "--synchronizer", "exits_sync:X"], 3, "exits_sync")
    add("sync-missing", [*chk, "--layers", "0", "--synchronizer", "plain_sync:Nope"], 3, "no class")
    add(
        "sync-not-sub",
        [*chk, "--layers", "0", "--synchronizer", "plain_sync:NotSync"],
        3,
        "basesync",
    )
    add(
        "sync-not-class",
        [*chk, "--layers", "0", "--synchronizer", "plain_sync:value"],
        3,
        "basesync",
    )
    # ---- output paths (render)
    ren = ["render", *pre, "--src-tp", "1", "--dst-tp", "2", "--param", "o_proj"]
    add("out-proc", [*ren, "-o", "/proc/x.png"], 2, "--output")
    (tmp / "afile").write_text("x")
    add("out-parent-file", [*ren, "-o", str(tmp / "afile" / "x.png")], 2, "--output")
    add("out-missing-dir", [*ren, "-o", str(tmp / "no" / "such" / "x.png")], 2, "--output")
    add("out-suffix", [*ren, "-o", str(tmp / "x.txt")], 2, "--output")
    add("out-is-dir", [*ren, "-o", str(tmp / "emptydir")], 2, "--output")
    add("out-efbig", [*ren, "-o", str(tmp / "big.png")], 2, "--output", fsize_limit=1024)
    add("out-dev-full", [*ren, "-o", "/dev/full"], 2, "--output")

    # ---- trace files
    def trace(id_: str, content: bytes | None, *words: str) -> None:
        path = tmp / f"trace-{id_}.json"
        if content is not None:
            path.write_bytes(content)
        add(f"trace-{id_}", [str(path)], 2, *words, trace=True)

    good = {
        "schema": "syncviz.trace",
        "version": 1,
        "metadata": {},
        "sources": [],
        "params": [],
        "collectives": [],
        "warnings": [],
    }
    with_meta = lambda meta: json.dumps({**good, "metadata": {"m": meta}}).encode()  # noqa: E731
    trace("not-json", b"{oops", "json")
    trace("pickle", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "utf-8")
    trace("latin1", b'{"schema": "\xe9"}', "utf-8")
    trace("missing", None, "does not exist")
    (tmp / "trace-dir.json").mkdir()
    add("trace-dir", [str(tmp / "trace-dir.json")], 2, "directory", trace=True)
    deep500 = ('{"x": ' * 500 + "1" + "}" * 500).encode()
    trace("meta-500-deep", with_meta(0).replace(b"0}", deep500 + b"}"), "deep")
    trace("deep-100k", b"[" * 100_000 + b"]" * 100_000, "deep")
    trace("int-5000", with_meta(0).replace(b"0}", b"9" * 5000 + b"}"), "digits")
    trace("nan", with_meta(0).replace(b"0}", b"NaN}"), "finite")
    trace("empty", b"", "json")
    trace("list", b"[]", "object")
    trace(
        "bool-ref",
        json.dumps(
            {**good, "sources": [{"ref": True, "label": None, "shape": [2], "dtype": "float64"}]}
        ).encode(),
        "ref",
    )
    with open(tmp / "trace-huge.json", "wb") as fh:
        fh.truncate(3 * 2**30)
    add("trace-3gib", [str(tmp / "trace-huge.json")], 2, "mib", trace=True)
    trace("rank-negative", json.dumps({**good, "params": [_param_trace(-5)]}).encode(), "rank")

    # ---- numbers out of range
    add("timeout-1e10", [*chk, "--layers", "0", "--timeout", "1e10"], 2, "--timeout", "604800")
    add("timeout-inf", [*chk, "--layers", "0", "--timeout", "inf"], 2, "--timeout", "604800")
    add(
        "vocab-div-1e20",
        [*chk, "--layers", "0", "--src-vocab-divisible-by", "9" * 20],
        2,
        "--src-vocab-divisible-by",
        "16777216",
    )
    add("layers-0-100000", [*chk, "--layers", "0-100000"], 2, "--layers", "32 layers")
    add("layers-0-1e11", [*chk, "--layers", "0-99999999999"], 2, "--layers", "32 layers")
    add("layout-layers-1e11", ["layout", *pre, "--layers", "0-99999999999"], 2, "32 layers")
    _signal_cases(add)
    _current_directory_cases(tmp, add, chk)
    _terminal_cases(tmp, add)
    _file_cases(tmp, add, ren)
    _library_cases(tmp, add)

    # diagnose files, index and config (issue 21 items 2-4)
    import shutil

    from safetensors.torch import load_file, save_file

    from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps

    made: dict[str, tuple[Path, Path]] = {}
    index, shard1, shard2 = (
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    )

    def pair(family: str) -> tuple[Path, Path]:  # a sharded checkpoint and its tp 2 dump
        if family not in made:
            made[family] = (tmp / f"diag-{family}-ref", tmp / f"diag-{family}-dump")
            write_checkpoint(tiny_spec(family), made[family][0], shards=2)
            write_dumps(tiny_spec(family), made[family][0], made[family][1], tp=2)
        return made[family]

    def set_index(text: str) -> Callable[[Path], object]:
        return lambda ref: (ref / index).write_bytes(text.encode("utf-8", "surrogateescape"))

    def listed(shard: str) -> Callable[[Path], None]:  # model.norm.weight said to be in shard
        def edit(ref: Path) -> None:
            data = json.loads((ref / index).read_text())
            data["weight_map"]["model.norm.weight"] = shard
            (ref / index).write_text(json.dumps(data))

        return edit

    def config(**change: object) -> Callable[[Path], None]:
        def edit(ref: Path) -> None:
            data = json.loads((ref / "config.json").read_text())
            (ref / "config.json").write_text(json.dumps({**data, **change}))

        return edit

    def link_out(ref: Path) -> None:  # a shard linked to another checkpoint's
        (ref / shard2).unlink()
        (ref / shard2).symlink_to(pair("llama-mcore")[0] / shard2)

    def narrow_k(ref: Path) -> None:  # k_proj of 8 columns where q_proj has 16
        name = "model.layers.0.self_attn.k_proj.weight"
        for shard in sorted(ref.glob("model-*.safetensors")):
            tensors = load_file(str(shard))
            if name in tensors:
                tensors[name] = tensors[name][:, :8].contiguous()
                save_file(tensors, str(shard))

    def fifo(name: str) -> Callable[[Path], None]:
        def edit(folder: Path) -> None:
            (folder / name).unlink()
            os.mkfifo(folder / name)

        return edit

    def cut(folder: Path) -> None:
        os.truncate(folder / "tp1.safetensors", 2000)

    def lock(name: str) -> Callable[[Path], None]:
        return lambda folder: (folder / name).chmod(0)

    llama, deep, digits = "llama-mcore", "[" * 100_000 + "]" * 100_000, "7" * 100_000
    out = "outside the checkpoint folder"
    # id: (family, edit, edits the dump (else the checkpoint), words)
    diag_cases: dict[str, tuple[str, Callable[[Path], object], bool, tuple[str, ...]]] = {
        "index-deep": (llama, set_index('{"weight_map": ' + deep + "}"), False, (index, "nest")),
        "index-long-int": (llama, set_index('{"n": ' + digits + "}"), False, (index, "digits")),
        "index-not-utf8": (llama, set_index('{"weight_map": "\udcff"}'), False, (index, "utf-8")),
        "index-list-map": (llama, set_index('{"weight_map": []}'), False, (index, "weight_map")),
        "index-lacks-tensor": (llama, listed(shard1), False, ("weight_map[", "holds no tensor")),
        "index-passwd": (llama, listed("../../../../etc/passwd"), False, ("etc/passwd", out)),
        "index-absolute": (llama, listed("/etc/passwd"), False, ("'/etc/passwd'", out)),
        "index-other-folder": (llama, listed(f"../diag-{llama}-ref/{shard2}"), False, (out,)),
        "index-symlink-out": (llama, link_out, False, (shard2, out)),
        "config-heads": (llama, config(num_attention_heads=4), False, ("heads = 4", "q_proj")),
        "config-kv-heads": (llama, config(num_key_value_heads=4), False, ("value_heads", "k_")),
        "config-ffn": (llama, config(intermediate_size=12), False, ("intermediate_size", "gate")),
        "config-layers": (llama, config(num_hidden_layers=1), False, ("layers = 1", "layers.1.")),
        "config-family": (llama, config(architectures=["Qwen2ForCausalLM"]), False, ("q_proj.b",)),
        "config-experts": ("mixtral", config(num_local_experts=8), False, ("local_experts = 8",)),
        "config-shared-expert": (
            "qwen2-moe",
            config(shared_expert_intermediate_size=32),
            False,
            ("shared_expert_intermediate_size = 32", "shared_expert.gate_proj"),
        ),
        "qkv-disagree": (llama, narrow_k, False, ("k_proj.weight of shape [4, 8]",)),
        "dump-fifo": (llama, fifo("tp1.safetensors"), True, ("tp1", "not a regular file")),
        "shard-fifo": (llama, fifo(shard1), False, (shard1, "not a regular file")),
        "dump-truncated": (llama, cut, True, ("tp1.safetensors", "shorter than its header")),
    }
    if os.geteuid() != 0:  # root reads mode 000 (tests/test_diagnose_files.py drops the right)
        diag_cases |= {
            "dump-file-000": (llama, lock("tp1.safetensors"), True, ("tp1", "permission denied")),
            "dump-folder-000": (llama, lock(""), True, ("permission denied",)),
            "reference-folder-000": (llama, lock(""), False, ("permission denied",)),
            "index-000": (llama, lock(index), False, (index, "permission denied")),
        }
    for name, (family, edit, in_dump, words) in diag_cases.items():
        ref, dump = pair(family)
        target = tmp / f"diag-{name}"
        shutil.copytree(dump if in_dump else ref, target)
        ref, dump = (ref, target) if in_dump else (target, dump)
        add(f"diag-{name}", ["diagnose", "--reference", str(ref), "--dump", str(dump),
                             "--dst-tp", "2"], 2, *words)  # fmt: skip
        edit(target)  # last: a folder at mode 000 cannot be copied from
    return cases


def _param_trace(rank: int) -> dict:
    return {
        "param": "model.model.layers.0.self_attn.o_proj.weight",
        "rank": rank,
        "phase": "regroup",
        "call": None,
        "ops": [],
        "collectives": [],
        "output_refs": [],
    }


def _signal_cases(add: Callable[..., None]) -> None:
    """SIGINT / SIGTERM at seeded random moments into check and render, under the
    console script: 130 / 143 and the one line, never an abort."""
    chosen = random.Random(21)
    sizes = ["--src-tp", "8", "--dst-tp", "16"]
    # From the start: the moments and commands of the report (llama3-70b, layers 0-3).
    # From the handlers: longer runs (the whole model; a larger one to draw), so that the
    # signal lands inside the run, rank threads busy, on a slow or a fast machine.
    commands = {
        "check": (
            ["check", "--preset", "llama3-70b", *sizes, "--layers", "0-3"],
            ["check", "--preset", "llama3-70b", *sizes],
        ),
        "render": (
            ["render", "--preset", "llama3-70b", *sizes, "--param", "qkv", "-o", "signal.png"],
            ["render", "--preset", "llama3.1-405b", *sizes, "--param", "qkv", "-o", "s.png"],
        ),
    }
    stops = ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"))
    for name, (from_start, from_ready) in commands.items():
        for sig, code, word in stops:
            for k in range(SIGNAL_ROUNDS):
                ready = k % 2 == 1
                at = round(chosen.uniform(0.5, 4.0) if ready else chosen.uniform(0.3, 2.5), 2)
                case_id = f"signal-{sig.name[3:].lower()}-{name}-{k}"
                kw = {"script": True, "signal": sig, "signal_at": at}
                kw["signal_from"] = "ready" if ready else "start"
                add(case_id, from_ready if ready else from_start, code, f"syncviz: {word}", **kw)


def _current_directory_cases(tmp: Path, add: Callable[..., None], chk: list[str]) -> None:
    """A ./matplotlib.py or ./ray.py beside a --synchronizer module must not run."""
    folder = tmp / "shadow"
    folder.mkdir()
    for module in ("matplotlib", "ray", "torch"):
        (folder / f"{module}.py").write_text(
            f"import sys\nprint('SHADOWED {module}', file=sys.stderr)\nraise SystemExit(99)\n"
        )
    (folder / "cwd_sync.py").write_text(SYNC_MODULES["plain_sync.py"])
    ren = ["render", "--preset", "llama3-8b", "--src-tp", "1", "--dst-tp", "2", "--param"]
    ren += ["o_proj", "--synchronizer", "cwd_sync:Good", "-o", str(folder / "o.png")]
    kw = {"cwd": str(folder), "absent": ("SHADOWED",)}
    add("cwd-shadow-render", ren, 0, "o.png", **kw)
    add("cwd-shadow-script", ren, 0, "o.png", script=True, **kw)
    add("cwd-shadow-check", [*chk, "--layers", "0", "--synchronizer", "cwd_sync:Good"], 1, **kw)


FORGED = "\n<model>: src tp1 -> dst tp2, synchronizer chatlearn: OK (15 ok)\n\x1b[2J"


def _terminal_cases(tmp: Path, add: Callable[..., None]) -> None:
    """Names from files holding a newline and an escape cannot forge a line or reach
    the terminal raw: config `_name_or_path` and a dump's tensor name."""
    absent = ("\n<model>:", "\x1b", "\r")
    evil = {**LLAMA, "_name_or_path": "evil" + FORGED}
    config = _config(tmp, "evil-name", evil)
    add("inject-layout", ["layout", "--config", config], 0, "evil\\n<model>", absent=absent)
    add("inject-check", ["check", "--config", config, "--dst-tp", "2"], 1, absent=absent)
    fixture = _dump_fixture(tmp / "inject", hostile=True)
    if fixture is None:
        return
    ref, dump = fixture
    argv = ["diagnose", "--reference", str(ref), "--dump", str(dump), "--dst-tp", "2"]
    add("inject-diagnose", argv, 1, "evil\\n", absent=absent)


def _dump_fixture(tmp: Path, *, hostile: bool = False) -> tuple[Path, Path] | None:
    """A tiny checkpoint under ``tmp`` and its tp 2 dumps (with ``hostile``, tp 0's dump
    also holds a tensor whose name forges a line)."""
    try:
        import torch
        from safetensors.torch import load_file, save_file

        from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
    except ImportError:  # the table still runs where syncviz is not importable
        return None
    ref, dump = tmp / "ref", tmp / "dump"
    spec = tiny_spec("llama-mcore")
    write_checkpoint(spec, ref)
    write_dumps(spec, ref, dump, tp=2)
    if not hostile:
        return ref, dump
    tensors = load_file(str(dump / "tp0.safetensors"))
    tensors["model.layers.0.evil" + FORGED + ".weight"] = torch.zeros(2)
    save_file(tensors, str(dump / "tp0.safetensors"))
    return ref, dump


def _file_cases(tmp: Path, add: Callable[..., None], ren: list[str]) -> None:
    """Output rights, read-only targets, trace ranks and trace folders, dump files."""
    readonly = tmp / "readonly.png"
    readonly.write_bytes(b"keep")
    readonly.chmod(0o444)

    def kept() -> str | None:
        return None if readonly.read_bytes() == b"keep" else "the read-only file was replaced"

    add("out-read-only", [*ren, "-o", str(readonly)], 2, "permission denied", after=kept)
    fresh = tmp / "rights.png"

    def rights() -> str | None:
        mode = stat.S_IMODE(fresh.stat().st_mode) if fresh.exists() else None
        return None if mode == 0o644 else f"written with mode {mode and oct(mode)}, not 0o644"

    add("out-rights-0644", [*ren, "-o", str(fresh)], 0, "rights.png", after=rights)
    # trace folders: ranks beyond the run, and more bytes in all than is read
    fixture = _dump_fixture(tmp / "clean")
    if fixture is not None:
        ref, dump = fixture
        base = ["diagnose", "--reference", str(ref), "--dump", str(dump), "--dst-tp", "2"]
        for rank in (99, 2):
            folder = tmp / f"traces-rank-{rank}"
            folder.mkdir()
            (folder / "rank0.json").write_text(json.dumps(_trace_doc([_param_trace(rank)])))
            add(f"trace-rank-{rank}", [*base, "--trace", str(folder)], 2, "params[0].rank")
        big = tmp / "traces-big"
        big.mkdir()
        for k in range(5):  # 229 MiB each: under the per-file bound, 1.1 GiB in all
            with open(big / f"rank{k}.json", "wb") as fh:
                fh.truncate(229 << 20)
        add("trace-folder-1gib", [*base, "--trace", str(big)], 2, "trace folder", "512 mib")
        fifo_dump = tmp / "fifo-dump"
        fifo_dump.mkdir()
        (fifo_dump / "tp0.safetensors").write_bytes((dump / "tp0.safetensors").read_bytes())
        os.mkfifo(fifo_dump / "tp1.safetensors")
        fifo = ["diagnose", "--reference", str(ref), "--dump", str(fifo_dump), "--dst-tp", "2"]
        add("dump-fifo", fifo, 2, "tp1.safetensors", "not a regular file")


def _trace_doc(params: list[dict]) -> dict:
    return {
        "schema": "syncviz.trace",
        "version": 1,
        "metadata": {},
        "sources": [],
        "params": params,
        "collectives": [],
        "warnings": [],
    }


def _library_cases(tmp: Path, add: Callable[..., None]) -> None:
    """save_vllm_rank and diagnose(layers=...) refuse what is no rank or layer number."""
    out = tmp / "lib-dump"
    for value in ("-1", "True"):
        code = (
            "import torch; from syncviz.dump import save_vllm_rank; "
            f"save_vllm_rank(torch.nn.Linear(2, 2), {str(out)!r}, tp_rank={value})"
        )
        add(f"save-rank-{value.lower()}", [code], 2, "tp_rank", driver=LIBRARY_DRIVER)
    ref, dump = tmp / "clean" / "ref", tmp / "clean" / "dump"
    code = f"import syncviz; syncviz.diagnose({str(ref)!r}, {str(dump)!r}, 2, layers=[True])"
    add("diagnose-layers-true", [code], 2, "layers", driver=LIBRARY_DRIVER)


def _prepare(tmp: Path) -> None:
    for name, text in SYNC_MODULES.items():
        (tmp / "mods").mkdir(exist_ok=True)
        (tmp / "mods" / name).write_text(text)
    (tmp / "bin").mkdir(exist_ok=True)
    script = tmp / "bin" / "syncviz"
    script.write_text(f"#!{PYTHON}\n{CONSOLE_SCRIPT}")
    script.chmod(0o755)


def _one(case: Case, root: Path, tmp: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = f"{root}{os.pathsep}{tmp / 'mods'}"
    if case.trace:
        cmd = [PYTHON, "-c", TRACE_DRIVER, *case.argv]
    elif case.driver is not None:
        cmd = [PYTHON, "-c", case.driver, *case.argv]
    elif case.script:
        cmd = [str(tmp / "bin" / "syncviz"), *case.argv]
    else:
        cmd = [PYTHON, "-m", "syncviz", *case.argv]

    def limits() -> None:
        import resource

        if case.fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_limit, case.fsize_limit))
        # a runaway case must not take the machine with it
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    start = time.monotonic()
    # Its own session: whatever the case starts can be found (and ended) afterwards.
    proc = subprocess.Popen(
        cmd,
        cwd=case.cwd or tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limits,
        start_new_session=True,
    )
    note = ""
    if case.signal is not None:
        if case.signal_from == "ready":
            _wait_ready(proc)
        try:
            proc.wait(case.signal_at)
            note = "it ended before the signal was sent"
        except subprocess.TimeoutExpired:
            proc.send_signal(case.signal)
    try:
        out, err = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        _end_session(proc.pid)
        out, err = proc.communicate()
        return Outcome(case, None, err, out, time.monotonic() - start, "hang")
    outcome = Outcome(case, proc.returncode, err, out, time.monotonic() - start, note=note)
    outcome.orphans = _orphans(proc.pid)
    if case.after is not None and not note:
        outcome.note = case.after() or ""
    outcome.kind = classify(outcome)
    return outcome


def _wait_ready(proc: subprocess.Popen) -> None:
    """Wait (at most HANG_S) until ``proc`` catches SIGTERM: the command's main runs."""
    end = time.monotonic() + HANG_S
    while proc.poll() is None and time.monotonic() < end:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                caught = next(line for line in fh if line.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return
        if int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.01)


def _session(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (zombies are dead: not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: the session id
            found.append(int(entry))
    return found


def _orphans(sid: int) -> int:
    """How many processes of the case outlived it by ORPHAN_WAIT_S (then they are ended)."""
    end = time.monotonic() + ORPHAN_WAIT_S
    while _session(sid) and time.monotonic() < end:
        time.sleep(0.2)
    left = _session(sid)
    if left:
        _end_session(sid)
    return len(left)


def _end_session(sid: int) -> None:
    for pid in _session(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


CRASH_WORDS = ("Traceback", "terminate called", "syncviz: error: unexpected", "Fatal Python")


def classify(o: Outcome) -> str:
    """clear: right code, one line naming the field (or, for a result, the words in it),
    nothing forged, no traceback and no process left; else what went wrong."""
    if o.rc is None:
        return "hang"
    if any(w in o.stderr or w in o.stdout for w in CRASH_WORDS) or o.rc < 0 or o.rc > 128 + 15:
        return "traceback"
    if o.orphans:
        return "orphaned"
    if o.note and not o.note.startswith("it ended"):
        return "silent"  # the after-check found a wrong file
    if any(w in o.stdout or w in o.stderr for w in o.case.absent):
        return "silent"  # a forged line, a raw escape, a shadowing module ran
    if o.rc == 0 and o.case.code != 0:
        return "silent"
    text = (o.stdout + " " + o.stderr).lower()
    if o.rc != o.case.code or not all(w.lower() in text for w in o.case.words):
        return "unclear"
    if o.case.code in (0, 1):  # a result: its words are somewhere in the report
        return "clear"
    lines = message_lines(o.stderr)
    words = " ".join(lines).lower()
    if len(lines) == 1 and all(w.lower() in words for w in o.case.words):
        return "clear"
    return "unclear"


def run_table(root: Path, workers: int = 3, only: Callable[[Case], bool] | None = None):
    """Every case run against the checkout at ``root``: a list of Outcome."""
    with tempfile.TemporaryDirectory(prefix="syncviz-bad-") as name:
        tmp = Path(name)
        _prepare(tmp)
        cases = [c for c in build_cases(tmp) if only is None or only(c)]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda c: _one(c, root, tmp), cases))


def case_ids() -> list[str]:
    """The ids of every case (the fixture files are written to a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="syncviz-bad-") as name:
        return [c.id for c in build_cases(Path(name))]


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    kinds = [o.kind for o in outcomes]
    return {
        "tried": len(kinds),
        "clear": kinds.count("clear"),
        "traceback or unexpected": kinds.count("traceback"),
        "hang": kinds.count("hang"),
        "silent wrong": kinds.count("silent"),
        "orphaned processes": sum(o.orphans for o in outcomes),
        "unclear (wrong code or words)": kinds.count("unclear"),
    }


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    chosen = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
    results = run_table(root, only=None if chosen is None else (lambda c: c.id in chosen))
    for o in results:
        first = message_lines(o.stderr)[-1:] or [""]
        shown = ascii(o.note or first[0])[1:-1][:110]
        print(f"{o.kind:9} rc={o.rc} {o.seconds:5.1f}s {o.case.id:22} {shown}")
        if o.kind != "clear" and os.environ.get("SYNCVIZ_SHOW_STDERR"):
            print("    " + o.stderr[-4000:].replace("\n", "\n    "))
    print(json.dumps(counts(results)))
