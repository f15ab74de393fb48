// The explorer page: plain ES module on the HTTP API of vae_cats.serving (docs: /docs).
// Every request goes through api(); a 4xx answer's one-line `detail` is shown in the
// section's alert line, never as a broken image.

const BATCH = 16; // cats per gallery batch
const SLIDER_RANGE = 3; // sliders span +-3 standard deviations along each direction
const DECODE_DELAY_MS = 40; // debounce of the explorer's decode requests

const $ = (id) => document.getElementById(id);

const state = {
  model: null,
  loading: false, // a gallery batch is being fetched
  batches: 0, // gallery batches shown since the last "New cats"
  batchSeed: null, // seed of the first batch when the user typed one
  cats: new Map(), // gallery tile id -> {image, latent, seed, index, n, sampler}
  dialogCat: null,
  upload: null, // {image, latent, name} of the last good upload
  slots: { a: null, b: null },
  explorerBase: null, // latent the sliders move from (the training mean by default)
};

class ApiError extends Error {}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError("the server did not answer");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = typeof body?.detail === "string" ? body.detail : response.statusText;
    throw new ApiError(`${detail} (HTTP ${response.status})`);
  }
  return body;
}

function postJson(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

function pngSrc(base64) {
  return `data:image/png;base64,${base64}`;
}

function makeImage(base64, alt) {
  const img = document.createElement("img");
  img.src = pngSrc(base64);
  img.alt = alt;
  img.width = 64;
  img.height = 64;
  return img;
}

/** Replace the contents of a frame with one image; resolves once it is decoded. */
function showImage(frame, base64, alt) {
  const img = makeImage(base64, alt);
  frame.replaceChildren(img);
  return img.decode().catch(() => undefined);
}

function showError(section, error) {
  const line = $(`${section}-error`);
  line.textContent = error ? error.message : "";
  line.hidden = !error;
}

function setStatus(section, text) {
  $(`${section}-status`).textContent = text;
}

/** Run a section's request: busy status, API errors shown in the section; true if it worked. */
async function guarded(section, busyText, work) {
  if (busyText !== null) setStatus(section, busyText); // null: leave the status line as it is
  showError(section, null);
  try {
    await work();
    return true;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    setStatus(section, "");
    showError(section, error);
    return false;
  }
}

function fmt(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : String(value);
}

// ---------------------------------------------------------------- gallery

const SAMPLER_LABELS = { gmm: "mixture", pca_gmm: "subspace mixture", flow: "flow" };

function samplerLabel(sampler) {
  return SAMPLER_LABELS[sampler] ?? sampler;
}

function nextSeed() {
  const typed = $("seed").value.trim();
  if (typed === "") return undefined;
  // A typed seed S gives batches S, S+1, S+2, ...: every batch stays reproducible.
  return Number.parseInt(typed, 10) + state.batches;
}

async function loadBatch({ replace }) {
  // One batch at a time (a double click must not fetch the same seed twice); the buttons stay
  // enabled so that keyboard focus is not lost.
  if (state.loading) return false;
  state.loading = true;
  $("gallery-grid").setAttribute("aria-busy", "true");
  try {
    return await fetchBatch(replace);
  } finally {
    state.loading = false;
    $("gallery-grid").removeAttribute("aria-busy");
  }
}

function fetchBatch(replace) {
  if (replace) state.batches = 0;
  const payload = { n: BATCH, format: "json" };
  // Before GET /model answers, the first batch uses the model's default sampler.
  if (state.model) payload.sampler = $("sampler").value;
  const seed = nextSeed();
  if (seed !== undefined) payload.seed = seed;
  return guarded("gallery", "Generating cats...", async () => {
    const body = await postJson("/generate", payload);
    const grid = $("gallery-grid");
    if (replace) {
      grid.replaceChildren();
      state.cats.clear();
    }
    const decoded = body.images.map((image, index) => {
      const cat = { image, latent: body.latents[index], seed: body.seed, index, n: BATCH,
        sampler: body.sampler };
      const id = `cat-${body.seed}-${index}-${state.cats.size}`;
      state.cats.set(id, cat);
      const tile = document.createElement("button");
      tile.type = "button";
      tile.className = "tile";
      tile.dataset.cat = id;
      const img = makeImage(image, `Generated cat ${index + 1} of seed ${body.seed}`);
      tile.append(img);
      tile.addEventListener("click", () => openCat(id));
      grid.append(tile);
      return img.decode().catch(() => undefined);
    });
    await Promise.all(decoded);
    state.batches += 1;
    $("sampler").value = body.sampler;
    setStatus("gallery", `${grid.children.length} cats (last batch: seed ${body.seed}, `
      + `${samplerLabel(body.sampler)} sampler)`);
  });
}

function predictCommand(cat) {
  const out = `outputs/cat_${cat.seed}`;
  const file = `${out}/samples/sample_${String(cat.index).padStart(3, "0")}.png`;
  // The served model, by the path the server was given: without --model predict would use
  // the shipped one, and a server running another checkpoint would draw other cats.
  const model = state.model ? `--model ${shellWord(state.model.path)} ` : "";
  return `python vae_cats/predict_model.py ${model}--n ${cat.n} --seed ${cat.seed} `
    + `--sampler ${cat.sampler} --out ${out}\n# this cat: ${file}`;
}

function shellWord(text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

function openCat(id) {
  const cat = state.cats.get(id);
  state.dialogCat = cat;
  $("dialog-title").textContent = `Cat ${cat.index + 1} of seed ${cat.seed}`;
  showImage($("dialog-image"), cat.image, `Cat ${cat.index + 1} of seed ${cat.seed}, enlarged`);
  $("dialog-facts").textContent = `Seed ${cat.seed}, index ${cat.index} (0-based) of a batch `
    + `of ${cat.n}, ${samplerLabel(cat.sampler)} sampler.`;
  $("dialog-command").textContent = predictCommand(cat);
  $("cat-dialog").showModal();
}

function catLabel(cat) {
  return `cat ${cat.index + 1} of seed ${cat.seed}`;
}

// ---------------------------------------------------------------- upload

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  $("upload-result").hidden = true;
  await guarded("upload", `Reconstructing ${file.name}...`, async () => {
    const body = await api("/reconstruct?format=json", { method: "POST", body: form });
    await Promise.all([
      showImage($("upload-original"), body.original, `${file.name} as ingested, 64x64`),
      showImage($("upload-recon"), body.reconstruction, `Reconstruction of ${file.name}`),
    ]);
    $("upload-ssim").textContent = fmt(body.ssim);
    $("upload-psnr").textContent = `${fmt(body.psnr, 1)} dB`;
    const drift = body.drift;
    const verdict = $("upload-verdict");
    if (!drift) {
      verdict.textContent = "No drift verdict: this model stores no drift statistics.";
    } else if (drift.is_outlier) {
      verdict.textContent = `Unlike the training data: score ${fmt(drift.score)}, `
        + `threshold ${fmt(drift.threshold)}.`;
    } else {
      verdict.textContent = "Looks like the training cats.";
    }
    verdict.classList.toggle("outlier", Boolean(drift?.is_outlier));
    verdict.classList.toggle("unknown", !drift);
    state.upload = { image: body.original, latent: body.latent, name: file.name };
    $("upload-result").hidden = false;
    setStatus("upload", `Reconstructed ${file.name}.`);
  });
}

function setupUpload() {
  const input = $("upload-file");
  const zone = $("drop-zone");
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = ""; // choosing the same file again uploads it again
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) upload(file);
  });
}

// ---------------------------------------------------------------- latent explorer

function sliders() {
  return [...$("sliders").querySelectorAll("input[type=range]")];
}

/** z = base + sum_k s_k * std_k * component_k (s_k: slider value in standard deviations). */
function explorerLatent() {
  const { std, components } = state.model.latent_directions;
  const z = [...state.explorerBase];
  sliders().forEach((slider, k) => {
    const step = Number(slider.value) * std[k];
    components[k].forEach((c, d) => {
      z[d] += step * c;
    });
  });
  return z;
}

// Latest wins: at most one decode request in flight; moves during it send one more after.
// The face's frame is aria-busy from the first move until the face matches the sliders.
const decoder = { timer: null, busy: false, again: false };

function scheduleDecode() {
  $("explorer-face").setAttribute("aria-busy", "true");
  clearTimeout(decoder.timer);
  decoder.timer = setTimeout(runDecode, DECODE_DELAY_MS);
}

async function runDecode() {
  decoder.timer = null;
  if (decoder.busy) {
    decoder.again = true;
    return;
  }
  decoder.busy = true;
  $("explorer-face").setAttribute("aria-busy", "true");
  try {
    await guarded("explorer", null, async () => {
      const body = await postJson("/decode", { latents: [explorerLatent()], format: "json" });
      await showImage($("explorer-face"), body.images[0],
        "Face decoded from the sliders' latent code");
    });
  } finally {
    decoder.busy = false;
    if (decoder.again) {
      decoder.again = false;
      runDecode();
    } else if (decoder.timer === null) {
      $("explorer-face").removeAttribute("aria-busy");
    }
  }
}

function stdText(value) {
  return (Math.round(Number(value) * 10) / 10 + 0).toFixed(1); // + 0 turns -0 into 0
}

function setSliders(values) {
  sliders().forEach((slider, k) => {
    slider.value = String(values[k]); // snapped to the slider's step
    slider.nextElementSibling.value = stdText(slider.value);
  });
  scheduleDecode();
}

function gaussian() {
  // Box-Muller; 1 - random() avoids log(0).
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

function exploreFrom(latent, label) {
  if (!state.model?.latent_directions) return; // GET /model has not answered (yet)
  state.explorerBase = [...latent];
  setSliders(sliders().map(() => 0));
  setStatus("explorer", `Starting from ${label}.`);
  $("explorer").scrollIntoView({ behavior: "smooth" });
}

function setupExplorer(model) {
  const { mean, std } = model.latent_directions;
  state.explorerBase = [...mean];
  const box = $("sliders");
  std.forEach((_, k) => {
    const label = document.createElement("label");
    label.className = "slider";
    const name = document.createElement("span");
    name.textContent = `Direction ${k + 1}`;
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.1,
      value: 0 });
    slider.setAttribute("aria-valuetext", "0 standard deviations");
    const output = document.createElement("output");
    output.value = "0.0";
    slider.addEventListener("input", () => {
      output.value = stdText(slider.value);
      slider.setAttribute("aria-valuetext", `${output.value} standard deviations`);
      scheduleDecode();
    });
    label.append(name, slider, output);
    box.append(label);
  });
  $("explorer-reset").addEventListener("click", () => {
    state.explorerBase = [...mean];
    setSliders(std.map(() => 0));
    setStatus("explorer", "Back to the mean training cat.");
  });
  $("explorer-random").addEventListener("click", () => {
    setSliders(std.map(() => Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, gaussian()))));
    setStatus("explorer", "Random point.");
  });
  runDecode();
}

// ---------------------------------------------------------------- interpolate

function setSlot(which, image, latent, label) {
  state.slots[which] = { latent, label };
  showImage($(`slot-${which}`), image, `${which.toUpperCase()}: ${label}`);
  $(`slot-${which}-label`).textContent = label;
  $("interpolate-run").disabled = !(state.slots.a && state.slots.b);
}

async function interpolate() {
  const { a, b } = state.slots;
  const steps = Number.parseInt($("steps").value, 10);
  await guarded("interpolate", "Interpolating...", async () => {
    const body = await postJson("/interpolate", {
      latent_a: a.latent, latent_b: b.latent, steps, format: "json",
    });
    const strip = $("strip");
    strip.replaceChildren(...body.images.map((image, i) =>
      makeImage(image, `Step ${i + 1} of ${body.images.length} from ${a.label} to ${b.label}`)));
    await Promise.all([...strip.querySelectorAll("img")].map((img) => img.decode()));
    setStatus("interpolate", `${body.images.length} steps from ${a.label} to ${b.label}.`);
  });
}

// ---------------------------------------------------------------- model card

function factRows(list, rows) {
  list.replaceChildren();
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

/** "SSIM 0.659, PSNR 22.2 dB on 848 test images" from the checkpoint's test metrics. */
function metricsText(metrics) {
  const parts = [];
  for (const [key, value] of Object.entries(metrics ?? {})) {
    if (typeof value !== "number" || key === "images") continue;
    if (key === "ssim") parts.push(`SSIM ${fmt(value)}`);
    else if (key === "psnr") parts.push(`PSNR ${fmt(value, 1)} dB`);
    else parts.push(`${key} ${fmt(value)}`);
  }
  if (!parts.length) return "none recorded";
  const images = metrics.images ? ` on ${metrics.images} ${metrics.split ?? ""} images` : "";
  return parts.join(", ") + images.replace("  ", " ");
}

function showModel(model) {
  factRows($("model-facts"), [
    ["Model", `${model.name} (${model.backend} backend)`],
    ["Latent", `${model.latent_dim} dimensions, ${model.image_size}x${model.image_size} images`],
    ["Test metrics", metricsText(model.metrics)],
    ["Samplers", `${model.samplers.map(samplerLabel).join(", ")} `
      + `(default ${samplerLabel(model.default_sampler)})`],
    ["Drift check", model.drift
      ? `${model.drift.score}: threshold ${fmt(model.drift.threshold)} `
        + `(false alarm rate ${model.drift.false_alarm_rate})`
      : "this model stores no drift statistics"],
    ["Data hash", model.data_hash ?? "unknown"],
    ["Git commit", model.git_commit ?? "unknown"],
  ]);
  const known = new Set(model.samplers);
  for (const option of $("sampler").options) option.disabled = !known.has(option.value);
}

// ---------------------------------------------------------------- start

function wire() {
  $("gallery-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadBatch({ replace: true });
  });
  $("more").addEventListener("click", () => loadBatch({ replace: false }));
  $("dialog-close").addEventListener("click", () => $("cat-dialog").close());
  for (const which of ["a", "b"]) {
    $(`dialog-as-${which}`).addEventListener("click", () => {
      const cat = state.dialogCat;
      setSlot(which, cat.image, cat.latent, catLabel(cat));
      $("cat-dialog").close();
    });
    $(`upload-as-${which}`).addEventListener("click", () => {
      const { image, latent, name } = state.upload;
      setSlot(which, image, latent, `upload ${name}`);
    });
  }
  $("dialog-explore").addEventListener("click", () => {
    $("cat-dialog").close();
    exploreFrom(state.dialogCat.latent, catLabel(state.dialogCat));
  });
  $("upload-explore").addEventListener("click", () =>
    exploreFrom(state.upload.latent, `upload ${state.upload.name}`));
  $("interpolate-run").addEventListener("click", interpolate);
  setupUpload();
}

async function start() {
  wire();
  const firstGallery = loadBatch({ replace: true }).then((shown) => {
    if (!shown) return;
    // Time to the first gallery, decoded, relative to navigation start (performance API).
    const mark = performance.mark("first-gallery");
    $("timing").textContent = `First gallery shown ${Math.round(mark.startTime)} ms after `
      + "navigation start.";
  });
  try {
    state.model = await api("/model");
    showModel(state.model);
    if (state.model.latent_directions) {
      setupExplorer(state.model);
    } else {
      setStatus("explorer", "This model stores no latent directions to explore.");
      for (const id of ["dialog-explore", "upload-explore", "explorer-reset", "explorer-random"]) {
        $(id).hidden = true;
      }
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showError("model", error);
    showError("explorer", error);
  }
  await firstGallery;
}

start();
