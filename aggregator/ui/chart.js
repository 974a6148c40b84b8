// Telltale's time-series chart: canvas, lines or stacked areas, a legend that toggles series,
// hover values, drag to zoom (double-click to zoom out). No dependencies.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

// Every chart on the page, for the browser tests: {id, series, min, max}.
window.telltaleCharts = window.telltaleCharts || [];

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

function formatValue(v, unit) {
  if (v === null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0, x = v;
    while (Math.abs(x) >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return x.toFixed(x >= 100 || i === 0 ? 0 : 1) + " " + units[i];
  }
  if (unit === "%") return (v * 100).toFixed(1) + " %";
  if (unit === "s") {
    if (a >= 1 || a === 0) return v.toFixed(a >= 100 ? 0 : 2) + " s";
    return (v * 1000).toFixed(a >= 0.1 ? 0 : 1) + " ms";
  }
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return "0";
  return v.toPrecision(3);
}

// Time ticks fall on whole seconds, minutes, hours or days.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400, 172800, 604800].map((s) => s * 1000);
function timeStep(span, target) {
  return TIME_STEPS.find((s) => span / s <= target) || TIME_STEPS[TIME_STEPS.length - 1];
}

// An axis label: enough digits to tell neighbouring ticks apart.
function formatTick(v, step, unit) {
  if (unit === "bytes" || unit === "s") {
    const a = formatValue(v, unit), b = formatValue(v + step, unit);
    if (a !== b) return a;
  }
  if (unit === "%") {
    const d = Math.max(0, Math.min(4, -Math.floor(Math.log10(step * 100))));
    return (v * 100).toFixed(d) + " %";
  }
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0, x = Math.max(Math.abs(v), step);
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    const k = Math.pow(1024, i);
    const d = Math.max(0, Math.min(4, -Math.floor(Math.log10(step / k))));
    return (v / k).toFixed(d) + " " + units[i];
  }
  const d = Math.max(0, Math.min(6, -Math.floor(Math.log10(step))));
  return Math.abs(v) >= 1e4 ? formatValue(v, unit) : v.toFixed(d);
}

function formatTime(ms, span) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  const hm = p(d.getHours()) + ":" + p(d.getMinutes());
  if (span > 2 * 86400e3) return p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + hm;
  if (span < 10 * 60e3) return hm + ":" + p(d.getSeconds());
  return hm;
}

// A series label: name{a="b"} from a Prometheus metric object.
function seriesName(metric) {
  const name = metric.__name__ || "";
  const rest = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => k + "=\"" + metric[k] + "\"");
  return rest.length ? name + "{" + rest.join(", ") + "}" : (name || "{}");
}

class Chart {
  // el: a container; opts: {id, unit, stacked, onZoom(startMs, endMs), onReset()}
  constructor(el, opts) {
    this.el = el;
    this.opts = opts || {};
    this.series = [];
    this.hidden = new Set();
    this.canvas = document.createElement("canvas");
    this.canvas.className = "chart-canvas";
    this.tip = document.createElement("div");
    this.tip.className = "chart-tip";
    this.legend = document.createElement("div");
    this.legend.className = "chart-legend";
    el.replaceChildren(this.canvas, this.tip, this.legend);
    this.drag = null;
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.style.display = "none"; this.draw(); });
    this.canvas.addEventListener("mousedown", (e) => { this.drag = { x0: this.px(e), x1: this.px(e) }; });
    this.canvas.addEventListener("mouseup", (e) => this.endDrag(e));
    this.canvas.addEventListener("dblclick", () => this.opts.onReset && this.opts.onReset());
    new ResizeObserver(() => this.draw()).observe(el);
  }

  px(e) { return e.clientX - this.canvas.getBoundingClientRect().left; }

  // data: the `result` of a Prometheus matrix answer.
  set(result, startMs, endMs, stepMs) {
    this.start = startMs; this.end = endMs; this.step = stepMs;
    this.series = result.map((r, i) => ({
      name: seriesName(r.metric),
      colour: PALETTE[i % PALETTE.length],
      points: r.values.map(([t, v]) => [t * 1000, parseFloat(v)]),
    }));
    this.hidden.clear();
    this.renderLegend();
    this.draw();
    this.publish();
  }

  publish() {
    let min = Infinity, max = -Infinity;
    for (const s of this.series) for (const [, v] of s.points) {
      if (isFinite(v)) { min = Math.min(min, v); max = Math.max(max, v); }
    }
    const id = this.opts.id || "chart";
    const entry = {
      id, query: this.opts.query || "", series: this.series.length,
      min: isFinite(min) ? min : null, max: isFinite(max) ? max : null,
      start: this.start, end: this.end, step: this.step,
    };
    const all = window.telltaleCharts;
    const i = all.findIndex((c) => c.id === id);
    if (i >= 0) all[i] = entry; else all.push(entry);
  }

  renderLegend() {
    this.legend.replaceChildren(...this.series.map((s, i) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      item.innerHTML = "<i></i>";
      item.firstChild.style.background = s.colour;
      item.append(document.createTextNode(s.name));
      item.addEventListener("click", () => {
        if (this.hidden.has(i)) this.hidden.delete(i); else this.hidden.add(i);
        item.classList.toggle("off");
        this.draw();
      });
      return item;
    }));
  }

  // The drawn values: per visible series its points, stacked if asked (on the step grid).
  shown() {
    const vis = this.series.filter((_, i) => !this.hidden.has(i));
    if (!this.opts.stacked) return vis;
    const acc = new Map();
    return vis.map((s) => ({
      ...s,
      points: s.points.map(([t, v]) => {
        const base = acc.get(t) || 0;
        const top = base + (isFinite(v) ? v : 0);
        acc.set(t, top);
        return [t, top, base];
      }),
    }));
  }

  geometry() {
    const w = this.el.clientWidth || 600, h = this.opts.height || 240;
    const shown = this.shown();
    let lo = Infinity, hi = -Infinity;
    for (const s of shown) for (const p of s.points) {
      if (isFinite(p[1])) { lo = Math.min(lo, p[1], p.length > 2 ? p[2] : p[1]); hi = Math.max(hi, p[1]); }
    }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (lo > 0 && lo < hi * 0.5) lo = 0;
    if (hi === lo) {
      // A flat series: centre it in a band a tenth of its size (or ±1 around zero).
      const pad = Math.abs(hi) * 0.1 || 1;
      lo -= pad; hi += pad;
      if (lo < 0 && hi - 2 * pad >= 0) lo = 0;
    }
    return { w, h, left: 64, right: 10, top: 8, bottom: 22, lo, hi, shown };
  }

  x(g, t) { return g.left + (g.w - g.left - g.right) * (t - this.start) / Math.max(1, this.end - this.start); }
  y(g, v) { return g.top + (g.h - g.top - g.bottom) * (1 - (v - g.lo) / (g.hi - g.lo)); }

  draw() {
    const g = this.geometry();
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = g.w * dpr; this.canvas.height = g.h * dpr;
    this.canvas.style.width = g.w + "px"; this.canvas.style.height = g.h + "px";
    const c = this.canvas.getContext("2d");
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.clearRect(0, 0, g.w, g.h);
    c.font = "11px sans-serif";
    c.fillStyle = "#666"; c.strokeStyle = "#e5e5e5"; c.lineWidth = 1;
    const vs = niceStep(g.hi - g.lo, 5);
    for (let v = Math.ceil(g.lo / vs) * vs; v <= g.hi + 1e-12; v += vs) {
      const y = Math.round(this.y(g, v)) + 0.5;
      c.beginPath(); c.moveTo(g.left, y); c.lineTo(g.w - g.right, y); c.stroke();
      c.textAlign = "right"; c.fillText(formatTick(v, vs, this.opts.unit), g.left - 4, y + 4);
    }
    const span = this.end - this.start;
    const ts = timeStep(span, Math.max(2, Math.floor((g.w - g.left) / 90)));
    c.textAlign = "center";
    for (let t = Math.ceil(this.start / ts) * ts; t <= this.end; t += ts) {
      c.fillText(formatTime(t, span), this.x(g, t), g.h - 6);
    }
    if (!this.series.length) {
      c.textAlign = "center"; c.fillText("no data", g.w / 2, g.h / 2);
      return;
    }
    for (const s of g.shown) {
      c.strokeStyle = s.colour; c.fillStyle = s.colour; c.lineWidth = 1.5;
      c.beginPath();
      // Runs of consecutive points are lines; a point alone is a dot.
      const runs = [];
      let prevT = null;
      for (const p of s.points) {
        if (!isFinite(p[1])) { prevT = null; continue; }
        if (prevT === null || (this.step && p[0] - prevT > 1.5 * this.step)) runs.push([]);
        runs[runs.length - 1].push(p);
        prevT = p[0];
      }
      for (const run of runs) {
        run.forEach((p, i) => {
          const X = this.x(g, p[0]), Y = this.y(g, p[1]);
          if (i) c.lineTo(X, Y); else c.moveTo(X, Y);
        });
      }
      c.stroke();
      for (const run of runs) if (run.length === 1) {
        c.beginPath(); c.arc(this.x(g, run[0][0]), this.y(g, run[0][1]), 2.5, 0, 2 * Math.PI); c.fill();
      }
      if (this.opts.stacked) {
        c.globalAlpha = 0.25; c.fillStyle = s.colour;
        c.beginPath();
        s.points.forEach((p, i) => { const X = this.x(g, p[0]); if (i) c.lineTo(X, this.y(g, p[1])); else c.moveTo(X, this.y(g, p[1])); });
        for (let i = s.points.length - 1; i >= 0; i--) c.lineTo(this.x(g, s.points[i][0]), this.y(g, s.points[i][2]));
        c.closePath(); c.fill(); c.globalAlpha = 1;
      }
    }
    if (this.drag) {
      c.fillStyle = "rgba(31,119,180,0.15)";
      c.fillRect(Math.min(this.drag.x0, this.drag.x1), g.top, Math.abs(this.drag.x1 - this.drag.x0), g.h - g.top - g.bottom);
    }
    if (this.cursor !== undefined) {
      c.strokeStyle = "#999"; c.beginPath();
      c.moveTo(this.cursor + 0.5, g.top); c.lineTo(this.cursor + 0.5, g.h - g.bottom); c.stroke();
    }
  }

  hover(e) {
    const x = this.px(e);
    if (this.drag) { this.drag.x1 = x; this.draw(); return; }
    const g = this.geometry();
    const t = this.start + (x - g.left) / (g.w - g.left - g.right) * (this.end - this.start);
    const rows = [];
    let at = null;
    for (const s of g.shown) {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
      if (best && isFinite(best[1])) {
        at = best[0];
        const v = this.opts.stacked ? best[1] - best[2] : best[1];
        rows.push("<div><i style=\"background:" + s.colour + "\"></i>" + escapeHtml(s.name) + ": <b>" + formatValue(v, this.opts.unit) + "</b></div>");
      }
    }
    this.cursor = at === null ? undefined : this.x(g, at);
    this.draw();
    if (!rows.length) { this.tip.style.display = "none"; return; }
    this.tip.innerHTML = "<div class=\"tip-time\">" + new Date(at).toLocaleString() + "</div>" + rows.slice(0, 12).join("");
    this.tip.style.display = "block";
    this.tip.style.left = Math.min(x + 12, g.w - 260) + "px";
  }

  endDrag(e) {
    const d = this.drag; this.drag = null;
    if (!d || Math.abs(d.x1 - d.x0) < 5) { this.draw(); return; }
    const g = this.geometry();
    const toT = (x) => this.start + (x - g.left) / (g.w - g.left - g.right) * (this.end - this.start);
    const a = toT(Math.min(d.x0, d.x1)), b = toT(Math.max(d.x0, d.x1));
    if (this.opts.onZoom) this.opts.onZoom(Math.round(a), Math.round(b));
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c]));
}
