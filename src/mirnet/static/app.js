// The mirnet serve page: pick or drop a photo, POST it to /enhance, show before/after.
// No framework and no network beyond this server, so it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"),
  drop: $("drop"),
  file: $("file"),
  limits: $("limits"),
  status: $("status"),
  result: $("result"),
  compare: $("compare"),
  before: $("before"),
  after: $("after"),
  slider: $("slider"),
  download: $("download"),
};
let limits = null;
let currentFile = null;
let objectUrls = [];
let latestRequest = 0; // only the newest request's answer is shown

function setState(state, message, isError = false) {
  // data-state lets the stylesheet (and the browser test) follow progress.
  document.body.dataset.state = state;
  ui.status.textContent = message;
  ui.status.classList.toggle("error", isError);
}

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function init() {
  try {
    const [models, health] = await Promise.all([getJson("/models"), getJson("/health")]);
    for (const { name, source } of models.models) {
      const option = new Option(source === "file" ? `${name} (file)` : name, name);
      option.selected = name === models.default;
      ui.model.add(option);
    }
    if (!models.models.length) setState("error", "No model available: start mirnet serve with --model.", true);
    limits = health.limits;
    const megabytes = limits.max_upload_bytes / 1e6;
    ui.limits.textContent = `PNG, JPEG, TIFF, WebP or BMP; up to ${megabytes} MB and ${limits.max_megapixels} megapixels`;
  } catch (error) {
    setState("error", `Cannot reach the server: ${error.message}`, true);
  }
}

function stem(filename) {
  return filename.replace(/\.[^.]*$/, "") || "photo";
}

async function enhance(file) {
  if (!file) return;
  currentFile = file;
  if (limits && file.size > limits.max_upload_bytes) {
    const size = (file.size / 1e6).toFixed(1);
    setState("error", `${file.name} is ${size} MB, over the limit of ${limits.max_upload_bytes / 1e6} MB.`, true);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if (ui.model.value) form.append("model", ui.model.value);
  setState("busy", `Enhancing ${file.name} with ${ui.model.value || "the default model"}…`);
  const started = performance.now();
  const request = ++latestRequest;
  try {
    const response = await fetch("/enhance", { method: "POST", body: form });
    if (request !== latestRequest) return;
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`);
    }
    const result = await response.blob();
    if (request !== latestRequest) return;
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
    objectUrls = [URL.createObjectURL(file), URL.createObjectURL(result)];
    ui.before.src = objectUrls[0];
    ui.after.src = objectUrls[1];
    await ui.after.decode();
    // Browsers cannot show every format we accept (TIFF): then only the result is shown.
    const canShowBefore = await ui.before.decode().then(() => true, () => false);
    ui.compare.classList.toggle("no-before", !canShowBefore);
    ui.download.href = objectUrls[1];
    ui.download.download = `${stem(file.name)}_enhanced.png`;
    ui.result.hidden = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setState("done", `${file.name}: enhanced in ${seconds} s.` + (canShowBefore ? " Drag to compare." : ""));
  } catch (error) {
    if (request === latestRequest) setState("error", `${file.name}: ${error.message}`, true);
  }
}

function setSplit(percent) {
  ui.compare.style.setProperty("--split", `${percent}%`);
}

ui.file.addEventListener("change", () => {
  enhance(ui.file.files[0]);
  ui.file.value = ""; // so that picking the same file again still fires "change"
});
ui.model.addEventListener("change", () => enhance(currentFile));
ui.slider.addEventListener("input", () => setSplit(ui.slider.value));
ui.drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  ui.drop.classList.add("dragging");
});
ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("dragging"));
ui.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.drop.classList.remove("dragging");
  enhance(event.dataTransfer.files[0]);
});
// A photo dropped beside the zone must not make the browser navigate away from the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

setSplit(ui.slider.value);
init();
