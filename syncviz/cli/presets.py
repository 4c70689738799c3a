"""``syncviz presets``: list the model presets.

>>> from syncviz.cli import main
>>> main(["presets"])  # doctest: +ELLIPSIS
llama2-7b            llama-legacy  32 layers, hidden 4096, 32 heads / 32 K/V groups
...
0
"""

from __future__ import annotations

import argparse

from syncviz.cli.args import add_family_arg, load_family_arg
from syncviz.cli.command import Command
from syncviz.cli.output import say
from syncviz.presets import PRESETS, shipped_config, shipped_configs


def _presets_run(args: argparse.Namespace) -> int:
    load_family_arg(args)  # --family: its presets are listed too
    for name, spec in PRESETS.items():
        say(_line(name, spec))
    for name in shipped_configs():  # small config.json files, named like presets
        say(_line(name, shipped_config(name)) + " (shipped config)")
    return 0


def _line(name: str, spec) -> str:
    moe = f", {spec.num_experts} experts" if spec.is_moe else ""
    return (
        f"{name:20} {spec.family:13} {spec.num_layers} layers, hidden {spec.hidden_size},"
        f" {spec.num_attention_heads} heads / {spec.num_query_groups} K/V groups{moe}"
    )


COMMAND = Command(
    "presets",
    "list the model presets and shipped configs (both usable as --preset NAME)",
    add_family_arg,
    _presets_run,
)
