// Telltale's web UI: pages over the aggregator's own HTTP API, routed by the URL's hash.
// Written here, no third-party code: the aggregator serves it from its binary.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const h = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
  return e;
};

// Reads and writes: reads carry the token too when one is set (a server with a read token).
function token() { return localStorage.getItem("telltale-token") || ""; }
async function api(path, opts) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (opts && opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method: (opts && opts.method) || "GET", headers, body: opts && opts.body });
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + " " + text));
  return body && body.status === "success" ? body.data : body;
}

const RANGES = { "15m": 900e3, "1h": 3600e3, "6h": 21600e3, "24h": 86400e3, "7d": 604800e3 };
function stepFor(span) { return Math.max(15, Math.ceil(span / 1000 / 300)); }

async function rangeQuery(q, start, end) {
  const step = stepFor(end - start);
  // Whole seconds, so the browser tests can ask the API the very same question.
  start = Math.floor(start / 1000) * 1000; end = Math.floor(end / 1000) * 1000;
  const p = new URLSearchParams({ query: q, start: start / 1000, end: end / 1000, step });
  const d = await api("/api/v1/query_range?" + p);
  return { result: d.result, step: step * 1000, start, end };
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function table(headers, rows) {
  if (!rows.length) return h("p", { class: "muted" }, "none");
  return h("table", {}, h("tr", {}, headers.map((x) => h("th", {}, x))),
    rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))));
}

function hashParams() {
  const [path, qs] = location.hash.slice(1).split("?");
  return { path: path || "/", params: new URLSearchParams(qs || "") };
}

function setHash(path, params) {
  const qs = params.toString();
  history.replaceState(null, "", "#" + path + (qs ? "?" + qs : ""));
}

// ---- Overview ----------------------------------------------------------------------------

function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const i = line.lastIndexOf(" ");
    const key = line.slice(0, i);
    const name = key.split("{")[0];
    out[name] = (out[name] || 0) + parseFloat(line.slice(i + 1));
  }
  return out;
}

let lastMetrics = null;
async function overview(main, current) {
  const [agents, alerts, incidents, slos, golden, metricsText] = await Promise.all([
    api("/api/v1/agents"), api("/api/v1/alerts"), api("/api/v1/incidents?state=open"),
    api("/api/v1/slos"), api("/api/v1/golden-signals"),
    fetch("/metrics", { headers: token() ? { Authorization: "Bearer " + token() } : {} }).then((r) => r.text()),
  ]);
  const m = parseMetrics(metricsText);
  const now = Date.now();
  let rate = "–";
  if (lastMetrics && now > lastMetrics.at) {
    const d = (m.telltale_aggregator_samples_ingested_total || 0) - (lastMetrics.m.telltale_aggregator_samples_ingested_total || 0);
    rate = formatValue(d / ((now - lastMetrics.at) / 1000)) + " samples/s";
  }
  lastMetrics = { at: now, m };
  const backlog = {};
  try {
    const b = await api("/api/v1/query?query=" + encodeURIComponent("telltale_agent_buffer_batches"));
    for (const r of b.result) backlog[r.metric.instance] = r.value[1];
  } catch (_) { /* no agent metrics yet */ }
  const firing = alerts.alerts.filter((a) => a.state === "firing");
  // A refresh that comes back after the user moved on does not overwrite the new page.
  if (current && !current()) return;
  main.replaceChildren(
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("b", {}, agents.filter((a) => a.connected).length + " / " + agents.length), " agents connected"),
      h("div", { class: "card" }, h("b", {}, rate), " ingest"),
      h("div", { class: "card" }, h("b", {}, formatValue(m.telltale_aggregator_active_series || 0)), " active series"),
      h("div", { class: "card" }, h("b", {}, formatValue(m.telltale_aggregator_storage_block_bytes || 0, "bytes")), " in blocks"),
      h("div", { class: "card" + (firing.length ? " bad" : "") }, h("b", {}, firing.length), " alerts firing"),
      h("div", { class: "card" + (incidents.length ? " bad" : "") }, h("b", {}, incidents.length), " open incidents")),
    h("h2", {}, "Agents"),
    table(["name", "connected", "last batch", "backlog (batches)", "version", "samples", "sources"],
      agents.map((a) => [h("a", { href: "#/dashboard/host?host=" + encodeURIComponent(a.name) }, a.name),
        a.connected ? "yes" : a.moved_away ? "moved to another aggregator" : "no", ago(a.last_batch_ms), backlog[a.name] ?? "–", a.version || "–", a.samples,
        (a.sources || []).join(", ") || "–"])),
    h("h2", {}, "Firing alerts"),
    table(["alert", "labels", "since"], firing.map((a) => [a.labels.alertname,
      Object.entries(a.labels).filter(([k]) => k !== "alertname").map(([k, v]) => k + "=" + v).join(", "),
      new Date(a.activeAt).toLocaleString()])),
    h("h2", {}, "Open incidents"),
    table(["id", "root cause", "alerts", "opened"], incidents.map((i) => [
      h("a", { href: "#/incident/" + i.id }, i.id), i.rootCause ? i.rootCause.alertname : "–",
      i.alerts.length, new Date(i.openedAt).toLocaleString()])),
    h("h2", {}, "SLOs"),
    sloTable(slos.slos),
    h("h2", {}, "Hosts"),
    table(["host", "cpu", "load/cpu", "memory", "disk", "filesystem"], golden.hosts.map((x) => [
      h("a", { href: "#/dashboard/host?host=" + encodeURIComponent(x.instance) }, x.instance),
      ...["cpu", "cpu_load", "memory", "disk", "filesystem"].map((r) => x.saturation[r] === undefined ? "–" : formatValue(x.saturation[r], r === "cpu_load" ? "" : "%"))])),
  );
}

function sloTable(slos) {
  return table(["SLO", "objective", "SLI now", "budget left", "burn 1h", "alerts"], slos.map((s) => [
    s.id, s.objective + " %", s.sli === null ? "–" : (s.sli * 100).toFixed(3) + " %",
    s.errorBudgetRemaining === null ? "–" : (s.errorBudgetRemaining * 100).toFixed(1) + " %",
    s.series[0] && s.series[0].burnRate["1h"] !== null ? formatValue(s.series[0].burnRate["1h"]) + "×" : "–",
    s.alerts.filter((a) => a.state === "firing").map((a) => a.severity).join(", ") || "none"]));
}

// ---- Explore -----------------------------------------------------------------------------

let names = null;
async function completions() {
  if (!names) {
    const [metrics, labels] = await Promise.all([api("/api/v1/label/__name__/values"), api("/api/v1/labels")]);
    names = { metrics, labels };
  }
  return names;
}

function attachCompletion(input, box) {
  const pick = (word, choice) => {
    const pos = input.selectionStart;
    input.value = input.value.slice(0, pos - word.length) + choice + input.value.slice(pos);
    input.focus();
    box.style.display = "none";
  };
  input.addEventListener("input", async () => {
    const pos = input.selectionStart;
    const before = input.value.slice(0, pos);
    const word = (before.match(/[a-zA-Z_:][a-zA-Z0-9_:]*$/) || [""])[0];
    if (word.length < 1) { box.style.display = "none"; return; }
    const open = before.lastIndexOf("{") > before.lastIndexOf("}");
    const n = await completions();
    const pool = open ? n.labels : n.metrics;
    const hits = pool.filter((x) => x.startsWith(word) && x !== word).slice(0, 12);
    box.replaceChildren(...hits.map((x) => h("div", { class: "completion", onmousedown: (e) => { e.preventDefault(); pick(word, x); } }, x)));
    box.style.display = hits.length ? "block" : "none";
  });
  input.addEventListener("blur", () => { box.style.display = "none"; });
}

async function explore(main) {
  const { params } = hashParams();
  const range = params.get("range") || "1h";
  const input = h("textarea", { id: "query", rows: "2", spellcheck: "false", placeholder: "PromQL, e.g. rate(node_cpu_seconds_total[5m])" });
  input.value = params.get("q") || "";
  const box = h("div", { class: "completions" });
  const rangeSel = h("select", { id: "range" }, Object.keys(RANGES).map((r) => {
    const o = h("option", { value: r }, r);
    if (r === range) o.selected = true;
    return o;
  }));
  const mode = h("select", { id: "mode" }, ["lines", "stacked"].map((m) => {
    const o = h("option", { value: m }, m);
    if (m === (params.get("mode") || "lines")) o.selected = true;
    return o;
  }));
  const view = params.get("view") || "chart";
  const out = h("div", { id: "result" });
  const status = h("div", { class: "muted", id: "status" });
  const run = async (start, end) => {
    const p = new URLSearchParams({ q: input.value, range: rangeSel.value, mode: mode.value, view });
    setHash("/explore", p);
    end = end || Date.now();
    start = start || end - RANGES[rangeSel.value];
    status.textContent = "running…";
    try {
      const t0 = performance.now();
      const r = await rangeQuery(input.value, start, end);
      status.textContent = r.result.length + " series in " + Math.round(performance.now() - t0) + " ms";
      if (view === "table") {
        out.replaceChildren(table(["series", "last value"], r.result.map((s) => [seriesName(s.metric), s.values.length ? s.values[s.values.length - 1][1] : "–"])));
        window.telltaleCharts = [{ id: "explore", series: r.result.length }];
      } else {
        const c = new Chart(out, { id: "explore", query: input.value, stacked: mode.value === "stacked", onZoom: (a, b) => run(a, b), onReset: () => run() });
        c.set(r.result, r.start, r.end, r.step);
      }
    } catch (e) {
      status.textContent = "error: " + e.message;
      out.replaceChildren();
    }
  };
  main.replaceChildren(
    h("div", { class: "querybar" }, h("div", { class: "qwrap" }, input, box), rangeSel, mode,
      h("button", { id: "run", onclick: () => run() }, "Run")),
    h("div", { class: "tabs" },
      h("a", { href: "#/explore?" + new URLSearchParams({ q: input.value, range, view: "chart" }) }, "Chart"),
      h("a", { href: "#/explore?" + new URLSearchParams({ q: input.value, range, view: "table" }) }, "Table")),
    status, out);
  attachCompletion(input, box);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); run(); } });
  if (input.value) await run();
}

// ---- Logs (LogQL) ------------------------------------------------------------------------

const LEVELS = [["error", /\b(error|err|fatal|crit(ical)?|panic|emerg|alert)\b/i], ["warn", /\bwarn(ing)?\b/i],
  ["info", /\b(info|notice)\b/i], ["debug", /\b(debug|trace)\b/i]];
function levelOf(labels, line) {
  const l = (labels.level || labels.detected_level || labels.severity || "").toLowerCase();
  for (const [name, re] of LEVELS) if (l && re.test(l)) return name;
  for (const [name, re] of LEVELS) if (re.test(line)) return name;
  return "other";
}

async function logsPage(main) {
  const { params } = hashParams();
  const range = params.get("range") || "1h";
  const input = h("textarea", { id: "logquery", rows: "2", spellcheck: "false", placeholder: "LogQL, e.g. {job=\"varlogs\"} |= \"error\"" });
  input.value = params.get("q") || "";
  const rangeSel = h("select", {}, Object.keys(RANGES).map((r) => { const o = h("option", { value: r }, r); if (r === range) o.selected = true; return o; }));
  const status = h("div", { class: "muted", id: "status" });
  const volume = h("div", { id: "volume" });
  const lines = h("div", { id: "lines" });
  const run = async () => {
    setHash("/logs", new URLSearchParams({ q: input.value, range: rangeSel.value }));
    const end = Math.floor(Date.now() / 1000) * 1000, start = end - RANGES[rangeSel.value];
    const step = stepFor(end - start);
    status.textContent = "running…";
    try {
      const ns = (ms) => String(ms) + "000000";
      const vol = await api("/loki/api/v1/query_range?" + new URLSearchParams({
        query: "sum(count_over_time(" + input.value + " [" + step + "s]))", start: ns(start), end: ns(end), step: step + "s" }));
      new Chart(volume, { id: "log-volume", query: input.value, height: 120 }).set(vol.result, start, end, step * 1000);
      const got = await api("/loki/api/v1/query_range?" + new URLSearchParams({
        query: input.value, start: ns(start), end: ns(end), limit: "500", direction: "backward" }));
      const all = [];
      for (const s of got.result) for (const [t, line] of s.values) all.push([t, s.stream, line]);
      all.sort((a, b) => (a[0] < b[0] ? 1 : -1));
      window.telltaleLogs = { lines: all.length };
      status.textContent = all.length + " lines (newest first, at most 500)";
      lines.replaceChildren(...all.map(([t, labels, line]) => h("div", { class: "logline level-" + levelOf(labels, line) },
        h("span", { class: "logtime" }, new Date(Number(t.slice(0, -6))).toLocaleString()), " ", line)));
    } catch (e) {
      status.textContent = "error: " + e.message;
      lines.replaceChildren();
    }
  };
  main.replaceChildren(h("div", { class: "querybar" }, h("div", { class: "qwrap" }, input), rangeSel,
    h("button", { id: "runlogs", onclick: run }, "Run")), status, volume, lines);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); run(); } });
  if (input.value) await run();
}

// ---- Traces (Jaeger's API) ---------------------------------------------------------------

async function tracesPage(main) {
  const { params } = hashParams();
  const services = (await api("/api/services")).data || [];
  const service = params.get("service") || services[0] || "";
  const sel = h("select", { id: "service", onchange: (e) => { setHash("/traces", new URLSearchParams({ service: e.target.value })); route(); } },
    services.map((x) => { const o = h("option", { value: x }, x); if (x === service) o.selected = true; return o; }));
  main.replaceChildren(h("div", { class: "querybar" }, h("label", {}, "service "), sel));
  if (!service) { main.append(h("p", { class: "muted" }, "no traces yet")); return; }
  const found = (await api("/api/traces?" + new URLSearchParams({ service, limit: "50", lookback: "6h" }))).data || [];
  window.telltaleTraces = { traces: found.length };
  main.append(h("h2", {}, "Recent traces of " + service),
    table(["trace", "root", "spans", "duration", "started"], found.map((t) => {
      const start = Math.min(...t.spans.map((x) => x.startTime));
      const end = Math.max(...t.spans.map((x) => x.startTime + x.duration));
      const root = t.spans.find((x) => !(x.references || []).length) || t.spans[0];
      return [h("a", { href: "#/trace/" + t.traceID }, t.traceID), root.operationName, t.spans.length,
        formatValue((end - start) / 1e6, "s"), new Date(start / 1000).toLocaleString()];
    })));
}

async function tracePage(main, id) {
  const t = ((await api("/api/traces/" + encodeURIComponent(id))).data || [])[0];
  if (!t) { main.replaceChildren(h("p", {}, "no trace " + id)); return; }
  const byId = new Map(t.spans.map((x) => [x.spanID, x]));
  const depth = (x) => {
    let d = 0, cur = x;
    for (let guard = 0; guard < 64; guard++) {
      const p = (cur.references || []).find((r) => r.refType === "CHILD_OF" && byId.has(r.spanID));
      if (!p) break;
      d++; cur = byId.get(p.spanID);
    }
    return d;
  };
  const start = Math.min(...t.spans.map((x) => x.startTime));
  const total = Math.max(1, Math.max(...t.spans.map((x) => x.startTime + x.duration)) - start);
  const spans = [...t.spans].sort((a, b) => a.startTime - b.startTime);
  window.telltaleTrace = { spans: spans.length };
  const err = (x) => (x.tags || []).some((g) => g.key === "error" && (g.value === true || g.value === "true"));
  main.replaceChildren(h("h2", {}, "Trace " + t.traceID),
    h("p", {}, spans.length + " spans, " + formatValue(total / 1e6, "s")),
    h("div", { id: "waterfall" }, spans.map((x) => {
      const bar = h("div", { class: "span-bar" + (err(x) ? " span-error" : "") });
      bar.style.left = (100 * (x.startTime - start) / total) + "%";
      bar.style.width = Math.max(0.3, 100 * x.duration / total) + "%";
      return h("div", { class: "span-row" },
        h("div", { class: "span-name" }, "\u00a0".repeat(2 * depth(x)) + ((t.processes[x.processID] || {}).serviceName || "") + " " + x.operationName),
        h("div", { class: "span-track" }, bar),
        h("div", { class: "span-dur" }, formatValue(x.duration / 1e6, "s")));
    })),
    h("p", {}, h("a", { href: "/api/v1/traces/" + t.traceID + "/logs" }, "Logs of this trace")));
}

// ---- Dashboards --------------------------------------------------------------------------

async function dashboards(main) {
  const list = await api("/api/v1/dashboards");
  main.replaceChildren(h("h2", {}, "Dashboards"),
    ...(list.errors || []).map((e) => h("p", { class: "error" }, "A dashboard file does not load: " + e)),
    table(["dashboard", "panels", "from"], list.dashboards.map((d) => [
      h("a", { href: "#/dashboard/" + encodeURIComponent(d.name) }, d.title), d.panels.length, d.file || "built in"])));
}

async function dashboard(main, name) {
  const list = await api("/api/v1/dashboards");
  const d = list.dashboards.find((x) => x.name === name);
  if (!d) { main.replaceChildren(h("p", {}, "no dashboard " + name)); return; }
  const { params } = hashParams();
  const range = params.get("range") || "6h";
  const vars = {};
  const bar = h("div", { class: "querybar" });
  for (const v of d.variables || []) {
    let values = [];
    try { values = await api("/api/v1/label/" + encodeURIComponent(v.label) + "/values?match[]=" + encodeURIComponent(v.query)); } catch (_) { /* none */ }
    const cur = params.get(v.name) || values[0] || "";
    vars[v.name] = cur;
    const sel = h("select", { id: "var-" + v.name, onchange: (e) => { params.set(v.name, e.target.value); setHash("/dashboard/" + name, params); render(); } },
      values.map((x) => { const o = h("option", { value: x }, x); if (x === cur) o.selected = true; return o; }));
    bar.append(h("label", {}, v.name + " "), sel);
  }
  const rangeSel = h("select", { onchange: (e) => { params.set("range", e.target.value); setHash("/dashboard/" + name, params); render(); } },
    Object.keys(RANGES).map((r) => { const o = h("option", { value: r }, r); if (r === range) o.selected = true; return o; }));
  bar.append(h("label", {}, " range "), rangeSel);
  const grid = h("div", { class: "grid" });
  main.replaceChildren(h("h2", {}, d.title), bar, grid);
  window.telltaleCharts = [];
  async function render() {
    for (const v of d.variables || []) vars[v.name] = params.get(v.name) || vars[v.name];
    const end = Date.now(), start = end - RANGES[params.get("range") || range];
    grid.replaceChildren();
    await Promise.all(d.panels.map(async (p, i) => {
      const box = h("div", { class: "panel" }, h("h3", {}, p.title));
      const area = h("div", {});
      box.append(area);
      grid.append(box);
      let q = p.expr;
      for (const [k, v] of Object.entries(vars)) q = q.split("$" + k).join(v);
      try {
        const r = await rangeQuery(q, start, end);
        new Chart(area, { id: "panel-" + i, query: q, unit: p.unit, stacked: !!p.stacked, height: 180 }).set(r.result, r.start, r.end, r.step);
      } catch (e) { area.replaceChildren(h("p", { class: "muted" }, "error: " + e.message)); }
    }));
  }
  await render();
}

// ---- Alerts, incidents, SLOs, remediations, reports --------------------------------------

// `alertname=Foo, instance=~web.*, job!=x` → Alertmanager's matchers.
function parseMatchers(text) {
  return text.split(",").map((m) => m.trim()).filter(Boolean).map((m) => {
    const r = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?$/.exec(m);
    if (!r) throw new Error("not a matcher: " + m);
    return { name: r[1], value: r[3], isRegex: r[2].includes("~"), isEqual: !r[2].startsWith("!") };
  });
}

function silenceForm(prefill) {
  const matchers = h("input", { name: "matchers", placeholder: "alertname=HostDown, instance=~web.*", value: prefill || "" });
  const hours = h("input", { name: "duration", type: "number", min: "0.1", step: "0.5", value: "2", style: "width:4rem" });
  const comment = h("input", { name: "comment", placeholder: "why", value: "" });
  const msg = h("span", { class: "muted", id: "silence-msg" });
  const create = h("button", { id: "silence-create", onclick: async () => {
    try {
      const start = new Date(), end = new Date(start.getTime() + Number(hours.value) * 3600e3);
      const body = { matchers: parseMatchers(matchers.value), startsAt: start.toISOString(), endsAt: end.toISOString(),
        createdBy: "ui", comment: comment.value || "silenced from the UI" };
      const r = await api("/api/v2/silences", { method: "POST", body: JSON.stringify(body) });
      msg.textContent = "created " + r.silenceID;
      route();
    } catch (e) { msg.textContent = "not created: " + e.message; msg.className = "error"; }
  } }, "Silence");
  return h("div", { class: "silence-form" }, "Matchers ", matchers, " for ", hours, " h ", comment, create, msg);
}

async function alertsPage(main) {
  const [alerts, incidents, silences] = await Promise.all([
    api("/api/v1/alerts"), api("/api/v1/incidents?state=all"), api("/api/v2/silences")]);
  const form = silenceForm("");
  const silenceLike = (a) => () => {
    $("input[name=matchers]", form).value = Object.entries(a.labels).map(([k, v]) => k + "=" + v).join(", ");
    $("input[name=comment]", form).focus();
  };
  const expire = (id) => async () => {
    try { await api("/api/v2/silence/" + encodeURIComponent(id), { method: "DELETE" }); route(); }
    catch (e) { alert("expire failed: " + e.message); }
  };
  main.replaceChildren(
    h("h2", {}, "Alerts"),
    table(["alert", "state", "labels", "since", ""], alerts.alerts.map((a) => [a.labels.alertname, a.state,
      Object.entries(a.labels).filter(([k]) => k !== "alertname").map(([k, v]) => k + "=" + v).join(", "),
      new Date(a.activeAt).toLocaleString(), h("button", { onclick: silenceLike(a) }, "silence…")])),
    h("h2", {}, "Incidents"),
    table(["id", "status", "priority", "root cause", "alerts", "opened", "acknowledged"], incidents.map((i) => [
      h("a", { href: "#/incident/" + i.id }, i.id), i.status, i.priority, i.rootCause ? i.rootCause.alertname : "–",
      i.alerts.length, new Date(i.openedAt).toLocaleString(), i.acknowledged ? i.acknowledged.by : "no"])),
    h("h2", {}, "Silences"),
    form,
    table(["id", "matchers", "ends", "state", "comment", ""], (Array.isArray(silences) ? silences : []).map((s) => [s.id,
      s.matchers.map((m) => m.name + (m.isRegex ? (m.isEqual ? "=~" : "!~") : (m.isEqual ? "=" : "!=")) + m.value).join(", "),
      new Date(s.endsAt).toLocaleString(), s.status.state, s.comment || "",
      s.status.state === "expired" ? "" : h("button", { class: "expire", "data-id": s.id, onclick: expire(s.id) }, "expire")])),
  );
}

async function incidentPage(main, id) {
  const i = await api("/api/v1/incidents/" + encodeURIComponent(id));
  const ack = h("button", { id: "ack", onclick: async () => {
    try { await api("/api/v1/incidents/" + id + "/ack", { method: "POST", body: JSON.stringify({ by: "ui" }) }); route(); }
    catch (e) { ack.textContent = "ack failed: " + e.message; }
  } }, "Acknowledge");
  const host = i.rootCause && i.rootCause.labels && i.rootCause.labels.instance;
  const hostAround = h("div", { class: "grid", id: "incident-host" });
  const logsAround = h("div", { id: "incident-logs" });
  main.replaceChildren(
    h("h2", {}, "Incident " + i.id + " — " + i.status),
    h("p", {}, "Root cause: ", h("b", {}, i.rootCause ? i.rootCause.alertname : "–"), i.rootCause && i.rootCause.why ? " — " + i.rootCause.why : ""),
    i.acknowledged ? h("p", {}, "Acknowledged by " + i.acknowledged.by) : ack,
    h("h3", {}, "Timeline"),
    h("ol", { id: "timeline" }, i.timeline.map((e) => h("li", {}, new Date(e.at).toLocaleString() + " — " + e.kind + ": " + e.text))),
    h("h3", {}, "Alerts"),
    table(["alert", "layer", "status", "labels"], i.alerts.map((a) => [a.labels.alertname, a.layer, a.status,
      Object.entries(a.labels).map(([k, v]) => k + "=" + v).join(", ")])),
    host ? h("p", {}, h("a", { href: "#/dashboard/host?host=" + encodeURIComponent(host) }, "Host " + host + " dashboard")) : null,
    host ? h("h3", {}, "Host " + host + " around the start") : null,
    host ? hostAround : null,
    i.logs ? h("p", {}, h("a", { href: i.logs.path }, "Logs around the incident (" + i.logs.query + ")")) : null,
    i.logs ? h("h3", {}, "Logs around the start") : null,
    i.logs ? logsAround : null,
  );
  // The root cause host's metrics from 15 minutes before the incident opened to 5 minutes
  // after it resolved (now while open): the first four panels of the host dashboard (a
  // dashboard file named "host" replaces the built-in one here too).
  window.telltaleCharts = [];
  window.telltaleIncidentLogs = undefined;
  const opened = Date.parse(i.openedAt);
  const start = opened - 15 * 60e3;
  const end = i.resolvedAt ? Math.min(Date.now(), Date.parse(i.resolvedAt) + 5 * 60e3) : Date.now();
  const work = [];
  if (host) {
    work.push((async () => {
      const list = await api("/api/v1/dashboards");
      const d = list.dashboards.find((x) => x.name === "host");
      if (!d) return;
      await Promise.all(d.panels.slice(0, 4).map(async (p, n) => {
        const area = h("div", {});
        hostAround.append(h("div", { class: "panel" }, h("h3", {}, p.title), area));
        const q = p.expr.split("$host").join(host);
        try {
          const r = await rangeQuery(q, start, end);
          new Chart(area, { id: "incident-" + n, query: q, unit: p.unit, stacked: !!p.stacked, height: 140 }).set(r.result, r.start, r.end, r.step);
        } catch (e) { area.replaceChildren(h("p", { class: "muted" }, "error: " + e.message)); }
      }));
    })().catch((e) => hostAround.replaceChildren(h("p", { class: "muted" }, "host metrics: " + e.message))));
  }
  if (i.logs) {
    work.push((async () => {
      // The newest 200 of the lines the incident's logs link names, coloured by level.
      const got = await api(i.logs.path.replace("limit=1000", "limit=200"));
      const all = [];
      for (const s of got.result) for (const [t, line] of s.values) all.push([t, s.stream, line]);
      all.sort((a, b) => (a[0] < b[0] ? 1 : -1));
      window.telltaleIncidentLogs = all.length;
      logsAround.replaceChildren(h("p", { class: "muted" }, all.length + " lines (newest first)"),
        ...all.slice(0, 200).map(([t, labels, line]) => h("div", { class: "logline level-" + levelOf(labels, line) },
          h("span", { class: "logtime" }, new Date(Number(t.slice(0, -6))).toLocaleString()), " ", line)));
    })().catch((e) => logsAround.replaceChildren(h("p", { class: "muted" }, "logs: " + e.message))));
  }
  await Promise.all(work);
}

async function slosPage(main) {
  const [slos, golden] = await Promise.all([api("/api/v1/slos"), api("/api/v1/golden-signals")]);
  main.replaceChildren(h("h2", {}, "SLOs"), sloTable(slos.slos),
    h("h2", {}, "Services (golden signals)"),
    table(["service", "source", "requests/s", "errors", "p50", "p99", "CPU cores"], golden.services.flatMap((s) =>
      s.sources.map((x) => [s.service, x.source, formatValue(x.requestsPerSecond), x.errorRatio === undefined || x.errorRatio === null ? "–" : formatValue(x.errorRatio, "%"),
        formatValue(x.latencyP50Seconds ?? null, "s"), formatValue(x.latencyP99Seconds ?? null, "s"), formatValue(s.cpuCores)]))));
}

async function remediationsPage(main) {
  const [list, status] = await Promise.all([api("/api/v1/remediations"), api("/api/v1/remediation/status")]);
  const decide = (id, what) => async () => {
    try { await api("/api/v1/remediations/" + id + "/" + what, { method: "POST", body: JSON.stringify({ by: "ui" }) }); route(); }
    catch (e) { alert(what + " failed: " + e.message); }
  };
  // The global switch: every remediation stops at once (remembered across restarts).
  const toggle = h("button", { id: "remediation-switch", onclick: async () => {
    try { await api("/api/v1/remediation/status", { method: "POST", body: JSON.stringify({ enabled: !status.enabled }) }); route(); }
    catch (e) { toggle.textContent = "switch failed: " + e.message; }
  } }, status.enabled ? "Turn all remediation off" : "Turn remediation on");
  // The audit trail: every step of a record, with when.
  const trail = (r) => h("details", {}, h("summary", {}, (r.history || []).length + " steps"),
    h("ol", { class: "trail" }, (r.history || []).map((x) => h("li", {}, new Date(x.at).toLocaleString() + " — " + x.text))));
  main.replaceChildren(h("h2", {}, "Remediations"),
    h("p", {}, "Remediation is " + (status.enabled ? "enabled" : "disabled") + ". ", toggle),
    table(["id", "runbook", "action", "instance", "state", "created", "audit trail", ""], list.map((r) => [r.id, r.runbook, r.action, r.instance, r.state,
      new Date(r.createdAt).toLocaleString(), trail(r),
      r.state === "awaiting_approval" ? h("span", {}, h("button", { onclick: decide(r.id, "approve") }, "approve"), " ", h("button", { onclick: decide(r.id, "reject") }, "reject")) : ""])));
}

async function reportsPage(main) {
  const list = await api("/api/v1/reports");
  main.replaceChildren(h("h2", {}, "Reports"),
    h("p", {}, "Make one now: ", ...["slo", "incidents", "capacity", "alert-tuning"].flatMap((k) => [
      h("a", { href: "/api/v1/reports/render?format=html&range=7d&kind=" + k, target: "_blank" }, k), " "])),
    table(["id", "kind", "range", "schedule", "made"], list.reports.map((r) => [
      h("a", { href: "/api/v1/reports/" + r.id + "?format=html", target: "_blank" }, r.id), r.kind,
      r.start + " – " + r.end, r.schedule || "on demand", r.generatedAt])));
}

// ---- Router ------------------------------------------------------------------------------

const PAGES = [
  ["/", "Overview", overview], ["/explore", "Explore", explore], ["/logs", "Logs", logsPage],
  ["/traces", "Traces", tracesPage],
  ["/dashboards", "Dashboards", dashboards],
  ["/alerts", "Alerts", alertsPage], ["/slos", "SLOs", slosPage], ["/remediations", "Remediations", remediationsPage],
  ["/reports", "Reports", reportsPage], ["/pipeline", "Pipeline", pipelinePage],
];

let timer = null;
let generation = 0;
async function route() {
  clearInterval(timer);
  const gen = ++generation;
  const { path } = hashParams();
  // Each route draws into a view of its own: a slower earlier route that finishes after
  // this one draws into its view, no longer in the page, never over this one.
  const main = h("div", { class: "view" });
  $("#main").replaceChildren(main);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + path);
  window.telltaleReady = false;
  const t0 = performance.now();
  try {
    if (path.startsWith("/dashboard/")) await dashboard(main, decodeURIComponent(path.slice(11)));
    else if (path.startsWith("/incident/")) await incidentPage(main, decodeURIComponent(path.slice(10)));
    else if (path.startsWith("/trace/")) await tracePage(main, decodeURIComponent(path.slice(7)));
    else {
      const p = PAGES.find(([x]) => x === path) || PAGES[0];
      await p[2](main);
      if (p[0] === "/") timer = setInterval(() => overview(main, () => gen === generation).catch(() => {}), 10000);
      if (p[0] === "/pipeline") timer = setInterval(() => pipelinePage(main, () => gen === generation).catch(() => {}), 5000);
    }
  } catch (e) {
    main.replaceChildren(h("p", { class: "error" }, "Cannot load this page: " + e.message));
  }
  if (gen !== generation) return;
  // How long the page took from its route to drawn (the UI benchmark reads it).
  window.telltaleRenderMs = performance.now() - t0;
  window.telltaleReady = true;
}

function start() {
  const nav = $("nav");
  nav.append(...PAGES.map(([p, name]) => h("a", { href: "#" + p }, name)));
  const tok = h("input", { id: "token", type: "password", placeholder: "API token", value: token() });
  tok.addEventListener("change", () => { localStorage.setItem("telltale-token", tok.value); route(); });
  nav.append(tok);
  window.addEventListener("hashchange", route);
  route();
}

start();
