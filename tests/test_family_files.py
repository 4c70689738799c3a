"""A family is one file: no module outside syncviz/families/ names a family in its code."""

from __future__ import annotations

import ast
from pathlib import Path

import syncviz
from syncviz.families import FAMILY
from syncviz.families.record import FamilyInfo

PACKAGE = Path(syncviz.__file__).parent
FAMILY_DIR = PACKAGE / "families"


def _named_families(path: Path) -> list[tuple[int, str]]:
    """(line, family) for every string constant in ``path`` that is exactly a family name.

    Docstrings and messages are whole strings, so only code that switches on a family
    (``family == "x"``, ``{"x": ...}``, ``Literal["x"]``) or passes one is found.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FAMILY
    ]


def test_no_module_outside_the_family_files_names_a_family():
    """Every family-name string constant of the package sits in syncviz/families/<family>.py."""
    outside = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent != FAMILY_DIR and (found := _named_families(path))
    }
    assert outside == {}
    registry = _named_families(FAMILY_DIR / "__init__.py")
    assert registry == []  # the registry lists files, never names


def test_each_family_file_declares_exactly_its_family():
    """Each family file's FAMILY is the record of the one family its strings name."""
    seen = set()
    for path in sorted(FAMILY_DIR.glob("*.py")):
        named = {name for _, name in _named_families(path)}
        if not named:
            continue  # the registry, the record and the shared name tables
        assert len(named) == 1, (path.name, named)
        (name,) = named
        assert isinstance(FAMILY[name], FamilyInfo)
        assert path.stem == name.replace("-", "_"), path.name
        seen.add(name)
    assert seen == set(FAMILY)


def test_every_family_has_names_for_every_kind_it_lays_out():
    """Trainer, vLLM and Hugging Face names exist for each kind of each family's layers."""
    from syncviz.oracle.layout import layer_kinds
    from syncviz.presets import PRESETS

    for spec in PRESETS.values():
        info = FAMILY[spec.family]
        kinds = ["embed", "final_norm", "lm_head", *layer_kinds(spec), *layer_kinds(spec, 0)]
        for kind in kinds:
            assert kind in info.src_names and kind in info.dst_names, (info.name, kind)
            assert kind in info.hf_names, (info.name, kind)


def test_vllm_names_are_the_checkpoint_names_but_for_stacked_tensors():
    """vLLM names a tensor model. + its checkpoint name; stacked kinds by name; misuse fails."""
    import pytest

    from syncviz.errors import SyncvizError
    from syncviz.families.names import vllm_names

    hf = {"norm": ("model.norm.weight",), "qkv": ("q.weight", "k.weight", "v.weight")}
    assert vllm_names(hf, qkv="model.qkv_proj.weight") == {
        "norm": "model.model.norm.weight",
        "qkv": "model.qkv_proj.weight",
    }
    with pytest.raises(SyncvizError, match="'qkv' joins 3 checkpoint tensors"):
        vllm_names(hf)
    with pytest.raises(SyncvizError, match=r"\['gate_up'\]"):
        vllm_names(hf, qkv="model.qkv_proj.weight", gate_up="model.gate_up_proj.weight")
