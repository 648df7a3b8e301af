// The latentgram page: sample from the run, look at a sample beside its nearest training images.
// Plain JS over the /v1 API (service/api/routes/); no build step, nothing from other hosts.
"use strict";

const KEY_STORAGE = "latentgram.apiKey";
const PAGE_MAX_N = 64; // the grid stays readable; the server's own limit is info.limits.max_n
const NEAREST_K = 5;

const $ = (id) => document.getElementById(id);

const state = {
  info: null,
  samples: [], // the last /v1/sample response's samples
  sampleRequest: null, // the request body that produced them
  latentShape: null,
  selected: null,
  nearestToken: 0, // a later click wins over a slower earlier /v1/nearest
  objectUrls: new Map(), // container element → object URLs to revoke when it is redrawn
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- talking to the server --------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function detailOf(response) {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
  } catch (_) {
    // not JSON: fall through to the text or the status line
  }
  return text.trim() || `${response.status} ${response.statusText}`;
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, `could not reach the server (${err.message})`);
  }
  if (!response.ok) {
    const detail = await detailOf(response);
    if (response.status === 401) askForKey(key ? "The server refused this key." : detail);
    throw new ApiError(response.status, detail);
  }
  return response;
}

async function getJson(path) {
  return (await api(path)).json();
}

async function postJson(path, body) {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

// The URL that shows a server image: the path itself without a key; with one, an object URL of
// the image fetched with the X-API-Key header, since <img src> and <a href> cannot send headers.
async function serverImageUrl(path, owner) {
  if (!apiKey()) return path;
  const blob = await (await api(path)).blob();
  const url = URL.createObjectURL(blob);
  if (!state.objectUrls.has(owner)) state.objectUrls.set(owner, []);
  state.objectUrls.get(owner).push(url);
  return url;
}

// Show a server image in `img`; `url` lets several <img> share one fetch of the same image.
async function showServerImage(img, path, owner, url = serverImageUrl(path, owner)) {
  img.addEventListener("error", () => {
    img.dataset.failed = "true";
    showError(`${path} could not be loaded`);
  }, { once: true });
  try {
    img.src = await url;
  } catch (err) {
    img.dataset.failed = "true";
    showError(`${path}: ${err.message}`);
  }
}

function releaseImages(owner) {
  for (const url of state.objectUrls.get(owner) || []) URL.revokeObjectURL(url);
  state.objectUrls.delete(owner);
}

// --- messages -------------------------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  $("error-box").hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error-box").hidden = true;
}

function askForKey(message) {
  $("key-message").textContent = message;
  $("key-form").hidden = false;
  $("api-key").focus();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

function percent(share) {
  return `${Math.round(share * 100)}%`;
}

// --- the run --------------------------------------------------------------------------------

async function loadInfo() {
  let info;
  try {
    info = await getJson("/v1/info");
  } catch (err) {
    if (err.status === 503) {
      $("run-status").textContent = "The run is not ready yet; trying again in 5 s.";
      showError(err.message);
      setTimeout(loadInfo, 5000);
    } else {
      $("run-status").textContent = "Could not load the run.";
      if (err.status !== 401) showError(err.message);
    }
    return;
  }
  clearError();
  state.info = info;
  state.latentShape = info.latent_shape;
  showRun(info);
  fillControls(info);
  showReport(info);
}

function showRun(info) {
  const [channels, size] = info.image_shape;
  $("run-status").textContent = info.run;
  $("image-shape").textContent = `${info.image_shape.join(" × ")} (${channels === 1 ? "grey" : "colour"}, ${size}px)`;
  $("latent-shape").textContent = `${info.latent_shape.join(" × ")} bits (${info.latent_bytes} bytes packed)`;
  $("train-count").textContent = String(info.images.train);
  $("run-facts").hidden = false;
  const body = $("tables-body");
  body.replaceChildren(
    ...info.tables.map((t) =>
      el(
        "tr",
        { "data-gamma": t.gamma, "data-positional": t.positional, "data-arvm": t.arvm },
        el("td", { text: String(t.gamma) }),
        el("td", { text: t.positional ? "yes" : "no" }),
        el("td", { text: t.contexts.toLocaleString() }),
        el("td", { text: t.rows.toLocaleString() }),
        el("td", {
          className: t.arvm ? "yes" : "no",
          text: t.arvm ? "yes: hybrid and neural work" : "none: exact and backoff only",
        }),
      ),
    ),
  );
  $("tables").hidden = false;
}

function fillControls(info) {
  const tables = info.tables.filter((t) => !t.positional);
  const gammas = [...new Set(tables.map((t) => t.gamma))].sort((a, b) => a - b);
  const withArvm = new Set(tables.filter((t) => t.arvm).map((t) => t.gamma));
  const select = $("gamma");
  const previous = select.value;
  select.replaceChildren(
    ...gammas.map((g) =>
      el("option", { value: g, text: withArvm.has(g) ? `${g} (with γ-ARVM)` : String(g) }),
    ),
  );
  const preferred = previous && gammas.includes(Number(previous)) ? Number(previous) : 5;
  select.value = String(gammas.includes(preferred) ? preferred : gammas[0]);

  const maxN = Math.min(PAGE_MAX_N, info.limits.max_n);
  $("n").max = String(maxN);
  if (Number($("n").value) > maxN) $("n").value = String(maxN);

  const arvmText = withArvm.size
    ? `γ-ARVM trained for γ = ${[...withArvm].join(", ")}`
    : "no γ-ARVM trained yet";
  $("mode-hint").textContent =
    "exact: only windows seen in training; backoff: a smaller γ when a context is unseen; " +
    "hybrid: the γ-ARVM fills what the table cannot; neural: the γ-ARVM alone. " +
    `Hybrid and neural need a γ-ARVM for the chosen γ (${arvmText}).`;

  for (const id of ["gamma", "mode", "n", "seed", "temperature", "sample-button"]) {
    $(id).disabled = gammas.length === 0;
  }
  if (!gammas.length) showError("The run has no n-gram tables: run `latentgram build` first.");
}

// --- sampling -------------------------------------------------------------------------------

// Integers the page can check are sent as numbers; anything else goes to the server as typed, so
// that its 422 names the field and says what is allowed.
function integerOr(raw) {
  return /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : raw;
}

function numberOr(raw) {
  return raw.trim() !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
}

function sampleRequest() {
  const maxN = Number($("n").max);
  const n = integerOr($("n").value);
  if (!Number.isInteger(n) || n < 1 || n > maxN) {
    throw new ApiError(0, `n must be in 1..${maxN} on this page, got ${$("n").value || "nothing"}`);
  }
  return {
    n,
    gamma: Number($("gamma").value),
    mode: $("mode").value,
    seed: integerOr($("seed").value),
    temperature: numberOr($("temperature").value),
  };
}

function setBusy(busy) {
  const button = $("sample-button");
  button.disabled = busy;
  button.textContent = busy ? "Sampling…" : "Sample";
  $("grid").setAttribute("aria-busy", String(busy));
  document.body.classList.toggle("busy", busy);
}

async function drawSamples(event) {
  event.preventDefault();
  clearError();
  let body;
  try {
    body = sampleRequest();
  } catch (err) {
    showError(err.message);
    return;
  }
  setBusy(true);
  $("sample-status").textContent = `Drawing ${body.n} samples…`;
  try {
    const result = await postJson("/v1/sample", body);
    state.samples = result.samples;
    state.sampleRequest = body;
    state.latentShape = result.latent_shape;
    showSamples(result);
  } catch (err) {
    $("sample-status").textContent = state.samples.length
      ? "Sampling failed; the samples below are from the previous request."
      : "Sampling failed.";
    showError(err.message);
  } finally {
    setBusy(false);
  }
}

function showSamples(result) {
  const { samples, gamma, mode } = result;
  $("sample-status").textContent =
    `${result.finished} of ${samples.length} samples finished ` +
    `(γ = ${gamma}, ${mode}, seed ${result.seed}, T = ${result.temperature}) ` +
    `in ${result.seconds.toFixed(2)} s.`;
  $("grid").replaceChildren(...samples.map((s) => sampleCell(s, gamma, mode)));
  $("detail").hidden = true;
  state.selected = null;
  state.nearestToken++; // a /v1/nearest still under way is for a sample no longer shown
}

function sampleFacts(sample) {
  return `neural ${percent(sample.neural_share)} · ${sample.backtracks} backtracks, ${sample.jumps} jumps`;
}

// What a failure code means, for people: the API's `failure` field.
const FAILURES = {
  budget: "used its whole budget of steps: a larger budget may finish it",
  exhausted: "no sample exists: every candidate was tried",
  "unknown context": "no table knows a context and no γ-ARVM was trained",
};

function sampleCell(sample, gamma, mode) {
  const facts = sampleFacts(sample);
  const caption = el("span", { className: "sample-facts", "data-testid": "sample-facts", text: facts });
  const common = {
    "data-testid": "sample",
    "data-index": sample.index,
    "data-ok": sample.ok,
    "data-neural-share": sample.neural_share,
    "data-backtracks": sample.backtracks,
    "data-jumps": sample.jumps,
  };
  if (!sample.ok) {
    const reason = sample.failure || "unknown";
    const why = FAILURES[reason] || reason;
    return el(
      "li",
      { ...common, className: "sample failed", title: `failed: ${why}; ${facts}` },
      el("div", { className: "empty", role: "img", "aria-label": `sample ${sample.index} failed: ${reason}` },
        el("span", { text: "failed" }),
        el("span", { className: "reason", "data-testid": "failure", text: reason }),
      ),
      caption,
    );
  }
  const img = el("img", {
    "data-testid": "sample-image",
    alt: `sample ${sample.index} (γ = ${gamma}, ${mode}, neural ${percent(sample.neural_share)})`,
    src: sample.image_png ? `data:image/png;base64,${sample.image_png}` : null,
  });
  const button = el(
    "button",
    {
      type: "button",
      className: "pick",
      title: `sample ${sample.index}: ${facts}, ${sample.steps} steps. Click for its nearest training images.`,
      "aria-pressed": "false",
    },
    img,
  );
  button.addEventListener("click", () => selectSample(sample, button));
  return el("li", { ...common, className: "sample" }, button, caption);
}

// --- one sample: provenance and nearest training images --------------------------------------

function selectSample(sample, button) {
  for (const other of document.querySelectorAll("#grid .pick[aria-pressed=true]")) {
    other.setAttribute("aria-pressed", "false");
  }
  button.setAttribute("aria-pressed", "true");
  state.selected = sample;
  $("detail-index").textContent = String(sample.index);
  $("detail-image").src = `data:image/png;base64,${sample.image_png}`;
  $("detail-image").alt = `sample ${sample.index}, enlarged`;
  showProvenance(sample);
  showSources(sample);
  $("detail").hidden = false;
  $("detail").scrollIntoView({ block: "nearest" });
  loadNearest(sample);
}

// answered_by is (H, W): per latent position the γ of the table that chose its token, 0 when the
// γ-ARVM did, −1 when nothing did.
function showProvenance(sample) {
  const [, height, width] = state.latentShape;
  const overlay = $("overlay");
  overlay.style.setProperty("--rows", String(height));
  overlay.style.setProperty("--cols", String(width));
  let neural = 0;
  let exact = 0;
  const cells = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const by = sample.answered_by[y][x];
      const kind = by === 0 ? "neural" : by > 0 ? "exact" : "unfilled";
      if (kind === "neural") neural++;
      if (kind === "exact") exact++;
      const what = kind === "neural" ? "the γ-ARVM" : kind === "exact" ? `the γ=${by} table` : "nothing";
      const id = sample.examples[y][x];
      const source = id >= 0 ? `; its window is in training image ${id}` : "";
      cells.push(
        el("div", {
          className: `cell ${kind}`,
          "data-testid": "position",
          "data-by": kind,
          "data-gamma": by > 0 ? by : null,
          title: `position (${y}, ${x}): chosen by ${what}${source}`,
          text: kind === "neural" ? "N" : kind === "exact" ? String(by) : "·",
        }),
      );
    }
  }
  overlay.replaceChildren(...cells);
  overlay.hidden = !$("overlay-toggle").checked;
  $("provenance").textContent =
    `${exact} of ${height * width} positions exact, ${neural} neural; ` +
    `${sample.backtracks} backtracks (${sample.jumps} jumps), ${sample.steps} steps.`;
}

// examples is (H, W): per latent position the id of a training image that holds the γ-window
// ending there, −1 where no table chose the token. Shown as a mosaic in the sample's layout, each
// cell a thumbnail of that image linking to it in full; each distinct image is fetched once.
function showSources(sample) {
  const [, height, width] = state.latentShape;
  const mosaic = $("sources");
  releaseImages(mosaic);
  mosaic.style.setProperty("--rows", String(height));
  mosaic.style.setProperty("--cols", String(width));
  const urls = new Map(); // id → Promise of the URL that shows it
  const cells = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const id = sample.examples[y][x];
      if (id < 0) {
        cells.push(el("li", {
          className: "source none",
          "data-testid": "source-none",
          title: `position (${y}, ${x}): no training image (not chosen by a table)`,
        }));
        continue;
      }
      const path = `/v1/images/${id}`;
      if (!urls.has(id)) urls.set(id, serverImageUrl(path, mosaic));
      const img = el("img", { "data-testid": "source-image", alt: `training image ${id}` });
      const link = el("a", {
        href: path,
        target: "_blank",
        rel: "noopener",
        "data-testid": "source",
        "data-id": id,
        title: `position (${y}, ${x}): its window is in training image ${id}; click to open it`,
      }, img);
      showServerImage(img, path, mosaic, urls.get(id));
      urls.get(id).then((url) => { link.href = url; }, () => {});
      cells.push(el("li", { className: "source" }, link));
    }
  }
  mosaic.replaceChildren(...cells);
  $("sources-status").textContent = urls.size
    ? `${urls.size} training image${urls.size === 1 ? "" : "s"} hold its windows.`
    : "No position was chosen by a table, so no training image holds its windows.";
}

async function loadNearest(sample) {
  const token = ++state.nearestToken;
  const list = $("nearest");
  releaseImages(list);
  list.replaceChildren();
  $("nearest-status").textContent = "Searching the training images…";
  const k = Math.min(NEAREST_K, state.info ? state.info.images.train : NEAREST_K);
  let result;
  try {
    // by latent: a sample's bits are exact, its decoding blurred, so by pixels the training
    // image it copies may rank below others
    result = await postJson("/v1/nearest", { bits: sample.bits, k, by: "latent" });
  } catch (err) {
    if (token !== state.nearestToken) return;
    $("nearest-status").textContent = "Could not find the nearest training images.";
    showError(err.message);
    return;
  }
  if (token !== state.nearestToken) return;
  const classNames = state.info ? state.info.class_names : [];
  list.replaceChildren(...result.hits.map((hit, rank) => hitItem(hit, rank, classNames, list)));
  const top = result.hits[0];
  $("nearest-status").textContent = top
    ? `Closest: ${top.hamming} bits apart, ${top.psnr_reconstruction.toFixed(1)} dB to its ` +
      "reconstruction (memorized above 30 dB)."
    : "No training images.";
}

function hitItem(hit, rank, classNames, list) {
  const label = hit.label_name || classNames[hit.label] || `label ${hit.label}`;
  const img = el("img", {
    "data-testid": "hit-image",
    alt: `training image ${hit.id} (${label})`,
  });
  showServerImage(img, `/v1/images/${hit.id}`, list);
  const badges = el("span", { className: "badges" });
  if (hit.memorized || hit.memorized_reconstruction) {
    // the paper's rule, against the image or against its reconstruction (a decoded copy's PSNR)
    badges.append(el("span", { className: "badge memorized", "data-testid": "memorized", text: "memorized" }));
  }
  if (hit.exact_copy) {
    badges.append(el("span", { className: "badge copy", "data-testid": "exact-copy", text: "exact copy" }));
  }
  return el(
    "li",
    { className: "hit", "data-testid": "hit", "data-id": hit.id, "data-rank": rank + 1 },
    img,
    el(
      "dl",
      {},
      el("dt", { text: "PSNR" }),
      el("dd", { "data-testid": "psnr", text: `${hit.psnr.toFixed(1)} dB` }),
      el("dt", { text: "PSNR to its reconstruction" }),
      el("dd", {
        "data-testid": "psnr-reconstruction",
        text: `${hit.psnr_reconstruction.toFixed(1)} dB`,
      }),
      el("dt", { text: "Hamming" }),
      el("dd", { "data-testid": "hamming", text: `${hit.hamming} bits` }),
      el("dt", { text: "Label" }),
      el("dd", { "data-testid": "label", text: label }),
      el("dt", { text: "Id" }),
      el("dd", { text: String(hit.id) }),
    ),
    badges,
  );
}

// --- the memorization report ----------------------------------------------------------------

async function showReport(info) {
  const figure = $("report-figure");
  releaseImages(figure);
  $("report-missing").hidden = info.report;
  figure.hidden = !info.report;
  $("report-summary").hidden = true;
  if (!info.report) return;
  showServerImage($("report-plot"), "/v1/report/memorization.png", figure);
  let report;
  try {
    report = await getJson("/v1/report");
  } catch (err) {
    showError(`memorization report: ${err.message}`);
    return;
  }
  const summary = report && report.summary;
  if (!summary || typeof summary !== "object" || Array.isArray(summary)) return;
  $("report-summary-body").replaceChildren(
    ...Object.entries(summary).map(([key, value]) =>
      el(
        "tr",
        { "data-testid": "summary-row", "data-key": key },
        el("th", { scope: "row", text: key }),
        el("td", { text: formatValue(value) }),
      ),
    ),
  );
  $("report-summary").hidden = false;
}

function formatValue(value) {
  if (typeof value === "number") {
    return Number.isInteger(value) ? value.toLocaleString() : String(Number(value.toPrecision(4)));
  }
  if (value === null || typeof value !== "object") return String(value);
  return JSON.stringify(value);
}

// --- wiring ---------------------------------------------------------------------------------

function useKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("key-form").hidden = true;
  clearError();
  if (!state.info) loadInfo();
  else showReport(state.info); // its images were refused without the key
}

document.addEventListener("DOMContentLoaded", () => {
  $("sample-form").addEventListener("submit", drawSamples);
  $("key-form").addEventListener("submit", useKey);
  $("error-close").addEventListener("click", clearError);
  $("overlay-toggle").addEventListener("change", (event) => {
    $("overlay").hidden = !event.target.checked;
  });
  loadInfo();
});
