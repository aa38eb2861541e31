// The web page: search by photo (file, camera, paste, drop, URL, a catalogue image), browse,
// add and delete catalogue images, follow trainings and switch autoencoder versions. Plain
// DOM code, no build step. Every text that comes from the API or the user goes into the page
// as text (textContent / text nodes), never as HTML.
"use strict";

const API = "api/v1";
const KEY_STORAGE = "imgsearch.apiKey"; // sessionStorage: the key leaves with the tab
const THEME_STORAGE = "imgsearch.theme"; // localStorage: "dark" or "light"; unset = system
const PAGE_SIZE = 24;
const UPLOADS_AT_ONCE = 2;
const FINAL = new Set(["done", "failed"]);
const METHOD_NAMES = { vgg16: "VGG16", autoencoder: "Autoencoder", fused: "Fused" };
const COLUMNS = {
  vgg16: "VGG16 ImageNet features, compared by cosine similarity",
  autoencoder: "Autoencoder trained on this catalogue, compared by distance",
  fused: "Both rankings combined",
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/** An element with attributes (set as attributes, never parsed) and children (nodes or text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null && child !== false) node.append(child);
  }
  return node;
}

function formatNumber(value, digits = 4) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// ---------------------------------------------------------------------------------------------
// The API: JSON in and out; errors carry the service's {"error": {"code", "message"}}.

class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

/** The service's error body as an ApiError (a sentence for a person, its code, its details). */
function errorFrom(status, data) {
  const error = (data && data.error) || {};
  const fallback =
    status === 401 ? "The API key is missing or wrong." : `The service answered HTTP ${status}.`;
  return new ApiError(status, error.code || `http_${status}`, error.message || fallback, error);
}

async function api(path, { method = "GET", form, json } = {}) {
  const headers = authHeaders();
  let body;
  if (form) body = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(`${API}${path}`, { method, headers, body });
  } catch {
    throw new ApiError(0, "unreachable", "The service is not reachable: is it running?");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, data);
  return data;
}

/** POST a form with upload progress (fetch reports none): the JSON answer, or an ApiError. */
function postWithProgress(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `${API}${path}`);
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      if (request.status >= 200 && request.status < 300) resolve(request.response);
      else reject(errorFrom(request.status, request.response));
    });
    request.addEventListener("error", () =>
      reject(new ApiError(0, "unreachable", "The service is not reachable: is it running?")),
    );
    request.send(form);
  });
}

/** Poll a job (each request held up to `wait` s by the server) until it is done or failed. */
async function followJob(jobId, wait, onUpdate, isCurrent = () => true) {
  for (;;) {
    const job = await api(`/jobs/${enc(jobId)}?wait=${wait}`);
    if (!isCurrent()) return null;
    onUpdate(job);
    if (FINAL.has(job.status)) return job;
  }
}

const imageUrl = (id, kind) => `${API}/images/${enc(id)}/${kind}`;
const artifactUrl = (version, name) =>
  `${API}/models/autoencoder/versions/${enc(version)}/${name}.png`;

/** Fetch an image the page needs as bytes (with the key, which reads may require). */
async function fetchBlob(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, "fetch_failed", `cannot load ${url}`);
  return response.blob();
}

/** An <img>; when the plain load fails (reads may need the key), retry once with the key. */
function setImage(img, url) {
  img.onerror = async () => {
    img.onerror = null;
    if (!apiKey()) return;
    try {
      const objectUrl = URL.createObjectURL(await fetchBlob(url));
      img.addEventListener("load", () => URL.revokeObjectURL(objectUrl), { once: true });
      img.src = objectUrl;
    } catch {
      // Leave the alt text: the image is gone or the key is wrong.
    }
  };
  img.src = url;
  return img;
}

// The label people read (metadata.label, else the file name); the full id, which the API and
// the CLI take, one click away, with the full-size image.
function labelled(image, className) {
  return el(
    "details",
    { class: `labelled ${className}`, "data-testid": "label" },
    el("summary", { title: "show the id" }, image.label || image.filename || image.id),
    el("code", { class: "image-id", "data-testid": "image-id" }, image.id),
    el(
      "a",
      { class: "image-open", href: imageUrl(image.id, "content"), target: "_blank", rel: "noopener" },
      "open the full image",
    ),
  );
}

/** A thumbnail that searches with its image when clicked. */
function searchableThumbnail(image) {
  const name = image.label || image.filename || image.id;
  const img = el("img", { alt: name, loading: "lazy", width: 80, height: 80 });
  setImage(img, imageUrl(image.id, "thumbnail"));
  const button = el(
    "button",
    {
      type: "button",
      class: "thumb",
      "data-testid": "search-by-image",
      title: `Search with “${name}”`,
      "aria-label": `Search with ${name}`,
    },
    img,
  );
  button.addEventListener("click", () => searchByImage(image));
  return button;
}

// ---------------------------------------------------------------------------------------------
// Messages, views and the address: #search, #catalogue, #model, #/search/<job id>

let messageTimer = null;

function showMessage(text, kind = "error") {
  const box = $("message");
  clearTimeout(messageTimer);
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
  if (text && kind === "info") messageTimer = setTimeout(() => (box.hidden = true), 12000);
}

const VIEWS = { search: openSearchAddress, catalogue: loadCatalogue, model: loadModels };

/** [view, job id of a shared search or null] from the address. */
function route() {
  const hash = window.location.hash;
  const shared = hash.match(/^#\/search\/([A-Za-z0-9._-]+)$/);
  if (shared) return ["search", shared[1]];
  const name = hash.replace(/^#\/?/, "");
  return [Object.hasOwn(VIEWS, name) ? name : "search", null];
}

const currentView = () => route()[0];

function showView() {
  const [name, jobId] = route();
  showMessage(""); // a message belongs to what was done in the view left behind
  for (const view of Object.keys(VIEWS)) $(`view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  VIEWS[name](jobId);
}

// ---------------------------------------------------------------------------------------------
// Search

let searchRun = 0; // a newer search makes the updates of an older one stale
let queryObjectUrl = null;
let lastQuery = null; // what the shown results were asked with: "Show more" asks again
let shownJob = null;
let startedJobId = null; // the job this page just started: its address needs no loading
let searchLimits = { default_k: 10, max_k: 100 };

/** Search with a photo's bytes (a file, the camera, a paste, a drop). */
function searchByFile(blob, name) {
  return runSearch({ kind: "file", blob, name: name || "pasted photo" });
}

function searchByUrl(url) {
  return runSearch({ kind: "url", url });
}

/** Search with a catalogue image (its stored copy is the query; it is left out of results). */
function searchByImage(image) {
  return runSearch({ kind: "image", id: image.id, name: image.label || image.filename || image.id });
}

function currentK() {
  const k = Number.parseInt($("k-input").value, 10);
  return Number.isFinite(k) && k > 0 ? Math.min(k, searchLimits.max_k) : searchLimits.default_k;
}

function currentFilter() {
  const label = $("label-filter").value.trim();
  return label ? { label } : null;
}

async function runSearch(query, k = currentK(), filter = currentFilter()) {
  const run = ++searchRun;
  const started = performance.now();
  lastQuery = { ...query, k, filter };
  if (currentView() !== "search") window.location.hash = "#search";
  showMessage("");
  showQuery(lastQuery);
  $("results").hidden = false;
  $("show-more").hidden = true;
  renderColumns(null);
  setSearchStatus(query.kind === "url" ? "Fetching the photo…" : "Sending…");

  const form = new FormData();
  if (query.kind === "file") form.append("file", query.blob, query.name);
  if (query.kind === "url") form.append("url", query.url);
  if (query.kind === "image") form.append("image_id", query.id);
  form.append("k", String(k));
  if (filter) form.append("filter", JSON.stringify(filter));
  try {
    const accepted = await api("/searches", { method: "POST", form });
    if (run !== searchRun) return;
    // The address names the job: copied, it opens these results (while the job is kept).
    startedJobId = accepted.job_id;
    history.pushState(null, "", `#/search/${accepted.job_id}`);
    showShareLink(accepted.job_id);
    setSearchStatus("Waiting for the methods…");
    await showJob(accepted.job_id, run, started);
  } catch (err) {
    if (run !== searchRun) return;
    setSearchStatus("");
    $("results").hidden = true;
    showMessage(err.message);
  }
}

async function showJob(jobId, run, started) {
  const job = await followJob(
    jobId,
    10,
    (update) => {
      shownJob = update;
      renderColumns(update);
      setSearchStatus(describeSearch(update, started));
    },
    () => run === searchRun,
  );
  if (!job) return;
  setSearchStatus(describeSearch(job, started), true);
  renderShowMore(job);
  checkTraining(); // a training someone started shows in the autoencoder column
}

/** #search shows the last results; #/search/<job id> loads that job (a shared link). */
async function openSearchAddress(jobId) {
  if (!jobId || jobId === startedJobId || (shownJob && shownJob.id === jobId)) return;
  const run = ++searchRun;
  $("results").hidden = false;
  $("show-more").hidden = true;
  renderColumns(null);
  setSearchStatus("Loading the search…");
  try {
    const first = await api(`/jobs/${enc(jobId)}`);
    if (run !== searchRun) return;
    if (first.kind !== "search") throw new ApiError(404, "not_a_search", "That link is not a search.");
    const params = first.params || {};
    lastQuery = queryOfParams(params);
    showQuery(lastQuery);
    showShareLink(jobId);
    await showJob(jobId, run, null);
  } catch (err) {
    if (run !== searchRun) return;
    setSearchStatus("");
    $("results").hidden = true;
    showMessage(
      err.status === 404
        ? "This search is no longer kept (searches are kept for a while only): search again."
        : err.message,
    );
  }
}

/** What a stored search was asked with, as far as the job tells (an uploaded photo is not kept). */
function queryOfParams(params) {
  const base = { k: params.k, filter: params.filter || null };
  if (params.image_id) return { ...base, kind: "image", id: params.image_id, name: params.image_id };
  if (params.url) return { ...base, kind: "url", url: params.url };
  return { ...base, kind: "stored" };
}

function showQuery(query) {
  const img = $("query-image");
  if (queryObjectUrl) URL.revokeObjectURL(queryObjectUrl);
  queryObjectUrl = null;
  img.hidden = false;
  img.onerror = null;
  if (query.kind === "file") {
    queryObjectUrl = URL.createObjectURL(query.blob);
    img.src = queryObjectUrl;
    $("query-caption").textContent = "Your photo";
    $("query-name").textContent = query.name;
  } else if (query.kind === "url") {
    img.referrerPolicy = "no-referrer";
    img.src = query.url;
    $("query-caption").textContent = "The photo at";
    $("query-name").textContent = query.url;
  } else if (query.kind === "image") {
    setImage(img, imageUrl(query.id, "content"));
    $("query-caption").textContent = "A catalogue photo";
    $("query-name").textContent = `${query.name} (left out of its own results)`;
  } else {
    img.hidden = true;
    img.removeAttribute("src");
    $("query-caption").textContent = "A shared search";
    $("query-name").textContent = "The photo it was asked with is not kept.";
  }
  const filter = query.filter && query.filter.label;
  $("query-filter").hidden = !filter;
  $("query-filter").textContent = filter ? `Only images labelled “${filter}”` : "";
}

function showShareLink(jobId) {
  $("query-link").hidden = false;
  $("share-link").href = `#/search/${jobId}`;
}

function setSearchStatus(text, finished = false) {
  $("search-status").hidden = !text;
  $("search-status").dataset.finished = finished ? "true" : "false";
  $("search-status-text").textContent = text;
  $("search-progress").hidden = finished;
}

function methodState(outcome) {
  if (outcome.reason === "not_trained") return "not trained yet";
  if (outcome.reason === "timeout") return "took too long";
  return { queued: "waiting", running: "searching", done: "done", failed: "failed" }[outcome.status];
}

function describeSearch(job, started) {
  const methods = Object.entries(job.methods).map(([name, m]) => `${name}: ${methodState(m)}`);
  if (!FINAL.has(job.status)) return `Searching… ${methods.join(" · ")}`;
  const took = started === null ? "" : ` in ${((performance.now() - started) / 1000).toFixed(1)} s`;
  return `Search ${job.status}${took} (${methods.join(" · ")})`;
}

function renderColumns(job) {
  const names = job ? [...Object.keys(job.methods), "fused"] : Object.keys(COLUMNS);
  $("columns").replaceChildren(...names.filter((n) => COLUMNS[n]).map((name) => column(name, job)));
  renderTrainingInColumn();
}

function column(name, job) {
  let outcome;
  if (job && name === "fused") {
    outcome = job.fused ? { status: job.status, ...job.fused } : { status: job.status };
  } else if (job) {
    outcome = job.methods[name];
  }
  const status = outcome ? outcome.status : "waiting";
  return el(
    "section",
    { class: `column column-${name}`, "data-testid": `column-${name}`, "data-status": status },
    el("h2", {}, METHOD_NAMES[name]),
    el("p", { class: "muted column-info" }, COLUMNS[name]),
    columnBody(name, outcome, job),
  );
}

function columnBody(name, outcome, job) {
  if (!outcome) return el("p", { class: "muted" }, "waiting…");
  if (outcome.status === "failed") {
    const errors = outcome.errors || [outcome.error || outcome.message || "the method failed"];
    return el("p", { class: "error", "data-testid": `error-${name}` }, errors.join("; "));
  }
  if (outcome.reason === "not_trained") {
    return el(
      "div",
      { class: "notice", "data-testid": `notice-${name}`, "data-reason": outcome.reason },
      el("strong", {}, "Not trained yet"),
      el(
        "p",
        {},
        "This method learns from your own catalogue and has no model yet. Train one in the ",
        el("a", { href: "#model" }, "Model view"),
        "; its results appear here once it is ready.",
      ),
    );
  }
  if (!FINAL.has(outcome.status) && !(outcome.results || []).length) {
    return el("p", { class: "muted" }, `${methodState(outcome)}…`);
  }
  const results = outcome.results || [];
  const shown = shownCounts(job);
  const direction =
    name === "fused" ? "score: higher is better" : outcome.higher_is_better === false
      ? "distance: lower is better"
      : "similarity: higher is better";
  const about = [outcome.model_version, direction];
  if (typeof outcome.index_size === "number") about.push(`${outcome.index_size} indexed`);
  const count =
    typeof outcome.total === "number"
      ? el(
          "p",
          { class: "count", "data-testid": `count-${name}` },
          `Showing ${results.length} of ${outcome.total}`,
        )
      : null;
  return el(
    "div",
    {},
    el("p", { class: "muted about", "data-testid": `about-${name}` }, about.filter(Boolean).join(" · ")),
    outcome.fit ? fusionWeights(outcome) : null,
    count,
    results.length
      ? el("ol", { class: "result-list" }, results.map((r) => resultItem(name, r, results[0], shown)))
      : el("p", { class: "muted" }, job && job.params.filter ? "no image matches the filter" : "no results (is the catalogue empty?)"),
  );
}

/** How many results each method's column shows (a fused rank beyond them is marked so). */
function shownCounts(job) {
  const counts = {};
  for (const [method, outcome] of Object.entries((job && job.methods) || {})) {
    counts[method] = (outcome.results || []).length;
  }
  return counts;
}

/** The fused list's weights and how they were obtained (fitted to the catalogue, or why not). */
function fusionWeights(fused) {
  const weights = Object.entries(fused.weights || {}).map(([m, w]) => `${m} ${w}`).join(" · ");
  return el(
    "p",
    { class: "muted about", "data-testid": "fusion-weights", "data-source": fused.fit.source },
    `weights ${weights} (${fused.fit.source}): ${fused.fit.reason}`,
  );
}

/** A score worded as what it is: a similarity, a distance, or the fused score relative to #1. */
function scoreText(name, result, top) {
  if (name === "vgg16") {
    return [
      `similarity ${formatNumber(result.score, 2)}`,
      "cosine similarity of VGG16 features: 1.00 is the same image, higher is more similar",
    ];
  }
  if (name === "autoencoder") {
    return [
      `distance ${formatNumber(result.score, 2)}`,
      "Euclidean distance between latent vectors: 0.00 is the same image, lower is more similar",
    ];
  }
  const relative = top && top.score > 0 ? result.score / top.score : null;
  return [
    `relative score ${formatNumber(relative, 2)}`,
    "the fused score divided by the first result's: 1.00 for the best, higher is more similar",
  ];
}

function resultItem(name, result, top, shown) {
  const [score, explained] = scoreText(name, result, top);
  const ranks = Object.entries(result.ranks || {}).map(([method, rank]) => {
    const beyond = rank > (shown[method] || 0);
    return el(
      "span",
      {
        class: beyond ? "source-rank beyond" : "source-rank",
        "data-testid": "source-rank",
        title: beyond ? `${method} ranked it #${rank}, beyond the ${shown[method] || 0} it shows` : null,
      },
      `${method} #${rank}`,
    );
  });
  const rankLine = [];
  ranks.forEach((span, i) => rankLine.push(...(i ? [" · ", span] : [span])));
  return el(
    "li",
    { class: "result", "data-testid": "result", "data-id": result.id, "data-rank": result.rank },
    searchableThumbnail(result),
    el(
      "div",
      { class: "result-text" },
      labelled(result, "result-label"),
      el(
        "span",
        { class: "result-score" },
        el("span", { class: "rank" }, `#${result.rank}`),
        " ",
        el("span", { class: "score", "data-testid": "score", title: explained }, score),
      ),
      rankLine.length ? el("span", { class: "muted ranks", "data-testid": "ranks" }, ...rankLine) : null,
    ),
  );
}

function renderShowMore(job) {
  const button = $("show-more");
  const lists = [...Object.values(job.methods), job.fused || {}];
  const more = lists.some(
    (o) => typeof o.total === "number" && (o.results || []).length < o.total,
  );
  const k = (job.params && job.params.k) || currentK();
  const canAsk = lastQuery && lastQuery.kind !== "stored" && k < searchLimits.max_k;
  button.hidden = !(more && canAsk);
  button.dataset.k = String(Math.min(searchLimits.max_k, k + searchLimits.default_k));
  button.textContent = `Show more (up to ${button.dataset.k} per method)`;
}

/** The same image lit up in every column while the pointer or the focus is on one of them. */
function highlightSameImage(event) {
  const item = event.target.closest && event.target.closest(".result");
  const id = event.type === "mouseover" || event.type === "focusin" ? item && item.dataset.id : null;
  for (const node of document.querySelectorAll("#columns .result.same-image")) {
    if (node.dataset.id !== id) node.classList.remove("same-image");
  }
  if (!id) return;
  for (const node of document.querySelectorAll("#columns .result")) {
    if (node.dataset.id === id) node.classList.add("same-image");
  }
}

/** The first image of a paste or drop (a file, or an image copied from a page). */
function imageFileOf(transfer) {
  if (!transfer) return null;
  for (const file of transfer.files || []) if (file.type.startsWith("image/")) return file;
  for (const item of transfer.items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function httpAddressOf(transfer) {
  const text = (transfer && (transfer.getData("text/uri-list") || transfer.getData("text/plain"))) || "";
  const first = text.split(/\r?\n/).find((line) => line && !line.startsWith("#")) || "";
  return /^https?:\/\/\S+$/i.test(first.trim()) ? first.trim() : null;
}

function setUpSearchForm() {
  for (const input of [$("file-input"), $("camera-input")]) {
    input.addEventListener("input", () => {
      if (input.files.length) searchByFile(input.files[0], input.files[0].name);
      input.value = ""; // choosing the same file again searches again
    });
  }
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("url-input").value.trim();
    if (url) searchByUrl(url);
  });
  $("show-more").addEventListener("click", () => {
    const k = Number($("show-more").dataset.k);
    $("k-input").value = String(k);
    if (lastQuery) runSearch(lastQuery, k, lastQuery.filter);
  });
  const columns = $("columns");
  for (const type of ["mouseover", "mouseout", "focusin", "focusout"]) {
    columns.addEventListener(type, highlightSameImage);
  }

  // Paste: an image searches (wherever the focus is, unless it is a text field and the
  // clipboard holds text); a web address pasted outside a text field searches by URL.
  document.addEventListener("paste", (event) => {
    const file = imageFileOf(event.clipboardData);
    const typing = event.target.matches && event.target.matches("input, textarea");
    if (file) {
      event.preventDefault();
      searchByFile(file, file.name && file.name !== "image.png" ? file.name : "pasted photo");
      return;
    }
    const url = !typing && httpAddressOf(event.clipboardData);
    if (url) {
      event.preventDefault();
      $("url-input").value = url;
      searchByUrl(url);
    }
  });

  // Drop anywhere on the page: a photo searches; so does an image dragged from another page
  // (its address). Over the "Add photos" zone of the catalogue, files are added instead.
  const overlay = $("drop-overlay");
  let depth = 0;
  window.addEventListener("dragenter", (event) => {
    if (!carriesSomething(event)) return;
    depth += 1;
    overlay.hidden = Boolean(event.target.closest && event.target.closest(".add-photos"));
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault(); // a photo dropped on the page must not replace it
    depth = 0;
    overlay.hidden = true;
    const transfer = event.dataTransfer;
    if (event.target.closest && event.target.closest(".add-photos")) {
      addPhotos([...transfer.files]);
      return;
    }
    const file = imageFileOf(transfer);
    if (file) searchByFile(file, file.name);
    else if (httpAddressOf(transfer)) searchByUrl(httpAddressOf(transfer));
    else if (transfer.files.length) showMessage("That is not an image: drop a photo to search with it.");
  });
}

function carriesSomething(event) {
  const types = (event.dataTransfer && event.dataTransfer.types) || [];
  return [...types].some((t) => t === "Files" || t === "text/uri-list");
}

// ---------------------------------------------------------------------------------------------
// Catalogue: pages of thumbnails, adding photos with progress, deleting

let cataloguePage = 0;
let catalogueTotal = 0;

async function loadCatalogue() {
  try {
    const [list, stats] = await Promise.all([
      api(`/images?offset=${cataloguePage * PAGE_SIZE}&limit=${PAGE_SIZE}`),
      api("/stats"),
    ]);
    catalogueTotal = list.total;
    const pages = Math.max(1, Math.ceil(list.total / PAGE_SIZE));
    if (cataloguePage >= pages) {
      cataloguePage = pages - 1; // the last page emptied by deletes
      return loadCatalogue();
    }
    renderStats(stats);
    rememberLabels(list.images);
    $("catalogue-grid").replaceChildren(
      ...(list.images.length
        ? list.images.map(catalogueItem)
        : [el("li", { class: "muted" }, "The catalogue is empty: add photos above.")]),
    );
    $("page-info").textContent = `Page ${cataloguePage + 1} of ${pages}`;
    $("page-prev").disabled = cataloguePage === 0;
    $("page-next").disabled = cataloguePage >= pages - 1;
  } catch (err) {
    showMessage(err.message);
  }
}

function renderStats(stats) {
  if (stats.search_limits) searchLimits = stats.search_limits;
  const parts = [el("strong", { "data-testid": "count-catalogue" }, `${stats.catalogue_size} images`)];
  for (const [method, info] of Object.entries(stats.methods)) {
    const text = info.model_version
      ? `${info.index_size} indexed (${info.model_version})`
      : "no model yet";
    parts.push(" · ", `${method}: `, el("span", { "data-testid": `count-${method}` }, text));
  }
  $("catalogue-stats").replaceChildren(...parts);
}

/** Labels seen in the catalogue, offered by the search's label field. */
function rememberLabels(images) {
  const options = $("label-options");
  const known = new Set([...options.options].map((o) => o.value));
  for (const image of images) {
    const label = image.metadata && image.metadata.label;
    if (typeof label === "string" && !known.has(label)) {
      known.add(label);
      options.append(el("option", { value: label }));
    }
  }
}

function catalogueItem(image) {
  const find = el("button", { type: "button", "data-testid": "find-similar" }, "Find similar");
  find.addEventListener("click", () => searchByImage(image));
  const remove = el("button", { type: "button", class: "danger", "data-testid": "delete" }, "Delete");
  remove.addEventListener("click", () => deleteImage(image));
  return el(
    "li",
    { class: "card", "data-testid": "catalogue-item", "data-id": image.id },
    searchableThumbnail(image),
    labelled(image, "card-label"),
    el("div", { class: "card-actions" }, find, remove),
  );
}

function needKey(what) {
  if (apiKey()) return false;
  showMessage(`Type the API key (top right) to ${what}.`);
  $("api-key").focus();
  return true;
}

async function deleteImage(image) {
  if (needKey("delete images")) return;
  const name = image.label || image.filename || image.id;
  if (!window.confirm(`Delete “${name}” from the catalogue and from every index?`)) return;
  try {
    await api(`/images/${enc(image.id)}`, { method: "DELETE" });
    showMessage(`Deleted ${name}.`, "info");
  } catch (err) {
    showMessage(err.message);
  }
  loadCatalogue();
}

/** Add photos, one request each: every file has its own progress, and a refused one says why. */
async function addPhotos(files) {
  if (!files.length || needKey("add photos")) return;
  const label = $("add-label").value.trim();
  const rows = files.map((file) => uploadRow(file));
  $("upload-list").replaceChildren(...rows.map((r) => r.node));
  let next = 0;
  const worker = async () => {
    while (next < rows.length) await uploadOne(rows[next++], label);
  };
  await Promise.all(Array.from({ length: Math.min(UPLOADS_AT_ONCE, rows.length) }, worker));
  const added = rows.filter((r) => r.state === "done").length;
  const rejected = rows.filter((r) => r.state === "rejected").length;
  showMessage(
    `${plural(added, "photo")} added and searchable` + (rejected ? `; ${rejected} refused (see the list)` : "") + ".",
    rejected && !added ? "error" : "info",
  );
  if (currentView() === "catalogue") loadCatalogue();
}

function uploadRow(file) {
  const bar = el("progress", { max: 1, value: 0 });
  const text = el("span", { class: "upload-state", "data-testid": "upload-state" }, "waiting");
  const node = el(
    "li",
    { class: "upload", "data-testid": "upload-row", "data-name": file.name, "data-state": "waiting" },
    el("span", { class: "upload-name" }, file.name),
    bar,
    text,
  );
  const row = { file, node, bar, state: "waiting" };
  row.set = (state, words, progress) => {
    row.state = state;
    node.dataset.state = state;
    text.textContent = words;
    if (progress === null) bar.removeAttribute("value");
    else if (progress !== undefined) bar.value = progress;
    bar.hidden = state === "done" || state === "rejected";
  };
  return row;
}

async function uploadOne(row, label) {
  const form = new FormData();
  form.append("file", row.file, row.file.name);
  if (label) form.append("metadata", JSON.stringify({ label }));
  row.set("uploading", "uploading 0%", 0);
  try {
    const accepted = await postWithProgress("/images", form, (share) =>
      row.set("uploading", `uploading ${Math.round(share * 100)}%`, share),
    );
    const refused = accepted.rejected[0];
    if (refused) {
      row.set("rejected", `refused: ${refused.message}`);
      return;
    }
    const known = accepted.images[0] && !accepted.images[0].created;
    row.set("indexing", "making it searchable…", null);
    const job = await followJob(accepted.job_id, 10, () => {});
    const failed = Object.entries(job.methods).filter(([, m]) => m.status === "failed");
    if (failed.length) {
      row.set("rejected", `stored, but ${failed.map(([name]) => name).join(" and ")} could not index it`);
    } else {
      row.set("done", known ? "already in the catalogue" : "added, searchable", 1);
    }
  } catch (err) {
    row.set("rejected", `refused: ${err.message}`);
  }
}

function setUpCatalogue() {
  $("page-prev").addEventListener("click", () => {
    cataloguePage = Math.max(0, cataloguePage - 1);
    loadCatalogue();
  });
  $("page-next").addEventListener("click", () => {
    if ((cataloguePage + 1) * PAGE_SIZE < catalogueTotal) cataloguePage += 1;
    loadCatalogue();
  });
  const input = $("add-input");
  input.addEventListener("input", () => {
    addPhotos([...input.files]);
    input.value = "";
  });
}

// ---------------------------------------------------------------------------------------------
// Model: autoencoder versions, the running training (whoever started it), activation

let shownVersion = null;
let knownVersions = null; // versions listed last time: a new one is shown when it appears
const training = { jobId: null, job: null, finished: new Set() };

async function loadModels() {
  let models;
  try {
    models = await api("/models/autoencoder");
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const summary = models.active
    ? ["Active version: ", el("code", { "data-testid": "active-version" }, models.active)]
    : ["No autoencoder model yet: train one and autoencoder searches start answering."];
  if (models.building.length) summary.push(` · being built: ${models.building.join(", ")}`);
  $("model-summary").replaceChildren(...summary);

  const known = models.versions.map((v) => v.version);
  const fresh = knownVersions ? known.filter((v) => !knownVersions.includes(v)) : [];
  knownVersions = known;
  if (fresh.length) shownVersion = fresh[0]; // a new training's version: show its curves
  if (!known.includes(shownVersion)) shownVersion = models.active || known[0] || null;
  $("versions-body").replaceChildren(
    ...(models.versions.length
      ? models.versions.map((v) => versionRow(v, models.building.includes(v.version)))
      : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No versions yet."))]),
  );
  showArtifacts(models.versions.find((v) => v.version === shownVersion) || null);
  if (models.training_job_id) followTraining(models.training_job_id);
  else renderTraining();
}

function versionStatus(version, building) {
  if (version.active) return "active";
  if (building) return "building";
  if (version.activation && version.activation.activated === false) return "candidate";
  return "";
}

function versionRow(version, building) {
  const show = el("button", { type: "button", "data-testid": "show-artifacts" }, "Curves");
  show.addEventListener("click", () => showArtifacts(version));
  const actions = el("div", { class: "actions" }, show);
  if (!version.active && !building) {
    const activate = el("button", { type: "button", "data-testid": "activate" }, "Activate");
    activate.addEventListener("click", () => activateVersion(version.version));
    actions.append(activate);
  }
  const status = versionStatus(version, building);
  const created =
    typeof version.created_at === "number" ? new Date(version.created_at * 1000).toLocaleString() : "–";
  const why = status === "candidate" ? version.activation.reason : null;
  return el(
    "tr",
    {
      "data-testid": "version-row",
      "data-version": version.version,
      "data-active": String(version.active),
      "data-status": status,
      "aria-selected": String(version.version === shownVersion),
    },
    el("td", { "data-label": "Version" }, el("code", {}, version.version)),
    el(
      "td",
      { "data-label": "Status" },
      status && el("span", { class: `badge badge-${status}`, "data-testid": `badge-${status}`, title: why }, status),
      why && el("span", { class: "muted why", "data-testid": "candidate-reason" }, why),
    ),
    el("td", { class: "number", "data-label": "Index size" }, String(version.index_size)),
    el("td", { class: "number", "data-label": "Best val. loss" }, formatNumber(version.best_val_loss)),
    el("td", { class: "number", "data-label": "Epochs" }, version.epochs_run ?? "–"),
    el("td", { "data-label": "Trained" }, created),
    el("td", { class: "row-actions" }, actions),
  );
}

function showArtifacts(version) {
  shownVersion = version ? version.version : null;
  $("artifacts").hidden = !version;
  for (const row of document.querySelectorAll('[data-testid="version-row"]')) {
    row.setAttribute("aria-selected", String(row.dataset.version === shownVersion));
  }
  if (!version) return;
  $("artifacts-title").textContent = `Version ${version.version}`;
  setImage($("loss-curve"), artifactUrl(version.version, "loss-curve"));
  const preview = $("preview");
  preview.style.width = "";
  preview.onload = () => (preview.style.width = `${preview.naturalWidth * 3}px`); // tiles are tiny
  setImage(preview, artifactUrl(version.version, "preview"));
  const size = version.input_size ? `${version.input_size}×${version.input_size} pixels` : "its input size";
  const grid = version.input_size ? `${version.input_size / 16}×${version.input_size / 16}` : "small";
  const latent = version.latent_dim ? `${version.latent_dim} numbers` : "a short vector";
  $("preview-caption").textContent =
    `Top row: photos this version never trained on, shrunk to ${size}. Bottom row: what its ` +
    `decoder rebuilds from the encoder's ${grid} grid of features. Blurry colour patches are ` +
    "expected from so small a model: it keeps colours and rough layout, not detail. " +
    `Searches compare a vector of ${latent} pooled from that grid, not these pictures; the ` +
    "autoencoder's search results show how well that works.";
}

async function activateVersion(version) {
  if (needKey("activate a version")) return;
  try {
    const answer = await api(`/models/autoencoder/versions/${enc(version)}/activate`, {
      method: "POST",
    });
    showMessage(`Autoencoder searches now use ${answer.active}.`, "info");
  } catch (err) {
    showMessage(err.message);
  }
  loadModels();
}

async function startTraining(event) {
  event.preventDefault();
  if (needKey("train a model")) return;
  const epochs = $("train-epochs").value;
  try {
    const accepted = await api("/models/autoencoder/trainings", {
      method: "POST",
      json: epochs ? { epochs: Number(epochs) } : {},
    });
    followTraining(accepted.job_id);
  } catch (err) {
    if (err.code === "training_in_progress" && err.details.job_id) {
      showMessage("A training is already running: showing its progress.", "info");
      followTraining(err.details.job_id);
    } else {
      showMessage(err.message);
    }
  }
}

/** Look for a running training (any client's, or the catalogue's growth) and follow it. */
async function checkTraining() {
  try {
    const models = await api("/models/autoencoder");
    if (models.training_job_id) followTraining(models.training_job_id);
  } catch {
    // The Model view reports errors; the search column simply shows no training.
  }
}

async function followTraining(jobId) {
  // A finished training's lease may outlive its job's end for a moment: follow each once.
  if (training.jobId === jobId || training.finished.has(jobId)) return;
  training.jobId = jobId;
  training.job = null;
  renderTraining();
  try {
    const job = await followJob(
      jobId,
      2,
      (update) => {
        training.job = update;
        renderTraining();
      },
      () => training.jobId === jobId,
    );
    if (job) {
      training.finished.add(jobId);
      announceTraining(job);
    }
  } catch (err) {
    if (err.status !== 404) showMessage(err.message); // a 404: the job expired long ago
  } finally {
    if (training.jobId === jobId) training.jobId = null;
    renderTraining();
    if (currentView() === "model") loadModels();
  }
}

function announceTraining(job) {
  const outcome = job.methods.autoencoder;
  if (job.status !== "done") {
    showMessage(`The training failed: ${outcome.error || outcome.message || "see the worker's log"}`);
    return;
  }
  const activation = outcome.activation;
  if (activation && activation.activated === false) {
    showMessage(
      `Trained ${outcome.version}, kept as a candidate, not active: ${activation.reason}. ` +
        "Activate it by hand in the versions table if you prefer it.",
      "info",
    );
  } else {
    const why = activation && activation.check ? ` (${activation.reason})` : "";
    showMessage(`Trained ${outcome.version}: it now answers autoencoder searches${why}.`, "info");
  }
}

/** A training's state in words: epoch, losses and time left while it runs. */
function trainingText(job) {
  const outcome = (job && job.methods.autoencoder) || { status: "queued" };
  const progress = outcome.progress || {};
  if (outcome.status === "done") {
    const state = outcome.activation && outcome.activation.activated === false ? "candidate" : "active";
    return [
      `Done: ${outcome.version} (${state}; best validation loss ${formatNumber(outcome.best_val_loss)}, ${outcome.epochs_run} epochs)`,
      [1, 1],
    ];
  }
  if (outcome.status === "failed") {
    return [`Failed: ${outcome.error || outcome.message || "see the worker's log"}`, [0, 1]];
  }
  if (progress.phase === "training") {
    return [
      `Epoch ${progress.epoch} of at most ${progress.epochs} · loss ${formatNumber(progress.loss)}` +
        ` · validation loss ${formatNumber(progress.val_loss)} · about ${formatDuration(progress.eta_seconds)} left`,
      [progress.epoch, progress.epochs],
    ];
  }
  if (progress.phase === "embedding") {
    return [`Indexing the catalogue with ${progress.version}: ${progress.embedded} of ${progress.images}`, [progress.embedded, progress.images]];
  }
  if (progress.phase === "checking") {
    return ["Comparing the new version with the active one…", null];
  }
  if (progress.phase === "loading") return [`Loading ${progress.images} catalogue images…`, null];
  return [outcome.status === "queued" ? "Queued: waiting for the training worker…" : "Starting…", null];
}

function setProgress(bar, fraction) {
  if (!fraction) {
    bar.removeAttribute("value");
    return;
  }
  bar.max = Math.max(1, fraction[1]);
  bar.value = fraction[0];
}

function trainingPhase(job) {
  const outcome = (job && job.methods.autoencoder) || { status: "queued" };
  return (outcome.progress && outcome.progress.phase) || outcome.status;
}

/** The Model view's panel and the autoencoder column show the same training. */
function renderTraining() {
  const running = Boolean(training.jobId);
  const [text, fraction] = trainingText(training.job);
  $("train-button").disabled = running;
  if (running || training.job) {
    $("training").hidden = false;
    $("training").dataset.phase = trainingPhase(training.job);
    $("training-text").textContent = text;
    setProgress($("training-progress"), fraction);
    $("training-progress").hidden = !running;
  }
  renderTrainingInColumn();
}

function renderTrainingInColumn() {
  const column = document.querySelector('[data-testid="column-autoencoder"]');
  if (!column) return;
  let line = column.querySelector('[data-testid="column-training"]');
  if (!training.jobId) {
    if (line) line.remove();
    return;
  }
  const [text, fraction] = trainingText(training.job);
  const bar = el("progress", {});
  setProgress(bar, fraction);
  const content = [el("strong", {}, "A new version is training"), el("span", {}, text), bar];
  if (!line) {
    line = el("div", { class: "column-training", "data-testid": "column-training" });
    column.querySelector(".column-info").after(line);
  }
  line.dataset.phase = trainingPhase(training.job);
  line.replaceChildren(...content);
}

// ---------------------------------------------------------------------------------------------
// The API key (kept for this tab only) and the colour scheme

function setUpApiKey() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("input", () => {
    const key = input.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  });
}

function systemPrefersDark() {
  return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
}

/** The scheme chosen with the toggle, else the system's (prefers-color-scheme). */
function applyTheme() {
  const chosen = localStorage.getItem(THEME_STORAGE);
  const dark = chosen ? chosen === "dark" : systemPrefersDark();
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  const toggle = $("theme-toggle");
  toggle.setAttribute("aria-pressed", String(dark));
  toggle.textContent = dark ? "Light mode" : "Dark mode";
}

function setUpTheme() {
  applyTheme();
  $("theme-toggle").addEventListener("click", () => {
    const dark = $("theme-toggle").getAttribute("aria-pressed") === "true";
    localStorage.setItem(THEME_STORAGE, dark ? "light" : "dark");
    applyTheme();
  });
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTheme();
  setUpApiKey();
  setUpSearchForm();
  setUpCatalogue();
  $("train-form").addEventListener("submit", startTraining);
  window.addEventListener("hashchange", showView);
  showView();
  api("/stats")
    .then((stats) => {
      if (stats.search_limits) searchLimits = stats.search_limits;
      $("k-input").max = String(searchLimits.max_k);
    })
    .catch(() => {});
  checkTraining();
});
