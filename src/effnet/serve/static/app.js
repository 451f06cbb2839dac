// The classify page: pick or drop images, POST them to /v1/predict, draw the top-5 as bars.
// Plain DOM, no framework and no CDN: the server may run on a machine with no internet.
"use strict";

const TOPK = 5;
const KEY_STORAGE = "effnet-api-key";

const elements = {
  drop: document.getElementById("drop"),
  file: document.getElementById("file"),
  status: document.getElementById("status"),
  results: document.getElementById("results"),
  modelLine: document.getElementById("model-line"),
  auth: document.getElementById("auth"),
  key: document.getElementById("api-key"),
  keySave: document.getElementById("api-key-save"),
  template: document.getElementById("result-template"),
};

let lastFiles = [];

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  elements.status.textContent = text;
  elements.status.classList.toggle("error", isError);
  document.body.dataset.state = isError ? "error" : "busy";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON: fall through to the status line */ }
  return `${response.status} ${response.statusText}`;
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: authHeaders() });
  if (response.status === 401) {
    elements.auth.hidden = false;
    elements.modelLine.textContent = "API key required";
    return false;
  }
  if (!response.ok) {
    elements.modelLine.textContent = await errorMessage(response);
    return false;
  }
  elements.auth.hidden = true;
  const body = await response.json();
  const model = body.models.find((m) => m.name === body.default) || body.models[0];
  elements.modelLine.textContent =
    `${model.name} \u00b7 ${model.backend} \u00b7 ${model.input_size}\u00d7${model.input_size} input \u00b7 ${model.num_classes} classes`;
  return true;
}

function percent(probability) {
  const value = 100 * probability;
  return value >= 10 ? `${value.toFixed(1)}%` : `${value.toFixed(2)}%`;
}

function drawBars(list, predictions) {
  list.replaceChildren();
  for (const prediction of predictions) {
    const item = document.createElement("li");
    const label = document.createElement("div");
    label.className = "bar-label";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = prediction.label;
    name.title = `class ${prediction.index}`;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(prediction.probability);
    label.append(name, value);
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${Math.max(0, Math.min(100, 100 * prediction.probability))}%`;
    track.append(fill);
    item.append(label, track);
    list.append(item);
  }
}

function makeCard(file) {
  const card = elements.template.content.firstElementChild.cloneNode(true);
  const image = card.querySelector("img");
  image.src = URL.createObjectURL(file);
  image.alt = file.name;
  image.addEventListener("load", () => URL.revokeObjectURL(image.src), { once: true });
  card.querySelector(".filename").textContent = file.name;
  return card;
}

async function classify(files) {
  files = Array.from(files).filter((file) => file.size > 0);
  if (!files.length) return;
  lastFiles = files;
  const cards = files.map(makeCard);
  elements.results.replaceChildren(...cards);
  const noun = files.length === 1 ? "image" : "images";
  setStatus(`Classifying ${files.length} ${noun}\u2026`);

  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  let response;
  try {
    response = await fetch(`/v1/predict?topk=${TOPK}`, { method: "POST", body: form, headers: authHeaders() });
  } catch (error) {
    elements.results.replaceChildren();
    setStatus(`Could not reach the server: ${error.message}`, true);
    return;
  }
  if (response.status === 401) {
    elements.results.replaceChildren();
    elements.auth.hidden = false;
    setStatus("This server needs an API key: enter it above.", true);
    return;
  }
  if (!response.ok) {
    elements.results.replaceChildren();  // nothing was classified: no half-empty cards
    setStatus(await errorMessage(response), true);
    return;
  }
  // 200: every image has its own answer, predictions or the reason it could not be read
  const body = await response.json();
  body.results.forEach((result, index) => {
    const card = cards[index];
    if (result.error) {
      card.classList.add("failed");
      card.querySelector(".image-error").textContent = result.error.message;
      return;
    }
    drawBars(card.querySelector(".bars"), result.predictions);
    card.querySelector(".timing").textContent =
      `batch of ${result.batch_size} \u00b7 ${body.timing.inference_ms.toFixed(0)} ms inference \u00b7 ` +
      `${body.timing.total_ms.toFixed(0)} ms total`;
  });
  const failed = body.results.filter((result) => result.error).length;
  const top = body.results[0].predictions ? body.results[0].predictions[0] : null;
  if (failed) {
    setStatus(`Classified ${files.length - failed} of ${files.length} images; ${failed} could not be read.`, true);
  } else {
    setStatus(files.length === 1 ? `${top.label} (${percent(top.probability)})` : `Classified ${files.length} images.`);
  }
  document.body.dataset.state = "done";
}

elements.file.addEventListener("change", () => {
  classify(elements.file.files);
  elements.file.value = "";
});

for (const type of ["dragenter", "dragover"]) {
  elements.drop.addEventListener(type, (event) => {
    event.preventDefault();
    elements.drop.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  elements.drop.addEventListener(type, () => elements.drop.classList.remove("over"));
}
elements.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  classify(event.dataTransfer.files);
});
// A file dropped outside the box must not navigate away from the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

elements.keySave.addEventListener("click", async () => {
  sessionStorage.setItem(KEY_STORAGE, elements.key.value);
  if (await loadModel()) {
    setStatus("");
    if (lastFiles.length) classify(lastFiles);
  } else {
    setStatus("That key was not accepted.", true);
  }
});

loadModel().catch((error) => { elements.modelLine.textContent = `Server unreachable: ${error.message}`; });
