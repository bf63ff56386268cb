// KTO Forge jobs page: plain JS, no library, no CDN (the API may run on an offline LAN).
// The API key lives in sessionStorage and travels only as an Authorization header: EventSource cannot send
// headers, so the live events are read with fetch() streaming and parsed as SSE here.
"use strict";

const KEY = "ktoforge-api-key";
const PANELS = ["loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins"];
const $ = (id) => document.getElementById(id);
let stopJob = null; // aborts the open event stream when the view changes
let listTimer = null;

function apiKey() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) { sessionStorage.removeItem(KEY); route(); throw new Error("invalid API key"); }
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") node.className = v; else node.setAttribute(k, v); }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function show(section) {
  for (const id of ["login", "jobs", "job"]) $(id).hidden = id !== section;
  $("forget").hidden = section === "login";
}

function progressBar(step, max) {
  const bar = el("div", { class: "progress" }, el("div"));
  bar.firstChild.style.width = `${max ? Math.min(100, (100 * (step || 0)) / max) : 0}%`;
  return bar;
}

async function loadJobs() {
  const page = await (await api("/v1/jobs?limit=100")).json();
  const rows = page.items.map((job) => {
    const row = el("tr", { class: "row", "data-job": job.id },
      el("td", {}, el("code", {}, job.id.slice(0, 12))), el("td", {}, el("span", { class: `state ${job.status}` }, job.status)),
      el("td", {}, progressBar(job.step, job.max_steps), `${job.step ?? 0} / ${job.max_steps ?? "?"}`),
      el("td", {}, job.model), el("td", {}, job.backend), el("td", {}, new Date(job.created_at * 1000).toLocaleString()));
    row.addEventListener("click", () => { location.hash = `#/jobs/${job.id}`; });
    return row;
  });
  $("job-rows").replaceChildren(...rows);
}

// ---- curves -------------------------------------------------------------------------------------------
function makeCharts() {
  const charts = {};
  $("charts").replaceChildren(...PANELS.map((name) => {
    const canvas = el("canvas", { id: `chart-${name.replace("/", "-")}`, "data-points": "0", width: "560", height: "220" });
    charts[name] = { canvas, train: [], eval: [] };
    return el("div", { class: "chart" }, el("h3", {}, name), canvas);
  }));
  return charts;
}

function addMetrics(charts, metrics) {
  for (const name of PANELS) {
    for (const [series, key] of [["train", name], ["eval", `eval_${name}`]]) {
      const value = metrics[key];
      if (typeof value === "number" && Number.isFinite(value)) charts[name][series].push([metrics.step, value]);
    }
  }
}

function draw(chart) {
  const { canvas, train, eval: evals } = chart;
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  ctx.clearRect(0, 0, w, h);
  const all = train.concat(evals);
  canvas.dataset.points = String(train.length);
  canvas.dataset.evalPoints = String(evals.length);
  if (!all.length) { ctx.fillStyle = "#888"; ctx.fillText("waiting for the first step…", pad, h / 2); return; }
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const X = (x) => pad + ((x - x0) / (x1 - x0)) * (w - 2 * pad);
  const Y = (y) => h - pad + ((y0 - y) / (y1 - y0)) * (h - 2 * pad);
  ctx.strokeStyle = "#c9ced6"; ctx.strokeRect(pad, pad / 2, w - 2 * pad, h - 1.5 * pad);
  ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
  // enough digits that the two axis labels differ even for a nearly flat curve
  const digits = Math.min(8, Math.max(3, Math.ceil(Math.log10(Math.max(Math.abs(y0), Math.abs(y1)) / (y1 - y0))) + 2));
  ctx.fillText(y1.toPrecision(digits), 2, pad / 2 + 8); ctx.fillText(y0.toPrecision(digits), 2, h - pad);
  ctx.fillText(`step ${x0}`, pad, h - pad / 3); ctx.fillText(`${x1}`, w - pad - 10, h - pad / 3);
  ctx.strokeStyle = "#3b82f6"; ctx.lineWidth = 1.5; ctx.beginPath();
  train.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
  ctx.stroke();
  ctx.fillStyle = "#3b82f6";
  if (train.length < 40) train.forEach(([x, y]) => ctx.fillRect(X(x) - 1.5, Y(y) - 1.5, 3, 3));
  ctx.fillStyle = "#dc2626";
  evals.forEach(([x, y]) => { ctx.beginPath(); ctx.arc(X(x), Y(y), 4, 0, 2 * Math.PI); ctx.fill(); });
}

// ---- events over fetch() streaming ---------------------------------------------------------------------
async function streamEvents(jobId, onEvent, signal) {
  let cursor = null;
  while (!signal.aborted) {
    const headers = { Accept: "text/event-stream", ...(cursor ? { "Last-Event-ID": cursor } : {}) };
    let response;
    try { response = await api(`/v1/jobs/${jobId}/events`, { headers, signal }); } catch (e) { if (signal.aborted) return; await sleep(2000); continue; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (e) { break; }
      if (chunk.done) return; // the server ends the stream once the job is finished and everything was sent
      buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        const id = block.split("\n").find((l) => l.startsWith("id:"));
        if (id) cursor = id.slice(3).trim();
        if (data) onEvent(JSON.parse(data));
      }
    }
    await sleep(1000); // dropped: resume from the last id
  }
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// ---- job page ------------------------------------------------------------------------------------------
function renderJob(job) {
  $("job-id").textContent = job.id;
  $("job-state").textContent = job.status; $("job-state").className = `state ${job.status}`;
  $("job-meta").textContent = `${job.model} · ${job.backend} · step ${job.step ?? 0} / ${job.max_steps ?? "?"}`;
  $("job-progress").style.width = `${job.max_steps ? (100 * (job.step || 0)) / job.max_steps : 0}%`;
  $("job-reason").textContent = job.reason || "";
}

function pct(v) { return v === null || v === undefined ? "n/a" : `${(100 * v).toFixed(1)} %`; }

async function loadEval(jobId, names) {
  if (!names.includes("eval_report.json")) return;
  const report = await (await api(`/v1/jobs/${jobId}/artifacts/eval_report.json`)).json();
  const models = Object.keys(report.models);
  const labels = { parses_rate: "parses as a tool call", arguments_valid_rate: "arguments are valid JSON",
    right_tool_rate: "calls the expected tool", no_call_rate: "no call where none is expected" };
  const table = el("table", { class: "eval" }, el("tr", {}, el("th", {}, `${report.prompts} prompts`), ...models.map((m) => el("th", {}, m))),
    ...Object.entries(labels).map(([k, label]) => el("tr", {}, el("td", {}, label), ...models.map((m) => el("td", { class: "num" }, pct(report.models[m][k]))))));
  $("eval").replaceChildren(table);
}

async function download(jobId, name) {
  const blob = await (await api(`/v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`)).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function loadArtifacts(jobId) {
  const list = await (await api(`/v1/jobs/${jobId}/artifacts`)).json();
  $("artifacts").replaceChildren(...list.map((a) => {
    const button = el("button", { type: "button" }, "download");
    button.addEventListener("click", () => download(jobId, a.name));
    return el("li", {}, `${a.name} (${a.size} bytes) `, button);
  }));
  await loadEval(jobId, list.map((a) => a.name));
}

async function openJob(jobId) {
  show("job");
  const controller = new AbortController();
  stopJob = () => controller.abort();
  const charts = makeCharts();
  $("warnings").replaceChildren(); $("eval").textContent = "No evaluation yet."; $("artifacts").replaceChildren();
  let job = await (await api(`/v1/jobs/${jobId}`)).json();
  renderJob(job);
  PANELS.forEach((p) => draw(charts[p]));
  let pending = false;
  const redraw = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; PANELS.forEach((p) => draw(charts[p])); }); } };
  await streamEvents(jobId, (event) => {
    if (event.type === "metrics") {
      addMetrics(charts, event.data);
      job = { ...job, step: event.data.step ?? job.step, max_steps: event.data.max_steps ?? job.max_steps };
      renderJob(job); redraw();
    } else if (event.type === "state") {
      job = { ...job, status: event.data.status, reason: event.data.reason ?? job.reason }; renderJob(job);
    } else if (event.type === "log" && event.data.level === "warning") {
      $("warnings").append(el("div", { class: "warning" }, event.data.message));
    }
  }, controller.signal);
  if (!controller.signal.aborted) { renderJob(await (await api(`/v1/jobs/${jobId}`)).json()); await loadArtifacts(jobId); }
}

// ---- routing -------------------------------------------------------------------------------------------
async function route() {
  if (stopJob) { stopJob(); stopJob = null; }
  clearInterval(listTimer);
  if (!apiKey()) { show("login"); return; }
  const match = location.hash.match(/^#\/jobs\/([0-9a-f]{32})$/);
  try {
    if (match) { await openJob(match[1]); return; }
    show("jobs");
    await loadJobs();
    listTimer = setInterval(() => loadJobs().catch(() => {}), 3000);
  } catch (e) { $("login-error").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key").value); $("key").value = ""; route();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); route(); });
  window.addEventListener("hashchange", route);
  route();
});
