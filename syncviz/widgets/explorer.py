"""The explorer: pick a model, sizes, a synchronizer, a parameter and a step; see where blocks go.

Widgets hold UI state only. The session behind them
(:class:`~syncviz.explorer_session.ExplorerSession`, ``explorer.session``) holds the
run, the parameter and view on screen and the caches, and answers every question
from the core (``run_sync``, ``check``, the diagram model, :mod:`syncviz.journey`);
this module maps control changes to session calls and its answers to widget values
and HTML. Values the page sets itself raise no events (one guard: ``_quietly``).

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
import html
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as w

from syncviz.errors import SyncvizError
from syncviz.explorer_session import (
    ALL_LAYERS,
    MARKS,
    VIEWS,
    ExplorerSession,
    Picture,
    StepView,
    answer,
)
from syncviz.families import FamilyInfo
from syncviz.journey import op_words
from syncviz.parallel import Parallel
from syncviz.presets import PRESETS, shipped_config, shipped_configs
from syncviz.spec import ModelSpec
from syncviz.sync.base import BaseSync

PATH_CHOICE = "config.json path..."
STEP_BOX_HEIGHT = "420px"  # a step frame (at most ~330 px) and its two lines of words
# Draw the layout-preserving downscale unless asked otherwise. Real sizes run on symbolic
# provenance (compact maps, nothing per element); set False to open at real sizes.
SCALED_DEFAULT = False
JOURNEY_HINT = (
    "<div class='syncviz-journey'>click a cell of the picture, or pick a block, to follow"
    " its journey</div>"
)


def _opening_model(model: str | None, family: str | Path | FamilyInfo | None) -> str:
    """The model the Explorer opens on: ``model``, else ``family``'s first preset (the family
    registered first), else llama3-8b."""
    if family is not None:
        from syncviz.family_file import use_family

        info = use_family(family)
        if model is None and info.presets:
            return info.presets[0].name
    return model or "llama3-8b"


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
    Display it in a notebook cell (it is a VBox); ``explorer.widget`` is itself. Its
    state and answers live in ``explorer.session`` (:class:`ExplorerSession`); the widget
    maps its controls to session calls and the answers to widget values.
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
        self._quiet = False  # set while the page sets its own controls (see _quietly)
        self.busy = w.HTML(layout=w.Layout(min_height="22px"))
        self.session = ExplorerSession(synchronizers, busy=self._say_busy)

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
            options=list(self.session.choices), value=synchronizer, description="sync"
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
        from syncviz.widgets.picture import Picture as PictureWidget
        from syncviz.widgets.picture import Still

        self.image = PictureWidget()
        self.step_image = Still()
        # The step frame sits under the picture in a box of constant height, so moving the
        # slider never moves the picture; the busy line keeps its one line when empty.
        self.step_box = w.VBox(
            [self.step_text, self.step_image],
            layout=w.Layout(height=STEP_BOX_HEIGHT, overflow="auto", max_width="100%"),
        )
        self.step_box.add_class("syncviz-step-box")
        self.details = w.HTML()
        self.journey = w.HTML()
        self.journey_image = Still()  # the journey's path as a small picture of steps
        self.journey_image.add_class("syncviz-journey-image")
        self._initial_layer: int | None = layer

        run_inputs = [self.model, self.config_path, self.scaled, self.synchronizer, self.src_tp]
        run_inputs += [self.src_pp, self.src_ep, self.dst_tp, self.layer]
        events: list[tuple[w.Widget, str, Callable[[dict], None]]] = [
            *((control, "value", self._on_run_inputs) for control in run_inputs),
            (self.filter, "value", self._on_filter),
            (self.param, "value", lambda change: self._refresh_param()),
            (self.view, "value", self._on_view),
            (self.step, "value", self._on_step),
            (self.block, "value", lambda change: self._refresh_journey()),
            (self.image, "hover", self._on_hover),
            (self.image, "picked", self._on_pick),
        ]
        for control, name, handler in events:
            control.observe(functools.partial(self._answer, handler), names=name)

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
        return self.session.result

    @property
    def report(self):
        """The current CheckReport, or None."""
        return self.session.report

    def prefetch(self) -> int:
        """Render the layout picture of every parameter of the current run (returns how many),
        so that later parameter changes only look them up."""
        return self.session.prefetch()

    # ------------------------------------------------------------ the one guard

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Set controls from the code: their change events are not answered (:meth:`_answer`)."""
        before, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = before

    def _answer(self, handler: Callable[[dict], None], change: dict) -> None:
        """A widget event the page answers; ignored while the page sets its own controls
        (:meth:`_quietly`): the one re-entry guard."""
        if not self._quiet:
            handler(change)

    def _say_busy(self, what: str) -> None:
        self.busy.value = _busy_html(what) if what else ""

    # ------------------------------------------------------------ events

    def _on_run_inputs(self, change: dict) -> None:
        if change["owner"] is self.model:
            self._show_path_box()
        self._refresh_run()

    def _on_filter(self, change: dict) -> None:
        if self.result is None:
            return
        before = self.param.value
        self._fill_params()
        if self.param.value != before:
            self._refresh_param()

    def _on_view(self, change: dict) -> None:
        if self.session.key is not None:
            self._show_picture(self.session.show(self.view.value))
            self._show_step()

    def _on_step(self, change: dict) -> None:
        if self.session.key is not None:
            self._show_step()

    def _on_hover(self, change: dict) -> None:
        """Words for the cell under the pointer, from the session (diagram.hover)."""
        cell = change["new"]
        if not cell:
            return
        side, rank, i, j = cell
        words = self.session.hover(side, rank, i, j)
        if words is None:
            return
        # One message with both: the front end shows a tooltip only for the cell it is on.
        with self.image.hold_sync():
            self.image.words = words
            self.image.words_for = list(cell)

    def _on_pick(self, change: dict) -> None:
        """A click selects the block the cell holds (expected, if it holds none) and its journey."""
        cell = change["new"]
        block = self.session.block_at(*cell) if cell else None
        if block is not None and block == self.block.value:
            self._refresh_journey()  # the same block again: no change event, show it anyway
        elif block is not None:
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

    @answer
    def _refresh_run(self) -> None:
        try:
            spec = self._spec()
            src = Parallel(tp=self.src_tp.value, pp=self.src_pp.value, ep=self.src_ep.value)
            dst = Parallel(tp=self.dst_tp.value, engine=self._engine)
        except SyncvizError as err:
            self._show_problem(str(err))
            return
        except Exception as err:  # e.g. an unreadable config.json: say it, never a traceback
            self._show_problem(f"{type(err).__name__}: {err}")
            return
        self._fill_layers(spec)
        error = self.session.open(
            spec,
            src,
            dst,
            layer=self.layer.value,
            synchronizer=self.synchronizer.value,
            scaled=self.scaled.value,
        )
        if error:
            self._show_problem(error)
            return
        self.message.value = ""
        views = self.session.views()
        with self._quietly():
            if list(self.view.options) != views:
                keep = self.view.value
                self.view.options = views
                self.view.value = keep if keep in views else "layout"
        self._fill_params()
        # Open where there is something to see: the first WRONG, else the first ERROR.
        bad = self.session.first_bad()
        if bad in [k for _, k in self.param.options]:
            with self._quietly():
                self.param.value = bad
        self._refresh_param()

    def _show_problem(self, text: str) -> None:
        self.session.close()
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
        with self._quietly():
            self.param.options = []
            self.block.options = []
            self.step.max = 0

    def _fill_layers(self, spec: ModelSpec) -> None:
        options = [(f"layer {i}", i) for i in range(spec.num_layers)]
        options.append(("all layers, embedding and head", ALL_LAYERS))
        if list(self.layer.options) == options:
            return
        with self._quietly():
            wanted = self._initial_layer if self._initial_layer is not None else self.layer.value
            self._initial_layer = None
            self.layer.options = options
            valid = {v for _, v in options}
            self.layer.value = wanted if wanted in valid else 0

    def _fill_params(self) -> None:
        options = self.session.params(self.filter.value)
        keep = self.param.value
        with self._quietly():
            self.param.options = options
            keys = [k for _, k in options]
            if keys:
                self.param.value = keep if keep in keys else keys[0]

    # ------------------------------------------------------------ the parameter

    @answer
    def _refresh_param(self) -> None:
        if self.result is None or not self.param.value:
            return
        key = self.param.value
        shown = self.session.choose(key, self.view.value)
        with self._quietly():
            self.step.value = 0
            self.step.max = shown.steps
            self.block.options = [(label, i) for i, label in enumerate(shown.blocks)]
            self.block.value = 0 if shown.blocks else None
        run = self.session.run
        finding = self.session.finding(key)
        self.status.value = _status_html(run.report, run.head, finding)
        self.details.value = _details_html(run.report, finding)
        self._show_picture(shown.picture)
        self._show_step()
        # A journey replays every op: follow one only when asked (a click or the block list).
        self.journey.value = JOURNEY_HINT
        self.journey_image.value = b""

    def _show_picture(self, picture: Picture) -> None:
        if self.image.value is not picture.png:
            self.image.clear_words()  # words of the old picture's cells mean nothing here
            self.image.panels = picture.panels
            self.image.note = picture.note
            self.image.value = picture.png

    def _show_step(self) -> None:
        shown = self.session.step(self.step.value)
        picture = self.session.picture
        self.step_text.value = _step_html(shown)
        if picture is not None and picture.note:
            self.step_text.value = f"<div class='syncviz-note'>{html.escape(picture.note)}</div>"
        if shown.note:
            self.step_text.value += f"<div class='syncviz-note'>{html.escape(shown.note)}</div>"
        self.step_image.value = shown.png

    @answer
    def _refresh_journey(self) -> None:
        if self.result is None or self.session.key is None or self.block.value is None:
            self.journey.value = ""
            self.journey_image.value = b""
            return
        from syncviz.diagram.pil_journey import journey_png

        journey = self.session.journey(self.block.value)
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


# ---------------------------------------------------------------- HTML of session answers


def _status_html(report, head: str, pc) -> str:
    """The run's verdict line, and the verdict of parameter ``pc`` (the report's) under it."""
    if report is None:
        return ""
    esc = html.escape
    head = esc(head)
    color = "#1a7f37" if report.ok else "#cf222e"
    mine = ""
    if pc is not None:
        mark = MARKS.get(pc.status, pc.status.upper())
        pc_color = "#1a7f37" if pc.status == "ok" else "#cf222e"
        mine = f"<br><b style='color:{pc_color}'>{esc(mark)}</b> <code>{esc(pc.key)}</code>"
    return f"<div class='syncviz-status'><b style='color:{color}'>{head}</b>{mine}</div>"


def _details_html(report, pc) -> str:
    """The parameter's findings in check's words (its ranks named as check names them)."""
    if report is None or pc is None or not pc.lines():
        return ""
    text = "\n".join(report.finding_lines(pc))
    return f"<pre style='font-size:11px;white-space:pre-wrap'>{html.escape(text)}</pre>"


def _step_html(shown: StepView) -> str:
    esc = html.escape
    step = shown.step
    if step is None:
        return (
            f"<div class='syncviz-step'>all {shown.total} recorded steps shown;"
            " move the step slider to walk them op by op</div>"
        )
    # Blocks and rows, ranks by name: "carries rows 0-2047 of heads 0-15"; "reads trainer
    # tp 0 (rank 0) rows 0-2047 -> writes vLLM tp 0 (rank 2) rows 0-4095".
    moves = " -> ".join(shown.moves)
    return (
        f"<div class='syncviz-step'><b>step {shown.number}/{shown.total}</b>: {esc(step.who)}"
        f" {esc(step.phase)} <b>{esc(step.op.op)}</b> {esc(step.shapes)};"
        f" carries {esc(shown.carries)}"
        + (f"<br>{esc(moves)}" if moves else "")
        + f"<br><code>{esc(op_words(step.op))}</code></div>"
    )


def _busy_html(what: str) -> str:
    return f"<div class='syncviz-busy' style='color:#555'>&#8987; {html.escape(what)}...</div>"
