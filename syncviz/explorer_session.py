"""An Explorer session in plain Python: its state, its caches, and what to show next.

The widget (:mod:`syncviz.widgets.explorer`) maps its controls to calls here and the
answers back to widget values; everything it shows comes from this session, which
imports no widget and no plotting library (matplotlib only when an experts or
transfer view is drawn). Sync runs are cached per (spec, sizes, layer,
synchronizer, provenance), pictures per (run, parameter, view), so changing the
parameter, view, step or block never re-runs the sync. A first view draws the
chosen parameter's diagram only: its steps are replayed when a step or a scaled
run's hover first needs them, a block's journey when it is asked for.

>>> from syncviz import Parallel
>>> from syncviz.presets import PRESETS
>>> s = ExplorerSession()
>>> s.open(PRESETS["llama3-8b"], Parallel(tp=2), Parallel(tp=4))  # real sizes: symbolic ids
''
>>> s.first_bad(), s.views()
('model.model.layers.0.self_attn.o_proj.weight', ['layout', 'transfer'])
>>> s.choose(s.first_bad()).picture.png[:4], s.step_count() > 0
(b'\\x89PNG', True)
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from syncviz.errors import SyncvizError
from syncviz.journey import TraceStep, block_journey, carried_words, param_steps, step_count
from syncviz.parallel import Parallel, validate
from syncviz.provenance.regions import map_work
from syncviz.spec import ModelSpec
from syncviz.sync.base import BaseSync

ALL_LAYERS = -1
VIEWS = ("layout", "experts", "transfer")
PICTURE_CACHE = 48  # rendered base pictures kept (each ~100-300 KB)
PICTURE_PX = 960  # the widest matplotlib view: a 970 px cell shows its text at 9 pt
MARKS = {"ok": "OK", "wrong": "WRONG", "error": "ERROR"}
CHOICES: dict[str, str | type[BaseSync]] = {"chatlearn": "chatlearn", "corrected": "corrected"}

_Method = TypeVar("_Method", bound=Callable[..., Any])


def answer(method: _Method) -> _Method:
    """Run a session answer (an opening, a picture, hover words, a journey) as map work:
    one torch thread, the cycle collector paused (:func:`~syncviz.provenance.regions.map_work`
    says why)."""
    return map_work()(method)


@dataclass
class Run:
    """One cached sync run: the result and its check, or the reason there is none."""

    result: Any = None
    report: Any = None
    error: str = ""
    head: str = ""  # the report's first line, for the status box
    provenance: str = "symbolic"
    steps: dict[str, list[TraceStep]] = field(default_factory=dict)
    journeys: dict[tuple[str, int], Any] = field(default_factory=dict)


@dataclass
class Picture:
    """A rendered diagram: the PNG, its panels' pixel boxes (for the pointer), the model;
    or, with no PNG, the note saying why there is none."""

    png: bytes
    panels: list[dict]
    diagram: Any
    note: str = ""


@dataclass
class ParamView:
    """What the page shows for a chosen parameter: its picture in the chosen view, how
    many recorded steps it has (counted, not replayed), and its blocks' labels."""

    key: str
    picture: Picture
    steps: int
    blocks: list[str]


@dataclass
class StepView:
    """Step ``number`` of the parameter on screen: the recorded step (None for step 0 or
    past the end), how many there are, what its result carries in blocks and rows
    (:func:`~syncviz.journey.carried_words`), its frame (PNG, b"" when not drawn), the
    frame's words (``reads <rank> rows ...``, ``writes <rank> rows ...``) and a note
    saying why a frame is not drawn."""

    number: int
    step: TraceStep | None
    total: int
    carries: str = ""
    png: bytes = b""
    moves: list[str] = field(default_factory=list)
    note: str = ""


class ExplorerSession:
    """The state of one Explorer: the run, parameter and view on screen, and the caches.

    ``synchronizers``: extra choices (a name -> BaseSync subclass or "module:Class")
    beside ``chatlearn`` and ``corrected``. ``busy``, when given, is called with what is
    being done (a sync run, a picture, a replay, a journey) before it starts and with
    ``""`` after, so the page can say it while it waits.
    """

    def __init__(
        self,
        synchronizers: Mapping[str, type[BaseSync] | str] | None = None,
        *,
        busy: Callable[[str], None] | None = None,
    ) -> None:
        self.choices: dict[str, str | type[BaseSync]] = {**CHOICES, **dict(synchronizers or {})}
        self._busy = busy or (lambda what: None)
        self._runs: dict[tuple, Run] = {}
        self._pictures: OrderedDict[tuple, Picture] = OrderedDict()
        self._kinds: OrderedDict[tuple, Any] = OrderedDict()  # see _layout
        self.run_key: tuple | None = None
        self.key: str | None = None  # the parameter on screen
        self.view = "layout"
        self.picture: Picture | None = None  # the picture on screen
        self._hovering = False  # set while hover words are made (see steps)

    # ------------------------------------------------------------ the run

    @property
    def run(self) -> Run | None:
        """The run on screen (None when the inputs could not be run)."""
        return self._runs.get(self.run_key) if self.run_key else None

    @property
    def result(self):
        """The current SyncResult, or None when the inputs are invalid."""
        run = self.run
        return run.result if run else None

    @property
    def report(self):
        """The current CheckReport, or None."""
        run = self.run
        return run.report if run else None

    @answer
    def open(
        self,
        spec: ModelSpec,
        src: Parallel,
        dst: Parallel,
        *,
        layer: int = 0,
        synchronizer: str = "chatlearn",
        scaled: bool = False,
    ) -> str:
        """Run (or find cached) the sync and the check of ``spec`` (its downscale when
        ``scaled``) for ``layer``; returns "" or the reason it cannot be shown (sizes the
        rules refuse, a failed run). Nothing is drawn until :meth:`choose`."""
        self.close()
        try:
            validate(spec, src, dst)
            spec = spec.scaled(src, dst) if scaled else spec
        except SyncvizError as err:
            return str(err)
        # Scaled runs materialize ids (run_sync estimates their memory first and refuses
        # what would not fit); real sizes run on symbolic maps, nothing per element.
        provenance = "materialized" if scaled else "symbolic"
        run_key = (spec, src, dst, layer, synchronizer, provenance)
        run = self._runs.get(run_key)
        if run is None:
            sizes = "scaled sizes" if scaled else "real sizes (symbolic ids)"
            with self._working(f"running the sync and the check at {sizes}"):
                run = self._sync(spec, src, dst, layer, synchronizer, provenance)
            if not run.error:  # a refusal (e.g. memory) is asked again next time
                self._runs[run_key] = run
        self.run_key = run_key if not run.error else None
        return run.error

    def close(self) -> None:
        """Nothing on screen (inputs that cannot be shown); the caches stay."""
        self.run_key, self.key, self.picture = None, None, None

    def _sync(
        self, spec: ModelSpec, src: Parallel, dst: Parallel, layer: int, name: str, provenance: str
    ) -> Run:
        from syncviz.check import check
        from syncviz.run.inprocess import run_sync

        layers = None if layer == ALL_LAYERS else [layer]
        if name not in self.choices:
            return Run(error=f"no synchronizer {name!r}: choose one of {', '.join(self.choices)}")
        try:
            if provenance == "materialized":
                _refuse_if_it_would_not_fit(spec, src, dst, layers)
            result = run_sync(
                spec, src, dst, synchronizer=self.choices[name], layers=layers,
                provenance=provenance,
            )  # fmt: skip
        except SyncvizError as err:
            return Run(error=str(err))
        except ImportError as err:
            return Run(error=f"synchronizer {name!r} is not available here yet ({err})")
        except Exception as err:  # a user synchronizer may raise anything: show it inline
            return Run(error=f"synchronizer {name!r} failed: {type(err).__name__}: {err}")
        try:
            report = check(result, name)
        except Exception as err:
            return Run(result=result, error=f"check failed: {type(err).__name__}: {err}")
        head = report.text().splitlines()[0]
        return Run(result=result, report=report, head=head, provenance=provenance)

    # ------------------------------------------------------------ what the run offers

    def views(self) -> list[str]:
        """The views that apply to the run: experts only where routed experts are."""
        if self.result is None:
            return []
        return [v for v in VIEWS if v != "experts" or expert_key(self.result, None) is not None]

    def params(self, words: str = "") -> list[tuple[str, str]]:
        """(label, key) of every parameter of the run whose label or key holds ``words``
        (any case): ``WRONG · layer 0 · self_attn.o_proj.weight (o_proj)``."""
        run = self.run
        if run is None or run.result is None:
            return []
        words = words.strip().lower()
        marks = {pc.key: MARKS.get(pc.status, pc.status.upper()) for pc in run.report.params}
        options = []
        for p in run.result.plan.layout.params:
            label = f"{marks.get(p.key, '?')} · {param_label(p)}"
            if not words or words in label.lower() or words in p.key.lower():
                options.append((label, p.key))
        return options

    def first_bad(self) -> str | None:
        """Where there is something to see: the first WRONG parameter, else the first ERROR."""
        if self.report is None:
            return None
        order = {"wrong": 0, "error": 1}
        bad = [p for p in self.report.params if p.status in order]
        return min(bad, key=lambda p: order[p.status]).key if bad else None

    def finding(self, key: str | None = None):
        """The report's words on parameter ``key`` (default: the one on screen), or None."""
        key = key or self.key
        report = self.report
        return next((p for p in report.params if p.key == key), None) if report else None

    # ------------------------------------------------------------ the parameter

    def choose(self, key: str, view: str | None = None) -> ParamView:
        """Put parameter ``key`` on screen (in ``view``, default the one chosen): its
        picture, drawn now or found cached, and what the step and block controls offer."""
        if self.result is None:
            raise SyncvizError(
                f"no run to show parameter {key!r} of", fix="open a run that can be shown first"
            )
        param = self.result.plan.layout.param(key)
        self.key = key
        if view is not None:
            self.view = view
        return ParamView(key, self.show(), self.step_count(), [b.label for b in param.blocks])

    @answer
    def show(self, view: str | None = None) -> Picture:
        """The picture of the parameter on screen in ``view`` (default the one chosen)."""
        if view is not None:
            self.view = view
        self.picture = self._picture(self.run, self.key, self.view)
        return self.picture

    def steps(self) -> list[TraceStep]:
        """The recorded steps of the parameter on screen, replayed on ids the first time
        they are needed (a step, a hover), never for its first view. While hover words
        are made on a real-size run (a replay there takes seconds), steps not yet
        replayed read as none."""
        run, key = self.run, self.key
        if run is None or key is None:
            return []
        if key not in run.steps:
            if self._hovering and run.provenance == "symbolic":
                return []
            with self._working("replaying the recorded steps on ids"):
                run.steps[key] = param_steps(run.result, key)
        return run.steps[key]

    def step_count(self) -> int:
        """How many steps :meth:`steps` will give, read from the trace without replaying."""
        run, key = self.run, self.key
        if run is None or key is None:
            return 0
        if key in run.steps:
            return len(run.steps[key])
        return step_count(run.result, key)

    @answer
    def step(self, number: int) -> StepView:
        """Step ``number`` (1-based; 0: all of them) of the parameter on screen, with its
        frame drawn when the layout view is shown."""
        if number <= 0:
            return StepView(0, None, self.step_count())
        steps = self.steps()
        step = steps[number - 1] if number <= len(steps) else None
        out = StepView(number, step, len(steps))
        if step is None:
            return out
        out.carries = carried_words(self.run.result.plan.layout.param(self.key), step)
        picture = self.picture
        if self.view != "layout" or picture is None or picture.diagram is None:
            return out
        from syncviz.diagram.model import frame
        from syncviz.diagram.pil import frame_png

        d = picture.diagram
        cell = d.src[0].actual.cell if d.src else None
        try:
            drawn = frame(d, number, cell)
            out.png, out.moves = frame_png(drawn), drawn.region_lines()
        except SyncvizError as err:  # e.g. a step tensor too fragmented to draw at this size
            out.note = f"step {number} not drawn: {err}"
        return out

    # ------------------------------------------------------------ the pointer

    @answer
    def hover(self, side: str, rank: int, i: int, j: int) -> str | None:
        """Words for cell (i, j) of panel (``side``, ``rank``) of the layout picture on
        screen, from the core (:func:`syncviz.diagram.hover.cell_words`); None when no
        layout picture is on screen."""
        from syncviz.diagram.hover import cell_words

        picture, run = self.picture, self.run
        if picture is None or picture.diagram is None or run is None or self.view != "layout":
            return None
        self._hovering = True  # "via steps 3, 7" at real sizes once a step replayed them
        try:
            return cell_words(run.result, picture.diagram, side, int(rank), i, j)
        except (StopIteration, IndexError, KeyError) as err:  # a stale cell of an old picture
            return f"(no cell there: {err})"
        finally:
            self._hovering = False

    def block_at(self, side: str, rank: int, i: int, j: int) -> int | None:
        """The block cell (i, j) of a layout panel holds (what it should hold, if it holds
        none), or None: what a click on it follows."""
        picture = self.picture
        if picture is None or picture.diagram is None or self.view != "layout":
            return None
        d = picture.diagram
        panel = next((p for p in (d.src if side == "trainer" else d.dst) if p.rank == rank), None)
        if panel is None:
            return None
        raster = panel.expected if side == "vLLM expected" else panel.actual
        block = int(raster.block[i, j])
        if block < 0 and panel.expected is not None:
            block = int(panel.expected.block[i, j])
        return block if block >= 0 else None

    @answer
    def journey(self, block: int):
        """The journey of block number ``block`` of the parameter on screen (cached)."""
        run, key = self.run, self.key
        if run is None or key is None:
            raise SyncvizError("no parameter on screen to follow a block of", fix="choose one")
        journey = run.journeys.get((key, block))
        if journey is None:
            label = run.result.plan.layout.param(key).blocks[block].label
            with self._working(f"following the journey of {label}"):
                journey = run.journeys[key, block] = block_journey(run.result, key, block)
        return journey

    # ------------------------------------------------------------ caches

    @answer
    def prefetch(self) -> int:
        """Draw the layout picture of every parameter of the run (returns how many), so
        that later parameter changes only look them up."""
        run = self.run
        if run is None or run.result is None:
            return 0
        keys = [p.key for p in run.result.plan.layout.params]
        for key in keys:
            self._picture(run, key, "layout")
        return len(keys)

    def forget(self) -> None:
        """Forget drawn pictures and replayed steps (the runs stay): the next views are
        drawn afresh, as the first time (for measuring them)."""
        self._pictures.clear()
        self._kinds.clear()
        for run in self._runs.values():
            run.steps.clear()
            run.journeys.clear()

    def _picture(self, run: Run, key: str, view: str) -> Picture:
        from syncviz.diagram import transfer_diagram
        from syncviz.diagram.experts import expert_diagram

        if view == "experts":
            key = expert_key(run.result, key)
        cache_key = (self.run_key, key if view != "transfer" else "", view)
        picture = self._pictures.get(cache_key)
        if picture is not None:
            self._pictures.move_to_end(cache_key)
            return picture
        with self._working(f"drawing the {view} view"):
            if view == "layout":  # PIL: the same picture as matplotlib, several times faster
                from syncviz.diagram.pil_layout import layout_png

                diagram = self._layout(run, key)
                picture = Picture(*layout_png(diagram), diagram)
            elif view == "experts" and key is None:
                picture = Picture(b"", [], None, "this model has no routed experts")
            elif view == "experts":
                picture = Picture(figure(expert_diagram(run.result, key))._repr_png_(), [], None)
            else:
                picture = Picture(figure(transfer_diagram(run.result))._repr_png_(), [], None)
        self._pictures[cache_key] = picture
        while len(self._pictures) > PICTURE_CACHE:
            self._pictures.popitem(last=False)
        return picture

    def _layout(self, run: Run, key: str):
        """The layout diagram of ``key``; its steps are replayed when a step or a hover
        first reads them (:class:`_OnScreenSteps`). A parameter of a kind already drawn in
        another layer, whose ranks hold the same ids and which the report faults alike, is
        that diagram renamed."""
        from syncviz.diagram import layout_diagram

        sig = kind_signature(run, key) if run.provenance == "materialized" else None
        base = self._kinds.get((self.run_key, sig)) if sig is not None else None
        if base is not None and base.title.startswith(base.key):
            self._kinds.move_to_end((self.run_key, sig))
            return replace(base, key=key, title=key + base.title[len(base.key) :])
        # The check's words for wrong rows are in the details under the picture: the picture
        # leaves them out (at real sizes they cost a raster of every vLLM panel).
        diagram = layout_diagram(
            run.result, key, run.report, steps=_OnScreenSteps(self.steps), regions=False
        )
        if sig is not None:
            self._kinds[self.run_key, sig] = diagram
            while len(self._kinds) > PICTURE_CACHE:
                self._kinds.popitem(last=False)
        return diagram

    @contextmanager
    def _working(self, what: str) -> Iterator[None]:
        """Say ``what`` is being done while it runs (the page's busy line)."""
        self._busy(what)
        try:
            yield
        finally:
            self._busy("")


# ---------------------------------------------------------------- helpers (no state)


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


def param_label(p) -> str:
    """``layer 0 · self_attn.qkv_proj.weight (qkv)`` or ``global · embed_tokens.weight``."""
    if p.layer is None:
        short = p.key.removeprefix("model.").removeprefix("model.")
        return f"global · {short} ({p.kind})"
    short = p.key.split(f"layers.{p.layer}.", 1)[-1]
    return f"layer {p.layer} · {short} ({p.kind})"


def expert_key(result, key: str | None) -> str | None:
    """The parameter the experts view draws: ``key`` if it is a routed-expert tensor,
    else the first one of the run (None if the model has none)."""
    params = result.plan.layout.params
    if key is not None and result.plan.layout.param(key).kind.startswith("experts_"):
        return key
    return next((p.key for p in params if p.kind.startswith("experts_")), None)


def kind_signature(run: Run, key: str) -> tuple:
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
        tuple((s.index.shape, s.index.regions) for s in param.src),
        tuple((t.index.shape, t.index.regions) for t in param.dst),
        tuple(held),
        errors,
    )


def figure(diagram):
    """The matplotlib figure of an experts or transfer diagram, at most :data:`PICTURE_PX`
    wide: a notebook cell that wide shows its 9 pt text unshrunk."""
    from syncviz.diagram import render
    from syncviz.diagram.experts import ExpertDiagram
    from syncviz.diagram.mpl import DPI, render_experts

    if isinstance(diagram, ExpertDiagram):
        return render_experts(diagram, max_width_in=PICTURE_PX / DPI)
    return render(diagram)


def _refuse_if_it_would_not_fit(spec: ModelSpec, src: Parallel, dst: Parallel, layers) -> None:
    """run_sync's own memory refusal (:func:`syncviz.run.memory.check_memory`), asked
    first so that the fix names the Explorer's controls rather than command-line flags."""
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
