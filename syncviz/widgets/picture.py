"""The Explorer's picture: a PNG that answers the pointer (anywidget, one small ES module).

UI state only: the PNG, where its panels are, which cell the pointer is on, the
words for that cell (set by the Explorer from :func:`syncviz.diagram.hover.cell_words`)
with the cell they are for (``words_for``), and the last clicked cell. No build step:
the module below is the whole front end.

The front end shows the words twice: in a tooltip beside the pointer, only while
the pointer is on the cell the words are for (gone when it leaves the cell, the
picture or the picture changes), and in a fixed panel under the picture for
copying. With no PNG it shows ``note`` in words, never an empty image.

>>> pic = Picture()
>>> pic.hover, pic.words, pic.words_for
([], '', [])
"""

from __future__ import annotations

import anywidget
import traitlets

NO_CELLS = "this view has no cells to point at; the layout view answers the pointer"
HINT = "point at a cell of the picture to read what it holds, should hold and came from"

ESM = r"""
const HINT = %HINT%;
const NO_CELLS = %NO_CELLS%;
function render({ model, el }) {
  const wrap = document.createElement("div");
  wrap.className = "syncviz-picture";
  // A block that never outgrows the cell; the image shrinks with it (height follows).
  wrap.style.cssText = "position: relative; display: block; max-width: 100%;";
  const img = document.createElement("img");
  img.style.cssText = "display: block; max-width: 100%; height: auto;";
  img.alt = "";
  const empty = document.createElement("div");
  empty.className = "syncviz-empty";
  empty.style.cssText = "font: 13px sans-serif; color: #555; padding: 8px 0;";
  const tip = document.createElement("div");
  tip.className = "syncviz-tooltip";
  tip.setAttribute("role", "tooltip");
  tip.style.cssText = "position: absolute; z-index: 10; display: none; pointer-events: none;" +
    "font: 13px sans-serif; line-height: 1.35; padding: 5px 8px; max-width: 420px;" +
    "background: #fffff4; color: #111; border: 1px solid #888; border-radius: 3px;" +
    "box-shadow: 0 2px 6px rgba(0,0,0,0.25); white-space: normal;";
  const panel = document.createElement("div");
  panel.className = "syncviz-hover";
  // Fixed height (three lines, scrolls beyond): what follows never moves with the words.
  panel.style.cssText = "font: 13px sans-serif; line-height: 1.35; padding: 4px 6px;" +
    "height: 4.2em; overflow-y: auto; box-sizing: border-box; user-select: text;" +
    "background: #f4f4f8; border: 1px solid #ccc; margin-top: 4px; max-width: 100%;";
  wrap.appendChild(img);
  wrap.appendChild(tip);
  el.appendChild(wrap);
  el.appendChild(empty);
  el.appendChild(panel);
  let url = null;
  let current = "";  // the cell under the pointer (JSON), "" when none
  let pointer = null;  // the last pointer position, client coordinates
  function hideTip() { tip.style.display = "none"; }
  function show() {
    const bytes = model.get("value");
    if (url) URL.revokeObjectURL(url);
    url = null;
    hideTip();
    current = "";
    if (bytes && bytes.byteLength) {
      url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
      img.src = url;
      img.style.display = "block";
      empty.style.display = "none";
    } else {  // no picture: say why in words, never an empty (broken) image
      img.removeAttribute("src");
      img.style.display = "none";
      empty.textContent = model.get("note");
      empty.style.display = model.get("note") ? "block" : "none";
    }
    words();
  }
  function cellAt(ev) {
    const rect = img.getBoundingClientRect();
    if (!img.naturalWidth || !rect.width) return null;
    const x = (ev.clientX - rect.left) * img.naturalWidth / rect.width;
    const y = (ev.clientY - rect.top) * img.naturalHeight / rect.height;
    for (const p of model.get("panels")) {
      const [x0, y0, x1, y1] = p.box;
      if (x >= x0 && x < x1 && y >= y0 && y < y1) {
        const i = Math.min(p.cells[0] - 1, Math.floor((y - y0) / (y1 - y0) * p.cells[0]));
        const j = Math.min(p.cells[1] - 1, Math.floor((x - x0) / (x1 - x0) * p.cells[1]));
        return [p.side, p.rank, i, j];
      }
    }
    return null;
  }
  function place() {
    // Beside the pointer, inside the picture's box and the window: flip left or up near edges.
    const box = wrap.getBoundingClientRect();
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = pointer.x - box.left + 16, y = pointer.y - box.top + 16;
    const right = Math.min(window.innerWidth, box.right);
    if (box.left + x + w > right) x = pointer.x - box.left - w - 12;
    if (box.top + y + h > window.innerHeight) y = pointer.y - box.top - h - 12;
    tip.style.left = Math.max(0, x) + "px";
    tip.style.top = Math.max(0, y) + "px";
  }
  function words() {
    const text = model.get("words");
    const mine = current && JSON.stringify(model.get("words_for")) === current;
    panel.textContent = text || (model.get("panels").length ? HINT : NO_CELLS);
    if (mine && text && pointer) {
      tip.textContent = text;
      tip.style.display = "block";
      place();
    } else {
      hideTip();
    }
  }
  img.addEventListener("mousemove", (ev) => {
    pointer = { x: ev.clientX, y: ev.clientY };
    const cell = cellAt(ev);
    const key = cell ? JSON.stringify(cell) : "";
    if (key !== current) {
      current = key;
      hideTip();
      if (cell && JSON.stringify(model.get("hover")) !== key) {
        model.set("hover", cell);
        model.save_changes();
      }
    }
    words();
  });
  img.addEventListener("mouseleave", () => { current = ""; hideTip(); });
  img.addEventListener("click", (ev) => {
    const cell = cellAt(ev);
    if (!cell) return;
    model.set("picked", cell);
    model.save_changes();
  });
  model.on("change:value", show);
  model.on("change:note", show);
  model.on("change:words", words);
  model.on("change:words_for", words);
  model.on("change:panels", words);
  show();
}
export default { render };
""".replace("%HINT%", repr(HINT)).replace("%NO_CELLS%", repr(NO_CELLS))

STILL_ESM = r"""
function render({ model, el }) {
  const img = document.createElement("img");
  img.className = "syncviz-still";
  img.style.cssText = "display: none; max-width: 100%; height: auto;";
  img.alt = "";
  const note = document.createElement("div");
  note.className = "syncviz-note";
  note.style.cssText = "font: 13px sans-serif; color: #555;";
  el.appendChild(img);
  el.appendChild(note);
  let url = null;
  function show() {
    const bytes = model.get("value");
    if (url) URL.revokeObjectURL(url);
    url = null;
    if (bytes && bytes.byteLength) {
      url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
      img.src = url;
      img.style.display = "block";
    } else {  // nothing to draw: no image element shown at all (never a broken one)
      img.removeAttribute("src");
      img.style.display = "none";
    }
    note.textContent = model.get("note");
  }
  model.on("change:value", show);
  model.on("change:note", show);
  show();
}
export default { render };
"""


class Picture(anywidget.AnyWidget):
    """A PNG with hoverable, clickable cells; ``value`` is the PNG bytes (empty: ``note``)."""

    _esm = ESM
    value = traitlets.Bytes(b"").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
    panels = traitlets.List(traitlets.Dict()).tag(sync=True)
    hover = traitlets.List().tag(sync=True)
    words = traitlets.Unicode("").tag(sync=True)
    words_for = traitlets.List().tag(sync=True)
    picked = traitlets.List().tag(sync=True)

    def clear_words(self) -> None:
        """Forget the pointer's cell and its words (a new picture or view)."""
        with self.hold_sync():
            self.words, self.words_for, self.hover = "", [], []


class Still(anywidget.AnyWidget):
    """A PNG that shrinks to the cell's width, or with no bytes only ``note`` in words.

    >>> Still().value, Still(note="step 0").note
    (b'', 'step 0')
    """

    _esm = STILL_ESM
    value = traitlets.Bytes(b"").tag(sync=True)
    note = traitlets.Unicode("").tag(sync=True)
