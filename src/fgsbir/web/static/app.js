// Drawing pad + on-the-fly retrieval: every finished stroke sends the whole sketch to
// POST /api/search and the ranked photos replace the previous ones (stale answers are dropped).
// When the server has a generator, clicking a result shows how a person would sketch that photo
// (GET /api/sketch/{id}), drawn point by point.
"use strict";

const LOGICAL = 512; // strokes are kept on a 512 x 512 canvas, whatever the on-screen size
const MIN_STEP = 1.5; // logical units between recorded points
const INK = "#1d2130";
const SKETCH_MS = 2400; // a generated sketch is drawn in about this long
const MAX_POINT_MS = 60; // ...but no slower than this per point
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
  sketchView: document.getElementById("sketch-view"),
  sketchPhoto: document.getElementById("sketch-photo"),
  sketchCanvas: document.getElementById("sketch-canvas"),
  sketchStatus: document.getElementById("sketch-status"),
  sketchReplay: document.getElementById("sketch-replay"),
  sketchClose: document.getElementById("sketch-close"),
};

const strokes = []; // finished strokes: arrays of [x, y] in logical units
let current = null; // the stroke being drawn
let activePointer = null;
let searchSeq = 0; // answers to older requests are ignored
let inFlight = null; // AbortController of the request in flight
let previousRanks = new Map(); // photo id -> rank in the previous answer
let sketchable = false; // whether the server can sketch photos (it has a generator)
let shownSketch = null; // the generated sketch in the sketch view
let sketchSeq = 0; // answers for photos no longer shown are ignored
let sketchFrame = null; // the animation frame drawing it

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

function polyline(context, points, scale, width) {
  context.strokeStyle = INK;
  context.fillStyle = INK;
  context.lineWidth = width;
  context.lineCap = "round";
  context.lineJoin = "round";
  if (points.length === 1) {
    context.beginPath();
    context.arc(points[0][0] * scale, points[0][1] * scale, width / 2, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.beginPath();
  context.moveTo(points[0][0] * scale, points[0][1] * scale);
  for (const [x, y] of points.slice(1)) context.lineTo(x * scale, y * scale);
  context.stroke();
}

function drawStroke(points) {
  polyline(ctx, points, pad.width / LOGICAL, strokeWidth());
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
    if (sketchable) {
      card.classList.add("sketchable");
      card.tabIndex = 0;
      card.title += " — click to see how a person would sketch it";
      card.addEventListener("click", () => openSketch(r));
      card.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          openSketch(r);
        }
      });
    }
    return card;
  });
  ui.results.replaceChildren(...cards);
  previousRanks = new Map(results.map((r) => [r.photo, r.rank]));
}

// ---- how would a person sketch it? ----------------------------------------------------------

async function openSketch(result) {
  const seq = ++sketchSeq;
  cancelAnimationFrame(sketchFrame);
  shownSketch = null;
  ui.sketchReplay.disabled = true;
  ui.sketchPhoto.src = result.url;
  ui.sketchPhoto.alt = result.name;
  const canvas = ui.sketchCanvas;
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  ui.sketchStatus.textContent = "sketching…";
  if (!ui.sketchView.open) ui.sketchView.showModal();
  try {
    const response = await fetch(`/api/sketch/${result.photo}`).catch(() => {
      throw new Error(UNREACHABLE);
    });
    const answer = await response.json().catch(() => ({}));
    if (seq !== sketchSeq) return;
    if (!response.ok) throw new Error(answer.error || `sketching failed: HTTP ${response.status}`);
    shownSketch = answer;
    const points = answer.strokes.reduce((n, stroke) => n + stroke.length, 0);
    ui.sketchStatus.textContent = points
      ? `${answer.strokes.length} stroke${answer.strokes.length === 1 ? "" : "s"}, ` +
        `${points} points · ${Math.round(answer.took_ms)} ms`
      : "the generator drew nothing for this photo";
    ui.sketchReplay.disabled = points === 0;
    animateSketch();
  } catch (err) {
    if (seq === sketchSeq) ui.sketchStatus.textContent = err.message;
  }
}

function animateSketch() {
  cancelAnimationFrame(sketchFrame);
  const sketch = shownSketch;
  const canvas = ui.sketchCanvas;
  const context = canvas.getContext("2d");
  const scale = canvas.width / Math.max(sketch.width, sketch.height);
  const total = sketch.strokes.reduce((n, stroke) => n + stroke.length, 0);
  const perPoint = Math.min(MAX_POINT_MS, SKETCH_MS / Math.max(total, 1));
  const start = performance.now();
  const frame = (now) => {
    const shown = Math.min(total, Math.floor((now - start) / perPoint) + 1);
    context.clearRect(0, 0, canvas.width, canvas.height);
    let left = shown;
    for (const stroke of sketch.strokes) {
      if (left <= 0) break;
      polyline(context, stroke.slice(0, left), scale, canvas.width / 170);
      left -= stroke.length;
    }
    canvas.dataset.drawn = String(shown); // points drawn so far (for tests and curious users)
    if (shown < total) sketchFrame = requestAnimationFrame(frame);
  };
  sketchFrame = requestAnimationFrame(frame);
}

ui.sketchReplay.addEventListener("click", () => shownSketch && animateSketch());
ui.sketchClose.addEventListener("click", () => ui.sketchView.close());
ui.sketchView.addEventListener("close", () => {
  sketchSeq += 1;
  cancelAnimationFrame(sketchFrame);
});

// ---- gallery info ----------------------------------------------------------------------------

fetch("/api/health")
  .then((response) => response.json())
  .then((info) => {
    ui.info.textContent =
      `${info.photos.toLocaleString()} photos · ${info.kind} index · model ${info.model.slice(0, 8)}`;
    sketchable = info.generator;
    if (sketchable) {
      ui.info.textContent += " · click a photo to see it sketched";
    }
  })
  .catch(() => {
    ui.info.textContent = "server unreachable";
    ui.info.classList.add("offline");
  });
