"""Replays the recorded behaviour of the original synchronizer (tests/data/golden.jsonl).

One test per record, no skips: a record whose function has no runner fails.
Set SYNCVIZ_GOLDEN to replay another file of the same format.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.golden_maps import RUNNERS as MAP_RUNNERS
from tests.golden_support import load_records
from tests.golden_sync import RUNNERS as SYNC_RUNNERS

RUNNERS = {**SYNC_RUNNERS, **MAP_RUNNERS}
RECORDS = load_records()


@pytest.mark.parametrize("record", RECORDS, ids=[r["id"] for r in RECORDS])
def test_record(record: dict[str, Any]) -> None:
    """The port reproduces one recorded call: same output ids, or same exception type and text."""
    runner = RUNNERS.get(record["fn"])
    assert runner is not None, f"no runner for {record['fn']}"
    if "error" in record:
        with pytest.raises(Exception) as info:
            runner(record)
        assert type(info.value).__name__ == record["error"]["type"]
        assert str(info.value) == record["error"]["message"]
    else:
        runner(record)
