// cfcd search page: search by photo (optionally a region of it), more like any image, browse
// the collection by folder, add photos, and review the near-duplicate groups.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, image: null, scale: 1, box: null, drag: null, keyRequired: false, session: false, view: null };
// Images per collection page; ?page_size= in the page's URL overrides it (the tests use a
// small one), up to the server's limit of 500.
const PAGE = Math.min(500, Number(new URLSearchParams(location.search).get("page_size")) || 48);
const VIEWS = ["search", "collection", "duplicates"];

function apiKey() { return $("api-key").value.trim(); }
function setMessage(text) { $("message").textContent = text || ""; }
const fileName = (path) => (path || "").split(/[\\/]/).pop();

// The key is sent once, in a header, for an HttpOnly session cookie that authorises every
// request that follows, <img> thumbnails included (they cannot carry a header): it never goes
// into a URL or into storage.
async function openSession() {
  const res = await fetch("/session", { method: "POST", headers: { "X-API-Key": apiKey() } });
  if (res.status === 401) throw new Error("wrong API key");
  if (!res.ok) throw new Error(`the server answered ${res.status}`);
  state.session = true;
}

function askForKey() {
  state.keyRequired = true;
  state.session = false;
  $("key-label").hidden = false;
  $("api-key").focus();
}

// Every call to the service goes through here: the session first when a key was typed,
// then the JSON answer, or an Error saying what the server said.
async function api(url, options = {}) {
  if (state.keyRequired && apiKey() && !state.session) await openSession();
  const res = await fetch(url, options);
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  if (res.ok) return body;
  if (res.status === 401) { askForKey(); throw new Error("enter the API key at the top of the page"); }
  if (res.status === 503) throw new Error(`the server is busy; try again in ${res.headers.get("Retry-After") || "a few"} seconds`);
  throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
}

async function loadHealth() {
  try {
    const h = await (await fetch("/health")).json();
    state.version = h.index_version;
    // What the index searches: its own learned projection (no labels), or the raw descriptors.
    const p = h.projection;
    const space = p ? ` · searching a ${p.dim}-d projection learned from ${p.learned_from} of these photos`
                    : ` · ${h.dim}-d descriptors, no learned projection${h.learn ? "" : " (learning off)"}`;
    $("status").textContent = `${h.images} images indexed${space}`;
    state.maxBytes = h.max_upload_bytes;
    $("upload-label").hidden = !h.writable;
    state.writable = h.writable;
    state.trash = h.trash;
    if (h.api_key_required && !state.keyRequired) {
      state.keyRequired = true;
      // A session cookie from earlier still works until the server restarts.
      const session = await fetch("/session");
      if (session.status === 204) state.session = true; else askForKey();
    }
  } catch (err) {
    $("status").textContent = "The search service is not reachable.";
  }
}

function tooLarge(file) {
  if (!state.maxBytes || file.size <= state.maxBytes) return false;
  setMessage(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(state.maxBytes / 1048576).toFixed(0)} MB.`);
  return true;
}

// ---- views ----------------------------------------------------------------------------

function showView(name) {
  if (!VIEWS.includes(name)) name = "search";
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== name;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === name);
  const entered = state.view !== name;
  state.view = name;
  if (name === "collection" && !coll.started) resetCollection();
  if (name === "duplicates" && entered) loadDuplicates();  // the server keeps the groups per index version
}

// One thumbnail card: the image (opens the full file), its name, and a "Similar" button.
function card(item, cls = "card") {
  const li = document.createElement("li");
  li.className = cls;
  li.dataset.id = item.id;
  const a = document.createElement("a");
  a.href = item.image_url;
  a.target = "_blank";
  a.rel = "noopener";
  const img = document.createElement("img");
  img.src = `${item.thumbnail_url}?size=256`;
  img.alt = fileName(item.path) || `image ${item.id}`;
  img.loading = "lazy";
  a.append(img);
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = img.alt;
  name.title = item.path || "";
  const similarButton = document.createElement("button");
  similarButton.type = "button";
  similarButton.className = "similar link";
  similarButton.textContent = "Similar";
  similarButton.addEventListener("click", () => similar(item));
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(name, similarButton);
  li.append(a, actions);
  return li;
}

// ---- search and more like this -----------------------------------------------------------

function pick(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { setMessage(`${file.name} is not an image.`); return; }
  if (tooLarge(file)) return;
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
  $("similar-to").hidden = true;
  setMessage("");
  try {
    const body = await api("/search", { method: "POST", body: form });
    show(body, body.query.bbox ? " (selected region)" : "");
  } catch (err) {
    $("summary").textContent = "";
    setMessage(`Search failed: ${err.message}`);
  } finally {
    $("search").disabled = false;
  }
}

// More like an indexed image: its stored descriptor searched as a query, itself left out.
async function similar(item) {
  location.hash = "search";
  const name = fileName(item.path) || `image ${item.id}`;
  $("summary").textContent = `Looking for images like ${name}…`;
  setMessage("");
  try {
    const body = await api(`/images/${item.id}/similar?k=${$("k").value}`);
    const to = $("similar-to");
    to.querySelector("img").src = `/thumbnails/${item.id}?size=128`;
    to.querySelector("span").textContent = `More like ${name}`;
    to.hidden = false;
    show(body, ` like ${name}`);
    window.scrollTo(0, 0);
  } catch (err) {
    $("summary").textContent = "";
    setMessage(`Similar images failed: ${err.message}`);
  }
}

function show(body, what) {
  const list = $("results");
  list.replaceChildren();
  $("summary").textContent = `${body.results.length} most similar images${what} · ${body.elapsed_ms} ms`;
  for (const hit of body.results) {
    const li = card(hit, "result");
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<span class="rank">#${hit.rank}</span><span class="score" title="cosine similarity">${hit.score.toFixed(3)}</span>`;
    li.insertBefore(meta, li.querySelector(".actions"));
    list.append(li);
  }
}

// ---- the collection ----------------------------------------------------------------------

// The page follows the index: a new version (a watched folder synced by `cfcd serve --watch`,
// another client's upload) refreshes the status line and, when it is open, the collection.
const FOLLOW_MS = 3000;

async function follow() {
  if (document.hidden) return;
  try {
    const h = await (await fetch("/health")).json();
    if (state.version === undefined || h.index_version === state.version) return;
    await loadHealth();
    if (state.view === "collection" && coll.started) {
      await loadFolders();
      await resetCollection();
    }
  } catch (err) {
    // an unreachable server is reported by the next loadHealth
  }
}

// Paged by ascending id, so pages stay valid while photos are added (new ones come last).
let coll = { prefix: "", offset: 0, total: null, loading: false, started: false };

async function loadFolders() {
  const body = await api("/folders");
  const select = $("folder"), chosen = select.value;
  select.replaceChildren(new Option(`All folders (${body.images})`, ""));
  // Images directly in the top folder have no prefix of their own: "All folders" shows them.
  for (const f of body.folders.filter((f) => f.folder)) select.append(new Option(`${f.folder} (${f.images})`, `${f.folder}/`));
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
}

async function resetCollection() {
  coll = { prefix: $("folder").value, offset: 0, total: null, loading: false, started: true };
  $("collection").replaceChildren();
  $("more").hidden = true;
  try {
    if ($("folder").options.length === 1) await loadFolders();
  } catch (err) {
    setMessage(`Folders failed: ${err.message}`);
  }
  await loadMore();
}

async function loadMore() {
  const c = coll;  // a folder change meanwhile starts a new listing; this one's answer is dropped
  if (c.loading || (c.total !== null && c.offset >= c.total)) return;
  c.loading = true;
  try {
    const q = new URLSearchParams({ offset: c.offset, limit: PAGE, prefix: c.prefix });
    const body = await api(`/images?${q}`);
    if (c !== coll) return;
    c.total = body.total;
    c.offset += body.items.length;
    $("collection").append(...body.items.map((item) => card(item)));
    $("collection-count").textContent = `${c.offset} of ${c.total} images`;
    $("more").hidden = c.offset >= c.total;
  } catch (err) {
    setMessage(`The collection failed: ${err.message}`);
  } finally {
    c.loading = false;
  }
}

// Lazy loading: the next page when the user scrolls near the end of the grid.
function nearEnd() {
  if (state.view === "collection" && !$("more").hidden
      && window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 400) loadMore();
}

async function upload(files) {
  $("added").hidden = false;
  for (const file of files) {
    if (tooLarge(file)) continue;
    const form = new FormData();
    form.append("image", file);
    try {
      const body = await api("/images", { method: "POST", body: form });
      const li = card(body);
      li.classList.add(body.added ? "new" : "known");
      li.querySelector(".name").textContent = `${body.added ? "Added" : "Already indexed"}: ${file.name}`;
      $("added").prepend(li);
    } catch (err) {
      setMessage(`Adding ${file.name} failed: ${err.message}`);
    }
  }
  $("upload").value = "";
  await loadHealth();
  await loadFolders().catch(() => {});
  coll.total = null;  // a finished listing may have grown at its end
  await loadMore();
}

// ---- near-duplicates ---------------------------------------------------------------------

// A group member's card with what a person decides on: pixel size, file size, format, date and
// its similarity to the kept photo; the kept one marked. A photo found at several paths (byte
// copies) lists them, the path kept marked: the others go to the trash with the group.
function dupCard(item, kept, keepPath) {
  const li = card(item);
  const facts = document.createElement("div");
  facts.className = "facts";
  const size = item.width ? `${item.width}×${item.height}` : "?";
  const kb = item.file_size == null ? "?" : `${Math.round(item.file_size / 1000)} kB`;
  facts.textContent = `${kept ? "Keep · " : ""}${size} · ${kb} · ${item.format || "?"} · `
    + `${(item.date || "?").slice(0, 10)} · ${item.score.toFixed(3)}`;
  li.append(facts);
  if ((item.paths || []).length > 1) {
    const paths = document.createElement("ul");
    paths.className = "paths";
    for (const p of item.paths) {
      const row = document.createElement("li");
      row.textContent = `${kept && p === keepPath ? "keep · " : ""}${p}`;
      paths.append(row);
    }
    li.append(paths);
  }
  if (kept) li.classList.add("keep");
  return li;
}

// Groups per page of the duplicates view; ?group_page= in the page's URL overrides it (the
// tests use a small one).
const GROUP_PAGE = Math.min(500, Number(new URLSearchParams(location.search).get("group_page")) || 20);
let dups = { offset: 0, total: null, shown: 0 };

async function loadDuplicates() {
  dups = { offset: 0, total: null, shown: 0 };
  $("dup-summary").textContent = "Grouping…";
  $("groups").replaceChildren();
  $("dup-more").hidden = true;
  await moreDuplicates();
}

// The next page of groups (the server keeps the grouping per index version).
async function moreDuplicates() {
  const d = dups;
  try {
    const body = await api(`/duplicates?${new URLSearchParams({ offset: d.offset, limit: GROUP_PAGE })}`);
    if (d !== dups) return;
    d.total = body.total;
    d.offset += body.groups.length;
    $("dup-summary").textContent = `${body.total} groups of duplicates in ${body.images} images; `
      + `showing ${d.offset}; similar from ${body.threshold}`;
    for (const g of body.groups) $("groups").append(groupSection(g, ++d.shown));
    $("dup-more").hidden = d.offset >= d.total;
  } catch (err) {
    $("dup-summary").textContent = "";
    setMessage(`Near-duplicates failed: ${err.message}`);
  }
}

// One group: its photos side by side, the suggested keeper marked, and the decisions
// the server allows: "not duplicates" (a writable server), "move the others to trash" (a
// writable, key-protected server with a trash folder).
function groupSection(g, n) {
  const section = document.createElement("section");
  section.className = "group";
  section.dataset.keep = g.keep;
  const title = document.createElement("h3");
  title.textContent = `Group ${n}: ${g.tier}, ${g.ids.length} images · lowest similarity `
    + `${g.min_score.toFixed(3)} · keep ${g.keep} (${g.why})`;
  const list = document.createElement("ol");
  list.className = "grid";
  list.append(...g.items.map((item) => dupCard(item, item.id === g.keep, g.keep_path)));
  const actions = document.createElement("div");
  actions.className = "group-actions";
  if (state.writable && g.ids.length > 1) actions.append(actionButton("Not duplicates", "ignore", () => decide(`Group ${n}`,
    "/duplicates/ignore", { ids: g.ids }, () => "recorded as not duplicates")));
  if (state.trash) actions.append(actionButton("Move the others to trash", "trash", () => decide(`Group ${n}`,
    "/duplicates/trash", { ids: g.ids, keep: g.keep, keep_path: g.keep_path },
    (a) => `moved ${a.moved_paths.length} files to the trash, kept ${g.keep}`)));
  section.append(title, actions, list);
  return section;
}

function actionButton(text, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `secondary ${cls}`;
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

// A decision on a group (``what``), then the groups again: the server answers from the new
// index version. ``said(answer)`` tells what was done; skipped files are listed with the reason.
async function decide(what, url, body, said) {
  try {
    const answer = await api(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const skipped = (answer.skipped || []).map((s) => s.why).join("; ");
    setMessage(`${what}: ${said(answer)}${skipped ? `; skipped: ${skipped}` : ""}`);
    await loadHealth();
    await loadDuplicates();
  } catch (err) {
    setMessage(`${what} failed: ${err.message}`);
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
  document.addEventListener("drop", (ev) => state.view === "search" && pick(ev.dataTransfer.files[0]));
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("file").click(); });
  $("search").addEventListener("click", search);
  $("k").addEventListener("change", search);
  $("change").addEventListener("click", () => { $("file").value = ""; $("file").click(); });
  $("clear-box").addEventListener("click", () => { state.box = null; draw(); search(); });
  // A new key opens a new session; the view that asked for it is loaded again.
  $("api-key").addEventListener("change", () => {
    state.session = false;
    if (state.view === "collection") resetCollection();
    if (state.view === "duplicates") loadDuplicates();
  });
  $("folder").addEventListener("change", resetCollection);
  $("more").addEventListener("click", loadMore);
  $("dup-more").addEventListener("click", moreDuplicates);
  $("upload").addEventListener("change", (ev) => upload([...ev.target.files]));
  window.addEventListener("scroll", nearEnd, { passive: true });
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  window.addEventListener("resize", () => state.image && draw());
  setupCanvas();
  loadHealth().then(() => showView(location.hash.slice(1)));
  setInterval(follow, FOLLOW_MS);
}

setup();
