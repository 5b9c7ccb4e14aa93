// fer-device live view: fills the page from /api/state, then from the /api/events push channel.
// Everything it needs ships with fer-device; nothing is fetched from the internet.
"use strict";

const COLORS = {
  angry: "#e5534b", disgust: "#8f7f3a", fear: "#a371f7", happy: "#f2b53a", sad: "#3f8fd8",
  surprise: "#35c9c9", neutral: "#9aa3ad", contempt: "#c96198",
};
const NAMES = { happy: "Happy", sad: "Sad", angry: "Angry", fear: "Fear", surprise: "Surprise",
  disgust: "Disgust", neutral: "Neutral", contempt: "Contempt" };
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function duration(s) {
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + sec + " s";
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = "status " + (kind || "");
}

function renderFaces(faces) {
  const body = $("faces").tBodies[0];
  body.replaceChildren();
  for (const face of faces) {
    const row = el("tr");
    row.append(el("td", String(face.face)), el("td", NAMES[face.label] || face.label));
    const cell = el("td", undefined, { class: "confidence" });
    cell.append(el("meter", undefined, { min: "0", max: "1", value: String(face.confidence) }),
                document.createTextNode(" " + Math.round(face.confidence * 100) + "%"));
    row.append(cell);
    body.append(row);
  }
  $("no-faces").hidden = faces.length > 0;
}

function renderFigures(state) {
  const f = state.figures, run = state.run || {};
  const ms = Object.entries(f.median_ms || {}).filter(([, v]) => v > 0)
    .map(([k, v]) => k + " " + v.toFixed(1)).join(", ");
  const rows = [
    ["FPS", f.fps.toFixed(1) + " now, " + f.fps_run.toFixed(1) + " over the run"],
    ["frames", f.frames + " (" + f.faces + " face detections)"],
    ["stage ms", ms ? ms + " (median)" : "–"],
    ["uptime", duration(f.elapsed_s)],
    ["runtime", (run.runtime || "?") + (run.threads ? ", " + run.threads + " thread" + (run.threads > 1 ? "s" : "") : "")],
    ["detector", run.detector || "?"],
    ["source", run.source || "?"],
    ["bundle", (run.bundle || "?") + (run.bundle_sha256 ? " (sha256 " + run.bundle_sha256.slice(0, 12) + ")" : "")],
    ["viewers", String(state.stream.clients)],
  ];
  const dl = $("figures");
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(el("dt", k), el("dd", v));
  $("fps-cap").textContent = String(state.stream.fps_cap);
}

function renderTimeline(state) {
  const box = $("timeline");
  box.replaceChildren();
  const minutes = state.timeline || [];
  const slots = 30, width = 900 / slots, height = 160;
  const start = slots - minutes.length;
  minutes.forEach((m, i) => {
    const g = svg("g", { class: "minute", "data-minute": m.minute });
    const title = svg("title");
    const total = Object.values(m.counts).reduce((a, b) => a + b, 0);
    const parts = Object.entries(m.counts).map(([k, v]) => (NAMES[k] || k) + " " + v).join(", ");
    title.textContent = m.minute.slice(11, 16) + " UTC" + (m.partial ? " (so far)" : "") + ": " + m.frames +
      " frames, " + (parts || "no faces");
    g.append(title);
    let y = height;
    const x = (start + i) * width + 2;
    if (!total) g.append(svg("rect", { x, y: height - 3, width: width - 4, height: 3, fill: "#3a3f48" }));
    for (const label of state.classes) {
      const n = m.counts[label] || 0;
      if (!n) continue;
      const h = (n / total) * (height - 4);
      y -= h;
      g.append(svg("rect", { x, y, width: width - 4, height: h, fill: COLORS[label] || "#777",
                             opacity: m.partial ? "0.65" : "1" }));
    }
    box.append(g);
  });
  const local = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  $("axis-first").textContent = minutes.length ? local(minutes[0].minute) : "";
  $("axis-last").textContent = minutes.length ? local(minutes[minutes.length - 1].minute) + " (now)" : "";
  const legend = $("legend");
  if (!legend.childElementCount) {
    for (const label of state.classes) {
      const item = el("li");
      const swatch = svg("svg", { width: "12", height: "12" });
      swatch.append(svg("rect", { width: "12", height: "12", rx: "2", fill: COLORS[label] || "#777" }));
      item.append(swatch, document.createTextNode(NAMES[label] || label));
      legend.append(item);
    }
  }
}

function render(state) {
  renderFaces(state.faces);
  renderFigures(state);
  renderTimeline(state);
  if (state.ended) setStatus("run ended: " + state.ended.end_reason, "ended");
  else setStatus("live · frame " + state.frame, "live");
}

// The stream: reconnect after an error (a restarted service, a network hiccup).
function startStream() {
  const img = $("live");
  img.onerror = () => setTimeout(() => { img.src = "stream.mjpg?t=" + Date.now(); }, 2000);
  const showSize = () => {
    const size = $("video-size");
    if (img.naturalWidth > 0) {
      size.textContent = img.naturalWidth + "×" + img.naturalHeight;
      size.dataset.width = String(img.naturalWidth);
    }
  };
  img.onload = showSize;
  img.src = "stream.mjpg";
  setInterval(showSize, 500);
}

// State: once now, then pushed by Server-Sent Events; falls back to polling if they are blocked.
function startState() {
  fetch("api/state", { cache: "no-store" }).then((r) => r.ok ? r.json() : Promise.reject(r.status))
    .then(render).catch((e) => setStatus("no state (" + e + ")", "lost"));
  if (!window.EventSource) { setInterval(() => fetch("api/state").then((r) => r.json()).then(render), 1000); return; }
  const events = new EventSource("api/events");
  let ended = false;
  events.onmessage = (e) => { const state = JSON.parse(e.data); ended = !!state.ended; render(state); };
  events.onerror = () => { if (ended) events.close(); else setStatus("reconnecting…", "lost"); };
}

startState();
startStream();
