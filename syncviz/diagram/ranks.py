"""World-rank lookups the pictures need (one place, until the plan answers them itself).

>>> from syncviz.run.inprocess import tiny_run
>>> plan = tiny_run().plan
>>> src_world(plan, 0, 0, None), dst_world(plan, 0, 1)
(0, 2)
"""

from __future__ import annotations


def src_world(plan, pp: int, tp: int, ep: int | None) -> int:
    """The world rank of trainer rank (pp, tp, ep); ep None means the first ep rank."""
    for role in plan.roles:
        if role.side == "src" and (role.pp, role.tp) == (pp, tp) and role.ep == (ep or 0):
            return role.world
    raise LookupError(f"no trainer rank pp{pp} tp{tp} ep{ep}")


def dst_world(plan, pp: int, tp: int) -> int:
    """The world rank of vLLM rank (pp, tp)."""
    for role in plan.roles:
        if role.side == "dst" and (role.pp, role.tp) == (pp, tp):
            return role.world
    raise LookupError(f"no vLLM rank pp{pp} tp{tp}")
