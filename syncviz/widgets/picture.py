"""The Explorer's picture: a PNG that answers the pointer (anywidget, one small ES module).

UI state only: the PNG, where its panels are, which cell the pointer is on, the
words for that cell (set by the Explorer from :func:`syncviz.diagram.hover.cell_words`)
and the last clicked cell. No build step: the module below is the whole front end.

>>> pic = Picture()
>>> pic.hover, pic.words
([], '')
"""

from __future__ import annotations

import anywidget
import traitlets

ESM = r"""
function render({ model, el }) {
  const wrap = document.createElement("div");
  wrap.className = "syncviz-picture";
  wrap.style.position = "relative";
  wrap.style.display = "inline-block";
  const img = document.createElement("img");
  img.style.maxWidth = "100%";
  img.style.display = "block";
  const tip = document.createElement("div");
  tip.className = "syncviz-hover";
  tip.style.cssText = "font: 13px sans-serif; padding: 4px 6px; min-height: 1.4em;" +
    "background: #f4f4f8; border: 1px solid #ccc; margin-top: 4px; max-width: 1080px;";
  wrap.appendChild(img);
  el.appendChild(wrap);
  el.appendChild(tip);
  let url = null;
  function show() {
    const bytes = model.get("value");
    if (url) URL.revokeObjectURL(url);
    const blob = new Blob([bytes || new Uint8Array()], { type: "image/png" });
    url = bytes && bytes.byteLength ? URL.createObjectURL(blob) : "";
    img.src = url;
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
  let last = "";
  img.addEventListener("mousemove", (ev) => {
    const cell = cellAt(ev);
    const key = JSON.stringify(cell);
    if (!cell || key === last) return;
    last = key;
    model.set("hover", cell);
    model.save_changes();
  });
  img.addEventListener("click", (ev) => {
    const cell = cellAt(ev);
    if (!cell) return;
    model.set("picked", cell);
    model.save_changes();
  });
  model.on("change:value", show);
  model.on("change:words", () => { tip.textContent = model.get("words"); });
  show();
  tip.textContent = model.get("words") || "point at a cell to read what it holds";
}
export default { render };
"""


class Picture(anywidget.AnyWidget):
    """A PNG with hoverable, clickable cells; ``value`` is the PNG bytes."""

    _esm = ESM
    value = traitlets.Bytes(b"").tag(sync=True)
    panels = traitlets.List(traitlets.Dict()).tag(sync=True)
    hover = traitlets.List().tag(sync=True)
    picked = traitlets.List().tag(sync=True)
    words = traitlets.Unicode("").tag(sync=True)
