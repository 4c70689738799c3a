"""The table of bad inputs that tests/test_bad_inputs.py runs through ``python -m syncviz``.

Each case is a command line (or, for trace files, the trace loader behind the same
boundary), the exit code it must end with, and the words its one-line message must
hold (the field it names). ``run_table(root)`` runs every case against the syncviz
checkout at ``root`` and classifies it, so the same table measures any version:

    python tests/bad_inputs_table.py [ROOT [ID,ID...]]      # prints the counts
"""

from __future__ import annotations

import json
import os
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


@dataclass
class Outcome:
    case: Case
    rc: int | None
    stderr: str
    stdout: str
    seconds: float
    kind: str = field(default="")  # clear / traceback / hang / silent / unclear


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


def _prepare(tmp: Path) -> None:
    for name, text in SYNC_MODULES.items():
        (tmp / "mods").mkdir(exist_ok=True)
        (tmp / "mods" / name).write_text(text)


def _one(case: Case, root: Path, tmp: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = f"{root}{os.pathsep}{tmp / 'mods'}"
    if case.trace:
        cmd = [PYTHON, "-c", TRACE_DRIVER, *case.argv]
    else:
        cmd = [PYTHON, "-m", "syncviz", *case.argv]

    def limits() -> None:
        if case.fsize_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize_limit, case.fsize_limit))
        # a runaway case must not take the machine with it
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    start = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_S,
            preexec_fn=limits,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Outcome(case, None, err, "", time.monotonic() - start, "hang")
    outcome = Outcome(case, done.returncode, done.stderr, done.stdout, time.monotonic() - start)
    outcome.kind = classify(outcome)
    return outcome


def message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def classify(o: Outcome) -> str:
    """clear: right code, one line naming the field, no traceback; else what went wrong."""
    if o.rc is None:
        return "hang"
    if "Traceback (most recent call last)" in o.stderr or "Traceback" in o.stdout:
        return "traceback"
    if o.rc == 0:
        return "silent"
    lines = message_lines(o.stderr)
    text = " ".join(lines).lower()
    if o.rc == o.case.code and len(lines) == 1 and all(w.lower() in text for w in o.case.words):
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
        "tracebacks": kinds.count("traceback"),
        "hangs": kinds.count("hang"),
        "silent passes": kinds.count("silent"),
        "unclear (wrong code or words)": kinds.count("unclear"),
    }


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    chosen = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
    results = run_table(root, only=None if chosen is None else (lambda c: c.id in chosen))
    for o in results:
        first = message_lines(o.stderr)[-1:] or [""]
        print(f"{o.kind:9} rc={o.rc} {o.seconds:5.1f}s {o.case.id:22} {first[0][:110]}")
    print(json.dumps(counts(results)))
