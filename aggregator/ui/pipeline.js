// The live pipeline diagram, drawn as SVG from /api/v1/pipeline's JSON (the same graph the
// Mermaid text describes): one column per stage, data flowing left to right, the critical path
// thick and red, nodes a firing rule reads from filled red. Written here, no Mermaid runtime.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
  return e;
}

function pipelineDuration(s) {
  if (s < 1e-3) return Math.round(s * 1e6) + " µs";
  if (s < 1) return (s * 1e3 < 10 ? (s * 1e3).toFixed(1) : Math.round(s * 1e3)) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  return (s / 60).toFixed(1) + " min";
}

// The figure as at most two short lines (what it measures goes in the tooltip).
function figureLines(f, withWhat) {
  if (!f) return [];
  const out = [];
  if (f.rate !== null && f.rate !== undefined && f.unit) out.push(formatValue(f.rate) + " " + f.unit + "/s");
  if (f.p50 !== null && f.p50 !== undefined && f.p99 !== null && f.p99 !== undefined) {
    out.push((withWhat && f.what ? f.what + " " : "") + "p50 " + pipelineDuration(f.p50) + " · p99 " + pipelineDuration(f.p99));
  }
  return out;
}

const LINE_H = 15, PAD = 8, VGAP = 26, HGAP = 140, TOP = 34, CHAR_W = 6.6;

function nodeLines(n) {
  const lines = [[n.title, "pl-title"], ...n.detail.map((d) => [d, ""]), ...figureLines(n.figure, true).map((f) => [f, "pl-figure"])];
  if (n.alerting.length) lines.push(["firing: " + n.alerting.join(", "), "pl-firing"]);
  return lines;
}

// One column per stage, as wide as its widest box; boxes stacked in it.
function layout(g) {
  const pos = {};
  let height = 0, x = 20;
  for (const [stage] of g.stages) {
    const col = g.nodes.filter((n) => n.stage === stage);
    const w = Math.max(150, ...col.map((n) => Math.max(...nodeLines(n).map(([t]) => t.length)) * CHAR_W + 2 * PAD));
    let y = TOP;
    for (const n of col) {
      const hgt = nodeLines(n).length * LINE_H + 2 * PAD;
      pos[n.id] = { x, y, w, h: hgt };
      y += hgt + VGAP;
    }
    pos["stage:" + stage] = { x };
    height = Math.max(height, y);
    x += w + HGAP;
  }
  return { pos, width: x - HGAP + 40, height: height + 50 };
}

function drawPipeline(g) {
  const { pos, width, height } = layout(g);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "pipeline", role: "img" });
  root.append(svg("defs", {},
    svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#555" })),
    svg("marker", { id: "arrow-critical", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 12, markerHeight: 12, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#c62828" }))));
  for (const [stage, title] of g.stages) root.append(svg("text", { x: pos["stage:" + stage].x, y: 18, class: "pl-stage" }, title));
  const edges = svg("g", {}), labels = svg("g", {}), nodes = svg("g", {});
  let drawn = 0;
  for (const e of g.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    let d;
    if (b.x > a.x) {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    } else if (b.x === a.x) {
      // Same stage: down the right-hand side.
      const x = a.x + a.w, y1 = a.y + a.h / 2, y2 = b.y + b.h / 2;
      d = `M${x},${y1} C${x + 30},${y1} ${x + 30},${y2} ${x},${y2}`;
    } else {
      // Back to an earlier stage (commands, scores): under the boxes.
      const x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y + b.h, low = Math.max(y1, y2) + 40;
      d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
    }
    const cls = "pl-edge" + (e.critical ? " critical" : "") + (e.control ? " control" : "");
    const path = svg("path", { d, class: cls, "marker-end": e.critical ? "url(#arrow-critical)" : "url(#arrow)", "data-from": e.from, "data-to": e.to });
    if (e.figure && e.figure.what) path.append(svg("title", {}, e.figure.what));
    edges.append(path);
    drawn++;
    const text = e.figure ? figureLines(e.figure, false) : (e.label ? [e.label] : []);
    if (text.length && b.x > a.x) {
      const lx = (a.x + a.w + b.x) / 2, ly = (a.y + a.h / 2 + b.y + b.h / 2) / 2 - (text.length - 1) * 6;
      text.forEach((t, i) => labels.append(svg("text", { x: lx, y: ly + i * 12, class: "pl-label", "text-anchor": "middle" }, t)));
    }
  }
  for (const n of g.nodes) {
    const p = pos[n.id];
    const cls = "pl-node" + (n.critical ? " critical" : "") + (n.alerting.length ? " alerting" : "");
    const box = svg("g", { class: cls, "data-id": n.id, transform: `translate(${p.x},${p.y})` });
    box.append(svg("rect", { width: p.w, height: p.h, rx: 5 }));
    nodeLines(n).forEach(([t, c], i) => box.append(svg("text", { x: PAD, y: PAD + 11 + i * LINE_H, class: c }, t)));
    nodes.append(box);
  }
  root.append(edges, nodes, labels);
  return { root, drawn };
}

async function pipelinePage(main, current) {
  const g = await api("/api/v1/pipeline?format=json");
  if (current && !current()) return;
  const { root, drawn } = drawPipeline(g);
  const alerting = g.nodes.filter((n) => n.alerting.length).map((n) => n.id);
  main.replaceChildren(
    h("h2", {}, "Pipeline"),
    h("p", { class: "muted" }, "Measured over the last " + Math.round(g.window_seconds) + " s; thick red: the critical path (collection → durable ack → rule → notification); red boxes: stages a firing rule reads from" +
      (alerting.length ? " (" + alerting.join(", ") + ")" : " (none now)") + ". Refreshed every 5 s."),
    h("div", { id: "pipeline" }, root),
    h("details", {}, h("summary", {}, "Mermaid (for docs and runbooks: telltale-aggregator diagram)"), h("pre", { id: "mermaid-text" }, g.mermaid)));
  // What the browser tests compare with the API's answer.
  window.telltalePipeline = { nodes: g.nodes.length, edges: g.edges.length, drawnEdges: drawn, alerting };
}
