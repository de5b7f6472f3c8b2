"""The attention-pattern viewer: a self-contained HTML fragment (inline data, script and style; nothing
is fetched when it renders) showing chosen heads' patterns on the scan's prompts.

Queries are rows, keys columns, each labelled with its position and token; the first repeat's start
(where the segment begins again) is marked on both axes with a solid line and later repeats dashed,
so the induction stripe, P - 1 below the diagonal, reads at a glance. Pooled patterns
(`induction.heads.patterns.pool_pattern`) say so on the axes. Hovering a cell shows the query token,
the key token and the weight. A head menu and a prompt menu choose what is shown; several frames
(checkpoints of a training run) get a slider. Other scripts on the page select a head through
``InductionPatterns.views[ID].select("L1H0")`` (the demo page links its heatmap cells this way).

Patterns travel as base64 little-endian float32 (exact) or uint8 (weight x 255, rounded: half a
step, 0.002, at most) for long series of frames.
"""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from induction.heads.patterns import HeadPatterns, PatternConfig, head_label, head_patterns

ENCODINGS = ("float32", "uint8")


def encode(values: np.ndarray, encoding: str) -> str:
    """base64 of `values` (weights in [0, 1]) as little-endian float32, or uint8 steps of 1/255."""
    if encoding == "float32":
        raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    elif encoding == "uint8":
        raw = np.clip(np.rint(np.asarray(values, dtype=np.float64) * 255), 0, 255).astype(np.uint8).tobytes()
    else:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    return base64.b64encode(raw).decode("ascii")


def decode(text: str, encoding: str, cells: int) -> np.ndarray:
    """Inverse of `encode`: a [cells, cells] float32 array."""
    raw = base64.b64decode(text)
    values = np.frombuffer(raw, dtype="<f4") if encoding == "float32" else np.frombuffer(raw, dtype=np.uint8) / 255.0
    return values.astype(np.float32).reshape(cells, cells)


def viewer_data(frames: Sequence[tuple[str, HeadPatterns]], title: str = "", encoding: str = "float32",
                initial: tuple[int, int] | None = None) -> dict[str, Any]:
    """The JSON the viewer embeds: prompts (tokens, periods), heads, and per frame the patterns of
    every head on every prompt (`encode`) with their stripe attention."""
    if not frames:
        raise ValueError("frames: give at least one (label, HeadPatterns)")
    first = frames[0][1]
    for label, p in frames:
        if p.heads != first.heads or not bool((p.tokens == first.tokens).all()) or p.block != first.block:
            raise ValueError(f"frames: frame {label!r} has other heads, prompts or pooling than the first")
    cells = int(first.patterns.shape[-1])
    return {
        "title": title, "encoding": encoding, "heads": [head_label(h) for h in first.heads],
        "initial": first.heads.index(tuple(initial)) if initial is not None else 0,
        "seq_len": first.seq_len, "block": first.block, "cells": cells, "first": first.first_content_pos,
        "prompts": [{"labels": labels, "period": int(period)} for labels, period in zip(first.token_labels, first.periods)],
        "frames": [{"label": label,
                    "stripe": [[round(float(v), 4) for v in p.stripe[i]] for i in range(len(p.heads))],
                    "patterns": [[encode(p.patterns[i, b].numpy(), encoding) for b in range(p.patterns.shape[1])]
                                 for i in range(len(p.heads))]}
                   for label, p in frames],
    }


def pattern_view_html(frames: HeadPatterns | Sequence[tuple[str, HeadPatterns]], title: str = "",
                      encoding: str = "float32", view_id: str | None = None,
                      initial: tuple[int, int] | None = None) -> str:
    """The viewer as an HTML fragment (a div with its data, style and script), for a page or a notebook.

    Args:
        frames: one `HeadPatterns`, or (label, HeadPatterns) per frame (e.g. per checkpoint) with the
            same heads and prompts.
        title: a heading shown above the viewer.
        encoding: ``float32`` (exact) or ``uint8`` (smaller; module docstring).
        view_id: the element id (scripts select heads through it); default: a fresh one.
        initial: the head shown first (default: the first).
    """
    if isinstance(frames, HeadPatterns):
        frames = [("", frames)]
    view_id = view_id or f"patterns-{uuid.uuid4().hex[:8]}"
    data = json.dumps(viewer_data(frames, title, encoding, initial), separators=(",", ":")).replace("</", "<\\/")
    return (f"<div class='ip-view' id='{html.escape(view_id)}'><style>{_CSS}</style>"
            f"<script type='application/json' class='ip-data'>{data}</script>"
            f"<script>{_JS}\nInductionPatterns.mount({json.dumps(view_id)});</script></div>")


def pattern_page(body: str, title: str = "attention patterns") -> str:
    """A whole offline HTML page around fragments (the viewer, and any figures before it)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;"
            "color:#222}</style></head><body>" + body + "</body></html>")


def save_pattern_view(frames: HeadPatterns | Sequence[tuple[str, HeadPatterns]], path: str | os.PathLike[str],
                      title: str = "attention patterns", encoding: str = "float32", heatmap=None, note: str = "",
                      before: str = "") -> Path:
    """Write the viewer as a self-contained page; with `heatmap` (a layer x head figure), the heatmap
    above it, linked (`heatmap_with_patterns`); `before`: other HTML above it (e.g. a `figure_div`)."""
    from induction.common.fileio import write_text_atomic

    path = Path(path)
    if path.suffix.lower() != ".html":
        raise ValueError(f"the pattern viewer is HTML: name a .html file, not {path.name}")
    body = (pattern_view_html(frames, title, encoding, view_id="patterns") if heatmap is None
            else heatmap_with_patterns(heatmap, frames, title, encoding, note))
    write_text_atomic(path, pattern_page(before + body, title))
    return path


def heatmap_with_patterns(fig, patterns: HeadPatterns | Sequence[tuple[str, HeadPatterns]], title: str,
                          encoding: str = "float32", note: str = "") -> str:
    """A page body: the head heatmap `fig` (full width), then the viewer; clicking a heatmap cell shows
    that head's pattern (`induction.plots.page.heatmap_link_script`)."""
    from induction.plots.page import figure_div, heatmap_link_script

    return (figure_div(fig, "heatmap", include_plotlyjs=True)
            + "<p class='ip-caption'>Click a head in the heatmap to see its attention pattern below.</p>"
            + pattern_view_html(patterns, title, encoding, view_id="patterns")
            + heatmap_link_script("heatmap", "patterns", note))


class PatternView:
    """The viewer for a notebook: Jupyter shows it (`_repr_html_`); `.save(path)` writes a page."""

    def __init__(self, frames: HeadPatterns | Sequence[tuple[str, HeadPatterns]], title: str = "",
                 encoding: str = "float32") -> None:
        self.frames, self.title, self.encoding = frames, title, encoding
        self.html = pattern_view_html(frames, title, encoding)

    @property
    def head_patterns(self) -> HeadPatterns:
        """The patterns shown (the last frame's, when there are several)."""
        return self.frames if isinstance(self.frames, HeadPatterns) else self.frames[-1][1]

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | os.PathLike[str]) -> Path:
        return save_pattern_view(self.frames, path, self.title or "attention patterns", self.encoding)


def show_patterns(model, heads: Sequence[tuple[int, int] | str], prompts=None, cfg: PatternConfig | None = None,
                  title: str | None = None) -> PatternView:
    """Compute `heads`' patterns on the scan's prompts (`induction.heads.patterns.head_patterns`) and
    return the viewer; in Jupyter it displays as the cell's output."""
    patterns = head_patterns(model, heads, prompts, cfg)
    return PatternView(patterns, title if title is not None else "Attention patterns on repeated random tokens")


_CSS = """
.ip-view{font:13px Helvetica,Arial,sans-serif;color:#222;max-width:100%;margin:1em 0;position:relative}
.ip-view .ip-controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;margin:.3em 0}
.ip-view .ip-title{font-weight:bold;margin:.2em 0}
.ip-view canvas{display:block;max-width:100%}
.ip-view .ip-tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;padding:2px 6px;
 font-size:12px;white-space:nowrap;display:none;z-index:5}
.ip-view .ip-caption{color:#444;margin:.3em 0}
.ip-view input[type=range]{width:16em;max-width:60vw}
"""

_JS = r"""
if (!window.InductionPatterns) { window.InductionPatterns = (function () {
  var STOPS = [[247,251,255],[198,219,239],[107,174,214],[33,113,181],[8,48,107]];  // sequential blues
  function colour(v) {
    v = Math.max(0, Math.min(1, v)); var x = v * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
    var a = STOPS[i], b = STOPS[i + 1];
    return [0, 1, 2].map(function (c) { return Math.round(a[c] + f * (b[c] - a[c])); });
  }
  function decode(text, enc) {
    var bin = atob(text), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    if (enc === "float32") return new Float32Array(bytes.buffer);
    var out = new Float32Array(bytes.length);
    for (var j = 0; j < bytes.length; j++) out[j] = bytes[j] / 255;
    return out;
  }
  function el(tag, attrs, parent) {
    var e = document.createElement(tag); for (var k in attrs) e[k] = attrs[k]; if (parent) parent.appendChild(e); return e;
  }
  function mount(id) {
    var root = document.getElementById(id), data = JSON.parse(root.querySelector(".ip-data").textContent);
    var st = {head: data.initial || 0, prompt: 0, frame: data.frames.length - 1, sqrt: false, guide: false}, cache = {};
    if (data.title) el("div", {className: "ip-title", textContent: data.title}, root);
    var bar = el("div", {className: "ip-controls"}, root);
    function menu(label, options, key) {
      var lab = el("label", {textContent: label + " "}, bar), sel = el("select", {}, lab);
      options.forEach(function (o, i) { el("option", {value: i, textContent: o}, sel); });
      sel.value = st[key]; sel.onchange = function () { st[key] = +sel.value; draw(); }; return sel;
    }
    var last = data.frames[data.frames.length - 1];  // each head's stripe mass (last frame, mean over prompts) in its menu entry
    var headSel = menu("head", data.heads.map(function (h, i) {
      var s = last.stripe[i], m = s.reduce(function (a, b) { return a + b; }, 0) / s.length;
      return h + " (stripe " + m.toFixed(2) + ")"; }), "head");
    menu("prompt", data.prompts.map(function (p, i) { return (i + 1) + " (period " + p.period + ")"; }), "prompt");
    if (data.frames.length > 1) {
      var lab = el("label", {textContent: "checkpoint "}, bar);
      var slider = el("input", {type: "range", min: 0, max: data.frames.length - 1, value: st.frame}, lab);
      var shown = el("span", {}, lab);
      slider.oninput = function () { st.frame = +slider.value; draw(); };
    }
    var scaleLab = el("label", {}, bar), scaleBox = el("input", {type: "checkbox"}, scaleLab);
    scaleLab.appendChild(document.createTextNode(" square-root colour scale"));
    scaleBox.onchange = function () { st.sqrt = scaleBox.checked; draw(); };
    var guideLab = el("label", {}, bar), guideBox = el("input", {type: "checkbox"}, guideLab);
    guideLab.appendChild(document.createTextNode(" mark where the stripe should be"));
    guideBox.onchange = function () { st.guide = guideBox.checked; draw(); };
    var canvas = el("canvas", {}, root), tip = el("div", {className: "ip-tip"}, root);
    var caption = el("div", {className: "ip-caption"}, root);
    var geo = null;
    function matrix() {
      var key = st.frame + "/" + st.head + "/" + st.prompt;
      if (!cache[key]) cache[key] = decode(data.frames[st.frame].patterns[st.head][st.prompt], data.encoding);
      return cache[key];
    }
    function span(c) {  // positions of pooled cell c
      var a = c * data.block, b = Math.min(a + data.block, data.seq_len) - 1; return [a, b];
    }
    function tickText(c) {
      var p = data.prompts[st.prompt], s = span(c);
      if (data.block === 1) { var t = p.labels[s[0]]; return s[0] + ":" + (t.length > 7 ? t.slice(0, 6) + "\u2026" : t); }
      return s[0] + "\u2013" + s[1];
    }
    function draw() {
      var n = data.cells, p = data.prompts[st.prompt], m = matrix(), dpr = window.devicePixelRatio || 1;
      var width = Math.max(260, Math.min(root.clientWidth || 640, 680)), L = 78, T = 70, R = 8, B = 34;
      var cell = (width - L - R) / n, size = cell * n, height = T + size + B;
      canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
      canvas.style.width = width + "px"; canvas.style.height = height + "px";
      var ctx = canvas.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, width, height);
      var img = ctx.createImageData(n, n);
      for (var i = 0; i < n * n; i++) {
        var v = m[i], rgb = colour(st.sqrt ? Math.sqrt(Math.max(v, 0)) : v);
        img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1]; img.data[4 * i + 2] = rgb[2]; img.data[4 * i + 3] = 255;
      }
      var off = document.createElement("canvas"); off.width = n; off.height = n; off.getContext("2d").putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = false; ctx.drawImage(off, L, T, size, size);
      ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.strokeRect(L, T, size, size);
      // repeat boundaries: the first repeat solid, later ones dashed
      for (var r = data.first + p.period, j = 0; r < data.seq_len; r += p.period, j++) {
        var at = r / data.block * cell;
        ctx.strokeStyle = "#D55E00"; ctx.lineWidth = j === 0 ? 2 : 1; ctx.setLineDash(j === 0 ? [] : [4, 3]);
        ctx.beginPath(); ctx.moveTo(L + at, T - 6); ctx.lineTo(L + at, T + size); ctx.moveTo(L - 6, T + at); ctx.lineTo(L + size, T + at); ctx.stroke();
      }
      ctx.setLineDash([]);
      if (st.guide) {  // expected stripe: key = query - (period - 1), drawn just right of the cells it marks
        ctx.strokeStyle = "rgba(230,159,0,0.9)"; ctx.lineWidth = 1.5; ctx.setLineDash([2, 3]); ctx.beginPath();
        var q0 = data.first + p.period, q1 = data.seq_len - 1, d = p.period - 1;
        ctx.moveTo(L + (q0 - d + 1) / data.block * cell + 2, T + (q0 + 0.5) / data.block * cell);
        ctx.lineTo(L + (q1 - d + 1) / data.block * cell + 2, T + (q1 + 0.5) / data.block * cell);
        ctx.stroke(); ctx.setLineDash([]);
      }
      // ticks: every k-th cell, so labels never overlap
      ctx.fillStyle = "#333"; ctx.font = "10px Helvetica, Arial, sans-serif";
      var every = Math.max(1, Math.ceil(12 / cell));
      for (var c = 0; c < n; c += every) {
        var mid = (c + 0.5) * cell, text = tickText(c);
        ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.fillText(text, L - 4, T + mid);
        ctx.save(); ctx.translate(L + mid, T - 4); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(text, 0, 0); ctx.restore();
      }
      ctx.font = "11px Helvetica, Arial, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
      var pooled = data.block > 1 ? " (blocks of " + data.block + " positions: rows averaged, columns summed)" : "";
      ctx.fillText("key position and token" + pooled, L + size / 2, T + size + 6);
      ctx.fillStyle = "#D55E00"; ctx.fillText("orange: start of each repeat of the " + p.period + "-token segment", L + size / 2, T + size + 19);
      ctx.save(); ctx.fillStyle = "#333"; ctx.translate(10, T + size / 2); ctx.rotate(-Math.PI / 2); ctx.textBaseline = "middle";
      ctx.fillText("query position and token", 0, 0); ctx.restore();
      geo = {L: L, T: T, cell: cell, n: n};
      var fr = data.frames[st.frame], stripe = fr.stripe[st.head][st.prompt];
      caption.textContent = data.heads[st.head] + (fr.label ? ", " + fr.label : "") + ", prompt " + (st.prompt + 1) +
        ": " + (stripe * 100).toFixed(1) + "% of the attention of repeated tokens is on the induction stripe " +
        "(the tokens after earlier occurrences: " + (p.period - 1) + ", " + (2 * p.period - 1) + ", \u2026 positions back)";
      if (shown) shown.textContent = " " + fr.label;
      root.setAttribute("data-drawn", data.heads[st.head] + "/" + st.prompt + "/" + st.frame);
    }
    canvas.onmousemove = function (ev) {
      if (!geo) return;
      var box = canvas.getBoundingClientRect(), x = ev.clientX - box.left - geo.L, y = ev.clientY - box.top - geo.T;
      var kc = Math.floor(x / geo.cell), qc = Math.floor(y / geo.cell);
      if (kc < 0 || qc < 0 || kc >= geo.n || qc >= geo.n) { tip.style.display = "none"; return; }
      var p = data.prompts[st.prompt], qs = span(qc), ks = span(kc), v = matrix()[qc * geo.n + kc];
      var who = function (s) { return data.block === 1 ? s[0] + " \u201c" + p.labels[s[0]] + "\u201d" : s[0] + "\u2013" + s[1]; };
      tip.textContent = "query " + who(qs) + " \u2192 key " + who(ks) + ": " + v.toFixed(4);
      tip.style.display = "block";
      var rb = root.getBoundingClientRect();
      tip.style.left = Math.min(ev.clientX - rb.left + 12, rb.width - 240) + "px"; tip.style.top = (ev.clientY - rb.top + 12) + "px";
    };
    canvas.onmouseleave = function () { tip.style.display = "none"; };
    var view = {root: root, data: data, draw: draw, geometry: function () { return geo; }, select: function (label) {
      var i = data.heads.indexOf(label); if (i < 0) return false;
      st.head = i; headSel.value = i; draw(); return true; }};
    InductionPatterns.views[id] = view;
    var lastWidth = root.clientWidth;
    function resized() { if (root.clientWidth !== lastWidth) { lastWidth = root.clientWidth; draw(); } }
    if (window.ResizeObserver) new ResizeObserver(resized).observe(root); else window.addEventListener("resize", resized);
    draw();
    return view;
  }
  return {views: {}, mount: mount, decode: decode};
})(); }
"""
