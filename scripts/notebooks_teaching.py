"""The teaching notebooks 02-05, one function each, written as nbformat documents without outputs.

``scripts/make_notebooks.py`` can import :data:`TEACHING_NOTEBOOKS` (file name ->
function) or call :func:`write_teaching_notebooks`; run this file to write them alone:
``python scripts/notebooks_teaching.py [out_dir]``.

>>> nb = tp_sharding_notebook()
>>> nb.cells[0].cell_type, nb.metadata.kernelspec.name
('markdown', 'python3')
>>> sorted(TEACHING_NOTEBOOKS)[0]
'02_tp_sharding.ipynb'
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def _md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def _code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(textwrap.dedent(text).strip())


def _notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A python3 notebook of ``cells`` (no outputs).

    >>> len(_notebook([_md("# t")]).cells)
    1
    """
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# ---------------------------------------------------------------- 02 tensor-parallel sharding


def tp_sharding_notebook() -> nbformat.NotebookNode:
    """Notebook 02: column vs row parallel, fused QKV, GQA K/V replication, fused gate/up.

    >>> "GQA" in "".join(c.source for c in tp_sharding_notebook().cells)
    True
    """
    return _notebook(
        [
            _md("""
            # Tensor-parallel sharding, from scratch

            A linear layer computes `y = x @ W.T` with a weight `W` of shape `[out, in]`
            (PyTorch and Megatron store weights this way: **rows are output features**,
            columns input features). Tensor parallelism (TP) cuts `W` over `tp` ranks.

            Every tensor here holds **ids**: element `k` of the whole (unsharded) tensor
            holds the number `k`. Slicing moves ids around but never changes them, so any
            shard tells exactly where each of its elements came from. syncviz runs
            synchronizers on such tensors and compares the result with an independent
            *oracle* that knows, from the model config alone, what each rank must hold.
            """),
            _code("""
            import torch

            from syncviz import Parallel
            from syncviz.check import check
            from syncviz.diagram import layout_diagram, layout_text, render
            from syncviz.oracle import model_layout
            from syncviz.run.inprocess import run_sync
            from syncviz.spec import ModelSpec

            W = torch.arange(4 * 6).reshape(4, 6)  # [out=4, in=6]; element k holds id k
            W
            """),
            _md("""
            ## Column parallel: split the rows

            Each rank keeps `out / tp` whole rows, so it computes those output features
            completely from the full input. Nothing is summed across ranks; the outputs
            stay sharded (or are gathered). Megatron's `linear_qkv` and `linear_fc1`, and
            vLLM's `qkv_proj` and `gate_up_proj`, are column parallel.
            """),
            _code("""
            for rank, shard in enumerate(W.chunk(2, dim=0)):
                rows = (shard[:, 0] // W.shape[1]).tolist()
                print(f"rank {rank} holds rows {rows}\\n{shard}\\n")
            """),
            _md("""
            ## Row parallel: split the columns

            Each rank keeps `in / tp` whole columns and multiplies them with its part of
            the input: that gives a *partial sum* of every output feature, and an
            all-reduce adds the partial sums. Megatron's `linear_proj` / `linear_fc2` and
            vLLM's `o_proj` / `down_proj` are row parallel (their bias is not split: it is
            added once, after the sum).
            """),
            _code("""
            for rank, shard in enumerate(W.chunk(2, dim=1)):
                cols = shard[0].tolist()
                print(f"rank {rank} holds cols {cols}\\n{shard}\\n")
            """),
            _md("Both ways compute the same `y`:"),
            _code("""
            x = torch.randn(3, 6, dtype=torch.float64)
            weight = torch.randn(4, 6, dtype=torch.float64)
            y = x @ weight.T
            y_column = torch.cat([x @ w.T for w in weight.chunk(2, dim=0)], dim=1)  # gather
            parts = zip(x.chunk(2, dim=1), weight.chunk(2, dim=1), strict=True)
            y_row = sum(xs @ w.T for xs, w in parts)  # the all-reduce
            assert torch.allclose(y, y_column) and torch.allclose(y, y_row)
            """),
            _md("""
            ## A tiny model, in the oracle's words

            One Megatron-Core Llama-style layer: hidden size 8, 4 query heads of size 2,
            2 K/V groups (grouped-query attention, GQA), FFN size 8. The oracle lists
            every parameter with its kind and global shape, and describes any rank's
            tensor block by block.
            """),
            _code("""
            spec = ModelSpec(
                "tiny",
                "llama-mcore",
                num_layers=1,
                hidden_size=8,
                num_attention_heads=4,
                num_query_groups=2,
                ffn_hidden_size=8,
                vocab_size=64,
                head_dim=2,
            )
            tp1, tp2, tp4 = Parallel(tp=1), Parallel(tp=2), Parallel(tp=4)
            layout = model_layout(spec, tp2, tp2, layers=[0])
            for p in layout.params:
                print(f"{p.kind:20} {list(p.global_shape)!s:8} {p.key}")
            """),
            _code("""
            o_proj = layout.param("model.model.layers.0.self_attn.o_proj.weight")
            print(o_proj.describe_src(0))
            print(o_proj.describe_dst(1))
            """),
            _md("""
            ## Drawing it: row-parallel `o_proj`, trainer tp 1 → vLLM tp 2

            `run_sync` runs a synchronizer on simulated ranks; `layout_diagram` turns the
            run into blocks (one colour family per block kind, shades per head), and
            `render` draws it: trainer shards on the left, the ops the synchronizer
            recorded in the middle, vLLM tensors on the right. `synchronizer="corrected"`
            is the reference that agrees with the oracle.
            """),
            _code("""
            key = "model.model.layers.0.self_attn.o_proj.weight"
            result = run_sync(spec, tp1, tp2, synchronizer="corrected", layers=[0])
            report = check(result, "corrected")
            assert report.ok
            render(layout_diagram(result, key, report))
            """),
            _md("""
            The faithful port of the original synchronizer (`"chatlearn"`) finds row-parallel
            weights by name, and its list lacks Megatron-Core's `linear_proj`: the trainer
            tensor is never cut by columns, so each vLLM rank gets a run of whole rows. The
            picture hatches the wrong blocks in red and the check says what each holds.
            """),
            _code("""
            faithful = run_sync(spec, tp1, tp2, synchronizer="chatlearn", layers=[0])
            faithful_report = check(faithful, "chatlearn")
            render(layout_diagram(faithful, key, faithful_report))
            """),
            _md("""
            ## Fused QKV

            vLLM's `qkv_proj` (QKVParallelLinear) holds, on each rank, the rows
            `[Q heads | K heads | V heads]` of that rank's heads. Megatron-Core's
            `linear_qkv` orders its global rows **by group**: for each group g,
            `[q heads of g, k_g, v_g]`, and a trainer rank holds a contiguous row range.
            So the synchronizer must *reorder* rows, not just cut them:
            """),
            _code("""
            one_to_two = model_layout(spec, tp1, tp2, layers=[0])
            qkv = one_to_two.param("model.model.layers.0.self_attn.qkv_proj.weight")
            print(qkv.describe_src(0))
            for rank in range(2):
                print(qkv.describe_dst(rank))
            """),
            _md("""
            ## GQA: K/V heads replicated when d > ng

            With 2 K/V groups and vLLM tp 4, there are fewer K/V heads than ranks. vLLM
            then gives rank r' **one** K head and one V head, number ⌊r' / (d / ng)⌋: each
            K/V head is replicated on d / ng = 2 consecutive ranks (so d must be a multiple
            of ng). Query heads are still split: one per rank here.
            """),
            _code("""
            one_to_four = model_layout(spec, tp1, tp4, layers=[0])
            qkv4 = one_to_four.param("model.model.layers.0.self_attn.qkv_proj.weight")
            for rank in range(4):
                print(qkv4.describe_dst(rank))
            """),
            _code("""
            key = "model.model.layers.0.self_attn.qkv_proj.weight"
            result = run_sync(spec, tp1, tp4, synchronizer="corrected", layers=[0])
            report = check(result, "corrected")
            assert report.ok
            print(layout_text(layout_diagram(result, key, report)))
            render(layout_diagram(result, key, report))
            """),
            _md("""
            ## Fused gate/up

            A gated MLP (SwiGLU) has two column-parallel projections, gate and up, fused
            into one tensor (Megatron `linear_fc1`, vLLM `gate_up_proj`). The global tensor
            is `[gate; up]`, but a rank holds **its slice of each half**,
            `[gate rows r·I/tp…; up rows r·I/tp…]` — not a row slice of `[gate; up]`
            (that would give rank 0 all of gate and rank 1 all of up).
            """),
            _code("""
            ffn, tp = 4, 2
            gate_up = torch.arange(2 * ffn)  # ids of rows: gate rows 0-3, then up rows 0-3
            naive = gate_up.chunk(tp)
            right = [torch.cat([half.chunk(tp)[r] for half in gate_up.chunk(2)]) for r in range(tp)]
            for r in range(tp):
                print(f"rank {r}: naive row slice {naive[r].tolist()}, right {right[r].tolist()}")
            """),
            _code("""
            fc1 = layout.param("model.model.layers.0.mlp.gate_up_proj.weight")  # trainer tp 2
            print(fc1.describe_src(0))
            print(fc1.describe_src(1))
            """),
            _md("""
            Going from trainer tp 1 to vLLM tp 2, the trainer's `[gate; up]` must become
            `[gate_0; up_0 | gate_1; up_1]`: the synchronizer interleaves the halves before
            cutting.
            """),
            _code("""
            key = "model.model.layers.0.mlp.gate_up_proj.weight"
            result = run_sync(spec, tp1, tp2, synchronizer="corrected", layers=[0])
            report = check(result, "corrected")
            assert report.ok
            render(layout_diagram(result, key, report))
            """),
            _md("""
            ## The rules in one table

            | parameter | trainer (Megatron) rank r | vLLM rank r' |
            |---|---|---|
            | `qkv_proj` | groups, each `[q…, k, v]` | its Q, K, V heads (K/V copied if d > ng) |
            | `gate_up_proj` | `[gate_r; up_r]` | `[gate_r'; up_r']` |
            | `o_proj`, `down_proj` | column slice | column slice (bias whole) |
            | embeddings, `lm_head` | rows of the padded vocab | rows of the vocab padded to 64 |
            | norms | whole | whole |

            Notebook 03 checks a new model against these rules; notebook 04 adds experts.
            """),
        ]
    )


# ---------------------------------------------------------------- 03 checking a new model

_CUSTOM_SYNC = '''
class CustomLlamaSync(MegatronVllmLlamaSync):
    """Megatron-Core Llama with GQA -> vLLM: regroups each parameter by its exact role."""

    def regroup_params_to_sync(self, name, param_data, tp_division, regroup_routed_experts=False):
        # The part after "layers.{i}.", e.g. "self_attention.linear_qkv.layer_norm_weight":
        # compared whole, so a fused norm is never mistaken for the linear it sits in.
        role = name.split(".layers.", 1)[-1].split(".", 1)[-1]
        if role in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
            return self.qkv_for_vllm(param_data, tp_division)
        if role == "self_attention.linear_proj.weight":  # row parallel: cut the columns
            return torch.cat(param_data.chunk(tp_division, dim=1))
        if role in ("mlp.linear_fc1.weight", "mlp.linear_fc2.weight"):
            return super().regroup_params_to_sync(name, param_data, tp_division)  # right already
        return param_data  # norms, embeddings (a vocab row slice is already in order)

    def qkv_for_vllm(self, qkv, parts):
        """Per-group trainer rows -> `parts` stacked vLLM [Q | K | V] slices."""
        args = self.src_module_args.args_dict
        tp = args["tensor_model_parallel_size"]
        heads = args["num_attention_heads"] // tp  # query heads on this trainer rank
        groups = args["num_query_groups"] // tp  # K/V heads on this trainer rank
        head_dim = args["kv_channels"]  # not hidden_size // heads: this model sets head_dim
        per_group = heads // groups
        rows = qkv.reshape(groups, per_group + 2, head_dim, -1)  # per group [q..., k, v]
        q = rows[:, :per_group].reshape(heads, head_dim, -1)
        k, v = rows[:, per_group], rows[:, per_group + 1]
        pieces = []
        for i in range(parts):
            if groups >= parts:  # each slice gets its own share of the K/V heads
                kv = slice(i * groups // parts, (i + 1) * groups // parts)
            else:  # each K/V head is replicated on parts // groups consecutive slices
                head = i // (parts // groups)
                kv = slice(head, head + 1)
            pieces += [q[i * heads // parts : (i + 1) * heads // parts], k[kv], v[kv]]
        return torch.cat(pieces).reshape(-1, *qkv.shape[1:])
'''


def new_model_notebook() -> nbformat.NotebookNode:
    """Notebook 03: the faithful synchronizer on a custom GQA model (red), a subclass (green).

    >>> "assert report.ok" in "".join(c.source for c in new_model_notebook().cells)
    True
    """
    return _notebook(
        [
            _md("""
            # Checking a new model

            You train a custom Llama-style model with Megatron-Core and serve it with vLLM.
            Before spending a cluster on it, check that the weight synchronizer puts every
            block where vLLM expects it. The config ships with syncviz
            (`syncviz/configs/gqa-custom.json`, a Hugging Face `config.json`): 12 query
            heads, 4 K/V groups (GQA) and an explicit `head_dim`.
            """),
            _code("""
            import torch

            from syncviz import Parallel
            from syncviz.check import check
            from syncviz.diagram import layout_diagram, render
            from syncviz.presets import CONFIGS_DIR, shipped_config
            from syncviz.run.choose import synchronizer_factory
            from syncviz.run.inprocess import run_sync
            from syncviz.spec import ModelSpec
            from syncviz.sync import MegatronVllmLlamaSync

            spec = ModelSpec.from_hf_config(CONFIGS_DIR / "gqa-custom.json")
            assert spec == shipped_config("gqa-custom")
            print(
                f"{spec.name} ({spec.family}): {spec.num_attention_heads} query heads in "
                f"{spec.num_query_groups} K/V groups, head_dim {spec.head_dim}, "
                f"hidden {spec.hidden_size}, {spec.num_layers} layers"
            )
            """),
            _md("""
            ## The original synchronizer: red

            Trainer tp 2, vLLM tp 4. `synchronizer="chatlearn"` is the faithful port of the
            original; it picks its class from the model's architecture, as the original did.
            """),
            _code("""
            src, dst = Parallel(tp=2), Parallel(tp=4)
            print(type(synchronizer_factory("chatlearn")(spec, src, dst)).__name__)
            result = run_sync(spec, src, dst, synchronizer="chatlearn", layers=[0])
            report = check(result, "chatlearn")
            assert not report.ok
            report
            """),
            _md("""
            Three different faults:

            1. **Norms fail to regroup.** Megatron-Core fuses the norms into the next linear:
               `input_layernorm` is `self_attention.linear_qkv.layer_norm_weight` and
               `post_attention_layernorm` is `mlp.linear_fc1.layer_norm_weight`. The original
               recognises parameters by substring, so these 1-D norms are cut as if they
               were the QKV (a `view` that fails) or the gate/up (an `IndexError`).
            2. **`qkv_proj` holds the wrong heads.** It reads the trainer's per-group rows
               `[q…, k, v]` as if they were `[Q | K | V]`, and gives each slice one K/V head.
            3. **`o_proj` is not cut by columns.** `linear_proj` is missing from its list of
               row-parallel names.

            The pictures show where each wrong block came from:
            """),
            _code("""
            render(layout_diagram(result, "model.model.layers.0.self_attn.qkv_proj.weight", report))
            """),
            _code("""
            render(layout_diagram(result, "model.model.layers.0.self_attn.o_proj.weight", report))
            """),
            _md("""
            ## The fix, as a subclass

            A synchronizer subclass only needs to honour one contract:
            `regroup_params_to_sync(name, data, tp_division)` returns a tensor whose memory,
            read flat, is `tp_division` equal chunks, chunk `i` being what vLLM rank
            `r · (d / s) + i` holds. Here: recognise each parameter by its exact role,
            reorder the QKV rows per vLLM slice (replicating K/V heads when a slice has
            less than one), cut `linear_proj` by columns and send norms whole. Name mapping
            and the gate/up and `linear_fc2` regrouping are inherited.
            """),
            _code(_CUSTOM_SYNC),
            _md("""
            ## Green

            Every layer, the embeddings and the output layer this time:
            """),
            _code("""
            result = run_sync(spec, src, dst, synchronizer=CustomLlamaSync)
            report = check(result, "CustomLlamaSync")
            assert report.ok, report.text()
            report
            """),
            _md("""
            Other sizes too, including vLLM tp 12 where each of the 4 K/V heads sits on 3
            ranks. The corrected synchronizer shipped with syncviz agrees:
            """),
            _code("""
            for s, d in [(1, 2), (2, 4), (4, 4), (1, 4), (4, 12)]:
                sizes = Parallel(tp=s), Parallel(tp=d)
                ours = check(run_sync(spec, *sizes, synchronizer=CustomLlamaSync, layers=[0]))
                shipped = check(run_sync(spec, *sizes, synchronizer="corrected", layers=[0]))
                print(f"tp {s} -> {d}: CustomLlamaSync {ours.ok}, corrected {shipped.ok}")
                assert ours.ok and shipped.ok, ours.text()
            """),
            _md("""
            ## Aside: a model the original has no synchronizer for

            Mixtral (`syncviz/configs/mixtral-tiny.json`) stops before anything is sent:
            the original chooses its class by architecture and knows none for
            `MixtralForCausalLM`. The corrected synchronizer adds one.
            """),
            _code("""
            mixtral = shipped_config("mixtral-tiny")
            faithful = check(run_sync(mixtral, src, dst, synchronizer="chatlearn", layers=[0]))
            print(faithful.flow_errors[0])
            assert check(run_sync(mixtral, src, dst, synchronizer="corrected", layers=[0])).ok
            """),
            *_QWEN3_CELLS,
            *_OWN_FAMILY_CELLS,
        ]
    )


_QWEN3_CELLS = [
    _md("""
    ## A Qwen3 model

    Qwen3-8B (its published `config.json`, the preset `qwen3-8b`) adds two parameters per
    layer: `q_norm` and `k_norm`, one `[head_dim]` RMSNorm each, applied to every head.
    They are not sharded: every vLLM rank holds them whole. Relabelling the config as
    Llama would leave them out of the layout altogether, and a check would say OK about
    a model missing two tensors per layer; the Qwen3 family names them.
    """),
    _code("""
    from syncviz import preset
    from syncviz.oracle import model_layout

    qwen3 = preset("qwen3-8b").scaled(src, dst)  # a layout-preserving downscale, as above
    for param in model_layout(qwen3, src, dst, layers=[0]).params:
        if param.kind in ("q_norm", "k_norm"):
            print(param.key, [f"tp{t.tp}: {param.describe(t.index)}" for t in param.dst])
    """),
    _md("""
    The original has no synchronizer class for `Qwen3ForCausalLM`; the corrected one sends
    every tensor of layer 0 right:
    """),
    _code("""
    faithful = check(run_sync(qwen3, src, dst, synchronizer="chatlearn", layers=[0]))
    print(faithful.flow_errors[0])
    fixed = run_sync(qwen3, src, dst, synchronizer="corrected", layers=[0])
    report = check(fixed, "corrected")
    assert report.ok, report.text()
    print(report.text().splitlines()[0])
    """),
]

_OWN_FAMILY = """
from syncviz.families import FamilyInfo, Preset
from syncviz.families.names import MCORE_DENSE
from syncviz.families.record import sizes
from syncviz.family_file import register_family

VLLM, HF = "model.model.blocks.{i}.", "transformer.blocks.{i}."  # its own module names
acme = register_family(
    FamilyInfo(
        "acme-dense",
        "AcmeForCausalLM",  # its Hugging Face architecture
        "acme",  # its model_type
        "",  # the original has no synchronizer class for it
        "CorrectedMegatronVllmMCoreSync",  # names come from this record
        src_names=MCORE_DENSE,  # trained with Megatron-Core: its usual names
        dst_names={
            "embed": "model.model.wte.weight",
            "final_norm": "model.model.norm_f.weight",
            "lm_head": "model.lm_head.weight",
            "input_norm": VLLM + "norm_1.weight",
            "qkv": VLLM + "attn.c_qkv.weight",
            "o_proj": VLLM + "attn.c_proj.weight",
            "post_attention_norm": VLLM + "norm_2.weight",
            "gate_up": VLLM + "mlp.c_fc.weight",
            "down": VLLM + "mlp.c_out.weight",
        },
        hf_names={
            "embed": ("transformer.wte.weight",),
            "final_norm": ("transformer.norm_f.weight",),
            "lm_head": ("lm_head.weight",),
            "input_norm": (HF + "norm_1.weight",),
            "qkv": (HF + "attn.q.weight", HF + "attn.k.weight", HF + "attn.v.weight"),
            "o_proj": (HF + "attn.c_proj.weight",),
            "post_attention_norm": (HF + "norm_2.weight",),
            "gate_up": (HF + "mlp.gate.weight", HF + "mlp.up.weight"),
            "down": (HF + "mlp.c_out.weight",),
        },
        presets=(Preset("acme-3b", sizes(26, 3072, 24, 8, 8192, 50304), "made up"),),
    )
)
preset("acme-3b")  # its preset, like every table, knows it now
"""

_OWN_FAMILY_CELLS = [
    _md("""
    ## A model no tool knows yet: its family in one cell

    A family is one record (`FamilyInfo`, as each file of `syncviz/families/` holds): its
    Hugging Face architecture, its parameter names on the trainer, in vLLM and in the
    checkpoint, its trainer's conventions and its presets. Declare one for your own model
    and register it: presets, config.json reading, the oracle, the corrected synchronizer,
    the pictures, the Explorer and `diagnose` all know it from then on. The same fields
    written as a `.py` or `.json` file load with `--family PATH` on the command line
    (see the README, "Your own model"). A record that does not hold together (a kind its
    sizes lay out without a name, an unknown field, a clash with a built-in family) is
    refused in one line naming the field.
    """),
    _code(_OWN_FAMILY),
    _code("""
    acme3b = preset("acme-3b").scaled(src, dst)
    result = run_sync(acme3b, src, dst, synchronizer="corrected", layers=[0])
    report = check(result, "corrected")
    assert report.ok, report.text()
    render(layout_diagram(result, "model.model.blocks.0.attn.c_qkv.weight", report))
    """),
]


# ---------------------------------------------------------------- 04 MoE experts


def moe_experts_notebook() -> nbformat.NotebookNode:
    """Notebook 04: HEP expert sharding, w13/w2 layouts, all-gather vs all-to-all.

    >>> "expert_comm" in "".join(c.source for c in moe_experts_notebook().cells)
    True
    """
    return _notebook(
        [
            _md("""
            # MoE experts: all-gather vs all-to-all

            A mixture-of-experts layer has E routed experts, each a small gated MLP
            (gate, up, down) of size I. The trainer and vLLM shard them in different ways:

            - **vLLM** (FusedMoE, no expert parallel): every rank holds a slice of **every**
              expert. `w13_weight` is `[E, 2·I/d, H]`, each expert `[gate slice r'; up slice r']`;
              `w2_weight` is `[E, H, I/d]`, a slice of the down projection's input dim.
            - **The trainer** (ChatLearn's Qwen-MoE trainer, "HEP"): **whole** experts
              spread over the ep·tp ranks. Rank k holds experts k·E/(ep·tp)…; its fc1 is
              `[E_local·2I, H]` (this trainer stores each expert's halves as `[up; gate]`),
              its fc2 `[E_local·I, H]`, the transpose of vLLM's `w2`.

            So experts must first move between trainer ranks, with `expert_comm`:
            **all-gather** (every rank receives all experts, then keeps its TP slice of each)
            or **all-to-all** (rank k sends TP slice j of its own experts to rank j only).
            """),
            _code("""
            from syncviz import Parallel, preset
            from syncviz.check import check
            from syncviz.diagram import layout_diagram, layout_text, render, transfer_diagram
            from syncviz.diagram.model import human_bytes
            from syncviz.oracle import model_layout
            from syncviz.run.inprocess import run_sync
            from syncviz.spec import ModelSpec
            """),
            _md("""
            ## A toy with 4 experts, in the oracle's words

            A Qwen2-MoE layer small enough to read: 4 experts of size 4, hidden 16
            (plus a shared expert, which follows the dense gate/up rules). Trainer tp 2 →
            vLLM tp 4.
            """),
            _code("""
            toy = ModelSpec(
                "moe-toy",
                "qwen2-moe",
                num_layers=1,
                hidden_size=16,
                num_attention_heads=4,
                num_query_groups=2,
                ffn_hidden_size=8,
                vocab_size=256,
                head_dim=4,
                qkv_bias=True,
                num_experts=4,
                moe_ffn_hidden_size=4,
                shared_expert_ffn_hidden_size=4,
                shared_expert_gate=True,
            )
            src, dst = Parallel(tp=2), Parallel(tp=4)
            layout = model_layout(toy, src, dst, layers=[0])
            w13 = layout.param("model.model.layers.0.mlp.experts.w13_weight")
            w2 = layout.param("model.model.layers.0.mlp.experts.w2_weight")
            for rank in range(2):
                print(w13.describe_src(rank))
            for rank in range(2):
                print(w13.describe_dst(rank))
            print(w2.describe_src(0))
            print(w2.describe_dst(1))
            """),
            _md("""
            ## The expert view

            3-D tensors are drawn as one band per expert. Each vLLM rank's `w13` has a band
            for every expert: `[gate; up]` rows of its slice, gathered from both trainer
            ranks (the outline colour is the trainer rank the data came from).
            """),
            _code("""
            result = run_sync(toy, src, dst, synchronizer="corrected", expert_comm="alltoall")
            report = check(result, "corrected")
            assert report.ok
            diagram = layout_diagram(result, "model.model.layers.0.mlp.experts.w13_weight", report)
            print(layout_text(diagram))
            render(diagram)
            """),
            _code("""
            render(layout_diagram(result, "model.model.layers.0.mlp.experts.w2_weight", report))
            """),
            _md("""
            ## A real model, scaled down

            Qwen1.5-MoE-A2.7B (60 experts, shared expert with a gate), shrunk with
            `spec.scaled(src, dst)`: smaller sizes, same layout. Both exchanges give the
            same, correct result; all-to-all moves less data, since each rank receives only
            the slices it keeps.
            """),
            _code("""
            spec = preset("qwen1.5-moe-a2.7b").scaled(src, dst)
            results = {}
            for comm in ("allgather", "alltoall"):
                for sync in ("chatlearn", "corrected"):
                    run = run_sync(spec, src, dst, synchronizer=sync, expert_comm=comm, layers=[0])
                    ok = check(run, sync).ok
                    moved = sum(x.bytes for x in transfer_diagram(run).exchanges)
                    print(f"{comm:9} {sync:9} ok={ok}, experts moved {human_bytes(moved)}")
                    assert ok
                    results[comm, sync] = run
            """),
            _md("""
            The transfer map of the all-to-all run: the expert exchange among trainer ranks
            (listed below the map), then the two broadcast stages (trainer rank → one vLLM
            rank of its group → its peers).
            """),
            _code("""
            render(transfer_diagram(results["alltoall", "corrected"]))
            """),
            _md("""
            The same preset's `w13` in the oracle's words: 60 experts, each vLLM rank
            holding its slice of every one (the toy above draws the same pattern).
            """),
            _code("""
            w13_real = results["alltoall", "corrected"].plan.layout.param(
                "model.model.layers.0.mlp.experts.w13_weight"
            )
            print(w13_real.describe_src(0))
            print(w13_real.describe_dst(0))
            """),
        ]
    )


# ---------------------------------------------------------------- 05 the sync on Ray


def ray_sync_notebook() -> nbformat.NotebookNode:
    """Notebook 05: the same sync flow on Ray actors, its transfer map and its check.

    >>> "executor=\\"ray\\"" in "".join(c.source for c in ray_sync_notebook().cells)
    True
    """
    return _notebook(
        [
            _md("""
            # The sync on Ray

            `executor="ray"` runs the very same per-rank code as the in-process executor,
            but each rank is a Ray actor and collectives are real (torch.distributed with
            gloo on CPU, NCCL on GPU). Here a local Ray with 2 CPUs is started; the
            actors ask for no CPU of their own, so all 6 ranks (2 trainer, 4 vLLM) fit.
            With `RAY_ADDRESS` set, the same code uses that cluster instead.
            """),
            _code("""
            import torch

            from syncviz import Parallel, preset
            from syncviz.check import check
            from syncviz.diagram import render, transfer_diagram, transfer_text
            from syncviz.run.inprocess import run_sync
            from syncviz.run.ray_cluster import ray_session

            src, dst = Parallel(tp=2), Parallel(tp=4)
            spec = preset("llama3-8b").scaled(src, dst, num_layers=1)
            with ray_session(num_cpus=2):
                result = run_sync(spec, src, dst, synchronizer="corrected", executor="ray")
            """),
            _md("The check, on what the vLLM actors really hold:"),
            _code("""
            report = check(result, "corrected")
            assert report.ok, report.text()
            report
            """),
            _md("""
            The transfer map of the real run: bytes counted from the collectives each
            actor recorded. Stage 1: each trainer rank broadcasts its regrouped buffer to
            one vLLM rank; stage 2: that rank forwards its peers' chunks.
            """),
            _code("""
            transfer = transfer_diagram(result)
            print(transfer_text(transfer))
            render(transfer)
            """),
            _md("Ray and in-process runs agree, tensor for tensor:"),
            _code("""
            local = run_sync(spec, src, dst, synchronizer="corrected")
            for rank, tensors in local.dst_tensors.items():
                for name, tensor in tensors.items():
                    assert torch.equal(tensor, result.dst_tensors[rank][name]), (rank, name)
            print(f"{len(local.dst_tensors)} vLLM ranks identical")
            """),
        ]
    )


TEACHING_NOTEBOOKS: dict[str, Callable[[], nbformat.NotebookNode]] = {
    "02_tp_sharding.ipynb": tp_sharding_notebook,
    "03_new_model.ipynb": new_model_notebook,
    "04_moe_experts.ipynb": moe_experts_notebook,
    "05_ray_sync.ipynb": ray_sync_notebook,
}
"""File name -> function building that notebook."""


def write_teaching_notebooks(out_dir: str | Path = ROOT / "notebooks") -> list[Path]:
    """Write notebooks 02-05 into ``out_dir``; returns their paths.

    >>> import tempfile
    >>> [p.name for p in write_teaching_notebooks(tempfile.mkdtemp())][-1]
    '05_ray_sync.ipynb'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, build in TEACHING_NOTEBOOKS.items():
        nb = build()
        for i, cell in enumerate(nb.cells):  # fixed ids: the same file on every run
            cell.id = f"{filename[:2]}-{i:02d}"
        nbformat.validate(nb)
        path = out / filename
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_teaching_notebooks(*sys.argv[1:2]):
        print(written)
