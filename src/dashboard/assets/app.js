// convoy dashboard: launch form, runs list, live run page. No libraries: charts are SVG drawn here.
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
let listTimer = null, source = null;

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function route() {
  const m = location.hash.match(/^#run\/([A-Za-z0-9-]+)$/);
  const plan = location.hash === "#plan";
  if (source) { source.close(); source = null; }
  if (listTimer) { clearInterval(listTimer); listTimer = null; }
  $("#home").hidden = !!m || plan;
  $("#run").hidden = !m;
  $("#plan").hidden = !plan;
  if (m) showRun(m[1]); else if (plan) showPlan(); else showHome();
}

// ---- home: form and list ----
let optionsLoaded = false;
async function showHome() {
  if (!optionsLoaded) {
    const o = await api("/api/options");
    $("#f-model").innerHTML = o.models.map((m) => `<option>${esc(m)}</option>`).join("");
    $("#f-dataset").innerHTML = o.datasets.map((d) => `<option>${esc(d)}</option>`).join("");
    $("#p-model").innerHTML = o.models.map((m) => `<option>${esc(m)}</option>`).join("");
    optionsLoaded = true;
  }
  await refreshList();
  listTimer = setInterval(refreshList, 3000);
}

async function refreshList() {
  const { runs } = await api("/api/runs");
  $("#runs tbody").innerHTML = runs.map((r) => `<tr>
    <td><a href="#run/${esc(r.id)}">${esc(r.name || r.id)}</a>${r.name ? `<br><small>${esc(r.id)}</small>` : ""}</td>
    <td><span class="status ${esc(r.status)}">${esc(r.status)}${r.queue_position != null ? " #" + (r.queue_position + 1) : ""}</span></td>
    <td>${esc(r.config.model)}</td><td>${esc(r.config.strategy)}</td><td>${esc(r.config.workers)}</td>
    <td>${esc(fmtTime(r.created))}${r.source === "cli" ? " (cli)" : ""}</td></tr>`).join("") || `<tr><td colspan="6">no runs yet</td></tr>`;
}

// Each strategy shows its own parameters; the split strategies size themselves (no workers).
$("#f-strategy").addEventListener("change", (e) => {
  for (const s of ["ar", "ps", "pipeline", "tensor", "hybrid"]) $(`#${s}-opts`).hidden = (s === "ar" ? "allreduce" : s) !== e.target.value;
  $("#f-workers").hidden = !["allreduce", "ps"].includes(e.target.value);
});

$("#launch").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target, req = {};
  const ps = f.strategy.value === "ps";
  for (const el of f.elements) {
    if (!el.name || el.value === "" || el.closest("[hidden]")) continue;
    if (el.type === "checkbox") { if (!el.checked) req[el.name] = false; continue; }
    req[el.name] = el.type === "number" ? Number(el.value) : el.value;
  }
  if (!ps) { delete req.ps_mode; } else { for (const k of ["allreduce", "bucket_mb", "overlap"]) delete req[k]; if (req.ps_mode !== "ssp") delete req.staleness; }
  if (req.allreduce === "direct") delete req.allreduce;
  if (req.steps) delete req.epochs;
  if (!req.name) delete req.name;
  $("#launch-msg").textContent = "";
  try {
    // An uploaded model replaces the zoo's: a Caffe net if it looks like one, else a TOML spec.
    const file = $("#f-modelfile").files[0];
    if (file) {
      const text = await file.text();
      delete req.model;
      if (/\.prototxt$/i.test(file.name) || /^\s*(name\s*:|layer\s*\{|input\s*:)/m.test(text)) req.model_prototxt = text; else req.model_spec = text;
    }
    const r = await api("/api/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(req) });
    location.hash = `#run/${r.id}`;
  } catch (err) {
    $("#launch-msg").textContent = err.message;
  }
});

// ---- run page ----
function showRun(id) {
  const d = { steps: [], evals: [], workers: {}, rates: {}, sum: { data: 0, compute: 0, comm: 0 }, total: 0, start: null };
  $("#run-title").textContent = id;
  $("#run-error").textContent = "";
  $("#run-stats").innerHTML = "";
  $("#timeline").innerHTML = "";
  for (const c of ["#chart-loss", "#chart-acc", "#chart-ips", "#chart-wips"]) { $(c).innerHTML = ""; $(c).dataset.points = 0; }
  $("#worker-share").innerHTML = "";
  $("#stop-btn").onclick = async () => {
    try { await api(`/api/runs/${id}/stop`, { method: "POST" }); } catch (err) { $("#run-error").textContent = err.message; }
  };
  let pending = false;
  const redraw = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(d); }); } };
  source = new EventSource(`/api/runs/${id}/events`);
  source.addEventListener("status", (e) => showStatus(JSON.parse(e.data)));
  source.addEventListener("metric", (e) => {
    const m = JSON.parse(e.data);
    if (m.event === "run_start") { d.start = m; d.total = m.total_steps; }
    else if (m.event === "step") {
      d.steps.push(m);
      d.sum.data += m.data_wait_s; d.sum.compute += m.compute_s; d.sum.comm += m.comm_wait_s;
    } else if (m.event === "eval") d.evals.push(m);
    else if (m.event === "worker") d.workers[m.rank] = m;
    else if (m.event === "rate") (d.rates[m.rank] = d.rates[m.rank] || []).push(m);
    else if (m.event === "run_end") d.end = m;
    redraw();
  });
  source.addEventListener("end", () => { source.close(); source = null; drawTimeline(id); });
}

function showStatus(r) {
  $("#run-title").textContent = r.name ? `${r.name} (${r.id})` : r.id;
  const st = $("#run-status");
  st.textContent = r.status; st.className = `status ${r.status}`;
  $("#stop-btn").hidden = !(r.status === "running" || r.status === "queued");
  $("#run-error").textContent = r.error || "";
  $("#run-config").textContent = JSON.stringify(r.config, null, 2) + "\n\nconvoy " + r.args.join(" ");
  const files = ["weights", "metrics", "trace", "log"];
  $("#downloads").innerHTML = files.map((f) => `<li><a href="/api/runs/${esc(r.id)}/files/${f}" download>${f}</a></li>`).join("");
}

function draw(d) {
  const last = d.steps[d.steps.length - 1];
  const ev = d.evals[d.evals.length - 1];
  const stats = [
    ["step", last ? `${last.step}${d.total ? " / " + d.total : ""}` : "–"],
    ["loss", last ? last.loss.toFixed(4) : "–"],
    ["images/s", last ? Math.round(avg(d.steps.slice(-20).map((s) => s.images_per_sec))) : "–"],
    ["test accuracy", ev ? (ev.acc * 100).toFixed(2) + " %" : "–"],
  ];
  $("#run-stats").innerHTML = stats.map(([k, v]) => `<div>${k}<b>${esc(v)}</b></div>`).join("");
  const xs = d.steps.map((s) => s.step);
  lineChart($("#chart-loss"), [{ x: xs, y: d.steps.map((s) => s.loss), label: "train" }, { x: d.evals.map((e) => e.step), y: d.evals.map((e) => e.loss), label: "test", dots: true }]);
  lineChart($("#chart-acc"), [{ x: xs, y: d.steps.map((s) => s.acc * 100), label: "train %" }, { x: d.evals.map((e) => e.step), y: d.evals.map((e) => e.acc * 100), label: "test %", dots: true }]);
  lineChart($("#chart-ips"), [{ x: xs, y: smooth(d.steps.map((s) => s.images_per_sec)), label: "images/s (all workers)" }]);
  // Per worker: its samples per second over each ~1 s window (`rate` events), against the step.
  const ranks = Object.keys(d.rates).map(Number).sort((a, b) => a - b);
  if (ranks.length) {
    lineChart($("#chart-wips"), ranks.slice(0, 8).map((r) => ({ x: d.rates[r].map((e) => e.step), y: d.rates[r].map((e) => e.images_per_sec), label: `worker ${r}` })));
    $("#worker-share").innerHTML = ranks.map((r) => {
      const t = { compute: 0, comm: 0, wait: 0, data: 0 };
      for (const e of d.rates[r]) { t.compute += e.compute_s; t.comm += e.comm_s; t.wait += e.comm_wait_s; t.data += e.data_wait_s; }
      const all = t.compute + t.wait + t.data || 1, p = (v) => ((100 * v) / all).toFixed(1);
      return `<div class="wshare"><span>worker ${r}</span><div class="bar" title="compute ${p(t.compute)} %, waiting for communication ${p(t.wait)} %, data ${p(t.data)} %; communication overlapped or not: ${p(t.comm)} % of the time"><div class="c-compute" style="width:${p(t.compute)}%"></div><div class="c-comm" style="width:${p(t.wait)}%"></div><div class="c-data" style="width:${p(t.data)}%"></div></div><small>comm ${p(t.comm)} %</small></div>`;
    }).join("");
  } else if ($("#chart-wips").dataset.points == 0) $("#chart-wips").innerHTML = `<text x="240" y="110" text-anchor="middle">per-worker rates arrive about once a second</text>`;
  const t = d.sum.data + d.sum.compute + d.sum.comm || 1;
  const pct = (v) => ((100 * v) / t).toFixed(1);
  $("#share").innerHTML = `<div class="bar"><div class="c-compute" style="width:${pct(d.sum.compute)}%"></div><div class="c-comm" style="width:${pct(d.sum.comm)}%"></div><div class="c-data" style="width:${pct(d.sum.data)}%"></div></div>
    <div class="legend"><span><i class="c-compute"></i>compute ${pct(d.sum.compute)} %</span><span><i class="c-comm"></i>waiting for communication ${pct(d.sum.comm)} %</span><span><i class="c-data"></i>data ${pct(d.sum.data)} %</span></div>`;
  const ws = Object.values(d.workers);
  $("#workers").innerHTML = ws.length ? `<table><tr><th>worker</th><th>images/s</th><th>compute s</th><th>comm s (overlapped)</th><th>comm wait s</th></tr>${ws.map((w) =>
    `<tr><td>${w.rank}</td><td>${Math.round(w.images_per_sec)}</td><td>${w.compute_s.toFixed(2)}</td><td>${w.comm_s.toFixed(2)}</td><td>${w.comm_wait_s.toFixed(2)}</td></tr>`).join("")}</table>` : "<small>per-worker totals arrive after each epoch and at the end</small>";
}

const avg = (a) => a.reduce((s, v) => s + v, 0) / Math.max(1, a.length);
const smooth = (a) => { let m = null; return a.map((v) => (m = m === null ? v : 0.9 * m + 0.1 * v)); };

function lineChart(svg, series) {
  const W = 480, H = 220, L = 48, R = 10, T = 10, B = 24;
  const all = series.flatMap((s) => s.y.filter(Number.isFinite));
  const allx = series.flatMap((s) => s.x);
  svg.dataset.points = series[0].x.length;
  if (!all.length) { svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">waiting for data…</text>`; return; }
  let [y0, y1] = [Math.min(...all), Math.max(...all)];
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const [x0, x1] = [Math.min(...allx), Math.max(...allx, Math.min(...allx) + 1)];
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  let out = `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`;
  for (const f of [0, 0.5, 1]) {
    const y = y0 + f * (y1 - y0);
    out += `<text x="${L - 4}" y="${py(y) + 4}" text-anchor="end">${+y.toPrecision(3)}</text>`;
  }
  out += `<text x="${L}" y="${H - 8}">${x0}</text><text x="${W - R}" y="${H - 8}" text-anchor="end">step ${x1}</text>`;
  series.forEach((s, i) => {
    const pts = s.x.map((x, j) => [x, s.y[j]]).filter((p) => Number.isFinite(p[1]));
    if (s.dots) out += pts.map(([x, y]) => `<circle class="dot${i}" cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3.5"/>`).join("");
    else if (pts.length) {
      const step = Math.max(1, Math.floor(pts.length / 600)); // at most ~600 vertices
      const p = pts.filter((_, j) => j % step === 0 || j === pts.length - 1);
      out += `<polyline class="line${i}" points="${p.map(([x, y]) => px(x).toFixed(1) + "," + py(y).toFixed(1)).join(" ")}"/>`;
    }
    out += `<text x="${W - R - 4}" y="${T + 12 + 13 * i}" text-anchor="end" class="dot${i}">${esc(s.label)}</text>`;
  });
  svg.innerHTML = out;
}

// The last steps of every worker from the Chrome trace: compute track above, comm track below.
async function drawTimeline(id) {
  let trace;
  try { trace = await (await fetch(`/api/runs/${id}/files/trace`)).json(); } catch { return; }
  const spans = (trace.traceEvents || []).filter((e) => e.ph === "X");
  if (!spans.length) return;
  const lastStep = Math.max(...spans.map((e) => e.args.step));
  const shown = spans.filter((e) => e.args.step > lastStep - 3);
  const t0 = Math.min(...shown.map((e) => e.ts)), t1 = Math.max(...shown.map((e) => e.ts + e.dur));
  const ranks = [...new Set(shown.map((e) => e.pid))].sort((a, b) => a - b);
  const W = 960, L = 125, rowH = 16, H = ranks.length * 2 * (rowH + 2) + 20;
  const color = { data: "#8fa0b8", forward_backward: "#2f6fde", forward: "#2f6fde", backward: "#1b4fa8", comm_wait: "#d9dde5", optimizer: "#3aa86b",
    allreduce: "#e8833a", push_pull: "#e8833a", all_gather: "#d9a03a", send: "#c7372f", recv: "#f0a8a3", stats: "#9467bd" };
  const x = (t) => L + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - L - 10);
  let out = "";
  ranks.forEach((r, i) => {
    for (const tid of [0, 1]) {
      const y = 4 + (i * 2 + tid) * (rowH + 2);
      out += `<text x="4" y="${y + 12}">worker ${r} ${tid ? "comm" : "compute"}</text>`;
      for (const e of shown.filter((e) => e.pid === r && e.tid === tid)) {
        out += `<rect x="${x(e.ts).toFixed(1)}" y="${y}" width="${Math.max(0.5, x(e.ts + e.dur) - x(e.ts)).toFixed(1)}" height="${rowH}" fill="${color[e.name] || "#999"}"><title>${esc(e.name)} step ${e.args.step}${e.args.bucket != null ? " bucket " + e.args.bucket : ""}${e.args.micro != null ? " micro-batch/segment " + e.args.micro : ""}: ${(e.dur / 1000).toFixed(2)} ms</title></rect>`;
      }
    }
  });
  out += `<text x="${L}" y="${H - 4}">${((t1 - t0) / 1000).toFixed(1)} ms shown (last 3 steps); hover for phases</text>`;
  const svg = $("#timeline");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.innerHTML = out;
}

// ---- plan: `convoy plan` through GET /api/plan ----
async function showPlan() {
  if (!optionsLoaded) await showHome().then(() => { clearInterval(listTimer); listTimer = null; });
  if (!$("#plan-svg").src) drawPlan();
}

async function drawPlan() {
  const q = new URLSearchParams();
  for (const el of $("#plan-form").elements) if (el.name && el.value !== "") q.set(el.name, el.value);
  $("#plan-msg").textContent = "";
  try {
    const p = await api(`/api/plan?${q}`);
    $("#plan-title").textContent = p.title;
    const old = $("#plan-svg").src;
    $("#plan-svg").src = URL.createObjectURL(new Blob([p.svg], { type: "image/svg+xml" }));
    if (old) URL.revokeObjectURL(old);
    $("#plan-table").innerHTML = `<tr><th>nodes</th><th>recommended</th><th>step ms</th><th>images/s</th><th>efficiency</th></tr>` + p.plan.map((r) => {
      const b = r.predictions.find((x) => x.strategy === r.recommended) || {};
      return `<tr><td>${r.nodes}</td><td>${esc(r.recommended)}</td><td>${(b.step_s * 1e3).toFixed(2)}</td><td>${Math.round(b.images_per_s)}</td><td>${(b.efficiency ?? 0).toFixed(3)}</td></tr>`;
    }).join("");
  } catch (err) {
    $("#plan-msg").textContent = err.message;
  }
}

$("#plan-form").addEventListener("submit", (e) => { e.preventDefault(); drawPlan(); });

window.addEventListener("hashchange", route);
route();
