"""The paused cycle collector (syncviz/provenance/collector.py), as map_work and run_sync use it."""

from __future__ import annotations

import gc

import torch

from syncviz.provenance.collector import gc_paused
from syncviz.provenance.regions import map_work


def _full_collections_during(body) -> list[int]:
    """The generations of the collections that start while ``body()`` runs."""
    seen: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        body()
    finally:
        gc.callbacks.remove(note)
    return seen


def test_a_paused_collector_is_restored_and_collects_once_after_many_objects():
    """With the collector on: off inside gc_paused(collect_after=1000), on after it, and
    5,000 lists made there and still alive are followed by one full (generation 2)
    collection."""
    was = gc.isenabled()
    gc.enable()
    inside, kept = [], []

    def body():
        with gc_paused(collect_after=1000):
            inside.append(gc.isenabled())
            kept.append([[] for _ in range(5000)])

    try:
        assert 2 in _full_collections_during(body)
        assert inside == [False] and gc.isenabled()
    finally:
        if not was:
            gc.disable()


def test_a_collector_that_was_off_stays_off_and_never_collects():
    """With the collector off before, gc_paused leaves it off and runs no collection, however
    many objects were made; map_work pauses it the same way, on one torch thread."""
    was, threads = gc.isenabled(), torch.get_num_threads()
    gc.disable()

    kept = []

    def body():
        with gc_paused(collect_after=10):
            kept.append([[] for _ in range(5000)])

    try:
        assert _full_collections_during(body) == []
        assert not gc.isenabled()
        gc.enable()
        with map_work():
            assert not gc.isenabled() and torch.get_num_threads() == 1
        assert gc.isenabled() and torch.get_num_threads() == threads
    finally:
        if not was:
            gc.disable()
