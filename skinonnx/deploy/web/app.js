// The browser example: read the contract from the ONNX file's own metadata, decode a chosen image in
// this tab, preprocess it exactly as docs/EMBEDDING.md says (the same contract.js and Pillow-compatible
// pillow_resize.js as the Node example), run onnxruntime-web (wasm, SIMD; threads when the page is
// cross-origin isolated) and show class, probability and threshold. Nothing is uploaded.
/* global ort, SkinOnnx */
'use strict';

const state = { session: null, contract: null, meta: null };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $('model-status');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

ort.env.wasm.wasmPaths = new URL('ort/', document.baseURI).href; // served here, not from a CDN
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.wasm.proxy = false;

async function loadModel(bytes, name) {
  const header = SkinOnnx.readOnnxHeader(bytes);
  const contract = SkinOnnx.readContract(header.metadata);
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  if (session.inputNames[0] !== contract.inputName) throw new Error(`graph input ${session.inputNames[0]} != metadata input_name`);
  Object.assign(state, { session, contract, meta: header.metadata });
  setStatus(`${name}: loaded in ${Math.round(performance.now() - t0)} ms`);
  const rows = {
    classes: contract.classes.join(', '),
    'positive class': contract.classes[contract.positiveIndex],
    'malignant classes': contract.malignantClasses.join(', '),
    'decision threshold': contract.threshold.toFixed(4),
    input: `${contract.inputName}: ${contract.uint8 ? `uint8 [1, H, W, 3], shorter side ${contract.resizeSize}`
      : `float32 [1, 3, ${contract.imageSize}, ${contract.imageSize}]`}`,
    preprocessing: `shorter side → ${contract.resizeSize} (Pillow bilinear), centre crop ${contract.imageSize}`,
    opset: String(header.opsets['ai.onnx']),
  };
  $('contract').replaceChildren(...Object.entries(rows).flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    return [dt, dd];
  }));
  $('image-file').disabled = false;
  $('runtime').textContent = `onnxruntime-web ${ort.env.versions.web}, wasm, SIMD, ${ort.env.wasm.numThreads} thread(s)`
    + ` (cross-origin isolated: ${self.crossOriginIsolated ? 'yes' : 'no'})`;
  document.body.dataset.ready = 'model';
}

// Decode to upright 8-bit RGB: EXIF orientation applied, ICC profile ignored, alpha composited on white.
async function decode(file) {
  const bitmap = await createImageBitmap(file, {
    imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none',
  });
  const { width, height } = bitmap;
  if (width * height > SkinOnnx.MAX_PIXELS) throw new Error(`image is ${width}x${height}, over 50 megapixels`);
  if (width < 8 || height < 8) throw new Error(`image is ${width}x${height}; at least 8x8 pixels are needed`);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height, { colorSpace: 'srgb' }).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { data: rgb, width, height };
}

async function isJpeg(file) {
  const head = new Uint8Array(await file.slice(0, 3).arrayBuffer());
  return head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
}

// Shorter side -> resizeSize with Pillow's bilinear filter; large JPEGs first reduced like Pillow's
// draft mode (approximated by block means: the browser's decoder has no DCT scaling).
async function decodeAndResize(file, r) {
  let image = await decode(file);
  const a = (await isJpeg(file)) ? SkinOnnx.draftFactor(image.width, image.height, r) : 1;
  if (a > 1) image = SkinOnnx.boxReduce(image.data, image.width, image.height, a);
  const [w, h] = SkinOnnx.resizedSize(image.width, image.height, r);
  return { data: SkinOnnx.resizeBilinear(image.data, image.width, image.height, w, h), width: w, height: h };
}

async function classify(file) {
  const c = state.contract;
  const t0 = performance.now();
  const image = await decodeAndResize(file, c.resizeSize);
  const s = c.imageSize;
  const crop = SkinOnnx.centerCrop(image, s);
  const input = c.uint8
    ? new ort.Tensor('uint8', image.data, [1, image.height, image.width, 3])
    : new ort.Tensor('float32', SkinOnnx.normalize(crop, s, c.mean, c.std), [1, 3, s, s]);
  const t1 = performance.now();
  const out = await state.session.run({ [c.inputName]: input });
  const t2 = performance.now();
  const p = Array.from(out.probabilities.data);
  // the file decides: its 'label' and 'in_distribution' outputs (not assessed: no class; docs/SAFETY.md)
  const oodScore = out.ood_score ? out.ood_score.data[0] : null;
  const { label, inDistribution, pMalignant, malignant } = SkinOnnx.decision(c, out);
  return {
    name: file.name, label, p_malignant: pMalignant, malignant,
    probabilities: Object.fromEntries(c.classes.map((k, i) => [k, p[i]])),
    logits: Array.from(out.logits.data), threshold: c.threshold, crop, size: s,
    ood_score: oodScore, in_distribution: inDistribution,
    ms: { preprocess: t1 - t0, inference: t2 - t1 },
  };
}

function show(result) {
  const c = state.contract;
  const row = document.createElement('div');
  row.className = 'result';
  row.dataset.result = JSON.stringify({ name: result.name, label: result.label, probabilities: result.probabilities,
    logits: result.logits, threshold: result.threshold, ood_score: result.ood_score,
    in_distribution: result.in_distribution, p_malignant: result.p_malignant, malignant: result.malignant,
    ms: result.ms });
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = result.size;
  const rgba = new ImageData(result.size, result.size);
  for (let i = 0, j = 0; j < result.crop.length; i += 4, j += 3) {
    rgba.data.set([result.crop[j], result.crop[j + 1], result.crop[j + 2], 255], i);
  }
  canvas.getContext('2d').putImageData(rgba, 0, 0);
  // two classes: the positive class's probability; more: the decided class and p_malignant (the group's sum)
  const multi = c.classes.length > 2;
  const pos = multi ? `malignant: ${c.malignantClasses.join(' + ')}` : c.classes[c.positiveIndex];
  const p = multi ? result.p_malignant : result.probabilities[pos];
  const text = document.createElement('div');
  const label = document.createElement('div');
  label.className = `label${(multi ? result.malignant : result.label === pos) ? ' flagged' : ''}`;
  label.textContent = multi && result.in_distribution !== false
    ? `${result.label}${result.malignant ? ' (malignant)' : ''}` : result.label;
  const detail = document.createElement('div');
  detail.textContent = `p(${pos}) = ${p.toFixed(4)}, threshold ${c.threshold.toFixed(4)} · ${result.name}`
    + ` · ${Math.round(result.ms.inference)} ms`;
  const bar = document.createElement('div');
  bar.className = 'bar';
  bar.title = `p(${pos}) and the threshold`;
  const fill = document.createElement('span');
  fill.style.width = `${(100 * p).toFixed(1)}%`;
  const mark = document.createElement('i');
  mark.style.left = `${(100 * c.threshold).toFixed(1)}%`;
  bar.append(fill, mark);
  if (result.in_distribution === false) { // refused: no probability bar, say why instead
    detail.textContent = (result.ood_score === null || !Number.isFinite(result.ood_score)
      ? 'the model cannot score this image'
      : `ood_score ${result.ood_score.toFixed(3)} above ${Number(state.meta.ood_threshold).toFixed(3)}`)
      + `: the model was not trained on images like this · ${result.name}`;
    text.append(label, detail);
  } else {
    text.append(label, detail, bar);
  }
  row.append(canvas, text);
  $('results').prepend(row);
}

function showError(name, err) {
  const row = document.createElement('div');
  row.className = 'result error';
  row.dataset.result = JSON.stringify({ name, error: String(err.message || err) });
  row.textContent = `${name}: ${err.message || err}`;
  $('results').prepend(row);
}

$('image-file').addEventListener('change', async (event) => {
  const files = Array.from(event.target.files);
  document.body.dataset.ready = 'busy';
  for (const file of files) {
    try {
      show(await classify(file));
    } catch (err) {
      showError(file.name, err);
    }
  }
  event.target.value = '';
  document.body.dataset.ready = 'done';
});

$('model-file').addEventListener('change', async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    await loadModel(new Uint8Array(await file.arrayBuffer()), file.name);
  } catch (err) {
    setStatus(`${file.name}: ${err.message || err}`, true);
  }
});

const MB = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

function duration(seconds) {
  return seconds < 90 ? `${Math.max(1, Math.round(seconds))} s` : `${(seconds / 60).toFixed(1)} min`;
}

// Size and download time of the served model, from /model.json; where the browser estimates its own link
// speed (navigator.connection.downlink, Mbit/s), that estimate first.
function describeDownload(info) {
  const times = Object.entries(info.download_seconds).map(([speed, s]) => `${duration(s)} at ${speed}`);
  const link = navigator.connection && navigator.connection.downlink;
  if (link) times.unshift(`about ${duration((info.bytes * 8) / (link * 1e6))} on this connection (~${link} Mbit/s)`);
  return `${info.name}: ${MB(info.bytes)} (SHA-256 ${info.sha256.slice(0, 12)}…); download ${times.join(', ')}.`
    + ' Kept by the browser after the first load (its URL names its content hash).';
}

function adviseInt8(info) {
  const v = info.int8_variant;
  if (!v) return;
  const el = $('model-advice');
  el.hidden = false;
  el.textContent = `Recommended for the web: ${v.name}, the INT8 version of this model, is ${MB(v.bytes)} `
    + `(${(info.bytes / v.bytes).toFixed(1)}x smaller) and passed its accuracy gate (labels agree on `
    + `${(100 * v.label_agreement).toFixed(1)} % of ${v.gate_images} ${v.gate_split} images, `
    + `|ΔROC-AUC| ${Number(v.auc_change).toFixed(4)}). Serve it: python cli.py web --onnx ${v.path}`;
}

// Was the response served from the browser's cache (no bytes over the network)?
function fromCache(url) {
  const entry = performance.getEntriesByName(new URL(url, document.baseURI).href).pop();
  return entry !== undefined && entry.transferSize === 0 && entry.decodedBodySize > 0;
}

(async () => {
  try {
    const infoResponse = await fetch('model.json', { cache: 'no-store' });
    if (!infoResponse.ok) throw new Error(`no model served (HTTP ${infoResponse.status}); open a file below`);
    const info = await infoResponse.json();
    $('model-size').textContent = describeDownload(info);
    adviseInt8(info);
    const response = await fetch(info.url); // immutable URL: a second visit reads the browser cache
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${info.url}; reload the page`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const cached = fromCache(info.url);
    await loadModel(bytes, info.name);
    document.body.dataset.modelCache = cached ? 'hit' : 'miss';
    if (cached) $('model-status').textContent += ' (from the browser cache, nothing downloaded)';
  } catch (err) {
    setStatus(`model.onnx: ${err.message || err}`, true);
    document.body.dataset.ready = 'error';
  }
})();
