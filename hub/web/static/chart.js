// The series chart (SVG, zoom and pan) and sparklines. The hub picks the resolution:
// each view asks /api/series with from, to and max_points (half the plot's width in
// pixels) and draws what comes back: min/max bands and the mean line of rollup buckets,
// or the raw readings once the range holds few enough of them.
import { get } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const WIN = { "1m": 60, "15m": 900, "1h": 3600, "1d": 86400 };
const M = { l: 58, r: 14, t: 12, b: 30 };

export function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

function num(v) {
  if (typeof v === "number" && isFinite(v)) return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; lo -= 1; }
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function timeLabel(t, span) {
  const d = new Date(t * 1000);
  const p = (x) => String(x).padStart(2, "0");
  const hm = p(d.getHours()) + ":" + p(d.getMinutes());
  if (span < 600) return hm + ":" + p(d.getSeconds());
  if (span < 2 * 86400) return hm;
  return (d.getMonth() + 1) + "/" + d.getDate() + (span < 10 * 86400 ? " " + hm : "");
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(+v.toFixed(2)) : v.toPrecision(4).replace(/\.?0+$/, "");
  return String(v);
}

export class Chart {
  // el: an <svg class="chart">; statusEl: where the window and point count are told.
  constructor(el, statusEl, node, sensor, t0, t1, onView) {
    Object.assign(this, { el, statusEl, node, sensor, t0, t1, onView });
    this.data = null;
    this.ctrl = null;
    this.timer = null;
    el.setAttribute("tabindex", "0");
    el.setAttribute("role", "img");
    el.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoom(e.deltaY < 0 ? 0.8 : 1.25, this.timeAt(e.clientX));
    }, { passive: false });
    el.addEventListener("keydown", (e) => {
      const k = { "+": () => this.zoom(0.5), "=": () => this.zoom(0.5), "-": () => this.zoom(2),
                  ArrowLeft: () => this.pan(-0.25), ArrowRight: () => this.pan(0.25) }[e.key];
      if (k) { e.preventDefault(); k(); }
    });
    let drag = null;
    el.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, t0: this.t0, t1: this.t1 };
      el.setPointerCapture(e.pointerId);
    });
    el.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dt = ((e.clientX - drag.x) / this.plotWidth()) * (drag.t1 - drag.t0);
      this.setView(drag.t0 - dt, drag.t1 - dt, false);
    });
    const end = () => { if (drag) { drag = null; this.load(); } };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    this.load();
  }

  plotWidth() { return Math.max(50, (this.el.clientWidth || 800) - M.l - M.r); }
  maxPoints() { return Math.max(10, Math.floor(this.plotWidth() / 2)); }
  timeAt(x) {
    const r = this.el.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (x - r.left - M.l) / this.plotWidth()));
    return this.t0 + f * (this.t1 - this.t0);
  }

  zoom(f, at) {
    const c = at === undefined ? (this.t0 + this.t1) / 2 : at;
    const span = Math.max(10, (this.t1 - this.t0) * f);
    const k = (c - this.t0) / (this.t1 - this.t0);
    this.setView(c - k * span, c - k * span + span);
  }
  pan(f) { const d = (this.t1 - this.t0) * f; this.setView(this.t0 + d, this.t1 + d); }

  setView(t0, t1, fetchNow = true) {
    this.t0 = t0; this.t1 = t1;
    this.draw();
    if (this.onView) this.onView(t0, t1);
    if (fetchNow) { clearTimeout(this.timer); this.timer = setTimeout(() => this.load(), 150); }
  }

  url(extra) {
    return "/api/series/" + encodeURIComponent(this.node) + "/" + encodeURIComponent(this.sensor) +
      "?from=" + this.t0.toFixed(3) + "&to=" + this.t1.toFixed(3) + (extra || "");
  }

  async load() {
    if (this.ctrl) this.ctrl.abort();
    this.ctrl = new AbortController();
    this.statusEl.textContent = "Loading…";
    try {
      this.data = await get(this.url("&max_points=" + this.maxPoints()), { signal: this.ctrl.signal });
      this.draw();
    } catch (e) {
      if (e.name !== "AbortError") this.statusEl.textContent = "Could not load the series: " + e.message;
    }
  }

  // A live reading of this series (raw view only: buckets come when they close).
  addLive(t, v) {
    if (!this.data || this.data.window !== "raw" || t < this.t0 || t >= this.t1) return;
    this.data.points.push({ time: t, value: v });
    this.draw();
  }

  draw() {
    const el = this.el;
    const W = el.clientWidth || 800, H = el.clientHeight || 340;
    el.setAttribute("viewBox", "0 0 " + W + " " + H);
    el.replaceChildren();
    const pw = W - M.l - M.r, ph = H - M.t - M.b;
    const d = this.data;
    const win = d ? d.window : "";
    el.dataset.window = win;
    el.dataset.points = d ? d.points.length : 0;
    const raw = win === "raw";
    const half = raw ? 0 : (WIN[win] || 0) / 2;
    const pts = (d ? d.points : []).filter((p) => p.time + half * 2 >= this.t0 && p.time < this.t1);
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) {
      const a = raw ? num(p.value) : num(p.min), b = raw ? a : num(p.max);
      if (a !== null) lo = Math.min(lo, a);
      if (b !== null) hi = Math.max(hi, b);
    }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (hi === lo) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.06; lo -= pad; hi += pad;
    const X = (t) => M.l + ((t - this.t0) / (this.t1 - this.t0)) * pw;
    const Y = (v) => M.t + (1 - (v - lo) / (hi - lo)) * ph;
    el.append(svg("title", {}, this.sensor + (d && d.unit ? " (" + d.unit + ")" : "")));
    const clipId = "clip-" + Math.random().toString(36).slice(2);
    const defs = svg("defs");
    const cp = svg("clipPath", { id: clipId });
    cp.append(svg("rect", { x: M.l, y: M.t, width: pw, height: ph }));
    defs.append(cp);
    el.append(defs);
    for (const v of niceTicks(lo, hi, 5)) {
      el.append(svg("line", { x1: M.l, x2: M.l + pw, y1: Y(v), y2: Y(v), stroke: "#e1e4e8" }));
      el.append(svg("text", { x: M.l - 6, y: Y(v) + 4, "text-anchor": "end" }, fmtValue(v)));
    }
    const span = this.t1 - this.t0;
    const step = niceTimeStep(span / 6);
    for (let t = Math.ceil(this.t0 / step) * step; t < this.t1; t += step) {
      el.append(svg("line", { x1: X(t), x2: X(t), y1: M.t, y2: M.t + ph, stroke: "#eef0f2" }));
      el.append(svg("text", { x: X(t), y: H - 10, "text-anchor": "middle" }, timeLabel(t, span)));
    }
    el.append(svg("rect", { x: M.l, y: M.t, width: pw, height: ph, fill: "none", stroke: "#8a9099" }));
    const g = svg("g", { "clip-path": "url(#" + clipId + ")" });
    el.append(g);
    if (raw) {
      const xy = pts.map((p) => [p.time, num(p.value), p.est === true]).filter((p) => p[1] !== null);
      g.append(svg("polyline", { class: "line", fill: "none", stroke: "#1f4e8c", "stroke-width": 1.6,
        points: xy.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ") }));
      // a reading whose time the node estimated (before its clock had the hub's time): hollow
      if (xy.length <= 300) for (const p of xy) {
        const dot = svg("circle", p[2] ? { class: "dot est", cx: X(p[0]), cy: Y(p[1]), r: 3, fill: "#fff", stroke: "#1f4e8c", "stroke-width": 1.4 }
                                        : { class: "dot", cx: X(p[0]), cy: Y(p[1]), r: 2.4, fill: "#1f4e8c" });
        if (p[2]) dot.append(svg("title", {}, "time estimated by the node (clock not yet set)"));
        g.append(dot);
      }
    } else {
      for (const seg of segments(pts, WIN[win] || 60)) {
        const top = seg.filter((p) => num(p.max) !== null).map((p) => X(p.time + half).toFixed(1) + "," + Y(p.max).toFixed(1));
        const bot = seg.filter((p) => num(p.min) !== null).map((p) => X(p.time + half).toFixed(1) + "," + Y(p.min).toFixed(1)).reverse();
        if (seg.length > 1) g.append(svg("polygon", { class: "band", fill: "#b9d3ee", stroke: "none", points: top.concat(bot).join(" ") }));
        g.append(svg("polyline", { class: "line", fill: "none", stroke: "#1f4e8c", "stroke-width": 1.6,
          points: seg.filter((p) => num(p.mean) !== null).map((p) => X(p.time + half).toFixed(1) + "," + Y(p.mean).toFixed(1)).join(" ") }));
        if (seg.length === 1) g.append(svg("circle", { class: "dot", cx: X(seg[0].time + half), cy: Y(seg[0].mean), r: 2.4, fill: "#1f4e8c" }));
      }
    }
    const nEst = raw ? pts.filter((p) => p.est === true).length : 0;
    const what = (!d ? "" : raw ? "raw readings" : win + " buckets (min–max band, mean line)") +
      (d && d.unit ? " in " + d.unit : "") + (nEst ? " (" + nEst + " with an estimated time, hollow)" : "");
    this.statusEl.textContent = d ? pts.length + " " + what + ", " + new Date(this.t0 * 1000).toLocaleString() +
      " – " + new Date(this.t1 * 1000).toLocaleString() : "";
    el.setAttribute("aria-label", "Chart of " + this.sensor + ": " + this.statusEl.textContent +
      ". Plus and minus keys zoom, arrow keys pan.");
  }
}

function niceTimeStep(s) {
  const steps = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                 172800, 604800, 2592000];
  return steps.find((x) => x >= s) || 2592000;
}

function segments(pts, w) {
  const out = [];
  let cur = [];
  for (const p of pts) {
    if (cur.length && p.time - cur[cur.length - 1].time > w * 1.5) { out.push(cur); cur = []; }
    cur.push(p);
  }
  if (cur.length) out.push(cur);
  return out;
}

// A sparkline <svg> of a series' last `span` seconds (means of buckets, or raw values).
export async function sparkline(node, sensor, span) {
  const now = Date.now() / 1000;
  const el = svg("svg", { class: "spark", viewBox: "0 0 120 28", "aria-hidden": "true" });
  try {
    const d = await get("/api/series/" + encodeURIComponent(node) + "/" + encodeURIComponent(sensor) +
      "?from=" + (now - span).toFixed(0) + "&max_points=60");
    const xy = d.points.map((p) => [p.time, num(d.window === "raw" ? p.value : p.mean)]).filter((p) => p[1] !== null);
    if (xy.length > 1) {  // from the first point to now: a young series fills the line too
      let lo = Math.min(...xy.map((p) => p[1])), hi = Math.max(...xy.map((p) => p[1]));
      if (hi === lo) { hi += 1; lo -= 1; }
      const t0 = xy[0][0], w = Math.max(now - t0, 1);
      el.append(svg("polyline", { fill: "none", stroke: "#1f4e8c", "stroke-width": 1.4,
        points: xy.map((p) => (((p[0] - t0) / w) * 118 + 1).toFixed(1) + "," + (26 - ((p[1] - lo) / (hi - lo)) * 24).toFixed(1)).join(" ") }));
    }
  } catch (e) { /* a sparkline is decoration: the value beside it is what counts */ }
  return el;
}
