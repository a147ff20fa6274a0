// Drawing pad + on-the-fly retrieval: every finished stroke sends the whole sketch to
// POST /api/search and the ranked photos replace the previous ones (stale answers are dropped).
"use strict";

const LOGICAL = 512; // strokes are kept on a 512 x 512 canvas, whatever the on-screen size
const MIN_STEP = 1.5; // logical units between recorded points
const INK = "#1d2130";
const UNREACHABLE = "server unreachable: is fgsbir serve still running?";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const ui = {
  hint: document.getElementById("hint"),
  undo: document.getElementById("undo"),
  clear: document.getElementById("clear"),
  k: document.getElementById("k"),
  status: document.getElementById("status"),
  busy: document.getElementById("busy"),
  error: document.getElementById("error"),
  empty: document.getElementById("empty"),
  results: document.getElementById("results"),
  info: document.getElementById("gallery-info"),
};

const strokes = []; // finished strokes: arrays of [x, y] in logical units
let current = null; // the stroke being drawn
let activePointer = null;
let searchSeq = 0; // answers to older requests are ignored
let inFlight = null; // AbortController of the request in flight
let previousRanks = new Map(); // photo id -> rank in the previous answer

// ---- drawing ---------------------------------------------------------------------------------

function resizeCanvas() {
  const box = pad.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  pad.width = Math.max(1, Math.round(box.width * ratio));
  pad.height = Math.max(1, Math.round(box.height * ratio));
  redraw();
}

function toLogical(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) / box.width) * LOGICAL,
    ((event.clientY - box.top) / box.height) * LOGICAL,
  ];
}

function strokeWidth() {
  return Math.max(2, pad.width / 170);
}

function drawStroke(points) {
  const scale = pad.width / LOGICAL;
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineWidth = strokeWidth();
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (points.length === 1) {
    ctx.beginPath();
    ctx.arc(points[0][0] * scale, points[0][1] * scale, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0] * scale, points[0][1] * scale);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x * scale, y * scale);
  ctx.stroke();
}

function redraw() {
  ctx.clearRect(0, 0, pad.width, pad.height);
  for (const s of strokes) drawStroke(s);
  if (current) drawStroke(current);
}

function addPoint(event) {
  const p = toLogical(event);
  const last = current[current.length - 1];
  if (Math.hypot(p[0] - last[0], p[1] - last[1]) < MIN_STEP) return;
  current.push(p);
  drawStroke([last, p]); // only the new segment; a full redraw per move is wasteful
}

pad.addEventListener("pointerdown", (event) => {
  if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  activePointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  current = [toLogical(event)];
  drawStroke(current);
  ui.hint.classList.add("gone");
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) addPoint(e);
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  strokes.push(current);
  current = null;
  changed();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (!strokes.length) return;
  strokes.pop();
  redraw();
  changed();
}

function clearAll() {
  strokes.length = 0;
  redraw();
  changed();
}

ui.undo.addEventListener("click", undo);
ui.clear.addEventListener("click", clearAll);
ui.k.addEventListener("change", () => strokes.length && search());
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  }
});
new ResizeObserver(resizeCanvas).observe(pad);

function changed() {
  const n = strokes.length;
  ui.undo.disabled = ui.clear.disabled = n === 0;
  ui.hint.classList.toggle("gone", n > 0);
  ui.status.textContent = `${n} stroke${n === 1 ? "" : "s"}`;
  if (n) {
    search();
  } else {
    searchSeq += 1;
    if (inFlight) inFlight.abort();
    previousRanks = new Map();
    showResults([]);
    showError(null);
    ui.busy.hidden = true;
  }
}

// ---- searching -------------------------------------------------------------------------------

async function search() {
  const seq = ++searchSeq;
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  ui.busy.hidden = false;
  const body = {
    strokes: strokes.map((s) => s.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10])),
    k: Number(ui.k.value),
    width: LOGICAL,
    height: LOGICAL,
  };
  try {
    const response = await fetch("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: inFlight.signal,
    }).catch((err) => {
      throw err.name === "AbortError" ? err : new Error(UNREACHABLE);
    });
    const answer = await response.json().catch(() => ({})); // e.g. a proxy's HTML error page
    if (seq !== searchSeq) return;
    if (!response.ok) throw new Error(answer.error || `search failed: HTTP ${response.status}`);
    showError(null);
    showResults(answer.results);
    const n = strokes.length;
    ui.status.textContent = `${n} stroke${n === 1 ? "" : "s"} · ${Math.round(answer.took_ms)} ms`;
  } catch (err) {
    if (err.name === "AbortError" || seq !== searchSeq) return;
    showError(err.message);
  } finally {
    if (seq === searchSeq) ui.busy.hidden = true;
  }
}

function showError(message) {
  ui.error.hidden = !message;
  ui.error.textContent = message || "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function movement(photo, rank) {
  if (!previousRanks.size) return null;
  const before = previousRanks.get(photo);
  if (before === undefined) return element("span", "move new", "new");
  if (before === rank) return null;
  return before > rank
    ? element("span", "move up", `▲ ${before - rank}`)
    : element("span", "move down", `▼ ${rank - before}`);
}

function showResults(results) {
  ui.empty.hidden = results.length > 0;
  const cards = results.map((r) => {
    const card = element("li", r.rank === 1 ? "card top" : "card");
    card.dataset.photo = r.photo;
    card.dataset.rank = r.rank;
    const img = element("img");
    img.src = r.url;
    img.alt = r.name;
    img.loading = "lazy";
    card.append(img, element("span", "rank", `#${r.rank}`));
    const move = movement(r.photo, r.rank);
    if (move) card.append(move);
    const meta = element("div", "meta");
    meta.append(element("div", "name", r.name));
    const score = element("div", "score");
    const bar = element("span", "bar");
    const fill = element("i");
    fill.style.width = `${Math.max(0, Math.min(1, r.score)) * 100}%`;
    bar.append(fill);
    score.append(bar, element("b", null, r.score.toFixed(3)));
    meta.append(score);
    card.append(meta);
    card.title = `${r.name} — rank ${r.rank}, similarity ${r.score.toFixed(3)}`;
    return card;
  });
  ui.results.replaceChildren(...cards);
  previousRanks = new Map(results.map((r) => [r.photo, r.rank]));
}

// ---- gallery info ----------------------------------------------------------------------------

fetch("/api/health")
  .then((response) => response.json())
  .then((info) => {
    ui.info.textContent =
      `${info.photos.toLocaleString()} photos · ${info.kind} index · model ${info.model.slice(0, 8)}`;
  })
  .catch(() => {
    ui.info.textContent = "server unreachable";
    ui.info.classList.add("offline");
  });
