"""``MegatronMegatronSync``: Megatron -> Megatron, where only name prefixes differ.

A faithful port of ChatLearn's ``chatlearn/synchronizer/megatron_megatron.py``
(commit 85f23a9b). The destination's own parameter names come from
``recv_actor.get_parameter_names(requires_grad=False)``; the first name pair where
one contains the other fixes the prefix to strip from, or add to, every name.

Known-wrong behaviour kept on purpose: the prefix is taken from the first pair
that matches by substring, so an unrelated short name (``"bias"``) can pick a
wrong prefix.

>>> class Receiver:
...     def get_parameter_names(self, requires_grad=True):
...         return ["module.layer.weight"]
>>> sync = MegatronMegatronSync(None, None)
>>> sync.map_name_from_src_to_dst(None, Receiver(), ["layer.weight"], ["layer.weight"])
(['layer.weight'], ['module.layer.weight'])
"""

from __future__ import annotations

from typing import Any

from syncviz.sync.base import BaseSync


class MegatronMegatronSync(BaseSync):
    """Megatron -> Megatron synchronizer: adds or strips a module prefix on names.

    >>> MegatronMegatronSync(None, None).set_model_prefix(["w"], ["module.w"])
    (None, 'module.')
    """

    def _get_dst_name(self, src_name: str, src_prefix: str | None, dst_prefix: str | None) -> str:
        if src_prefix:
            return src_name[len(src_prefix) :]
        return dst_prefix + src_name

    def set_model_prefix(
        self, src_names: list[str], dst_names: list[str]
    ) -> tuple[str | None, str | None]:
        """``(src_prefix, dst_prefix)``: at most one is set, from the first matching pair."""
        for src_name in src_names:
            for dst_name in dst_names:
                if src_name in dst_name:
                    return None, dst_name[: dst_name.index(src_name)]
                if dst_name in src_name:
                    return src_name[: src_name.index(dst_name)], None
        raise RuntimeError("Cannot find prefix")

    def map_name_from_src_to_dst(
        self, send_actor: Any, recv_actor: Any, src_names: list[str], dst_names: list[str]
    ) -> tuple[list[str], list[str]]:
        """Rewrite ``dst_names`` with the prefix found against the receiver's own names."""
        dst_names_ref = self.call_actor(recv_actor, "get_parameter_names", requires_grad=False)
        src_prefix, dst_prefix = self.set_model_prefix(src_names, dst_names_ref)
        dst_names = [self._get_dst_name(name, src_prefix, dst_prefix) for name in dst_names]
        return src_names, dst_names
