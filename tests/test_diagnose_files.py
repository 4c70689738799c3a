"""Diagnose: files that change while read, unreadable files, the shard index, and configs
that contradict their own checkpoint (each bad input, exit 2, named)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from syncviz.cli import main
from syncviz.diagnose import diagnose
from syncviz.diagnose import tensor_file as tensor_file_module
from syncviz.diagnose.checkpoint import checkpoint_shapes
from syncviz.diagnose.dumps import RankDump
from syncviz.diagnose.fixtures import tiny_spec, write_checkpoint, write_dumps
from syncviz.diagnose.reference import INDEX, Reference
from syncviz.errors import SyncvizError

ROOT = Path(__file__).resolve().parents[1]
LLAMA = tiny_spec("llama-mcore")  # 2 layers, hidden 16, 8 heads, 2 K/V heads, head_dim 2, I 24


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A sharded tiny Llama checkpoint and its (correct) tp 2 dump."""
    root = tmp_path_factory.mktemp("pair")
    write_checkpoint(LLAMA, root / "ref", shards=2)
    write_dumps(LLAMA, root / "ref", root / "dump", tp=2)
    return root / "ref", root / "dump"


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_error_line(argv: list[str], capsys) -> str:
    """Run the CLI in-process; it must exit 2 with one ``syncviz: error:`` line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("syncviz: error: "), err
    return lines[0]


def diagnose_argv(ref: Path, dump: Path) -> list[str]:
    return ["diagnose", "--reference", str(ref), "--dump", str(dump), "--dst-tp", "2"]


# ---------------------------------------------------------------- files that change


def arm(monkeypatch, target: Path, change) -> dict:
    """Call ``change(target)`` once, right after the first tensor-sized read of ``target``
    (between the identity checks before and after that read)."""
    inode = os.stat(target).st_ino
    state = {"done": False}
    original = tensor_file_module._pread_into

    def hook(fd: int, view: memoryview, offset: int) -> int:
        got = original(fd, view, offset)
        if not state["done"] and len(view) > 8 and os.fstat(fd).st_ino == inode and offset > 8:
            state["done"] = True
            change(target)
        return got

    monkeypatch.setattr(tensor_file_module, "_pread_into", hook)
    return state


def truncate(path: Path) -> None:
    os.truncate(path, 100)


def replace_by_rename(path: Path) -> None:
    new = path.with_suffix(".new")
    new.write_bytes(path.read_bytes())
    os.replace(new, path)


def rewrite_in_place(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x7f\x7f\x7f\x7f"  # same size, other bytes; the write moves mtime on
    with open(path, "r+b") as fh:
        fh.write(data)
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", [truncate, replace_by_rename, rewrite_in_place])
def test_dump_changed_while_read_is_named(pair, tmp_path, monkeypatch, capsys, change):
    """A rank file cut, replaced or rewritten during a tensor read: exit 2 naming it."""
    ref, dump = pair
    dump = copy(dump, tmp_path / "dump")
    state = arm(monkeypatch, dump / "tp1.safetensors", change)
    line = one_error_line(diagnose_argv(ref, dump), capsys)
    assert state["done"]
    assert "tp1.safetensors changed while it was read: write dumps to a new folder" in line


def test_shard_changed_while_read_is_named(pair, tmp_path, monkeypatch):
    """A checkpoint shard cut during a tensor read is named too (no SIGBUS, no traceback)."""
    ref, dump = pair
    ref = copy(ref, tmp_path / "ref")
    shard = ref / "model-00002-of-00002.safetensors"
    arm(monkeypatch, shard, truncate)
    with pytest.raises(SyncvizError, match=r"model-00002-of-00002\.safetensors changed while it"):
        diagnose(ref, dump, 2)


def test_dump_rewritten_after_its_header_was_read(pair, tmp_path):
    """A rank file rewritten between opening (header) and reading a tensor is named."""
    dump = pair[1]
    dump = copy(dump, tmp_path / "dump")
    path = dump / "tp0.safetensors"
    rank = RankDump(path)
    tensors = load_file(str(path))
    tensors["extra"] = torch.zeros(3)
    save_file(tensors, str(path))  # another size: a change stat always sees
    with pytest.raises(SyncvizError, match=r"^tp0\.safetensors changed while it was read"):
        rank.read("model.model.norm.weight")


def test_header_half_written_is_named_as_changed(pair, tmp_path, monkeypatch):
    """A header read while another process rewrites the file (garbage read, size moved):
    named as changed, not as a broken file."""
    path = copy(pair[1], tmp_path / "dump") / "tp1.safetensors"
    original = tensor_file_module._pread_into

    def hook(fd: int, view: memoryview, offset: int) -> int:
        got = original(fd, view, offset)
        if offset == 8:  # the JSON header: what a reader sees mid-write
            view[:] = b"\0" * len(view)
            os.truncate(path, 50)
        return got

    monkeypatch.setattr(tensor_file_module, "_pread_into", hook)
    with pytest.raises(SyncvizError, match=r"^tp1\.safetensors changed while it was read"):
        RankDump(path)


def test_tensors_are_copies_not_maps(pair, tmp_path):
    """A tensor already read keeps its values when the file is cut to nothing after."""
    path = copy(pair[1], tmp_path / "dump") / "tp0.safetensors"
    expected = load_file(str(path))["model.norm.weight"].clone()
    got = RankDump(path).read("model.model.norm.weight")
    os.truncate(path, 0)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


# ---------------------------------------------------------------- files of the wrong kind


def in_thread(fn):
    """Run ``fn``; fail (instead of hanging) if it blocks for a minute."""
    out: dict = {}

    def body():
        try:
            fn()
        except SyncvizError as err:
            out["err"] = str(err)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "blocked on the file"
    return out.get("err", "")


def test_fifo_rank_file_is_not_a_regular_file(pair, tmp_path):
    """A FIFO in place of tp1.safetensors: 'not a regular file', never 'missing', never blocks."""
    ref, dump = pair
    dump = copy(dump, tmp_path / "dump")
    (dump / "tp1.safetensors").unlink()
    os.mkfifo(dump / "tp1.safetensors")
    err = in_thread(lambda: diagnose(ref, dump, 2))
    assert f"{str(dump / 'tp1.safetensors')!r} is not a regular file" in err
    assert "missing" not in err


def test_fifo_shard_is_not_a_regular_file(pair, tmp_path):
    """A FIFO in place of a listed shard: 'not a regular file', never blocks."""
    ref = copy(pair[0], tmp_path / "ref")
    (ref / "model-00001-of-00002.safetensors").unlink()
    os.mkfifo(ref / "model-00001-of-00002.safetensors")
    err = in_thread(lambda: Reference(ref))
    assert "model-00001-of-00002.safetensors' is not a regular file" in err


def test_fifo_index_is_not_a_regular_file(pair, tmp_path):
    """A FIFO in place of the index: 'not a regular file', never blocks."""
    ref = copy(pair[0], tmp_path / "ref")
    (ref / INDEX).unlink()
    os.mkfifo(ref / INDEX)
    err = in_thread(lambda: Reference(ref))
    assert f"{str(ref / INDEX)!r} is not a regular file" in err


def dropped_privileges() -> list[str] | None:
    """A command prefix under which mode 000 denies reading; None where there is none."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


PERMISSION_CASES = {
    "tp-file": lambda ref, dump: dump / "tp1.safetensors",
    "dump-folder": lambda ref, dump: dump,
    "reference-folder": lambda ref, dump: ref,
    "index": lambda ref, dump: ref / INDEX,
    "shard": lambda ref, dump: ref / "model-00001-of-00002.safetensors",
}


@pytest.mark.parametrize("case", sorted(PERMISSION_CASES))
def test_mode_000_says_permission_denied(pair, tmp_path, case):
    """A file or folder at mode 000: exit 2, one line, 'permission denied' and its path."""
    prefix = dropped_privileges()
    if prefix is None:
        pytest.skip("running as root without setpriv: mode 000 cannot deny a read")
    tmp_path.chmod(0o755)
    ref, dump = copy(pair[0], tmp_path / "ref"), copy(pair[1], tmp_path / "dump")
    locked = PERMISSION_CASES[case](ref, dump)
    locked.chmod(0)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "syncviz", *diagnose_argv(ref, dump)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-600:]
    assert len(lines) == 1 and "permission denied" in lines[0].lower(), lines
    assert repr(str(locked)) in lines[0]


# ---------------------------------------------------------------- the index


def write_index(ref: Path, text: str | bytes) -> None:
    path = ref / INDEX
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)


def weight_map(ref: Path) -> dict[str, str]:
    return json.loads((ref / INDEX).read_text())["weight_map"]


INDEX_CASES = {
    "deep": ('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested 100001 levels"),
    "long-int": ('{"weight_map": {}, "n": ' + "7" * 100_000 + "}", "integer of 100000 digits"),
    "not-utf8": (b'{"weight_map": {"model.norm.weight": "\xff"}}', "is not UTF-8 text"),
    "list": ('{"weight_map": ["model-00001-of-00002.safetensors"]}', "field weight_map must be"),
    "number": ('{"weight_map": {"model.norm.weight": 1}}', "field weight_map['model.norm.weight']"),
    "no-map": ('{"metadata": {}}', "got no field weight_map"),
    "array": ("[]", "holds a JSON list, not an object"),
}


@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_bad_index_is_named(pair, tmp_path, capsys, case):
    """Each bad index: exit 2, one line naming the index file and what is wrong in it."""
    text, words = INDEX_CASES[case]
    ref = copy(pair[0], tmp_path / "ref")
    write_index(ref, text)
    line = one_error_line(diagnose_argv(ref, pair[1]), capsys)
    assert INDEX in line and words in line


def test_shard_lacking_a_listed_tensor(pair, tmp_path, capsys):
    """The index lists model.norm.weight in a shard that does not hold it: named, exit 2."""
    ref = copy(pair[0], tmp_path / "ref")
    mapping = weight_map(ref)
    held = mapping["model.norm.weight"]
    other = next(f for f in set(mapping.values()) if f != held)
    write_index(ref, json.dumps({"weight_map": {**mapping, "model.norm.weight": other}}))
    line = one_error_line(diagnose_argv(ref, pair[1]), capsys)
    assert (
        f"{INDEX} field weight_map['model.norm.weight'] names {other!r}, which holds no tensor"
        " 'model.norm.weight'" in line
    )


@pytest.mark.parametrize(
    "listed", ["../../../../etc/passwd", "/etc/passwd", "../other/model-00001-of-00002.safetensors"]
)
def test_index_paths_stay_inside_the_folder(pair, tmp_path, capsys, listed):
    """Relative escapes, absolute paths and other checkpoints' folders are refused, named."""
    ref = copy(pair[0], tmp_path / "ref")
    copy(pair[0], tmp_path / "other")
    write_index(ref, json.dumps({"weight_map": {**weight_map(ref), "model.norm.weight": listed}}))
    line = one_error_line(diagnose_argv(ref, pair[1]), capsys)
    assert f"weight_map['model.norm.weight'] = {listed!r} leads outside the checkpoint" in line


def test_symlink_leading_out_is_refused(pair, tmp_path, capsys):
    """A shard that is a link into another checkpoint's folder is refused, naming both paths."""
    ref = copy(pair[0], tmp_path / "ref")
    other = copy(pair[0], tmp_path / "other")
    shard = ref / "model-00001-of-00002.safetensors"
    shard.unlink()
    shard.symlink_to(other / shard.name)
    line = one_error_line(diagnose_argv(ref, pair[1]), capsys)
    assert "leads outside the checkpoint folder" in line
    assert repr(str(other / shard.name)) in line


def test_hugging_face_cache_snapshot_is_accepted(pair, tmp_path):
    """A cache snapshot (every file a link to ../../blobs/<hash>) is read as its folder."""
    repo = tmp_path / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for n, path in enumerate(sorted(pair[0].iterdir())):
        blob = repo / "blobs" / f"blob{n}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(Path("../../blobs") / blob.name)
    assert diagnose(snapshot, pair[1], 2).ok


# ---------------------------------------------------------------- config against checkpoint


def test_checkpoint_shapes_by_hand():
    """Checkpoint shapes of the tiny Qwen2-MoE, worked by hand from its sizes."""
    shapes = checkpoint_shapes(tiny_spec("qwen2-moe"))  # h 16, 4 heads, 4 K/V, hd 4, 4 experts
    layer = "model.layers.1."
    assert shapes[layer + "self_attn.q_proj.weight"] == (16, 16)
    assert shapes[layer + "self_attn.k_proj.bias"] == (16,)
    assert shapes[layer + "mlp.experts.3.gate_proj.weight"] == (8, 16)  # moe I 8
    assert shapes[layer + "mlp.experts.3.down_proj.weight"] == (16, 8)
    assert shapes[layer + "mlp.shared_expert.up_proj.weight"] == (16, 16)  # shared I 16
    assert shapes[layer + "mlp.shared_expert_gate.weight"] == (1, 16)
    assert shapes[layer + "mlp.gate.weight"] == (4, 16)
    assert shapes["model.embed_tokens.weight"] == (70, 16)
    # embed, norm, lm_head; per layer 2 norms, q/k/v weights and biases, o, router,
    # 4 experts x 3, the shared expert's 3 and its gate
    assert len(shapes) == 3 + 2 * (2 + 3 + 3 + 1 + 1 + 4 * 3 + 3 + 1)


CONFIG_CASES = [
    # family, config change, the words (hand-worked from the tiny specs' sizes)
    (
        "llama-mcore",
        {"num_key_value_heads": 4},
        "config.json num_key_value_heads = 4 contradicts model.layers.0.self_attn.k_proj.weight"
        " of shape [4, 16] (config.json implies [8, 16]; the checkpoint fits"
        " num_key_value_heads = 2;",
    ),
    (
        "llama-mcore",
        {"num_attention_heads": 4},
        "config.json num_attention_heads = 4 contradicts model.layers.0.self_attn.q_proj.weight"
        " of shape [16, 16] (config.json implies [8, 16]; the checkpoint fits"
        " num_attention_heads = 8;",
    ),
    (
        "llama-mcore",
        {"intermediate_size": 12},
        "config.json intermediate_size = 12 contradicts model.layers.0.mlp.gate_proj.weight of"
        " shape [24, 16] (config.json implies [12, 16]; the checkpoint fits"
        " intermediate_size = 24;",
    ),
    (
        "llama-mcore",
        {"num_hidden_layers": 3},
        "config.json num_hidden_layers = 3 calls for model.layers.2.input_layernorm.weight of"
        " shape [16], which the checkpoint lacks (the checkpoint fits num_hidden_layers = 2;",
    ),
    (
        "llama-mcore",
        {"num_hidden_layers": 1},
        "config.json num_hidden_layers = 1 does not call for 'model.layers.1.input_layernorm"
        ".weight' of shape [16], which the checkpoint holds (the checkpoint fits"
        " num_hidden_layers = 2;",
    ),
    (
        "llama-mcore",
        {"architectures": ["Qwen2ForCausalLM"]},
        "config.json architectures = Qwen2ForCausalLM calls for"
        " model.layers.0.self_attn.q_proj.bias of shape [16], which the checkpoint lacks (the"
        " checkpoint fits architectures = LlamaForCausalLM, or architectures = MistralForCausalLM;",
    ),
    (
        "mixtral",
        {"num_local_experts": 8},
        "config.json num_local_experts = 8 contradicts model.layers.0.block_sparse_moe.gate.weight"
        " of shape [4, 16] (config.json implies [8, 16]; the checkpoint fits"
        " num_local_experts = 4;",
    ),
    (
        "qwen2-moe",
        {"shared_expert_intermediate_size": 32},
        "config.json shared_expert_intermediate_size = 32 contradicts"
        " model.layers.0.mlp.shared_expert.gate_proj.weight of shape [16, 16] (config.json"
        " implies [32, 16]; the checkpoint fits shared_expert_intermediate_size = 16;",
    ),
]


@pytest.mark.parametrize(("family", "change", "words"), CONFIG_CASES)
def test_config_contradicting_its_checkpoint(tmp_path, capsys, family, change, words):
    """A config.json field the checkpoint's shapes contradict: exit 2 naming field and tensor,
    although the dump matches the checkpoint (it used to read as the engine's fault)."""
    spec = tiny_spec(family)
    write_checkpoint(spec, tmp_path / "ref")
    write_dumps(spec, tmp_path / "ref", tmp_path / "dump", tp=2)
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    (tmp_path / "ref" / "config.json").write_text(json.dumps({**config, **change}))
    line = one_error_line(diagnose_argv(tmp_path / "ref", tmp_path / "dump"), capsys)
    assert words in line
    assert line.endswith("the checkpoint and its config disagree; pass the config.json these"
                         " weights were saved with")  # fmt: skip


def test_q_k_v_disagreeing_with_each_other(tmp_path, capsys):
    """A k_proj narrower than q_proj (no config fits): named, exit 2, no RuntimeError."""
    write_checkpoint(LLAMA, tmp_path / "ref")
    write_dumps(LLAMA, tmp_path / "ref", tmp_path / "dump", tp=2)
    path = tmp_path / "ref" / "model.safetensors"
    tensors = load_file(str(path))
    name = "model.layers.0.self_attn.k_proj.weight"
    tensors[name] = tensors[name][:, :8].contiguous()
    save_file(tensors, str(path))
    line = one_error_line(diagnose_argv(tmp_path / "ref", tmp_path / "dump"), capsys)
    assert (
        f"config.json contradicts {name} of shape [4, 8] (config.json implies [4, 16]):"
        " the checkpoint and its config disagree" in line
    )


# ---------------------------------------------------------------- the reader itself


def test_reader_round_trips_every_float_dtype(tmp_path):
    """float64/32/16 and bfloat16 tensors, an empty one included, read back bit for bit."""
    tensors = {
        "f64": torch.randn(3, 5, dtype=torch.float64),
        "f32": torch.tensor([-0.0, float("nan"), 1.5]),
        "f16": torch.randn(2, 2).half(),
        "bf16": torch.randn(7, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 16),
    }
    save_file(tensors, str(tmp_path / "tp0.safetensors"))
    rank = RankDump(tmp_path / "tp0.safetensors")
    for name, tensor in tensors.items():
        got = rank.read("model." + name)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got.view(-1).view(torch.uint8), tensor.view(-1).view(torch.uint8))


def raw_file(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BROKEN_FILES = {
    "short": (b"\x01\x02", "shorter than the 8-byte header length"),
    "header-too-long": (raw_file({"w": F32}, bytes(8), length=10**9), "length 1000000000 is"),
    "header-list": (raw_file([1, 2]), "its header is a JSON list"),
    "header-not-json": (raw_file(b"{nope"), "is not valid JSON"),
    "offsets-reversed": (raw_file({"w": {**F32, "data_offsets": [8, 0]}}, bytes(8)), "range"),
    "bytes-vs-shape": (raw_file({"w": {**F32, "shape": [3]}}, bytes(8)), "needs 12"),
    "shape-negative": (raw_file({"w": {**F32, "shape": [-2]}}, bytes(8)), "list of sizes"),
    "no-dtype": (raw_file({"w": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "dtype"),
}


def test_file_shorter_than_its_header_says(tmp_path):
    """A file cut short (or still being written) is told as such, with both byte counts."""
    path = tmp_path / "tp0.safetensors"
    header = json.dumps({"w": {**F32, "data_offsets": [0, 80]}}).encode()
    path.write_bytes(raw_file(header, bytes(8)))
    with pytest.raises(SyncvizError) as err:
        RankDump(path)
    assert (
        f"dump file {str(path)!r} is shorter than its header says: 'w' ends at byte"
        f" {8 + len(header) + 80}, the file has {8 + len(header) + 8}" in str(err.value)
    )
    path.write_bytes(raw_file(header, length=10**6))
    with pytest.raises(SyncvizError, match="the header ends at byte 1000008, the file has"):
        RankDump(path)


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_broken_rank_file_is_named(tmp_path, case):
    """Each malformed header is 'not a readable safetensors file', with what is wrong."""
    content, words = BROKEN_FILES[case]
    path = tmp_path / "tp0.safetensors"
    path.write_bytes(content)
    with pytest.raises(SyncvizError) as err:
        RankDump(path)
    assert str(err.value).startswith(f"dump file {str(path)!r} is not a readable safetensors")
    assert words in str(err.value)


def test_integer_dump_tensor_is_named(tmp_path):
    """A rank file holding an I64 tensor: bad input naming the tensor, its file and dtype."""
    path = tmp_path / "tp0.safetensors"
    save_file({"model.norm.weight": torch.arange(4)}, str(path))
    with pytest.raises(SyncvizError) as err:
        RankDump(path)
    assert str(err.value).startswith(
        f"'model.norm.weight' in {str(path)!r} has dtype I64, which syncviz cannot compare:"
        " syncviz compares float64, float32, float16 and bfloat16 tensors; write rank dumps"
    )
