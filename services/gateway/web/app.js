// The web page: search by photo, browse and delete catalogue images, train and switch
// autoencoder versions. Plain DOM code, no build step. Every text that comes from the API or
// the user goes into the page as text (textContent / text nodes), never as HTML.
"use strict";

const API = "api/v1";
const KEY_STORAGE = "imgsearch.apiKey";
const TRAINING_STORAGE = "imgsearch.trainingJob";
const PAGE_SIZE = 24;
const FINAL = new Set(["done", "failed"]);
const COLUMNS = {
  vgg16: "VGG16 ImageNet features, cosine similarity",
  autoencoder: "Autoencoder latent vectors, Euclidean distance",
  fused: "Both rankings combined (weighted reciprocal rank fusion)",
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
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
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
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || `the service answered HTTP ${response.status}`,
      error,
    );
  }
  return data;
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
// the CLI take, one click away.
function labelled(image, className) {
  return el(
    "details",
    { class: `labelled ${className}`, "data-testid": "label" },
    el("summary", { title: "show the id" }, image.label || image.filename || image.id),
    el("code", { class: "image-id", "data-testid": "image-id" }, image.id),
  );
}

function thumbnail(id) {
  const img = el("img", { alt: id, loading: "lazy", width: 80, height: 80 });
  const link = el("a", { href: imageUrl(id, "content"), target: "_blank", rel: "noopener" }, img);
  setImage(img, imageUrl(id, "thumbnail"));
  return link;
}

// ---------------------------------------------------------------------------------------------
// Messages and views

let messageTimer = null;

function showMessage(text, kind = "error") {
  const box = $("message");
  clearTimeout(messageTimer);
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
  if (text && kind === "info") messageTimer = setTimeout(() => (box.hidden = true), 8000);
}

const VIEWS = { search: () => {}, catalogue: loadCatalogue, model: loadModels };

function currentView() {
  const name = window.location.hash.slice(1);
  return Object.hasOwn(VIEWS, name) ? name : "search";
}

function showView() {
  const name = currentView();
  showMessage(""); // a message belongs to what was done in the view left behind
  for (const view of Object.keys(VIEWS)) $(`view-${view}`).hidden = view !== name;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  VIEWS[name]();
}

// ---------------------------------------------------------------------------------------------
// Search

let searchRun = 0; // a newer search makes the updates of an older one stale
let queryObjectUrl = null;

async function search(blob, name) {
  const run = ++searchRun;
  const started = performance.now();
  if (currentView() !== "search") window.location.hash = "#search";
  showMessage("");
  if (queryObjectUrl) URL.revokeObjectURL(queryObjectUrl);
  queryObjectUrl = URL.createObjectURL(blob);
  $("query-image").src = queryObjectUrl;
  $("query-name").textContent = name;
  $("results").hidden = false;
  renderColumns(null);
  setSearchStatus("Uploading…");

  const form = new FormData();
  form.append("file", blob, name);
  form.append("k", $("k-input").value || "10");
  try {
    const accepted = await api("/searches", { method: "POST", form });
    setSearchStatus("Queued…");
    const job = await followJob(
      accepted.job_id,
      10,
      (update) => {
        renderColumns(update);
        setSearchStatus(describeSearch(update, started));
      },
      () => run === searchRun,
    );
    if (job) setSearchStatus(describeSearch(job, started), true);
  } catch (err) {
    if (run !== searchRun) return;
    setSearchStatus("");
    $("results").hidden = true;
    showMessage(err.message);
  }
}

function setSearchStatus(text, finished = false) {
  $("search-status").hidden = !text;
  $("search-status").dataset.finished = finished ? "true" : "false";
  $("search-status-text").textContent = text;
  $("search-progress").hidden = finished;
}

function describeSearch(job, started) {
  const methods = Object.entries(job.methods).map(([name, m]) => `${name}: ${m.status}`);
  if (!FINAL.has(job.status)) return `Searching… ${methods.join(" · ")}`;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  return `Search ${job.status} in ${seconds} s (${methods.join(" · ")})`;
}

function renderColumns(job) {
  $("columns").replaceChildren(...Object.keys(COLUMNS).map((name) => column(name, job)));
}

function column(name, job) {
  let outcome;
  if (job && name === "fused") {
    outcome = { status: job.status, ...job.fused };
  } else if (job) {
    outcome = job.methods[name];
  }
  const status = outcome ? outcome.status : "waiting";
  return el(
    "section",
    { class: `column column-${name}`, "data-testid": `column-${name}`, "data-status": status },
    el("h2", {}, name),
    el("p", { class: "muted column-info" }, COLUMNS[name]),
    columnBody(name, outcome),
  );
}

function columnBody(name, outcome) {
  if (!outcome) return el("p", { class: "muted" }, "waiting…");
  if (outcome.status === "failed") {
    const errors = outcome.errors || [outcome.error || "the method failed"];
    return el("p", { class: "error", "data-testid": `error-${name}` }, errors.join("; "));
  }
  if (outcome.reason) {
    const notice = el(
      "div",
      { class: "notice", "data-testid": `notice-${name}`, "data-reason": outcome.reason },
      el("strong", {}, outcome.reason === "not_trained" ? "Not trained yet" : outcome.reason),
      el("p", {}, outcome.message || ""),
    );
    if (outcome.reason === "not_trained") {
      notice.append(el("p", {}, "Train a model in the ", el("a", { href: "#model" }, "Model view"), "."));
    }
    return notice;
  }
  if (!FINAL.has(outcome.status) && !(outcome.results || []).length) {
    return el("p", { class: "muted" }, `${outcome.status}…`);
  }
  const results = outcome.results || [];
  const direction = outcome.higher_is_better === false ? "lower is better" : "higher is better";
  const about = [outcome.model_version, `score: ${direction}`];
  if (typeof outcome.index_size === "number") about.push(`${outcome.index_size} indexed`);
  return el(
    "div",
    {},
    el("p", { class: "muted about", "data-testid": `about-${name}` }, about.filter(Boolean).join(" · ")),
    outcome.fit ? fusionWeights(outcome) : null,
    results.length
      ? el("ol", { class: "result-list" }, results.map((r) => resultItem(r, direction)))
      : el("p", { class: "muted" }, "no results (is the catalogue empty?)"),
  );
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

function resultItem(result, direction) {
  const ranks = result.ranks
    ? Object.entries(result.ranks).map(([method, rank]) => `${method} #${rank}`).join(" · ")
    : null;
  return el(
    "li",
    { class: "result", "data-testid": "result", "data-id": result.id, "data-rank": result.rank },
    thumbnail(result.id),
    el(
      "div",
      { class: "result-text" },
      labelled(result, "result-label"),
      el(
        "span",
        { class: "result-score" },
        el("span", { class: "rank" }, `#${result.rank}`),
        " ",
        el("span", { class: "score", title: `score (${direction})` }, formatNumber(result.score)),
      ),
      ranks && el("span", { class: "muted ranks" }, ranks),
    ),
  );
}

function setUpSearchForm() {
  const input = $("file-input");
  input.addEventListener("input", () => {
    if (input.files.length) search(input.files[0], input.files[0].name);
    input.value = ""; // choosing the same file again searches again
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) search(file, file.name);
  });
  // A photo dropped beside the zone must not replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// ---------------------------------------------------------------------------------------------
// Catalogue

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
    $("catalogue-grid").replaceChildren(
      ...(list.images.length
        ? list.images.map(catalogueItem)
        : [el("li", { class: "muted" }, "The catalogue is empty: add images with the API or imgsearch.")]),
    );
    $("page-info").textContent = `Page ${cataloguePage + 1} of ${pages}`;
    $("page-prev").disabled = cataloguePage === 0;
    $("page-next").disabled = cataloguePage >= pages - 1;
  } catch (err) {
    showMessage(err.message);
  }
}

function renderStats(stats) {
  const parts = [el("strong", { "data-testid": "count-catalogue" }, `${stats.catalogue_size} images`)];
  for (const [method, info] of Object.entries(stats.methods)) {
    const text = info.model_version
      ? `${info.index_size} indexed (${info.model_version})`
      : "no model yet";
    parts.push(" · ", `${method}: `, el("span", { "data-testid": `count-${method}` }, text));
  }
  $("catalogue-stats").replaceChildren(...parts);
}

function catalogueItem(image) {
  const find = el("button", { type: "button", "data-testid": "find-similar" }, "Find similar");
  find.addEventListener("click", () => searchCatalogueImage(image.id));
  const remove = el("button", { type: "button", class: "danger", "data-testid": "delete" }, "Delete");
  remove.addEventListener("click", () => deleteImage(image.id));
  return el(
    "li",
    { class: "card", "data-testid": "catalogue-item", "data-id": image.id },
    thumbnail(image.id),
    labelled(image, "card-label"),
    el("div", { class: "card-actions" }, find, remove),
  );
}

async function searchCatalogueImage(id) {
  try {
    search(await fetchBlob(imageUrl(id, "content")), id);
  } catch (err) {
    showMessage(err.message);
  }
}

async function deleteImage(id) {
  if (!apiKey()) {
    showMessage("Type the API key (top right) to delete images.");
    $("api-key").focus();
    return;
  }
  if (!window.confirm(`Delete “${id}” from the catalogue and from every index?`)) return;
  try {
    await api(`/images/${enc(id)}`, { method: "DELETE" });
    showMessage(`Deleted ${id}.`, "info");
  } catch (err) {
    showMessage(err.message);
  }
  loadCatalogue();
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
}

// ---------------------------------------------------------------------------------------------
// Model: autoencoder versions, training progress, activation

let shownVersion = null;
let followedTraining = null;

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

  $("versions-body").replaceChildren(
    ...(models.versions.length
      ? models.versions.map((v) => versionRow(v, models.building.includes(v.version)))
      : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No versions yet."))]),
  );
  const known = models.versions.map((v) => v.version);
  if (!known.includes(shownVersion)) shownVersion = models.active || known[0] || null;
  showArtifacts(shownVersion);
}

function versionRow(version, building) {
  const show = el("button", { type: "button", "data-testid": "show-artifacts" }, "Curves");
  show.addEventListener("click", () => showArtifacts(version.version));
  const actions = el("div", { class: "actions" }, show);
  if (!version.active && !building) {
    const activate = el("button", { type: "button", "data-testid": "activate" }, "Activate");
    activate.addEventListener("click", () => activateVersion(version.version));
    actions.append(activate);
  }
  const status = version.active ? "active" : building ? "building" : "";
  const created =
    typeof version.created_at === "number" ? new Date(version.created_at * 1000).toLocaleString() : "–";
  return el(
    "tr",
    {
      "data-testid": "version-row",
      "data-version": version.version,
      "data-active": String(version.active),
    },
    el("td", {}, el("code", {}, version.version)),
    el("td", {}, status && el("span", { class: `badge badge-${status}`, "data-testid": `badge-${status}` }, status)),
    el("td", { class: "number" }, String(version.index_size)),
    el("td", { class: "number" }, formatNumber(version.best_val_loss)),
    el("td", { class: "number" }, version.epochs_run ?? "–"),
    el("td", {}, created),
    el("td", {}, actions),
  );
}

function showArtifacts(version) {
  shownVersion = version;
  $("artifacts").hidden = !version;
  if (!version) return;
  $("artifacts-title").textContent = `Version ${version}`;
  setImage($("loss-curve"), artifactUrl(version, "loss-curve"));
  setImage($("preview"), artifactUrl(version, "preview"));
}

async function activateVersion(version) {
  if (!apiKey()) {
    showMessage("Type the API key (top right) to activate a version.");
    $("api-key").focus();
    return;
  }
  try {
    const answer = await api(`/models/autoencoder/versions/${enc(version)}/activate`, {
      method: "POST",
    });
    showMessage(`Searches now use ${answer.active}.`, "info");
  } catch (err) {
    showMessage(err.message);
  }
  loadModels();
}

async function startTraining(event) {
  event.preventDefault();
  if (!apiKey()) {
    showMessage("Type the API key (top right) to train a model.");
    $("api-key").focus();
    return;
  }
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

async function followTraining(jobId) {
  if (followedTraining === jobId) return;
  followedTraining = jobId;
  localStorage.setItem(TRAINING_STORAGE, jobId);
  $("train-button").disabled = true;
  $("training").hidden = false;
  $("training-text").textContent = "Queued: waiting for the training worker…";
  try {
    const job = await followJob(jobId, 2, renderTraining, () => followedTraining === jobId);
    const outcome = job.methods.autoencoder;
    if (job.status === "done") {
      showMessage(`Trained ${outcome.version}: it now answers autoencoder searches.`, "info");
    } else {
      showMessage(`The training failed: ${outcome.error || "see the worker's log"}`);
    }
  } catch (err) {
    if (err.status === 404) $("training").hidden = true; // expired long ago
    else showMessage(err.message);
  } finally {
    followedTraining = null;
    localStorage.removeItem(TRAINING_STORAGE);
    $("train-button").disabled = false;
    if (currentView() === "model") loadModels();
  }
}

function renderTraining(job) {
  const outcome = job.methods.autoencoder || { status: job.status };
  const progress = outcome.progress || {};
  const bar = $("training-progress");
  const determinate = (value, max) => {
    bar.max = Math.max(1, max);
    bar.value = value;
  };
  let text;
  if (outcome.status === "done") {
    text = `Done: ${outcome.version} (best validation loss ${formatNumber(outcome.best_val_loss)}, ${outcome.epochs_run} epochs)`;
    determinate(1, 1);
  } else if (outcome.status === "failed") {
    text = `Failed: ${outcome.error || "see the worker's log"}`;
    determinate(0, 1);
  } else if (progress.phase === "training") {
    text =
      `Epoch ${progress.epoch} of at most ${progress.epochs} · loss ${formatNumber(progress.loss)}` +
      ` · validation loss ${formatNumber(progress.val_loss)} · about ${formatDuration(progress.eta_seconds)} left`;
    determinate(progress.epoch, progress.epochs);
  } else if (progress.phase === "embedding") {
    text = `Indexing the catalogue with ${progress.version}: ${progress.embedded} of ${progress.images}`;
    determinate(progress.embedded, progress.images);
  } else if (progress.phase === "loading") {
    text = `Loading ${progress.images} catalogue images…`;
    bar.removeAttribute("value");
  } else {
    text = outcome.status === "queued" ? "Queued: waiting for the training worker…" : "Starting…";
    bar.removeAttribute("value");
  }
  $("training").dataset.phase = progress.phase || outcome.status;
  $("training-text").textContent = text;
}

// ---------------------------------------------------------------------------------------------

function setUpApiKey() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("input", () => {
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpApiKey();
  setUpSearchForm();
  setUpCatalogue();
  $("train-form").addEventListener("submit", startTraining);
  window.addEventListener("hashchange", showView);
  showView();
  const training = localStorage.getItem(TRAINING_STORAGE);
  if (training) followTraining(training);
});
