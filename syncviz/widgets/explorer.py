"""The explorer: pick a model, sizes, a synchronizer, a parameter and a step; see where blocks go.

Widgets hold UI state only; every answer comes from the core (``run_sync``,
``check``, the diagram model, :mod:`syncviz.journey`). Sync runs are cached per
(spec, sizes, layer, synchronizer, provenance), pictures per (run, parameter,
view), so changing the parameter, view, step or block never re-runs the sync.
A first view draws the diagram only: a parameter's steps are replayed when the
step slider or a hover first needs them. The downscale runs on materialized ids
(refused first when ``run/memory`` says they would not fit); real sizes run on
symbolic ids.

>>> from syncviz.widgets.explorer import Explorer
>>> ex = Explorer("llama3-8b")  # the model's real sizes, ids kept as compact maps
>>> "llama3-8b: src tp2 -&gt; dst tp4" in ex.status.value
True
>>> ex.param.value  # it opens on the first wrong parameter
'model.model.layers.0.self_attn.o_proj.weight'
>>> ex.param.label.split(" · ")[0], len(ex.image.value) > 1000, ex.step.max > 0
('WRONG', True, True)
"""

from __future__ import annotations

import functools
import gc
import hashlib
import html
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as w

from syncviz.errors import SyncvizError
from syncviz.families import FamilyInfo
from syncviz.journey import TraceStep, block_journey, op_words, param_steps, step_count
from syncviz.parallel import Parallel, validate
from syncviz.presets import PRESETS, shipped_config, shipped_configs
from syncviz.spec import ModelSpec
from syncviz.sync.base import BaseSync

PATH_CHOICE = "config.json path..."
ALL_LAYERS = -1
PICTURE_CACHE = 48  # rendered base pictures kept (each ~100-300 KB)
VIEWS = ("layout", "experts", "transfer")
PICTURE_PX = 960  # the widest matplotlib view: a 970 px cell shows its text at 9 pt
STEP_BOX_HEIGHT = "420px"  # a step frame (at most ~330 px) and its two lines of words
# Draw the layout-preserving downscale unless asked otherwise. Real sizes run on symbolic
# provenance (compact maps, nothing per element); set False to open at real sizes.
SCALED_DEFAULT = False
MARKS = {"ok": "OK", "wrong": "WRONG", "error": "ERROR"}
JOURNEY_HINT = (
    "<div class='syncviz-journey'>click a cell of the picture, or pick a block, to follow"
    " its journey</div>"
)


_Method = TypeVar("_Method", bound=Callable[..., Any])


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside, as they were after."""
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off inside, as it was after (cycles made inside are
    collected by its next run)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _answer(method: _Method) -> _Method:
    """Run an explorer answer (an opening, a picture, hover words, a journey) on one torch
    thread with the cycle collector paused.

    Its tensors are small (a picture's cells, a panel's boxes: 10^3-10^5 elements), too
    small for intra-op threads to pay: on a busy machine a split op waits for a thread that
    is not scheduled. And a real-size opening makes some 10^5 short-lived objects (regions,
    boxes), which set off hundreds of collector runs, each walking every object of the
    kernel (torch's, the notebook's); they hold no cycles, reference counts free them.
    On the shared 2-core machine (load 8-10) the llama3-70b tp8 -> tp16 opening took
    4.5-5.7 s of CPU with two torch threads and the collector on, 1.6 s on one thread, and
    1.2 s on one thread with the collector paused (benchmarks/bench_explorer.py)."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _torch_threads(1), _collector_paused():
            return method(*args, **kwargs)

    return run  # type: ignore[return-value]


def _opening_model(model: str | None, family: str | Path | FamilyInfo | None) -> str:
    """The model the Explorer opens on: ``model``, else ``family``'s first preset (the family
    registered first), else llama3-8b."""
    if family is not None:
        from syncviz.family_file import use_family

        info = use_family(family)
        if model is None and info.presets:
            return info.presets[0].name
    return model or "llama3-8b"


@dataclass
class _Run:
    """One cached sync run: the result and its check, or the reason there is none."""

    result: Any = None
    report: Any = None
    error: str = ""
    head: str = ""  # the report's first line, for the status box
    steps: dict[str, list[TraceStep]] = field(default_factory=dict)
    journeys: dict[tuple[str, int], Any] = field(default_factory=dict)


@dataclass
class _Picture:
    """A rendered diagram: the PNG, its panels' pixel boxes (for the pointer), the model;
    or, with no PNG, the note saying why there is none."""

    png: bytes
    panels: list[dict]
    diagram: Any
    note: str = ""


class Explorer(w.VBox):
    """An interactive view of one sync: check status, a diagram, the steps, a block's journey.

    ``model``: a preset name, ``"config: <shipped config>"``, or a path to a HF
    ``config.json``; ``spec``: any ModelSpec (shown as "custom: <name>"). ``family``: a
    family of one's own (a ``.py`` / ``.json`` family file, or a ``FamilyInfo``), registered
    first; with no ``model`` given the Explorer opens on its first preset.
    ``synchronizers``: extra choices, a name -> BaseSync subclass (or "module:Class").
    ``scaled``: draw the layout-preserving downscale (fast, element exact); False runs
    the model's real sizes on symbolic provenance; None (default): :data:`SCALED_DEFAULT`.
    ``engine``: the destination engine (``"vllm"``, ``"sglang"``; default ``dst``'s).
    Display it in a notebook cell (it is a VBox); ``explorer.widget`` is itself.
    """

    def __init__(
        self,
        model: str | None = None,
        src: Parallel | None = None,
        dst: Parallel | None = None,
        *,
        synchronizer: str = "chatlearn",
        synchronizers: Mapping[str, type[BaseSync] | str] | None = None,
        spec: ModelSpec | None = None,
        scaled: bool | None = None,
        layer: int = 0,
        engine: str | None = None,
        family: str | Path | FamilyInfo | None = None,
    ) -> None:
        model = _opening_model(model, family)
        src = src or Parallel(tp=2)
        dst = dst or Parallel(tp=4)
        self._engine = dst.engine if engine is None else Parallel(tp=1, engine=engine).engine
        scaled = SCALED_DEFAULT if scaled is None else scaled
        self._custom = spec
        self._choices: dict[str, str | type[BaseSync]] = {"chatlearn": "chatlearn"}
        self._choices["corrected"] = "corrected"
        self._choices.update(dict(synchronizers or {}))
        self._runs: dict[tuple, _Run] = {}
        self._pictures: OrderedDict[tuple, _Picture] = OrderedDict()
        self._kinds: OrderedDict[tuple, Any] = OrderedDict()  # see _layout
        self._busy = False  # set while the code itself changes widget values
        self._hovering = False  # set while the hover words are made (see _steps)
        self._run_key: tuple | None = None

        model_options = [*PRESETS, *(f"config: {n}" for n in shipped_configs()), PATH_CHOICE]
        if spec is not None:
            model_options.insert(0, f"custom: {spec.name}")
            model = model_options[0]
        path = ""
        if model not in model_options:  # a config.json path
            model, path = PATH_CHOICE, model
        wide = w.Layout(width="340px")
        self.model = w.Dropdown(options=model_options, value=model, description="model")
        self.config_path = w.Text(
            value=path, placeholder="/path/to/config.json", description="config", layout=wide
        )
        self.scaled = w.Checkbox(value=scaled, description="layout-preserving downscale")
        small = w.Layout(width="150px")
        self.src_tp = w.BoundedIntText(src.tp, min=1, max=4096, description="src tp", layout=small)
        self.src_pp = w.BoundedIntText(src.pp, min=1, max=4096, description="src pp", layout=small)
        self.src_ep = w.BoundedIntText(src.ep, min=1, max=4096, description="src ep", layout=small)
        self.dst_tp = w.BoundedIntText(dst.tp, min=1, max=4096, description="dst tp", layout=small)
        self.synchronizer = w.Dropdown(
            options=list(self._choices), value=synchronizer, description="sync"
        )
        self.layer = w.Dropdown(options=[("layer 0", 0)], value=0, description="layer")
        self.filter = w.Text(placeholder="filter, e.g. qkv", description="search")
        self.param = w.Dropdown(options=[], description="parameter", layout=w.Layout(width="520px"))
        self.view = w.ToggleButtons(options=list(VIEWS), value="layout")
        self.step = w.IntSlider(0, min=0, max=0, description="step", continuous_update=False)
        self.block = w.Dropdown(options=[], description="block")
        self.status = w.HTML()
        self.message = w.HTML()
        self.step_text = w.HTML()
        from syncviz.widgets.picture import Picture, Still

        self.image = Picture()
        self.step_image = Still()
        # The step frame sits under the picture in a box of constant height, so moving the
        # slider never moves the picture; the busy line keeps its one line when empty.
        self.step_box = w.VBox(
            [self.step_text, self.step_image],
            layout=w.Layout(height=STEP_BOX_HEIGHT, overflow="auto", max_width="100%"),
        )
        self.step_box.add_class("syncviz-step-box")
        self.busy = w.HTML(layout=w.Layout(min_height="22px"))
        self.details = w.HTML()
        self.journey = w.HTML()
        self.journey_image = Still()  # the journey's path as a small picture of steps
        self.journey_image.add_class("syncviz-journey-image")
        self._initial_layer = layer
        self._current: _Picture | None = None
        self._open_first_bad = True

        for control in (self.model, self.config_path, self.scaled, self.synchronizer):
            control.observe(self._on_run_inputs, names="value")
        for control in (self.src_tp, self.src_pp, self.src_ep, self.dst_tp, self.layer):
            control.observe(self._on_run_inputs, names="value")
        self.filter.observe(self._on_filter, names="value")
        self.param.observe(self._on_param, names="value")
        self.view.observe(self._on_picture_inputs, names="value")
        self.step.observe(self._on_picture_inputs, names="value")
        self.block.observe(self._on_block, names="value")
        self.image.observe(self._on_hover, names="hover")
        self.image.observe(self._on_pick, names="picked")

        super().__init__(
            [
                w.HBox([self.model, self.config_path, self.scaled]),
                w.HBox([self.src_tp, self.src_pp, self.src_ep, self.dst_tp]),
                w.HBox([self.synchronizer, self.layer]),
                self.message,
                self.busy,
                self.status,
                w.HBox([self.filter, self.param]),
                w.HBox([self.view, self.step]),
                self.image,
                self.step_box,
                self.details,
                w.HBox([self.block]),
                self.journey,
                self.journey_image,
            ]
        )
        self.add_class("syncviz-explorer")
        self._show_path_box()
        self._refresh_run()

    # ------------------------------------------------------------ public state

    @property
    def widget(self) -> Explorer:
        """The explorer itself (it is a widget); for ``display(Explorer(...).widget)``."""
        return self

    @property
    def result(self):
        """The current SyncResult, or None when the inputs are invalid."""
        run = self._runs.get(self._run_key) if self._run_key else None
        return run.result if run else None

    @property
    def report(self):
        """The current CheckReport, or None."""
        run = self._runs.get(self._run_key) if self._run_key else None
        return run.report if run else None

    @_answer
    def prefetch(self) -> int:
        """Render the layout picture of every parameter of the current run (returns how many),
        so that later parameter changes only look them up."""
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None:
            return 0
        keys = [p.key for p in run.result.plan.layout.params]
        for key in keys:
            self._picture(run, key, "layout")
        return len(keys)

    # ------------------------------------------------------------ events

    def _on_run_inputs(self, change: dict) -> None:
        if self._busy:
            return
        if change["owner"] is self.model:
            self._show_path_box()
        self._refresh_run()

    def _on_filter(self, change: dict) -> None:
        if self._busy or self.result is None:
            return
        before = self.param.value
        self._fill_params(self.result)
        if self.param.value != before:
            self._refresh_param()

    def _on_param(self, change: dict) -> None:
        if not self._busy:
            self._refresh_param()

    def _on_picture_inputs(self, change: dict) -> None:
        if not self._busy:
            self._refresh_picture()

    def _on_block(self, change: dict) -> None:
        if not self._busy:
            self._refresh_journey()

    @_answer
    def _on_hover(self, change: dict) -> None:
        """Words for the cell under the pointer, from the core (diagram.hover)."""
        from syncviz.diagram.hover import cell_words

        cell = change["new"]
        picture = self._current
        run = self._runs.get(self._run_key) if self._run_key else None
        if not cell or picture is None or picture.diagram is None or run is None:
            return
        if self.view.value != "layout":
            return
        side, rank, i, j = cell
        self._hovering = True  # "via steps 3, 7" at real sizes once the slider replayed them
        try:
            words = cell_words(run.result, picture.diagram, side, int(rank), i, j)
        except (StopIteration, IndexError, KeyError) as err:  # a stale cell of an old picture
            words = f"(no cell there: {err})"
        finally:
            self._hovering = False
        # One message with both: the front end shows a tooltip only for the cell it is on.
        with self.image.hold_sync():
            self.image.words = words
            self.image.words_for = list(cell)

    @_answer
    def _on_pick(self, change: dict) -> None:
        """A click selects the block the cell holds (expected, if it holds none) and its journey."""
        cell = change["new"]
        picture = self._current
        if not cell or picture is None or picture.diagram is None or self.view.value != "layout":
            return
        side, rank, i, j = cell
        d = picture.diagram
        panels = d.src if side == "trainer" else d.dst
        panel = next((p for p in panels if p.rank == rank), None)
        if panel is None:
            return
        raster = panel.expected if side == "vLLM expected" else panel.actual
        block = int(raster.block[i, j])
        if block < 0 and panel.expected is not None:
            block = int(panel.expected.block[i, j])
        if block >= 0 and block == self.block.value:
            self._refresh_journey()  # the same block again: no change event, show it anyway
        elif block >= 0:
            self.block.value = block

    # ------------------------------------------------------------ the run

    def _show_path_box(self) -> None:
        self.config_path.layout.display = "" if self.model.value == PATH_CHOICE else "none"

    def _spec(self) -> ModelSpec:
        choice = self.model.value
        if choice.startswith("custom: ") and self._custom is not None:
            return self._custom
        if choice.startswith("config: "):
            return shipped_config(choice.removeprefix("config: "))
        if choice == PATH_CHOICE:
            path = self.config_path.value.strip()
            if not path:
                raise SyncvizError(
                    "no config.json path given", fix="type the path of a config.json"
                )
            return ModelSpec.from_hf_config(path)
        return PRESETS[choice]

    @_answer
    def _refresh_run(self) -> None:
        self._open_first_bad = True
        try:
            spec = self._spec()
            src = Parallel(tp=self.src_tp.value, pp=self.src_pp.value, ep=self.src_ep.value)
            dst = Parallel(tp=self.dst_tp.value, engine=self._engine)
            validate(spec, src, dst)
            if self.scaled.value:
                spec = spec.scaled(src, dst)
        except SyncvizError as err:
            self._show_problem(str(err))
            return
        except Exception as err:  # e.g. an unreadable config.json: say it, never a traceback
            self._show_problem(f"{type(err).__name__}: {err}")
            return
        self._fill_layers(spec)
        layer = self.layer.value
        # Scaled runs materialize ids (run_sync estimates their memory first and refuses
        # what would not fit); real sizes run on symbolic maps, nothing per element.
        provenance = "materialized" if self.scaled.value else "symbolic"
        key = (spec, src, dst, layer, self.synchronizer.value, provenance)
        run = self._runs.get(key)
        if run is None:
            sizes = "scaled sizes" if self.scaled.value else "real sizes (symbolic ids)"
            self.busy.value = _busy_html(f"running the sync and the check at {sizes}")
            try:
                run = self._sync(spec, src, dst, layer, self.synchronizer.value, provenance)
            finally:
                self.busy.value = ""
            if not run.error:  # a refusal (e.g. memory) is asked again next time
                self._runs[key] = run
        self._run_key = key
        if run.error:
            self._show_problem(run.error)
            return
        self.message.value = ""
        self._fill_views(run.result)
        self._fill_params(run.result)
        # Open where there is something to see: the first WRONG, else the first ERROR.
        order = {"wrong": 0, "error": 1}
        bad = [p for p in run.report.params if p.status in order]
        first_bad = min(bad, key=lambda p: order[p.status]).key if bad else None
        keys = [k for _, k in self.param.options]
        if self._open_first_bad and first_bad in keys:
            self._busy = True
            try:
                self.param.value = first_bad
            finally:
                self._busy = False
        self._open_first_bad = False
        self._refresh_param()

    def _sync(
        self, spec: ModelSpec, src: Parallel, dst: Parallel, layer: int, name: str, provenance: str
    ) -> _Run:
        from syncviz.check import check
        from syncviz.run.inprocess import run_sync

        layers = None if layer == ALL_LAYERS else [layer]
        try:
            if provenance == "materialized":
                _refuse_if_it_would_not_fit(spec, src, dst, layers)
            result = run_sync(
                spec,
                src,
                dst,
                synchronizer=self._choices[name],
                layers=layers,
                provenance=provenance,
            )
        except SyncvizError as err:
            return _Run(error=str(err))
        except ImportError as err:
            return _Run(error=f"synchronizer {name!r} is not available here yet ({err})")
        except Exception as err:  # a user synchronizer may raise anything: show it inline
            return _Run(error=f"synchronizer {name!r} failed: {type(err).__name__}: {err}")
        try:
            report = check(result, name)
        except Exception as err:
            return _Run(result=result, error=f"check failed: {type(err).__name__}: {err}")
        return _Run(result=result, report=report, head=report.text().splitlines()[0])

    def _show_problem(self, text: str) -> None:
        self._run_key = None
        self.message.value = (
            "<div class='syncviz-message' style='color:#b00020;padding:4px 0'>"
            f"<b>Cannot show this combination:</b> {html.escape(text)}</div>"
        )
        self.status.value = ""
        self.step_text.value = ""
        self.details.value = ""
        self.journey.value = ""
        self.journey_image.value = b""
        self.image.clear_words()
        self.image.value = b""
        self.image.panels = []
        self.image.note = "no picture: " + text
        self.step_image.value = b""
        self._busy = True
        try:
            self.param.options = []
            self.block.options = []
            self.step.max = 0
        finally:
            self._busy = False

    def _fill_layers(self, spec: ModelSpec) -> None:
        options = [(f"layer {i}", i) for i in range(spec.num_layers)]
        options.append(("all layers, embedding and head", ALL_LAYERS))
        if list(self.layer.options) == options:
            return
        self._busy = True
        try:
            wanted = self._initial_layer if self._initial_layer is not None else self.layer.value
            self._initial_layer = None
            self.layer.options = options
            valid = {v for _, v in options}
            self.layer.value = wanted if wanted in valid else 0
        finally:
            self._busy = False

    def _fill_views(self, result) -> None:
        """Offer the views that apply to this run: experts only where routed experts are."""
        views = [v for v in VIEWS if v != "experts" or _expert_key(result, None) is not None]
        if list(self.view.options) == views:
            return
        self._busy = True
        try:
            keep = self.view.value
            self.view.options = views
            self.view.value = keep if keep in views else "layout"
        finally:
            self._busy = False

    def _fill_params(self, result) -> None:
        words = self.filter.value.strip().lower()
        options = []
        marks = {pc.key: MARKS.get(pc.status, pc.status.upper()) for pc in self.report.params}
        for p in result.plan.layout.params:
            label = f"{marks.get(p.key, '?')} · {_param_label(p)}"
            if not words or words in label.lower() or words in p.key.lower():
                options.append((label, p.key))
        keep = self.param.value
        self._busy = True
        try:
            self.param.options = options
            keys = [k for _, k in options]
            if keys:
                self.param.value = keep if keep in keys else keys[0]
        finally:
            self._busy = False

    # ------------------------------------------------------------ the parameter

    def _steps(self) -> list[TraceStep]:
        """The parameter's steps, replayed on ids the first time they are needed (the step
        slider or a hover), not for its first view. While :attr:`_hovering` a real-size
        run (a replay there takes seconds), steps not yet replayed read as none."""
        run = self._runs[self._run_key]
        key = self.param.value
        if key not in run.steps and self._hovering and self._run_key[-1] == "symbolic":
            return []
        if key not in run.steps:
            self.busy.value = _busy_html("replaying the recorded steps on ids")
            try:
                run.steps[key] = param_steps(run.result, key)
            finally:
                self.busy.value = ""
        return run.steps[key]

    def _step_count(self) -> int:
        """How many steps :meth:`_steps` will give, read from the trace without replaying."""
        run = self._runs[self._run_key]
        key = self.param.value
        if key in run.steps:
            return len(run.steps[key])
        return step_count(run.result, key)

    @_answer
    def _refresh_param(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or not self.param.value:
            self.status.value = self.status.value if run else ""
            return
        key = self.param.value
        param = run.result.plan.layout.param(key)
        self._busy = True
        try:
            self.step.value = 0
            self.step.max = self._step_count()
            self.block.options = [(b.label, i) for i, b in enumerate(param.blocks)]
            self.block.value = 0 if param.blocks else None
        finally:
            self._busy = False
        self.status.value = _status_html(run.report, run.head, key)
        self.details.value = _details_html(run.report, key)
        self._refresh_picture()
        # A journey replays every op: follow one only when asked (a click or the block list).
        self.journey.value = JOURNEY_HINT
        self.journey_image.value = b""

    @_answer
    def _refresh_picture(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or not self.param.value:
            return
        from syncviz.diagram.model import frame
        from syncviz.diagram.pil import frame_png

        key, view = self.param.value, self.view.value
        steps = self._steps() if self.step.value > 0 else None
        total = len(steps) if steps is not None else self._step_count()
        step = steps[self.step.value - 1] if steps and self.step.value <= len(steps) else None
        self.step_text.value = _step_html(step, self.step.value, total)
        picture = self._picture(run, key, view)
        if picture.note:
            self.step_text.value = f"<div class='syncviz-note'>{html.escape(picture.note)}</div>"
        self._current = picture
        if self.image.value is not picture.png:
            self.image.clear_words()  # words of the old picture's cells mean nothing here
            self.image.panels = picture.panels
            self.image.note = picture.note
            self.image.value = picture.png
        if step is not None and view == "layout" and picture.diagram is not None:
            d = picture.diagram
            cell = d.src[0].actual.cell if d.src else None
            try:
                self.step_image.value = frame_png(frame(d, self.step.value, cell))
            except SyncvizError as err:  # e.g. a step tensor too fragmented to draw at this size
                self.step_image.value = b""
                note = f"step {self.step.value} not drawn: {err}"
                self.step_text.value += f"<div class='syncviz-note'>{html.escape(note)}</div>"
        else:
            self.step_image.value = b""

    def _picture(self, run: _Run, key: str, view: str) -> _Picture:
        from syncviz.diagram import transfer_diagram
        from syncviz.diagram.experts import expert_diagram

        if view == "experts":
            key = _expert_key(run.result, key)
        cache_key = (self._run_key, key if view != "transfer" else "", view)
        picture = self._pictures.get(cache_key)
        if picture is not None:
            self._pictures.move_to_end(cache_key)
            return picture
        self.busy.value = _busy_html(f"drawing the {view} view")
        try:
            if view == "layout":
                diagram = self._layout(run, key)
            elif view == "experts" and key is not None:
                diagram = expert_diagram(run.result, key)
            elif view == "experts":
                self._pictures[cache_key] = _Picture(
                    b"", [], None, "this model has no routed experts"
                )
                return self._pictures[cache_key]
            else:
                diagram = transfer_diagram(run.result)
            if view == "layout":  # PIL: the same picture as matplotlib, several times faster
                from syncviz.diagram.pil_layout import layout_png

                png, panels = layout_png(diagram)
                picture = _Picture(png, panels, diagram)
            else:
                picture = _Picture(_figure(diagram)._repr_png_(), [], None)
        finally:
            self.busy.value = ""
        self._pictures[cache_key] = picture
        while len(self._pictures) > PICTURE_CACHE:
            self._pictures.popitem(last=False)
        return picture

    def _layout(self, run: _Run, key: str):
        """The layout diagram of ``key``; its steps are replayed when the slider or a hover
        first reads them (:class:`_OnScreenSteps`). A parameter of a kind already drawn in
        another layer, whose ranks hold the same ids and which the report faults alike, is
        that diagram renamed."""
        from syncviz.diagram import layout_diagram

        sig = _kind_signature(run, key) if self._run_key[-1] == "materialized" else None
        base = self._kinds.get((self._run_key, sig)) if sig is not None else None
        if base is not None and base.title.startswith(base.key):
            self._kinds.move_to_end((self._run_key, sig))
            return replace(base, key=key, title=key + base.title[len(base.key) :])
        # The check's words for wrong rows are in the details under the picture: the picture
        # leaves them out (at real sizes they cost a raster of every vLLM panel).
        diagram = layout_diagram(
            run.result, key, run.report, steps=_OnScreenSteps(self._steps), regions=False
        )
        if sig is not None:
            self._kinds[self._run_key, sig] = diagram
            while len(self._kinds) > PICTURE_CACHE:
                self._kinds.popitem(last=False)
        return diagram

    def _block_label(self, run: _Run, key: str) -> str | None:
        if self.block.value is None:
            return None
        blocks = run.result.plan.layout.param(key).blocks
        return blocks[self.block.value].label if self.block.value < len(blocks) else None

    @_answer
    def _refresh_journey(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or self.block.value is None:
            self.journey.value = ""
            self.journey_image.value = b""
            return
        cache_key = (self.param.value, self.block.value)
        journey = run.journeys.get(cache_key)
        if journey is None:
            self.busy.value = _busy_html(f"following the journey of {self.block.label}")
            try:
                journey = run.journeys[cache_key] = block_journey(
                    run.result, self.param.value, self.block.value
                )
            finally:
                self.busy.value = ""
        from syncviz.diagram.pil_journey import journey_png

        self.journey_image.value = journey_png(journey)
        color = "#1a7f37" if journey.ok else "#cf222e"
        verdict = "right" if journey.ok else "WRONG"
        self.journey.value = (
            f"<div class='syncviz-journey'><b style='color:{color}'>{verdict}</b> "
            f"journey of <b>{html.escape(journey.label)}</b>"
            f"<pre style='font-size:11px;white-space:pre-wrap'>"
            f"{html.escape(journey.text())}</pre>"
            "</div>"
        )


# ---------------------------------------------------------------- helpers (no widget state)


class _OnScreenSteps(Sequence):
    """The recorded steps of the parameter on screen, replayed when first read.

    A layout diagram's steps are read only while its picture is the one on screen
    (the step strip, the hover words), so one diagram shared by the layers of a
    kind reads the steps of the layer shown; the replay is cached per parameter.
    """

    def __init__(self, load: Callable[[], list[TraceStep]]) -> None:
        self._load = load

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i):
        return self._load()[i]


def _param_label(p) -> str:
    """``layer 0 · self_attn.qkv_proj.weight (qkv)`` or ``global · embed_tokens.weight``."""
    if p.layer is None:
        short = p.key.removeprefix("model.").removeprefix("model.")
        return f"global · {short} ({p.kind})"
    short = p.key.split(f"layers.{p.layer}.", 1)[-1]
    return f"layer {p.layer} · {short} ({p.kind})"


def _status_html(report, head: str, key: str) -> str:
    if report is None:
        return ""
    esc = html.escape
    head = esc(head)
    color = "#1a7f37" if report.ok else "#cf222e"
    pc = next((p for p in report.params if p.key == key), None)
    mine = ""
    if pc is not None:
        mark = "OK" if pc.status == "ok" else pc.status.upper()
        pc_color = "#1a7f37" if pc.status == "ok" else "#cf222e"
        mine = f"<br><b style='color:{pc_color}'>{esc(mark)}</b> <code>{esc(key)}</code>"
    return f"<div class='syncviz-status'><b style='color:{color}'>{head}</b>{mine}</div>"


def _details_html(report, key: str) -> str:
    if report is None:
        return ""
    pc = next((p for p in report.params if p.key == key), None)
    if pc is None or not pc.lines():
        return ""
    text = "\n".join(line.strip() for line in pc.lines())
    return f"<pre style='font-size:11px;white-space:pre-wrap'>{html.escape(text)}</pre>"


def _step_html(step: TraceStep | None, index: int, total: int) -> str:
    esc = html.escape
    if step is None:
        return (
            f"<div class='syncviz-step'>all {total} recorded steps shown;"
            " move the step slider to walk them op by op</div>"
        )
    carries = "blocks not known (not replayed)"
    if step.blocks is not None:
        shown = ", ".join(step.blocks[:12]) + (" ..." if len(step.blocks) > 12 else "")
        carries = f"carries {shown or 'nothing of this parameter'}"
    return (
        f"<div class='syncviz-step'><b>step {index}/{total}</b>: {esc(step.who)}"
        f" {esc(step.phase)} <b>{esc(step.op.op)}</b> {esc(step.shapes)}; {esc(carries)}"
        f"<br><code>{esc(op_words(step.op))}</code></div>"
    )


def _expert_key(result, key: str | None) -> str | None:
    """The parameter the experts view draws: ``key`` if it is a routed-expert tensor,
    else the first one of the run (None if the model has none)."""
    params = result.plan.layout.params
    if key is not None and result.plan.layout.param(key).kind.startswith("experts_"):
        return key
    return next((p.key for p in params if p.kind.startswith("experts_")), None)


def _kind_signature(run: _Run, key: str) -> tuple:
    """What a layout diagram is drawn from, apart from the parameter's name: its blocks
    (one table per kind, shared by every layer), where the oracle puts them, the ids
    every vLLM rank holds, and the report's errors. Asked of materialized runs only
    (a symbolic run's ids are not materialized just to compare them)."""
    from syncviz.diagram.ranks import dst_world

    result = run.result
    param = result.plan.layout.param(key)
    held = []
    for t in param.dst:
        ids = result.local_ids(dst_world(result.plan, t.pp, t.tp), key)
        held.append(hashlib.blake2b(ids.numpy().tobytes(), digest_size=16).digest())
    pc = next((p for p in run.report.params if p.key == key), None) if run.report else None
    errors = tuple(e.strip() for e in pc.errors) if pc is not None else ()
    return (
        id(param.blocks),
        param.kind,
        tuple(param.global_shape),
        tuple(s.index for s in param.src),
        tuple(t.index for t in param.dst),
        tuple(held),
        errors,
    )


def _figure(diagram):
    """The matplotlib figure of an experts or transfer diagram, at most :data:`PICTURE_PX`
    wide: a notebook cell that wide shows its 9 pt text unshrunk."""
    from syncviz.diagram import render
    from syncviz.diagram.experts import ExpertDiagram
    from syncviz.diagram.mpl import DPI, render_experts

    if isinstance(diagram, ExpertDiagram):
        return render_experts(diagram, max_width_in=PICTURE_PX / DPI)
    return render(diagram)


def _busy_html(what: str) -> str:
    return f"<div class='syncviz-busy' style='color:#555'>&#8987; {html.escape(what)}...</div>"


def _refuse_if_it_would_not_fit(spec: ModelSpec, src: Parallel, dst: Parallel, layers) -> None:
    """run_sync's own memory refusal (:func:`syncviz.run.memory.check_memory`), asked
    first so that the fix names this page's controls rather than command-line flags."""
    from syncviz.run.memory import check_memory
    from syncviz.run.plan import build_plan

    try:
        check_memory(build_plan(spec, src, dst, layers=layers))
    except SyncvizError as err:
        raise SyncvizError(
            err.message,
            fix="pick one layer, or untick the downscale (real sizes run on symbolic ids,"
            " with nothing allocated per element)",
        ) from None
