// obs dashboard: fetches /api/* and draws inline SVG charts. No dependencies, works offline.
"use strict";

const $ = (sel) => document.querySelector(sel);
const COLORS = ["#3468d6", "#e09b1a", "#d64545", "#14a39a", "#7a5bd6", "#2f9e5b", "#9aa2b1"];
const state = { service: "", window: "all", live: true, timer: null, openTrace: null };

// -- helpers ---------------------------------------------------------------------------------
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmtMs(ms) {
  if (ms == null) return "-";
  if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
  if (ms >= 100) return ms.toFixed(0) + " ms";
  if (ms >= 10) return ms.toFixed(1) + " ms";
  return ms.toFixed(2) + " ms";
}
function fmtNum(n) { return n == null ? "-" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 }); }
// As obs report writes dollars (cli/_stats.py usd): below a cent, two significant digits.
function fmtUsd(v) {
  v = v || 0;
  if (v < 0) return "-" + fmtUsd(-v);
  if (v === 0) return "$0";
  if (v >= 1) return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (v >= 0.01) return "$" + v.toFixed(4);
  if (v < 1e-10) return "<$0.0000000001";
  return "$" + v.toFixed(1 - Math.floor(Math.log10(v)));
}
function fmtPct(r) { return (100 * (r || 0)).toFixed(1) + " %"; }
function fmtTime(us, fine) {
  const d = new Date(us / 1000);
  const text = d.toLocaleTimeString("en-GB", { hour12: false });
  return fine ? `${text}.${String(d.getMilliseconds()).padStart(3, "0").slice(0, 1)}` : text;
}
function rfcToUs(text) {  // "2026-01-01T00:00:00.123456Z" -> epoch µs (Date.parse drops µs)
  return Date.parse(text.slice(0, 19) + "Z") * 1000 + parseInt(text.slice(20, 26) || "0", 10);
}
function params(extra) {
  const p = new URLSearchParams();
  if (state.service) p.set("service", state.service);
  p.set("window", state.window);
  for (const [k, v] of Object.entries(extra || {})) if (v !== "" && v != null) p.set(k, v);
  return p.toString();
}
async function api(path, extra) {
  const res = await fetch(`/api/${path}?${params(extra)}`, { cache: "no-store" });
  return res.json();
}
function niceStep(v) {  // the smallest 1-2-2.5-5 step >= v
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function niceMax(v) { return 4 * niceStep(v / 4); }  // four gridlines at round values
function tooltip(evt, html) {
  const t = $("#tooltip");
  if (!html) { t.hidden = true; return; }
  t.innerHTML = html;
  t.hidden = false;
  t.style.left = evt.clientX + 12 + "px";
  t.style.top = evt.clientY + 12 + "px";
}
function bindTips(root) {
  root.querySelectorAll("[data-tip]").forEach((el) => {
    el.addEventListener("mousemove", (e) => tooltip(e, el.dataset.tip));
    el.addEventListener("mouseleave", (e) => tooltip(e, null));
  });
}

// -- charts ----------------------------------------------------------------------------------
// series: [{name, color, points: [[x, y], ...], area}]; x is epoch µs.
function lineChart(el, series, opts = {}) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) { el.innerHTML = `<div class="nodata">no data in this window</div>`; return; }
  const W = Math.max(el.clientWidth, 320), H = 190, L = 52, R = 12, T = 10, B = 24;
  const xs = all.map((p) => p[0]), x0 = Math.min(...xs), x1 = Math.max(...xs) || x0 + 1;
  const yMax = niceMax(opts.yMax ?? Math.max(...all.map((p) => p[1])));
  const X = (x) => L + (x1 === x0 ? (W - L - R) / 2 : (x - x0) / (x1 - x0) * (W - L - R));
  const Y = (y) => T + (1 - y / yMax) * (H - T - B);
  const fy = opts.yFormat || fmtNum;
  let svg = `<svg viewBox="0 0 ${W} ${H}" height="${H}" role="img"><g class="grid">`;
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    svg += `<line x1="${L}" x2="${W - R}" y1="${Y(y)}" y2="${Y(y)}"/>`;
    svg += `<text x="${L - 6}" y="${Y(y) + 4}" text-anchor="end">${esc(fy(y))}</text>`;
  }
  svg += "</g>";
  const ticks = Math.min(6, xs.length);
  for (let i = 0; i < ticks; i++) {
    const x = x0 + ((x1 - x0) * i) / Math.max(ticks - 1, 1);
    svg += `<text x="${X(x)}" y="${H - 6}" text-anchor="middle">${esc(fmtTime(x, x1 - x0 < 20e6))}</text>`;
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    if (s.area) {
      const last = s.points[s.points.length - 1], first = s.points[0];
      svg += `<path class="area" d="${d}L${X(last[0])},${Y(0)}L${X(first[0])},${Y(0)}Z" fill="${color}" opacity=".12"/>`;
    }
    svg += `<path class="line" data-series="${esc(s.name)}" d="${d}" fill="none" stroke="${color}" stroke-width="${s.width || 1.8}"${s.dash ? ` stroke-dasharray="4 3"` : ""}/>`;
    s.points.forEach((p) => {
      svg += `<circle cx="${X(p[0])}" cy="${Y(p[1])}" r="6" fill="transparent" data-tip="${esc(`${s.name} · ${fmtTime(p[0])} · ${fy(p[1])}`)}"/>`;
    });
  });
  svg += "</svg>";
  const legend = series.length > 1
    ? `<div class="legend">${series.map((s, i) => `<span><i style="background:${s.color || COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("")}</div>`
    : "";
  el.innerHTML = svg + legend;
  bindTips(el);
}

// items: [{label, value, tip, color}]
function barChart(el, items, opts = {}) {
  if (!items.length) { el.innerHTML = `<div class="nodata">${esc(opts.empty || "no data in this window")}</div>`; return; }
  const W = Math.max(el.clientWidth, 320), row = 24, labelW = opts.labelWidth || 150, R = 70;
  const H = items.length * row + 6;
  const max = niceMax(Math.max(...items.map((i) => i.value)));
  const f = opts.format || fmtNum;
  let svg = `<svg viewBox="0 0 ${W} ${H}" height="${H}" role="img">`;
  items.forEach((it, i) => {
    const y = i * row + 3, w = Math.max(((W - labelW - R) * it.value) / max, it.value > 0 ? 2 : 0);
    const label = it.label.length > 26 ? it.label.slice(0, 25) + "…" : it.label;
    svg += `<g class="bar" data-tip="${esc(it.tip || `${it.label}: ${f(it.value)}`)}">`;
    svg += `<text class="bar-label" x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(label)}</text>`;
    svg += `<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="${row - 8}" rx="3" fill="${it.color || opts.color || COLORS[0]}"/>`;
    svg += `<text class="value" x="${labelW + w + 6}" y="${y + 15}">${esc(f(it.value))}</text></g>`;
  });
  el.innerHTML = svg + "</svg>";
  bindTips(el);
}

// -- sections --------------------------------------------------------------------------------
function renderTiles(o) {
  const p95 = o.routes.length ? Math.max(...o.routes.map((r) => r.p95)) : 0;
  const tiles = [
    ["requests", fmtNum(o.requests)],
    ["error rate", fmtPct(o.error_rate), o.error_rate > 0.05],
    ["worst route p95", fmtMs(p95)],
    ["AI calls", fmtNum(o.ai_calls)],
    ["AI cost", fmtUsd(o.cost_usd)],
    ["dropped", fmtNum(o.dropped), o.dropped > 0],
  ];
  $("#tiles").innerHTML = tiles.map(([label, value, bad]) =>
    `<div class="tile${bad ? " bad" : ""}" data-testid="tile"><span>${esc(label)}</span><b>${esc(value)}</b></div>`).join("");
}

function renderOverview(o) {
  renderTiles(o);
  const pts = o.series.points;
  lineChart($("#chart-rate"), [{ name: "requests/s", points: pts.map((p) => [p.t_us, p.rate]), area: true }],
    { yFormat: (v) => fmtNum(v) });
  const busy = pts.filter((p) => p.requests > 0);
  lineChart($("#chart-latency"), [
    { name: "p50", color: COLORS[0], points: busy.map((p) => [p.t_us, p.p50]) },
    { name: "p95", color: COLORS[1], points: busy.map((p) => [p.t_us, p.p95]) },
    { name: "p99", color: COLORS[2], points: busy.map((p) => [p.t_us, p.p99]) },
  ], { yFormat: (v) => fmtNum(v) });
  lineChart($("#chart-errors"), [{ name: "errors", color: COLORS[2], area: true, points: busy.map((p) => [p.t_us, 100 * p.error_rate]) }],
    { yFormat: (v) => fmtNum(v) + "%" });
  const worst = Math.max(1, ...o.routes.map((r) => r.p99));
  $("#routes tbody").innerHTML = o.routes.map((r) => `<tr data-route="${esc(r.route)}">
      <td><code>${esc(r.method)} ${esc(r.route)}</code></td><td class="n">${fmtNum(r.requests)}</td>
      <td class="n ${r.errors ? "status-error" : ""}">${fmtPct(r.error_rate)}</td>
      <td class="n">${fmtNum(r.p50)}</td><td class="n">${fmtNum(r.p95)}</td><td class="n">${fmtNum(r.p99)}</td>
      <td><span class="spark" style="width:${(100 * r.p95 / worst).toFixed(1)}px"></span><span class="spark p99" style="width:${(100 * (r.p99 - r.p95) / worst).toFixed(1)}px"></span></td>
    </tr>`).join("") || `<tr><td colspan="7" class="muted">no requests in this window</td></tr>`;
  $("#routes tbody").querySelectorAll("tr[data-route]").forEach((tr) => tr.addEventListener("click", () => {
    $("#f-route").value = tr.dataset.route; loadTraces();
  }));
}

function renderCost(c) {
  barChart($("#chart-cost-user"), c.by_user.slice(0, 10).map((a) => ({
    label: `${a.user || "anonymous"} (${a.tier || "-"})`, value: a.cost_usd,
    tip: `${a.user} · ${a.tier} · ${a.calls} calls · ${fmtUsd(a.cost_usd)}`,
  })), { format: fmtUsd, color: COLORS[4], empty: "no AI calls in this window" });
  barChart($("#chart-cost-model"), c.by_model.slice(0, 10).map((a, i) => ({
    label: `${a.model || "?"}`, value: a.cost_usd, color: COLORS[i % COLORS.length],
    tip: `${a.provider} · ${a.model} · ${a.calls} calls · p95 ${fmtMs(a.p95)} · ${fmtUsd(a.cost_usd)}`,
  })), { format: fmtUsd, empty: "no AI calls in this window" });
  const timed = c.by_model.filter((a) => [a.ttft_p50, a.tokens_per_s_p50, a.queue_p50, a.run_p50].some((v) => v != null));
  $("#ai-latency tbody").innerHTML = timed.map((a) => `<tr>
      <td><code>${esc(a.provider)} · ${esc(a.model || "?")}</code></td><td class="n">${fmtNum(a.streams)}</td>
      <td class="n">${fmtMs(a.ttft_p50)}</td><td class="n">${fmtMs(a.ttft_p95)}</td>
      <td class="n">${fmtNum(a.tokens_per_s_p50)}</td>
      <td class="n">${fmtMs(a.queue_p50)}</td><td class="n">${fmtMs(a.queue_p95)}</td>
      <td class="n">${fmtMs(a.run_p50)}</td><td class="n">${fmtMs(a.run_p95)}</td>
    </tr>`).join("") || `<tr><td colspan="9" class="muted">no AI latency figures in this window</td></tr>`;
}

function renderDatabase(d) {
  barChart($("#chart-queries"), d.slow_queries.slice(0, 8).map((q) => ({
    label: q.label || q.statement, value: q.max, color: COLORS[3],
    tip: `${q.statement}<br>${q.calls} calls · p95 ${fmtMs(q.p95)} · max ${fmtMs(q.max)}<br>${q.location || "location unknown"}`,
  })), { format: fmtMs, labelWidth: 190, empty: "no queries in this window" });
  const series = [];
  const byPool = {};
  for (const g of d.pools) {
    const pool = g.labels["pool.name"] || "pool";
    (byPool[pool] = byPool[pool] || {})[g.name.replace("db.client.pool.", "")] = g;
  }
  Object.entries(byPool).forEach(([pool, m], i) => {
    const short = pool.replace(/^.*\//, "");
    if (m.checked_out) series.push({ name: `${short} checked out`, color: COLORS[i * 2 % COLORS.length], area: true, points: m.checked_out.series.map(([t, v]) => [t, v]) });
    if (m.size) series.push({ name: `${short} size`, color: COLORS[(i * 2 + 1) % COLORS.length], dash: true, points: m.size.series.map(([t, v]) => [t, v]) });
  });
  lineChart($("#chart-pool"), series, { yFormat: fmtNum });
  const peaks = (d.pool_peaks || []).map((p) => `${p.pool.replace(/^.*\//, "")}: peak ${fmtNum(p.peak_checked_out)} in use` +
    `${p.size != null ? ` of ${fmtNum(p.size)}` : ""} · ${fmtNum(p.checkouts)} checkouts`);
  if (peaks.length) $("#chart-pool").insertAdjacentHTML("beforeend", `<div class="legend">${peaks.map(esc).join("<br>")}</div>`);
}

function renderJobs(j) {
  const colors = { completed: COLORS[5], failed: COLORS[2], started: COLORS[0], received: COLORS[6], queued: COLORS[1] };
  barChart($("#chart-jobs"), j.jobs.map((s) => ({
    label: `${s.service_type} · ${s.state}`, value: s.jobs, color: colors[s.state] || COLORS[6],
    tip: `${s.jobs} jobs ${s.state} · p50 ${fmtMs(s.p50)} · p95 ${fmtMs(s.p95)}`,
  })), { empty: "no jobs in this window" });
}

// -- traces ----------------------------------------------------------------------------------
function filterValues() {
  const f = new FormData($("#filters"));
  return Object.fromEntries([...f.entries()].filter(([, v]) => v !== ""));
}

async function loadTraces() {
  const data = await api("traces", { ...filterValues(), limit: 100 });
  const rows = data.traces || [];
  $("#trace-count").textContent = `${rows.length}${rows.length === 100 ? "+" : ""} traces`;
  $("#traces tbody").innerHTML = rows.map((t) => `<tr data-trace="${esc(t.trace_id)}" data-testid="trace-row">
      <td>${esc(fmtTime(t.start_us))}</td><td><code>${esc(t.name)}</code></td>
      <td>${esc(t.user_id || "-")}${t.tier ? ` <span class="muted">${esc(t.tier)}</span>` : ""}</td>
      <td class="n ${t.status !== "ok" ? "status-error" : ""}">${esc(t.status_code || t.status)}</td>
      <td class="n">${fmtNum(t.records)}</td><td class="n">${t.cost_usd ? fmtUsd(t.cost_usd) : "-"}</td>
      <td class="n">${fmtMs(t.duration_ms)}</td></tr>`).join("")
    || `<tr><td colspan="7" class="muted">no traces match</td></tr>`;
  $("#traces tbody").querySelectorAll("tr[data-trace]").forEach((tr) =>
    tr.addEventListener("click", () => openTrace(tr.dataset.trace)));
  document.body.dataset.traces = String(rows.length);
}

function kindOf(rec) {
  if (rec["span.kind"] === "server") return "server";
  if (rec["db.statement"] != null || rec.name.startsWith("db.")) return "db";
  if (rec["ai.provider"] != null) return "ai";
  if (rec["job.id"] != null) return "job";
  return "internal";
}

const HIDDEN = new Set(["type", "trace_id", "span_id", "parent_id", "start_us", "events"]);
function describe(rec) {
  const lines = [];
  for (const [k, v] of Object.entries(rec)) {
    if (HIDDEN.has(k) || v == null) continue;
    lines.push(`${k.padEnd(22)} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  for (const e of rec.events || []) lines.push(`event ${e.name} ${JSON.stringify(e)}`);
  return lines.join("\n");
}

async function openTrace(traceId) {
  state.openTrace = traceId;
  const res = await fetch(`/api/traces/${encodeURIComponent(traceId)}`, { cache: "no-store" });
  const { records } = await res.json();
  const spans = records.filter((r) => r.type === "span");
  const events = records.filter((r) => r.type === "event");
  const ids = new Set(spans.map((s) => s.span_id));
  const children = {};
  for (const s of spans) {
    const parent = ids.has(s.parent_id) ? s.parent_id : "root";
    (children[parent] = children[parent] || []).push(s);
  }
  const t0 = Math.min(...records.map((r) => r.start_us));
  const t1 = Math.max(...spans.map((s) => s.start_us + s.duration_ms * 1000), ...events.map((e) => e.start_us), t0 + 1);
  const span = t1 - t0;
  const pos = (us) => (100 * (us - t0)) / span;
  const rows = [];
  const walk = (parent, depth) => {
    for (const s of (children[parent] || []).sort((a, b) => a.start_us - b.start_us)) {
      rows.push({ rec: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk("root", 0);
  const eventsBySpan = {};
  for (const e of events) (eventsBySpan[e.span_id] = eventsBySpan[e.span_id] || []).push({ name: e.name, us: e.start_us, error: e.status !== "ok", rec: e });
  for (const s of spans) for (const e of s.events || []) (eventsBySpan[s.span_id] = eventsBySpan[s.span_id] || []).push({ name: e.name, us: rfcToUs(e.time), error: false, rec: e });

  const root = rows.length ? rows[0].rec : records[0];
  $("#wf-title").textContent = root ? root.name : traceId;
  $("#wf-meta").textContent = `trace ${traceId} · ${spans.length} spans · ${events.length} events · ${fmtMs(span / 1000)}`
    + (root && root.user_id ? ` · user ${root.user_id}` : "");
  $("#wf-axis").innerHTML = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    `<span style="left:${f * 100}%;transform:translateX(-${f * 100}%)">${fmtMs((span * f) / 1000)}</span>`).join("");
  $("#wf-rows").innerHTML = rows.map(({ rec, depth }, i) => {
    const left = pos(rec.start_us), width = Math.max((100 * rec.duration_ms * 1000) / span, 0.15);
    const marks = (eventsBySpan[rec.span_id] || []).map((e, j) =>
      `<i class="wf-event${e.error ? " error" : ""}" style="left:${pos(e.us)}%" data-tip="${esc(e.name)}" data-event="${i}:${j}"></i>`).join("");
    const kind = kindOf(rec);
    return `<div class="wf-row" data-row="${i}" data-testid="wf-row" data-depth="${depth}" data-kind="${kind}">
      <div class="wf-name" style="padding-left:${depth * 16}px">${esc(rec.name)} <em>${esc(rec["ai.model"] || rec["db.operation"] || "")}</em></div>
      <div class="wf-track"><div class="wf-bar kind-${kind}${rec.status !== "ok" ? " error" : ""}" style="left:${left}%;width:${width}%"></div>
      ${left + width > 85
        ? `<span class="wf-dur before" style="right:${100 - left}%">${fmtMs(rec.duration_ms)}</span>`
        : `<span class="wf-dur" style="left:${left + width}%">${fmtMs(rec.duration_ms)}</span>`}${marks}</div></div>`;
  }).join("");
  $("#wf-rows").querySelectorAll(".wf-row").forEach((el) => el.addEventListener("click", () => {
    $("#wf-rows").querySelectorAll(".selected").forEach((s) => s.classList.remove("selected"));
    el.classList.add("selected");
    const { rec } = rows[Number(el.dataset.row)];
    const evs = (eventsBySpan[rec.span_id] || []).map((e) => `\n• ${e.name}  ${describe(e.rec).replace(/\n/g, "  ")}`).join("");
    $("#wf-detail").textContent = describe(rec) + evs;
  }));
  bindTips($("#wf-rows"));
  $("#wf-detail").textContent = "Click a span for its attributes.";
  $("#waterfall").hidden = false;
  $("#waterfall").dataset.trace = traceId;
  $("#waterfall").dataset.rows = String(rows.length);
}

function closeTrace() {
  $("#waterfall").hidden = true;
  state.openTrace = null;
}

// -- refresh ---------------------------------------------------------------------------------
function fillSelect(sel, values) {
  const current = sel.value;
  const first = sel.options[0].outerHTML;
  sel.innerHTML = first + values.map((v) => `<option value="${esc(v)}">${esc(v)}</option>`).join("");
  if (values.includes(current)) sel.value = current;
}

async function refresh() {
  try {
    const meta = await api("meta");
    if (meta.error) {
      $("#empty").hidden = false;
      $("#empty").textContent = `${meta.error} — run \`obs demo\`, or configure the "sqlite" exporter.`;
      return;
    }
    $("#empty").hidden = true;
    fillSelect($("#service"), meta.services);
    fillSelect($("#f-route"), meta.routes);
    fillSelect($("#f-user"), meta.users);
    const [overview, cost, database, jobs] = await Promise.all(
      ["overview", "cost", "database", "jobs"].map((p) => api(p)));
    renderOverview(overview);
    renderCost(cost);
    renderDatabase(database);
    renderJobs(jobs);
    await loadTraces();
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB", { hour12: false })}`
      + (meta.last_us ? ` · newest record ${fmtTime(meta.last_us)}` : "");
    document.body.dataset.ready = "1";
  } catch (err) {
    $("#updated").textContent = `refresh failed: ${err}`;
  }
}

function schedule() {
  clearInterval(state.timer);
  if (state.live) state.timer = setInterval(refresh, 3000);
}

$("#service").addEventListener("change", (e) => { state.service = e.target.value; refresh(); });
$("#window").addEventListener("change", (e) => { state.window = e.target.value; refresh(); });
$("#live").addEventListener("change", (e) => { state.live = e.target.checked; schedule(); });
$("#filters").addEventListener("input", () => loadTraces());
$("#filters").addEventListener("submit", (e) => e.preventDefault());
$("#wf-close").addEventListener("click", closeTrace);
$("#waterfall").addEventListener("click", (e) => { if (e.target.id === "waterfall") closeTrace(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeTrace(); });
window.addEventListener("resize", () => refresh());
refresh();
schedule();
