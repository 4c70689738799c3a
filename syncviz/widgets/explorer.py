"""The explorer: pick a model, sizes, a synchronizer, a parameter and a step; see where blocks go.

Widgets hold UI state only; every answer comes from the core (``run_sync``,
``check``, the diagram model, :mod:`syncviz.journey`). Sync runs are cached per
(spec, sizes, layer, synchronizer), pictures per (run, parameter, view), so
changing the parameter, view, step or block never re-runs the sync.

>>> from syncviz.widgets.explorer import Explorer
>>> ex = Explorer("llama3-8b")
>>> "llama3-8b (scaled): src tp2 -&gt; dst tp4" in ex.status.value
True
>>> ex.param.value
'model.model.layers.0.input_layernorm.weight'
>>> ex.param.value = "model.model.layers.0.self_attn.qkv_proj.weight"
>>> len(ex.image.value) > 1000, ex.step.max > 0
(True, True)
"""

from __future__ import annotations

import html
import io
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w

from syncviz.errors import SyncvizError
from syncviz.journey import TraceStep, block_journey, param_steps
from syncviz.parallel import Parallel, validate
from syncviz.presets import PRESETS, shipped_config, shipped_configs
from syncviz.spec import ModelSpec
from syncviz.sync.base import BaseSync

PATH_CHOICE = "config.json path..."
ALL_LAYERS = -1
PICTURE_CACHE = 48  # rendered base pictures kept (each ~100-300 KB)
STEP_COLOR = (255, 196, 0)  # the step's blocks
BLOCK_COLOR = (230, 0, 230)  # the inspected block
PANEL_COLOR = (0, 160, 255)  # the step's rank, when its blocks are unknown


@dataclass
class _Run:
    """One cached sync run: the result and its check, or the reason there is none."""

    result: Any = None
    report: Any = None
    error: str = ""
    steps: dict[str, list[TraceStep]] = field(default_factory=dict)
    journeys: dict[tuple[str, int], Any] = field(default_factory=dict)


@dataclass
class _Picture:
    """A rendered diagram: the PNG, the decoded image for overlays, and rect boxes in pixels.

    ``boxes``: (side, world rank, block label, (x0, y0, x1, y1)) from the top left.
    """

    png: bytes
    image: Any
    boxes: list[tuple[str, int, str, tuple[float, float, float, float]]]


class Explorer(w.VBox):
    """An interactive view of one sync: check status, a diagram, the steps, a block's journey.

    ``model``: a preset name, ``"config: <shipped config>"``, or a path to a HF
    ``config.json``; ``spec``: any ModelSpec (shown as "custom: <name>").
    ``synchronizers``: extra choices, a name -> BaseSync subclass (or "module:Class").
    ``scaled``: draw the layout-preserving downscale (fast, element exact).
    Display it in a notebook cell (it is a VBox); ``explorer.widget`` is itself.
    """

    def __init__(
        self,
        model: str = "llama3-8b",
        src: Parallel | None = None,
        dst: Parallel | None = None,
        *,
        synchronizer: str = "chatlearn",
        synchronizers: Mapping[str, type[BaseSync] | str] | None = None,
        spec: ModelSpec | None = None,
        scaled: bool = True,
        layer: int = 0,
    ) -> None:
        src = src or Parallel(tp=2)
        dst = dst or Parallel(tp=4)
        self._custom = spec
        self._choices: dict[str, str | type[BaseSync]] = {"chatlearn": "chatlearn"}
        self._choices["corrected"] = "corrected"
        self._choices.update(dict(synchronizers or {}))
        self._runs: dict[tuple, _Run] = {}
        self._pictures: OrderedDict[tuple, _Picture] = OrderedDict()
        self._busy = False  # set while the code itself changes widget values
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
        self.view = w.ToggleButtons(options=["layout", "transfer"], value="layout")
        self.step = w.IntSlider(0, min=0, max=0, description="step", continuous_update=False)
        self.block = w.Dropdown(options=[], description="block")
        self.status = w.HTML()
        self.message = w.HTML()
        self.step_text = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.details = w.HTML()
        self.journey = w.HTML()
        self._initial_layer = layer

        for control in (self.model, self.config_path, self.scaled, self.synchronizer):
            control.observe(self._on_run_inputs, names="value")
        for control in (self.src_tp, self.src_pp, self.src_ep, self.dst_tp, self.layer):
            control.observe(self._on_run_inputs, names="value")
        self.filter.observe(self._on_filter, names="value")
        self.param.observe(self._on_param, names="value")
        self.view.observe(self._on_picture_inputs, names="value")
        self.step.observe(self._on_picture_inputs, names="value")
        self.block.observe(self._on_block, names="value")

        super().__init__(
            [
                w.HBox([self.model, self.config_path, self.scaled]),
                w.HBox([self.src_tp, self.src_pp, self.src_ep, self.dst_tp]),
                w.HBox([self.synchronizer, self.layer]),
                self.message,
                self.status,
                w.HBox([self.filter, self.param]),
                w.HBox([self.view, self.step]),
                self.step_text,
                self.image,
                self.details,
                w.HBox([self.block]),
                self.journey,
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
            self._refresh_picture()
            self._refresh_journey()

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

    def _refresh_run(self) -> None:
        try:
            spec = self._spec()
            src = Parallel(tp=self.src_tp.value, pp=self.src_pp.value, ep=self.src_ep.value)
            dst = Parallel(tp=self.dst_tp.value)
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
        key = (spec, src, dst, layer, self.synchronizer.value)
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = self._sync(spec, src, dst, layer, self.synchronizer.value)
        self._run_key = key
        if run.error:
            self._show_problem(run.error)
            return
        self.message.value = ""
        self._fill_params(run.result)
        self._refresh_param()

    def _sync(self, spec: ModelSpec, src: Parallel, dst: Parallel, layer: int, name: str) -> _Run:
        from syncviz.check import check
        from syncviz.run.inprocess import run_sync

        layers = None if layer == ALL_LAYERS else [layer]
        try:
            result = run_sync(spec, src, dst, synchronizer=self._choices[name], layers=layers)
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
        return _Run(result=result, report=report)

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
        self.image.value = b""
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

    def _fill_params(self, result) -> None:
        words = self.filter.value.strip().lower()
        options = []
        for p in result.plan.layout.params:
            label = _param_label(p)
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
        run = self._runs[self._run_key]
        key = self.param.value
        if key not in run.steps:
            run.steps[key] = param_steps(run.result, key)
        return run.steps[key]

    def _refresh_param(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or not self.param.value:
            self.status.value = self.status.value if run else ""
            return
        key = self.param.value
        param = run.result.plan.layout.param(key)
        steps = self._steps()
        self._busy = True
        try:
            self.step.value = 0
            self.step.max = len(steps)
            self.block.options = [(b.label, i) for i, b in enumerate(param.blocks)]
            self.block.value = 0 if param.blocks else None
        finally:
            self._busy = False
        self.status.value = _status_html(run.report, key)
        self.details.value = _details_html(run.report, key)
        self._refresh_picture()
        self._refresh_journey()

    def _refresh_picture(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or not self.param.value:
            return
        key, view = self.param.value, self.view.value
        steps = self._steps()
        step = steps[self.step.value - 1] if 0 < self.step.value <= len(steps) else None
        self.step_text.value = _step_html(step, self.step.value, len(steps))
        picture = self._picture(run, key, view)
        if view == "transfer":
            self.image.value = picture.png
            return
        block = self._block_label(run, key)
        self.image.value = _overlay(picture, step, block)

    def _picture(self, run: _Run, key: str, view: str) -> _Picture:
        from syncviz.diagram import layout_diagram, render, transfer_diagram

        cache_key = (self._run_key, key if view == "layout" else "", view)
        picture = self._pictures.get(cache_key)
        if picture is not None:
            self._pictures.move_to_end(cache_key)
            return picture
        if view == "layout":
            diagram = layout_diagram(run.result, key, run.report)
        else:
            diagram = transfer_diagram(run.result)
        picture = _to_picture(render(diagram), diagram)
        self._pictures[cache_key] = picture
        while len(self._pictures) > PICTURE_CACHE:
            self._pictures.popitem(last=False)
        return picture

    def _block_label(self, run: _Run, key: str) -> str | None:
        if self.block.value is None:
            return None
        blocks = run.result.plan.layout.param(key).blocks
        return blocks[self.block.value].label if self.block.value < len(blocks) else None

    def _refresh_journey(self) -> None:
        run = self._runs.get(self._run_key) if self._run_key else None
        if run is None or run.result is None or self.block.value is None:
            self.journey.value = ""
            return
        cache_key = (self.param.value, self.block.value)
        journey = run.journeys.get(cache_key)
        if journey is None:
            journey = run.journeys[cache_key] = block_journey(
                run.result, self.param.value, self.block.value
            )
        color = "#1a7f37" if journey.ok else "#cf222e"
        verdict = "right" if journey.ok else "WRONG"
        self.journey.value = (
            f"<div class='syncviz-journey'><b style='color:{color}'>{verdict}</b> "
            f"journey of <b>{html.escape(journey.label)}</b>"
            f"<pre style='font-size:11px;white-space:pre-wrap'>{html.escape(journey.text())}</pre>"
            "</div>"
        )


# ---------------------------------------------------------------- helpers (no widget state)


def _param_label(p) -> str:
    """``layer 0 · self_attn.qkv_proj.weight (qkv)`` or ``global · embed_tokens.weight``."""
    if p.layer is None:
        short = p.key.removeprefix("model.").removeprefix("model.")
        return f"global · {short} ({p.kind})"
    short = p.key.split(f"layers.{p.layer}.", 1)[-1]
    return f"layer {p.layer} · {short} ({p.kind})"


def _status_html(report, key: str) -> str:
    if report is None:
        return ""
    esc = html.escape
    head = esc(report.text().splitlines()[0])
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
        f"<div class='syncviz-step'><b>step {index}/{total}</b>: rank {step.rank}"
        f" {esc(step.phase)} <b>{esc(step.op.op)}</b> {esc(step.shapes)}; {esc(carries)}"
        f"<br><code>{esc(step.op.summary())}</code></div>"
    )


def _to_picture(figure, diagram) -> _Picture:
    """Render to PNG once and keep where every rect landed, for cheap overlays."""
    from PIL import Image

    png = figure._repr_png_()  # draws the canvas, so the transforms below are final
    boxes = []
    placed = getattr(figure, "_placed", {})
    height = figure.size_px[1]
    for side, panels in (
        ("src", getattr(diagram, "src", [])),
        ("dst", getattr(diagram, "dst", [])),
    ):
        for panel in panels if isinstance(panels, list) else []:
            for rect in getattr(panel, "rects", []):
                spot = placed.get(id(rect))
                if spot is None:
                    continue
                ax, x0, y0, width, rows = spot
                (ax0, ay0), (ax1, ay1) = ax.transData.transform([(x0, y0), (x0 + width, y0 + rows)])
                top, bottom = sorted((height - ay0, height - ay1))
                left, right = sorted((ax0, ax1))
                boxes.append((side, panel.rank, rect.label, (left, top, right, bottom)))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return _Picture(png, image, boxes)


def _overlay(picture: _Picture, step: TraceStep | None, block: str | None) -> bytes:
    """The picture with the step's blocks (or rank) and the inspected block outlined."""
    from PIL import ImageDraw

    marks: list[tuple[tuple[float, float, float, float], tuple[int, int, int], int]] = []
    for _, _rank, label, box in picture.boxes:
        if block is not None and label == block:
            marks.append((box, BLOCK_COLOR, 3))
    if step is not None:
        for _, rank, label, box in picture.boxes:
            if rank != step.rank:
                continue
            if step.blocks is None:
                marks.append((box, PANEL_COLOR, 2))
            elif label in step.blocks:
                marks.append((box, STEP_COLOR, 4))
    if not marks:
        return picture.png
    image = picture.image.copy()
    draw = ImageDraw.Draw(image)
    for box, color, width in marks:
        draw.rectangle(box, outline=color, width=width)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
