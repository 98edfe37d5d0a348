// cfcd search page: pick or drop a photo, optionally drag a box on it, see ranked results.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, image: null, scale: 1, box: null, drag: null, keyRequired: false };

function apiKey() { return $("api-key").value.trim(); }
function setMessage(text) { $("message").textContent = text || ""; }

// The key is sent once, in a header, for an HttpOnly session cookie that authorises the
// searches, images and thumbnails that follow: it never goes into a URL or into storage.
async function openSession() {
  const res = await fetch("/session", { method: "POST", headers: { "X-API-Key": apiKey() } });
  if (res.status === 401) throw new Error("wrong API key");
  if (!res.ok) throw new Error(`the server answered ${res.status}`);
}

async function askForKey() {
  state.keyRequired = true;
  $("key-label").hidden = false;
  $("api-key").focus();
}

async function loadHealth() {
  try {
    const res = await fetch("/health");
    const h = await res.json();
    // What the index searches: its own learned projection (no labels), or the raw descriptors.
    const p = h.projection;
    const space = p ? ` · searching a ${p.dim}-d projection learned from ${p.learned_from} of these photos`
                    : ` · ${h.dim}-d descriptors, no learned projection${h.learn ? "" : " (learning off)"}`;
    $("status").textContent = `${h.images} images indexed${space}`;
    state.keyRequired = h.api_key_required;
    state.maxBytes = h.max_upload_bytes;
    if (h.api_key_required) {
      // A session cookie from earlier still works until the server restarts.
      const session = await fetch("/session");
      if (session.status !== 204) askForKey();
    }
  } catch (err) {
    $("status").textContent = "The search service is not reachable.";
  }
}

function pick(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setMessage(`${file.name} is not an image.`); return; }
  if (state.maxBytes && file.size > state.maxBytes) {
    setMessage(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(state.maxBytes / 1048576).toFixed(0)} MB.`);
    return;
  }
  setMessage("");
  state.file = file;
  state.box = null;
  const img = new Image();
  img.onload = () => {
    state.image = img;
    $("drop").hidden = true;
    $("preview").hidden = false;
    $("change").hidden = false;
    $("search").disabled = false;
    draw();
    search();
  };
  img.onerror = () => setMessage(`${file.name} cannot be displayed; the server may still read it.`);
  img.src = URL.createObjectURL(file);
}

function draw() {
  const canvas = $("canvas"), img = state.image;
  const width = Math.min(img.naturalWidth, $("canvas-wrap").clientWidth - 16 || 400);
  state.scale = width / img.naturalWidth;
  canvas.width = Math.round(width);
  canvas.height = Math.round(img.naturalHeight * state.scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const b = state.drag || state.box;
  if (b) {
    const [x0, y0, x1, y1] = b.map((v) => v * state.scale);
    ctx.fillStyle = "rgba(0,0,0,0.45)";
    ctx.fillRect(0, 0, canvas.width, y0);
    ctx.fillRect(0, y1, canvas.width, canvas.height - y1);
    ctx.fillRect(0, y0, x0, y1 - y0);
    ctx.fillRect(x1, y0, canvas.width - x1, y1 - y0);
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
  $("clear-box").hidden = !state.box;
}

function imagePoint(ev) {
  const r = $("canvas").getBoundingClientRect();
  const sx = $("canvas").width / r.width;
  const x = Math.max(0, Math.min($("canvas").width, (ev.clientX - r.left) * sx)) / state.scale;
  const y = Math.max(0, Math.min($("canvas").height, (ev.clientY - r.top) * sx)) / state.scale;
  return [x, y];
}

function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])].map(Math.round);
}

function setupCanvas() {
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", (ev) => {
    state.start = imagePoint(ev);
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.start) return;
    state.drag = boxFrom(state.start, imagePoint(ev));
    draw();
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!state.start) return;
    const box = boxFrom(state.start, imagePoint(ev));
    state.start = null;
    state.drag = null;
    // A click (or a tiny box) keeps the previous choice instead of searching a sliver.
    if (box[2] - box[0] >= 8 && box[3] - box[1] >= 8) { state.box = box; search(); }
    draw();
  });
}

async function search() {
  if (!state.file) return;
  const form = new FormData();
  form.append("image", state.file);
  form.append("k", $("k").value);
  if (state.box) form.append("bbox", state.box.join(","));
  $("search").disabled = true;
  $("summary").textContent = "Searching…";
  setMessage("");
  try {
    if (state.keyRequired && apiKey()) await openSession();
    const res = await fetch("/search", { method: "POST", body: form });
    const body = await res.json().catch(() => ({ detail: res.statusText }));
    if (!res.ok) {
      if (res.status === 401) askForKey();
      if (res.status === 503) {
        throw new Error(`the server is busy; try again in ${res.headers.get("Retry-After") || "a few"} seconds`);
      }
      throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    }
    show(body);
  } catch (err) {
    $("summary").textContent = "";
    setMessage(`Search failed: ${err.message}`);
  } finally {
    $("search").disabled = false;
  }
}

function show(body) {
  const list = $("results");
  list.replaceChildren();
  const region = body.query.bbox ? " (selected region)" : "";
  $("summary").textContent = `${body.results.length} most similar images${region} · ${body.elapsed_ms} ms`;
  for (const hit of body.results) {
    const li = document.createElement("li");
    li.className = "result";
    li.dataset.id = hit.id;
    const a = document.createElement("a");
    a.href = hit.image_url;
    a.target = "_blank";
    a.rel = "noopener";
    const img = document.createElement("img");
    img.src = `${hit.thumbnail_url}?size=256`;
    img.alt = hit.path ? hit.path.split(/[\\/]/).pop() : `image ${hit.id}`;
    img.loading = "lazy";
    a.append(img);
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<span class="rank">#${hit.rank}</span><span class="score" title="cosine similarity">${hit.score.toFixed(3)}</span>`;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = img.alt;
    name.title = hit.path || "";
    li.append(a, meta, name);
    list.append(li);
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (ev) => pick(ev.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    document.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.remove("over"); });
  }
  document.addEventListener("drop", (ev) => pick(ev.dataTransfer.files[0]));
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("file").click(); });
  $("search").addEventListener("click", search);
  $("k").addEventListener("change", search);
  $("change").addEventListener("click", () => { $("file").value = ""; $("file").click(); });
  $("clear-box").addEventListener("click", () => { state.box = null; draw(); search(); });
  window.addEventListener("resize", () => state.image && draw());
  setupCanvas();
  loadHealth();
}

setup();
