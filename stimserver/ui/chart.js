// A line chart in one SVG, made for series that grow while a bake trains. Points that fit the
// current axes are drawn by appending one short <path> per series (what is on screen is not
// touched); a point outside the axes, a resize or a change of scale redraws the chart whole
// (a few milliseconds for 10,000 points). No library: the axes, ticks, legend and the cursor
// (mouse or arrow keys, shared between charts) are below.
import { h, num, svg, clear } from "./dom.js";

const MARGIN = { top: 8, right: 24, bottom: 24, left: 56 }; // right: room for half of the last x label
const MAX_DOTS = 300; // series drawn with a dot per point (eval rows) stop dotting past this many points

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

function roundTo(x, step) { return Number((Math.round(x / step) * step).toPrecision(12)); }

// The index of the last x <= target in the ascending array xs (-1 when none).
function floorIndex(xs, target) {
  let lo = 0;
  let hi = xs.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= target) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

function nearestIndex(xs, target) {
  const i = floorIndex(xs, target);
  if (i < 0) return xs.length ? 0 : -1;
  if (i + 1 < xs.length && xs[i + 1] - target < target - xs[i]) return i + 1;
  return i;
}

export class LineChart {
  // series: [{ key, label, dots? }] — the first series with points leads the cursor.
  constructor({ id, title, series, height = 220, log = false, zero = true, xLabel = "step", onCursor = null }) {
    this.series = series.map((s) => ({ ...s, xs: [], ys: [], drawn: 0, g: null, hidden: false }));
    this.byKey = new Map(this.series.map((s) => [s.key, s]));
    this.height = height;
    this.log = log;
    this.zero = zero;
    this.xLabel = xLabel;
    this.onCursor = onCursor;
    this.xMax = null; // the x extent when known ahead (the bake's total steps)
    this.markers = []; // x positions marked under the axis (checkpoints)
    this.width = 0;
    this.dom = null; // { x0, x1, y0, y1 } of the drawn axes
    this.cursorX = null;
    this.stats = { full: 0, partial: 0, lastMs: 0 };
    this.svg = svg("svg", { class: "chart-svg", height: String(height), "aria-hidden": "true" });
    this.legend = h("span", { class: "legend" }, this.series.map((s) => h("button", {
      type: "button", class: `key s-${s.key}`, "aria-pressed": "true", dataset: { key: s.key },
      title: `show or hide ${s.label}`, onclick: () => this.toggle(s.key),
    }, h("span", { class: "swatch" }), s.label)));
    this.readout = h("div", { class: "readout muted", "aria-live": "polite" }, "\u00a0");
    this.el = h("figure", { class: "chart", id, tabindex: "0", role: "group", "aria-label": `${title} chart: arrow keys move the cursor` },
      h("figcaption", {}, h("strong", {}, title), this.legend), this.svg, this.readout);
    this.svg.addEventListener("mousemove", (e) => {
      if (!this.dom) return;
      const box = this.svg.getBoundingClientRect();
      this.setCursor(this.invertX(e.clientX - box.left), true);
    });
    this.svg.addEventListener("mouseleave", () => this.setCursor(null, true));
    this.el.addEventListener("keydown", (e) => this.key(e));
    this.resize = new ResizeObserver(() => {
      const w = Math.round(this.svg.getBoundingClientRect().width);
      if (w && w !== this.width && this.points()) this.draw();
    });
    this.resize.observe(this.svg);
  }

  dispose() { this.resize.disconnect(); }

  points() { return this.series.reduce((n, s) => n + s.xs.length, 0); }

  // -- data ------------------------------------------------------------------------------------
  add(key, x, y) {
    const s = this.byKey.get(key);
    if (!s || !Number.isFinite(x)) return;
    s.xs.push(x);
    s.ys.push(typeof y === "number" && Number.isFinite(y) ? y : NaN);
  }

  // Draw what was added since the last call: appended when it fits the axes, else the whole chart.
  // Returns the time it took (ms), also kept in stats.lastMs.
  flush() {
    const t0 = performance.now();
    if (!this.dom || !this.fits()) this.draw();
    else {
      for (const s of this.series) if (s.drawn < s.xs.length) this.drawSeries(s, Math.max(0, s.drawn - 1));
      this.stats.partial++;
      if (this.cursorX !== null) this.setCursor(this.cursorX, false);
    }
    this.stats.lastMs = performance.now() - t0;
    return this.stats.lastMs;
  }

  reset() {
    for (const s of this.series) { s.xs = []; s.ys = []; s.drawn = 0; }
    this.cursorX = null;
    this.dom = null;
  }

  setXMax(n) {
    const v = Number.isFinite(n) && n > 0 ? n : null;
    if (v === this.xMax) return;
    this.xMax = v;
    if (this.dom) this.draw();
  }

  setMarkers(xs) {
    const next = (xs || []).filter(Number.isFinite);
    if (next.join(",") === this.markers.join(",")) return;
    this.markers = next;
    if (this.dom) this.draw();
  }

  setLog(log) {
    if (log === this.log) return;
    this.log = log;
    if (this.dom) this.draw();
  }

  toggle(key) {
    const s = this.byKey.get(key);
    s.hidden = !s.hidden;
    const b = this.legend.querySelector(`button[data-key="${key}"]`);
    if (b) b.setAttribute("aria-pressed", String(!s.hidden));
    if (s.g) s.g.classList.toggle("off", s.hidden);
  }

  // -- axes -------------------------------------------------------------------------------------
  extent() {
    let xmax = 0;
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of this.series) {
      if (s.xs.length) xmax = Math.max(xmax, s.xs[s.xs.length - 1]);
      for (const y of s.ys) {
        if (!(y === y) || (this.log && y <= 0)) continue; // NaN, or not drawable on a log axis
        if (y < lo) lo = y;
        if (y > hi) hi = y;
      }
    }
    return { xmax, lo, hi };
  }

  domain() {
    const { xmax, lo, hi } = this.extent();
    const x1 = this.xMax !== null && this.xMax >= xmax ? this.xMax
      : Math.max(1, xmax <= 10 ? 10 : roundTo(Math.ceil((xmax * 1.1) / niceStep(xmax, 5)) * niceStep(xmax, 5), 1));
    if (lo === Infinity) return { x0: 0, x1, y0: this.log ? 0.1 : 0, y1: 1, ticks: this.log ? [0.1, 1] : [0, 0.5, 1] };
    if (this.log) {
      const e0 = Math.floor(Math.log10(lo));
      let e1 = Math.ceil(Math.log10(hi));
      if (e1 === e0) e1 = e0 + 1;
      const ticks = [];
      const every = Math.max(1, Math.ceil((e1 - e0) / 6));
      for (let e = e0; e <= e1; e += every) ticks.push(Number(`1e${e}`));
      if (e1 - e0 <= 2) for (let e = e0; e < e1; e++) ticks.push(2 * 10 ** e, 5 * 10 ** e);
      ticks.sort((a, b) => a - b);
      return { x0: 0, x1, y0: 10 ** e0, y1: 10 ** e1, ticks };
    }
    let a = this.zero ? Math.min(0, lo) : lo;
    let b = this.zero ? Math.max(0, hi) : hi;
    if (a === b) { const pad = Math.abs(a) * 0.1 || 1; a -= pad; b += pad; }
    const step = niceStep(b - a, 4);
    const y0 = roundTo(Math.floor(a / step) * step, step);
    const y1 = roundTo(Math.ceil(b / step) * step, step);
    const ticks = [];
    for (let t = y0; t <= y1 + step / 2; t += step) ticks.push(roundTo(t, step));
    return { x0: 0, x1, y0, y1, ticks };
  }

  fits() {
    const d = this.dom;
    if (this.log !== d.log) return false; // (a new width is the ResizeObserver's: it redraws)
    for (const s of this.series) {
      for (let i = s.drawn; i < s.xs.length; i++) {
        const x = s.xs[i];
        const y = s.ys[i];
        if (x > d.x1 || x < d.x0) return false;
        if (y === y && !(this.log && y <= 0) && (y < d.y0 || y > d.y1)) return false;
      }
    }
    return true;
  }

  px(x) { const d = this.dom; return MARGIN.left + ((x - d.x0) / (d.x1 - d.x0)) * d.w; }

  py(y) {
    const d = this.dom;
    const f = this.log ? (Math.log10(y) - Math.log10(d.y0)) / (Math.log10(d.y1) - Math.log10(d.y0)) : (y - d.y0) / (d.y1 - d.y0);
    return MARGIN.top + d.h - f * d.h;
  }

  invertX(px) { const d = this.dom; return d.x0 + ((px - MARGIN.left) / d.w) * (d.x1 - d.x0); }

  // -- drawing ----------------------------------------------------------------------------------
  draw() {
    const width = Math.round(this.svg.getBoundingClientRect().width) || 600;
    this.width = width;
    const dom = this.domain();
    this.dom = { ...dom, log: this.log, w: Math.max(10, width - MARGIN.left - MARGIN.right),
      h: Math.max(10, this.height - MARGIN.top - MARGIN.bottom) };
    const d = this.dom;
    const root = clear(this.svg);
    root.setAttribute("viewBox", `0 0 ${width} ${this.height}`);
    const axes = svg("g", { class: "axes" });
    const bottom = MARGIN.top + d.h;
    for (const t of dom.ticks) {
      const y = this.py(t).toFixed(1);
      axes.append(svg("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left + d.w, y1: y, y2: y }),
        svg("text", { class: "tick", x: MARGIN.left - 6, y, "text-anchor": "end", "dominant-baseline": "middle" }, num(t)));
    }
    const xstep = niceStep(d.x1 - d.x0, Math.max(2, Math.floor(d.w / 90)));
    for (let t = d.x0; t <= d.x1 + xstep / 2; t += xstep) {
      const x = this.px(roundTo(t, xstep)).toFixed(1);
      axes.append(svg("line", { class: "xtick", x1: x, x2: x, y1: bottom, y2: bottom + 4 }),
        svg("text", { class: "tick", x, y: bottom + 15, "text-anchor": "middle" }, Number(roundTo(t, xstep)).toLocaleString("en-US")));
    }
    axes.append(svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left + d.w, y1: bottom, y2: bottom }),
      svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: bottom }));
    const marks = svg("g", { class: "markers" });
    for (const m of this.markers) {
      if (m < d.x0 || m > d.x1) continue;
      const x = this.px(m).toFixed(1);
      marks.append(svg("path", { class: "marker", d: `M${x} ${bottom} l-4 6 h8 z` }, svg("title", {}, `checkpoint ${m}`)));
    }
    root.append(axes, marks);
    for (const s of this.series) {
      s.g = svg("g", { class: `series s-${s.key}${s.hidden ? " off" : ""}`, dataset: { key: s.key } });
      root.append(s.g);
      s.drawn = 0;
      if (s.xs.length) this.drawSeries(s, 0);
    }
    this.cursor = svg("g", { class: "cursor", visibility: "hidden" });
    root.append(this.cursor);
    this.stats.full++;
    if (this.cursorX !== null) this.setCursor(this.cursorX, false);
  }

  // One <path> through points from..end of s (from = the last point already drawn, so the line joins).
  // Past 4 points per pixel column, each column keeps its first, lowest, highest and last point
  // (all that a line through every point would cover on screen): 100,000 steps draw like 5,000.
  drawSeries(s, from) {
    const parts = [];
    const dots = s.dots && s.xs.length <= MAX_DOTS;
    const dotEls = [];
    const r1 = (v) => Math.round(v * 10) / 10;
    let pen = false;
    const put = (px, py) => { parts.push((pen ? "L" : "M") + r1(px) + " " + r1(py)); pen = true; };
    const thin = s.xs.length - from > 4 * this.dom.w;
    let col = NaN;
    let first = -1;
    let lo = -1;
    let hi = -1;
    let last = -1;
    const flush = () => {
      if (first < 0) return;
      let prev = -1;
      for (const i of [first, lo, hi, last].sort((a, b) => a - b)) {
        if (i !== prev) put(this.px(s.xs[i]), this.py(s.ys[i]));
        prev = i;
      }
      first = -1;
    };
    for (let i = from; i < s.xs.length; i++) {
      const y = s.ys[i];
      if (!(y === y) || (this.log && y <= 0)) { flush(); pen = false; continue; } // a gap in the line
      if (thin) {
        const c = Math.floor(this.px(s.xs[i]));
        if (c !== col || first < 0) { flush(); col = c; first = lo = hi = last = i; }
        else { last = i; if (y < s.ys[lo]) lo = i; if (y > s.ys[hi]) hi = i; }
        continue;
      }
      const px = this.px(s.xs[i]);
      const py = this.py(y);
      put(px, py);
      if (dots && i >= s.drawn) dotEls.push(svg("circle", { class: "dot", cx: r1(px), cy: r1(py), r: "2.5" }));
    }
    flush();
    if (parts.length) s.g.append(svg("path", { class: "line", d: parts.join("") }), ...dotEls);
    s.drawn = s.xs.length;
  }

  // -- the cursor ---------------------------------------------------------------------------------
  lead() { return this.series.find((s) => s.xs.length) || null; }

  setCursor(x, fromUser) {
    if (!this.dom) return;
    this.cursorX = x;
    const lead = this.lead();
    if (x === null || !lead) {
      this.cursor.setAttribute("visibility", "hidden");
      this.readout.textContent = "\u00a0";
      if (fromUser && this.onCursor) this.onCursor(null);
      return;
    }
    const i = nearestIndex(lead.xs, x);
    const at = lead.xs[i];
    this.cursorX = at;
    const cx = this.px(at).toFixed(1);
    const parts = [svg("line", { class: "rule", x1: cx, x2: cx, y1: MARGIN.top, y2: MARGIN.top + this.dom.h })];
    const text = [`${this.xLabel} ${at.toLocaleString("en-US")}`];
    for (const s of this.series) {
      if (s.hidden || !s.xs.length) continue;
      const j = s === lead ? i : floorIndex(s.xs, at);
      if (j < 0) continue;
      const y = s.ys[j];
      text.push(`${s.label} ${num(y)}${s.xs[j] !== at ? ` (at ${s.xs[j].toLocaleString("en-US")})` : ""}`);
      if (y === y && !(this.log && y <= 0)) parts.push(svg("circle", { class: `hot s-${s.key}`, cx: this.px(s.xs[j]).toFixed(1), cy: this.py(y).toFixed(1), r: "3.5" }));
    }
    clear(this.cursor).append(...parts);
    this.cursor.setAttribute("visibility", "visible");
    this.readout.textContent = text.join(" · ");
    if (fromUser && this.onCursor) this.onCursor(at);
  }

  key(e) {
    const lead = this.lead();
    if (!lead || !this.dom) return;
    const n = lead.xs.length;
    let i = this.cursorX === null ? -1 : nearestIndex(lead.xs, this.cursorX);
    const big = Math.max(1, Math.round(n / 10));
    if (e.key === "ArrowRight") i = i < 0 ? 0 : Math.min(n - 1, i + (e.shiftKey ? big : 1));
    else if (e.key === "ArrowLeft") i = i < 0 ? n - 1 : Math.max(0, i - (e.shiftKey ? big : 1));
    else if (e.key === "Home") i = 0;
    else if (e.key === "End") i = n - 1;
    else if (e.key === "Escape") { this.setCursor(null, true); return; }
    else return;
    e.preventDefault();
    e.stopPropagation();
    this.setCursor(lead.xs[i], true);
  }
}
