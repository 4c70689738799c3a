"""Model presets, from each model's published config.json, and the small shipped configs.

>>> from syncviz.presets import preset, shipped_config
>>> preset("qwen2-57b-a14b").num_experts
64
>>> shipped_config("mixtral-tiny").num_experts
4
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from syncviz.errors import SyncvizError
from syncviz.families.registry import derived
from syncviz.spec import ModelSpec

# Each family file (syncviz/families/) lists its presets, each citing its Hugging Face
# repo and the config.json fields it takes (num_hidden_layers, hidden_size,
# num_attention_heads, num_key_value_heads, head_dim where given, intermediate_size,
# vocab_size, tie_word_embeddings, and for MoE the expert count and sizes). A family
# registered later (``syncviz.family_file``) adds its presets here.
PRESETS: Mapping[str, ModelSpec] = derived(
    lambda infos: {
        p.name: ModelSpec(name=p.name, family=info.name, source=p.source, **p.sizes)
        for info in infos
        for p in info.presets
    }
)

PRESET_MTP_LAYERS: Mapping[str, int] = derived(
    lambda infos: {p.name: p.mtp_layers for info in infos for p in info.presets}
)
"""Each preset's multi-token-prediction layers (its config's ``num_nextn_predict_layers``)."""

CONFIGS_DIR = Path(__file__).parent / "configs"


def preset(name: str, *, mtp: bool = False) -> ModelSpec:
    """The preset called ``name``; an unknown name lists the known ones. ``mtp`` lays out
    the multi-token-prediction layers its config counts (refused where it counts none).

    >>> preset("llama3-8b").num_query_groups
    8
    >>> preset("glm-4.5-air", mtp=True).all_layers
    47
    """
    try:
        spec = PRESETS[name]
    except KeyError:
        raise SyncvizError(
            f"unknown preset {name!r}", fix="use one of " + ", ".join(PRESETS)
        ) from None
    return spec.with_mtp(PRESET_MTP_LAYERS[name], f"preset {name}") if mtp else spec


def shipped_configs() -> tuple[str, ...]:
    """Names of the small config.json files shipped in ``syncviz/configs``.

    >>> shipped_configs()
    ('gqa-custom', 'mixtral-tiny')
    """
    return tuple(sorted(path.stem for path in CONFIGS_DIR.glob("*.json")))


def shipped_config(name: str) -> ModelSpec:
    """The shipped config ``syncviz/configs/<name>.json`` read as a ModelSpec.

    >>> shipped_config("gqa-custom").family
    'llama-mcore'
    """
    if name not in shipped_configs():
        raise SyncvizError(
            f"no shipped config {name!r}", fix="use one of " + ", ".join(shipped_configs())
        )
    spec = ModelSpec.from_hf_config(CONFIGS_DIR / f"{name}.json", name=name)
    return replace(spec, source=f"syncviz/configs/{name}.json")
