// emotrack live dashboard: server-sent events from `emotrack view`, drawn on canvas.
// Vanilla JS, no dependencies, works offline.
"use strict";

const SOURCES = ["speech", "music"];
const QNAMES = { Q1: "happy / excited", Q2: "angry / afraid", Q3: "sad / bored", Q4: "calm / serene" };
const COLORS = { valence: "#42a5f5", arousal: "#ffa726", activity: "rgba(158,158,158,0.30)",
                 speech: "#66bb6a", music: "#ec407a", grid: "#2a313c", zero: "#4a5462", text: "#8b949e",
                 confidence: "rgba(255,255,255,0.55)" };
const TRAIL = 12;
const MAX_POINTS = 20000;

// [t_start, t_end, valence, arousal, activity, quadrant, wall, (tracked) valence, arousal, quadrant, confidence]
const points = { speech: [], music: [] };
const TV = 7, TA = 8, TQ = 9, CONF = 10;
const hasTracked = (p) => p.length > CONF;
let info = { window_s: 300 };
let sseOpen = false;
let dirty = true;

const $ = (id) => document.getElementById(id);
const mid = (p) => (p[0] + p[1]) / 2;
const fmtT = (s) => { s = Math.max(0, Math.round(s)); const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60,
  r = s % 60; return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0"); };
const sgn = (v) => (v >= 0 ? "+" : "\u2212") + Math.abs(v).toFixed(2);

function addPoint(src, p) {
  const arr = points[src];
  if (arr.length && p[1] < arr[arr.length - 1][1]) {
    // out of order (a back-filled message): insert in place
    let i = arr.length - 1;
    while (i > 0 && arr[i - 1][1] > p[1]) i--;
    arr.splice(i, 0, p);
  } else {
    arr.push(p);
  }
  const cut = p[1] - (info.window_s || 300);
  while (arr.length > MAX_POINTS || (arr.length && arr[0][1] < cut)) arr.shift();
}

function connect() {
  const es = new EventSource("/events");
  es.addEventListener("open", () => { sseOpen = true; updateHeader(); });
  es.addEventListener("error", () => { sseOpen = false; updateHeader(); });
  es.addEventListener("history", (e) => {
    const h = JSON.parse(e.data);
    info = h.state;
    for (const s of SOURCES) points[s] = h.points[s] || [];
    updateHeader(); dirty = true;
  });
  es.addEventListener("msg", (e) => {
    const m = JSON.parse(e.data);
    if (m.source) addPoint(m.source, m.p);
    if (m.stream) info.stream = m.stream;
    if (m.topic === "status") info.last_event = m.event;
    info.last_message_age = 0;
    dirty = true;
  });
  es.addEventListener("state", (e) => { info = JSON.parse(e.data); updateHeader(); dirty = true; });
  es.addEventListener("reset", () => { for (const s of SOURCES) points[s] = []; dirty = true; });
}

function updateHeader() {
  $("stream").textContent = info.stream || "waiting for data...";
  const models = info.models || {};
  $("models").textContent = SOURCES.filter((s) => models[s]).map((s) => s + ": " + models[s]).join("   ");
  const conn = $("conn");
  let cls = "pill-live", txt = "live";
  if (!sseOpen) { cls = "pill-down"; txt = "viewer offline"; }
  else if (info.last_event === "end") { cls = "pill-end"; txt = "end of stream"; }
  else if (!info.connected) { cls = "pill-down"; txt = "disconnected"; }
  else if (info.last_message_age === null || info.last_message_age === undefined) { cls = "pill-idle"; txt = "waiting"; }
  else if (info.last_message_age > 5) { cls = "pill-idle"; txt = "idle " + Math.round(info.last_message_age) + " s"; }
  conn.className = "pill " + cls; conn.textContent = txt;

  const f = info.feed || {}, c = info.counters || {};
  const items = [
    ["received", f.received], ["lost", f.lost, f.lost > 0], ["gaps", f.gaps, f.gaps > 0],
    ["restarts", f.restarts, f.restarts > 0], ["invalid", f.invalid, f.invalid > 0],
    ["from snapshot", f.snapshots ? f.snapshots.messages : undefined],
    ["published", c.published], ["pub dropped", c.pub_dropped, c.pub_dropped > 0],
    ["blocks dropped", c.blocks_dropped, c.blocks_dropped > 0],
    ["capture overflows", c.capture_overflows, c.capture_overflows > 0],
    ["stream time", c.stream_time !== undefined ? fmtT(c.stream_time) : undefined],
    ["browsers", info.browsers], ["browser drops", info.browser_drops, info.browser_drops > 0],
  ];
  const foot = $("counters");
  foot.textContent = "";
  for (const [k, v, bad] of items) {
    if (v === undefined || v === null) continue;
    const span = document.createElement("span");
    span.textContent = k + " ";
    const b = document.createElement("b");
    b.textContent = String(v);
    if (bad) b.className = "bad";
    span.appendChild(b);
    foot.appendChild(span);
  }
  const last = (info.notices || []).filter((n) => n.kind === "gap" || n.kind === "restart").pop();
  if (last && Date.now() / 1000 - last.at < 120) {
    const span = document.createElement("span");
    span.className = "bad";
    span.textContent = last.text;
    foot.appendChild(span);
  }
}

function fit(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(10, canvas.clientWidth), h = Math.max(10, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return [ctx, w, h];
}

function timeRange() {
  let tmax = 0;
  for (const s of SOURCES) { const a = points[s]; if (a.length) tmax = Math.max(tmax, mid(a[a.length - 1])); }
  const span = info.window_s || 300;
  const t0 = Math.max(0, tmax - span);
  return [t0, Math.max(tmax, t0 + Math.min(span, 60))];
}

function medianHop(arr) {
  if (arr.length < 3) return 2;
  const d = [];
  for (let i = Math.max(1, arr.length - 50); i < arr.length; i++) d.push(mid(arr[i]) - mid(arr[i - 1]));
  d.sort((a, b) => a - b);
  return Math.max(0.1, d[Math.floor(d.length / 2)]);
}

function drawTimeline(src, t0, t1) {
  const canvas = $("tl-" + src);
  const [ctx, W, H] = fit(canvas);
  const L = 56, R = 12, T = 10, B = 30, pw = W - L - R, ph = H - T - B;
  const X = (t) => L + ((t - t0) / (t1 - t0)) * pw;
  const Y = (v) => T + (1 - (v + 1) / 2) * ph;
  ctx.font = "16px DejaVu Sans, Arial, sans-serif";
  ctx.fillStyle = COLORS.text; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of [-1, -0.5, 0, 0.5, 1]) {
    ctx.strokeStyle = v === 0 ? COLORS.zero : COLORS.grid; ctx.lineWidth = v === 0 ? 1.5 : 1;
    ctx.beginPath(); ctx.moveTo(L, Y(v)); ctx.lineTo(L + pw, Y(v)); ctx.stroke();
    if (v !== 0.5 && v !== -0.5) ctx.fillText(v === 0 ? "0" : (v > 0 ? "+1" : "\u22121"), L - 8, Y(v));
  }
  const steps = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const step = steps.find((s) => (t1 - t0) / s <= 8) || 3600;
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    ctx.strokeStyle = COLORS.grid; ctx.beginPath(); ctx.moveTo(X(t), T); ctx.lineTo(X(t), T + ph); ctx.stroke();
    const lbl = fmtT(t), half = ctx.measureText(lbl).width / 2;
    ctx.fillText(lbl, Math.min(X(t), W - half - 2), T + ph + 6);
  }
  const arr = points[src].filter((p) => mid(p) >= t0 - 5);
  document.body.dataset[src + "Points"] = String(points[src].length);
  if (!arr.length) {
    ctx.fillStyle = COLORS.text; ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.font = "20px sans-serif";
    ctx.fillText("no " + src + " data yet", L + pw / 2, T + ph / 2);
    return;
  }
  const hop = medianHop(arr), brk = hop * 3.5;
  // activity: a grey band rising from the bottom, one step per window (one path: no seams)
  ctx.fillStyle = COLORS.activity;
  ctx.beginPath();
  ctx.moveTo(Math.max(L, X(mid(arr[0]) - hop / 2)), T + ph);
  for (let i = 0; i < arr.length; i++) {
    const p = arr[i], h = p[4] * ph * 0.3;
    const xa = Math.max(L, X(i && mid(p) - mid(arr[i - 1]) <= brk ? mid(arr[i - 1]) + (mid(p) - mid(arr[i - 1])) / 2
                                                                      : mid(p) - hop / 2));
    const xb = X(i + 1 < arr.length && mid(arr[i + 1]) - mid(p) <= brk ? (mid(p) + mid(arr[i + 1])) / 2 : mid(p) + hop / 2);
    if (i && mid(p) - mid(arr[i - 1]) > brk) { ctx.lineTo(xa, T + ph); }
    ctx.lineTo(xa, T + ph - h);
    ctx.lineTo(Math.min(L + pw, xb), T + ph - h);
    if (i + 1 < arr.length && mid(arr[i + 1]) - mid(p) > brk) ctx.lineTo(Math.min(L + pw, xb), T + ph);
  }
  ctx.lineTo(Math.min(L + pw, X(mid(arr[arr.length - 1]) + hop / 2)), T + ph);
  ctx.closePath();
  ctx.fill();
  // confidence of the tracked state: a thin band along the top, as high as the tracker is sure
  const tracked = arr.filter(hasTracked);
  if (tracked.length) {
    ctx.fillStyle = COLORS.confidence;
    for (const p of tracked) {
      const c = Math.max(0, (p[CONF] - 0.25) / 0.75), x0 = Math.max(L, X(mid(p) - hop / 2)), x1 = Math.min(L + pw, X(mid(p) + hop / 2));
      if (x1 > x0) ctx.fillRect(x0, T, x1 - x0, c * ph * 0.06);
    }
  }
  // raw window values: thin and faint
  ctx.lineWidth = 1.5; ctx.lineCap = "round"; ctx.lineJoin = "round";
  let rawDrawn = 0;
  for (const [k, col] of [[2, COLORS.valence], [3, COLORS.arousal]]) {
    ctx.strokeStyle = col; ctx.globalAlpha = tracked.length ? 0.28 : 0.0;
    if (!tracked.length) break;  // without tracked fields the raw curve is drawn strongly below
    ctx.beginPath();
    for (let i = 0; i < arr.length; i++) {
      const p = arr[i];
      if (i && mid(p) - mid(arr[i - 1]) > brk) ctx.moveTo(X(mid(p)), Y(p[k])); else if (i) ctx.lineTo(X(mid(p)), Y(p[k]));
      else ctx.moveTo(X(mid(p)), Y(p[k]));
    }
    ctx.stroke(); rawDrawn++;
  }
  ctx.globalAlpha = 1;
  document.body.dataset[src + "RawCurves"] = String(rawDrawn);
  document.body.dataset[src + "TrackedPoints"] = String(tracked.length);
  // the main curves: tracked valence and arousal where there are tracked fields (else the raw ones),
  // each segment as opaque as the source is present
  const KV = tracked.length ? TV : 2, KA = tracked.length ? TA : 3;
  const main = tracked.length ? tracked : arr;
  ctx.lineWidth = 3.5; ctx.lineCap = "round";
  for (const [k, col] of [[KV, COLORS.valence], [KA, COLORS.arousal]]) {
    const arr = main;
    ctx.strokeStyle = col; ctx.lineJoin = "round";
    // consecutive segments of the same (quantised) opacity share one path: no overlapping caps
    let level = -1, open = false;
    for (let i = 1; i < arr.length; i++) {
      const a = arr[i - 1], b = arr[i];
      if (mid(b) - mid(a) > brk) { if (open) ctx.stroke(); open = false; continue; }
      const lv = Math.round(10 * (0.12 + 0.88 * Math.min(a[4], b[4]))) / 10;
      if (!open || lv !== level) {
        if (open) ctx.stroke();
        ctx.globalAlpha = lv; level = lv; open = true;
        ctx.beginPath(); ctx.moveTo(X(mid(a)), Y(a[k]));
      }
      ctx.lineTo(X(mid(b)), Y(b[k]));
    }
    if (open) ctx.stroke();
    const last = arr[arr.length - 1];
    ctx.globalAlpha = 0.25 + 0.75 * last[4];
    ctx.fillStyle = col; ctx.beginPath(); ctx.arc(X(mid(last)), Y(last[k]), 5, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
}

function drawPlane() {
  const canvas = $("va");
  const [ctx, W, H] = fit(canvas);
  const S = Math.min(W, H), M = 34, size = S - 2 * M, ox = (W - S) / 2 + M, oy = (H - S) / 2 + M;
  const X = (v) => ox + ((v + 1) / 2) * size, Y = (a) => oy + (1 - (a + 1) / 2) * size;
  const quads = [["Q1", 0, -1, "rgba(255,213,79,0.10)"], ["Q2", -1, -1, "rgba(239,83,80,0.10)"],
                 ["Q3", -1, 0, "rgba(92,107,192,0.12)"], ["Q4", 0, 0, "rgba(102,187,106,0.10)"]];
  for (const [q, qx, qy, col] of quads) {
    ctx.fillStyle = col; ctx.fillRect(X(qx), oy + (qy + 1) / 2 * size, size / 2, size / 2);
  }
  ctx.strokeStyle = COLORS.zero; ctx.lineWidth = 1.5;
  ctx.strokeRect(ox, oy, size, size);
  ctx.beginPath(); ctx.moveTo(X(0), oy); ctx.lineTo(X(0), oy + size); ctx.moveTo(ox, Y(0)); ctx.lineTo(ox + size, Y(0)); ctx.stroke();
  const big = Math.max(14, Math.min(22, size / 22));
  ctx.font = "bold " + big + "px DejaVu Sans, Arial, sans-serif"; ctx.fillStyle = "#c9d1d9";
  const pad = 10;
  const label = (q, x, y, align, base) => {
    ctx.textAlign = align; ctx.textBaseline = base;
    ctx.font = "bold " + big + "px DejaVu Sans, Arial, sans-serif"; ctx.fillStyle = "#c9d1d9";
    ctx.fillText(q, x, y);
    ctx.font = big * 0.8 + "px DejaVu Sans, Arial, sans-serif"; ctx.fillStyle = COLORS.text;
    ctx.fillText(QNAMES[q], x, base === "top" ? y + big * 1.2 : y - big * 1.2);
  };
  label("Q1", ox + size - pad, oy + pad, "right", "top");
  label("Q2", ox + pad, oy + pad, "left", "top");
  label("Q3", ox + pad, oy + size - pad, "left", "bottom");
  label("Q4", ox + size - pad, oy + size - pad, "right", "bottom");
  ctx.font = "15px DejaVu Sans, Arial, sans-serif"; ctx.fillStyle = COLORS.text;
  ctx.textAlign = "right"; ctx.textBaseline = "top"; ctx.fillText("valence \u2192", ox + size, oy + size + 6);
  ctx.save(); ctx.translate(ox - 8, oy); ctx.rotate(-Math.PI / 2); ctx.textAlign = "right"; ctx.textBaseline = "bottom";
  ctx.fillText("arousal \u2192", 0, 0); ctx.restore();

  let markers = 0;
  for (const src of SOURCES) {
    const arr = points[src];
    if (!arr.length) continue;
    // the tracked state where there is one (the raw window values otherwise)
    const trail = arr.slice(-TRAIL).map((p) => (hasTracked(p) ? [p[0], p[1], p[TV], p[TA], p[4]] : p)), col = COLORS[src];
    ctx.strokeStyle = col; ctx.fillStyle = col; ctx.lineWidth = 2.5;
    for (let i = 1; i < trail.length; i++) {
      const a = trail[i - 1], b = trail[i], age = (trail.length - i) / trail.length;
      ctx.globalAlpha = (1 - age) * (0.15 + 0.7 * Math.min(a[4], b[4]));
      ctx.beginPath(); ctx.moveTo(X(a[2]), Y(a[3])); ctx.lineTo(X(b[2]), Y(b[3])); ctx.stroke();
      ctx.beginPath(); ctx.arc(X(a[2]), Y(a[3]), 3, 0, 2 * Math.PI); ctx.fill();
    }
    const p = trail[trail.length - 1];
    ctx.globalAlpha = 0.35 + 0.65 * p[4];
    ctx.beginPath();
    if (src === "speech") ctx.arc(X(p[2]), Y(p[3]), 13, 0, 2 * Math.PI);
    else ctx.rect(X(p[2]) - 12, Y(p[3]) - 12, 24, 24);
    ctx.fill(); ctx.globalAlpha = 1; ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2; ctx.stroke();
    markers++;
  }
  ctx.globalAlpha = 1;
  document.body.dataset.vaMarkers = String(markers);
}

function drawNow() {
  for (const src of SOURCES) {
    const arr = points[src], el = $("now-" + src);
    if (!arr.length) { el.textContent = "-"; $("act-" + src).style.width = "0"; continue; }
    const p = arr[arr.length - 1];
    el.textContent = hasTracked(p)
      ? "V " + sgn(p[TV]) + "   A " + sgn(p[TA]) + "   " + p[TQ] + " " + QNAMES[p[TQ]] + "   "
        + Math.round(100 * p[CONF]) + " % sure   (window " + p[5] + ")   @ " + fmtT(p[1])
      : "V " + sgn(p[2]) + "   A " + sgn(p[3]) + "   " + p[5] + " " + QNAMES[p[5]] + "   @ " + fmtT(p[1]);
    el.style.opacity = String(0.45 + 0.55 * p[4]);
    $("act-" + src).style.width = Math.round(100 * p[4]) + "%";
  }
}

function frame() {
  if (dirty) {
    dirty = false;
    const [t0, t1] = timeRange();
    for (const src of SOURCES) drawTimeline(src, t0, t1);
    drawPlane();
    drawNow();
    updateHeader();
  }
  requestAnimationFrame(frame);
}

window.addEventListener("resize", () => { dirty = true; });
window.emotrack = { points, info: () => info };
connect();
updateHeader();
requestAnimationFrame(frame);
