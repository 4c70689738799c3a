"""SyncTrace JSON: round trips, stable text, and strict loading of bad files."""

from __future__ import annotations

import json

import pytest
import torch

from syncviz.errors import SyncvizError
from syncviz.trace import CollectiveRecord, OpRecord, ParamTrace, SyncTrace, TensorRef, Tracer


def recorded_trace() -> SyncTrace:
    """A trace with sources, ops, warnings, scoped and top-level collectives and metadata."""
    tracer = Tracer(metadata={"model": "tiny", "src_tp": 2, "sizes": [4, 8], "ok": True})
    x = torch.arange(32, dtype=torch.float64).view(4, 8)
    with tracer.scope(param="layers.0.attn.dense", rank=1, phase="regroup"):
        src = tracer.track(x, "src rank 1")
        out = torch.cat([src[:, 0:4], src[:, 4:8]], dim=0).contiguous().view(x.shape)
        out.to(torch.bfloat16)
        tracer.record_collective("broadcast", "tp", [0, 1], out, src=0, label="Q heads 0-3")
    tracer.record_collective("all_gather", "ep", [0, 1], [torch.zeros(2), torch.zeros(2)])
    return tracer.trace


def test_round_trip_equals_original():
    """to_json then from_json gives back an equal SyncTrace."""
    trace = recorded_trace()
    assert SyncTrace.from_json(trace.to_json()) == trace


def test_two_runs_give_identical_text():
    """Two recordings of the same program serialise to the same text (diffable)."""
    assert recorded_trace().to_json() == recorded_trace().to_json()


def test_text_has_schema_and_version_and_sorted_keys():
    """The document names its schema and version; keys come out sorted."""
    data = json.loads(recorded_trace().to_json())
    assert (data["schema"], data["version"]) == ("syncviz.trace", 1)
    assert list(data) == sorted(data)
    assert list(data["params"][0]["ops"][0]) == sorted(data["params"][0]["ops"][0])


def test_save_and_load_file(tmp_path):
    """save writes a file that load reads back equal."""
    trace = recorded_trace()
    path = tmp_path / "trace.json"
    trace.save(path)
    assert SyncTrace.load(path) == trace


def test_failed_save_leaves_the_previous_file(tmp_path, monkeypatch):
    """A write that fails half-way keeps the earlier trace whole and leaves no temporary file."""
    path = tmp_path / "trace.json"
    SyncTrace(warnings=["first"]).save(path)

    def full_disk(self, text, encoding=None):
        self.open("w", encoding=encoding).write(text[:5])  # half a document, then the error
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        SyncTrace(warnings=["second"]).save(path)
    monkeypatch.undo()
    assert SyncTrace.load(path).warnings == ["first"]
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_non_json_metadata_is_rejected_on_save_before_the_file_is_touched(tmp_path):
    """A trace that cannot be serialised raises before any file exists at the path."""
    path = tmp_path / "trace.json"
    with pytest.raises(SyncvizError):
        SyncTrace(metadata={"parallel": (2, 1)}).save(path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_hand_built_trace_round_trips():
    """A trace built by hand from the dataclasses survives the round trip, nulls included."""
    trace = SyncTrace(
        params=[
            ParamTrace(
                param=None,
                ops=[OpRecord(index=0, op="split", args=[[1, 2]], kwargs={"dim": -1})],
                collectives=[CollectiveRecord(index=1, kind="recv", group="g", ranks=[3])],
            )
        ],
        collectives=[
            CollectiveRecord(
                index=0, kind="send", group="g", ranks=[0, 3], dst=3, bytes=8,
                tensors=[TensorRef(7, [2], "float32")],
            )
        ],
        warnings=["w"],
    )  # fmt: skip
    assert SyncTrace.from_json(trace.to_json()) == trace


def _broken(mutate) -> str:
    """The JSON of recorded_trace() after ``mutate(data)``."""
    data = json.loads(recorded_trace().to_json())
    mutate(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["params"][0]["ops"][1]["inputs"][0].update(shape="4x8"),
            "params[0].ops[1].inputs[0].shape",
        ),
        (
            lambda d: d["params"][0]["ops"][0]["outputs"][0].update(ref=True),
            "params[0].ops[0].outputs[0].ref",
        ),
        (lambda d: d["params"][0]["ops"][2].pop("derived_from"), "params[0].ops[2].derived_from"),
        (
            lambda d: d["params"][0]["collectives"][0].update(bytes=-1),
            "params[0].collectives[0].bytes",
        ),
        (lambda d: d["collectives"][0].update(ranks=[0, "1"]), "collectives[0].ranks[1]"),
        (lambda d: d["sources"][0].update(label=5), "sources[0].label"),
        (lambda d: d["params"][0].update(__class__="os.system"), "params[0].__class__"),
        (lambda d: d.update(warnings="none"), "warnings"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(schema="other"), "schema"),
    ],
)
def test_malformed_file_names_the_field(mutate, field):
    """Each kind of bad field raises SyncvizError whose message and context name its path."""
    with pytest.raises(SyncvizError) as info:
        SyncTrace.from_json(_broken(mutate))
    assert info.value.context["field"] == field
    assert f"trace field {field} " in str(info.value)


def test_not_json_is_rejected():
    """Text that is not JSON (e.g. a pickle) raises SyncvizError, not a decoder error."""
    with pytest.raises(SyncvizError, match="not valid JSON"):
        SyncTrace.from_json("\x80\x04K\x01.")


def test_non_json_metadata_is_rejected_on_save():
    """A metadata value JSON cannot hold (a tuple, an object) is named when serialising."""
    with pytest.raises(SyncvizError) as info:
        SyncTrace(metadata={"parallel": (2, 1)}).to_json()
    assert info.value.context["field"] == "metadata.parallel"
    with pytest.raises(SyncvizError, match=r"metadata\.dtype"):
        SyncTrace(metadata={"dtype": torch.float32}).to_json()
