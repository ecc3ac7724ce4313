// The preprocessing contract of a skinonnx model (docs/EMBEDDING.md), in plain JavaScript: read the
// metadata into a contract, then resize geometry, JPEG draft scale, centre crop, normalisation; the decision is
// the graph's own ('label' and 'in_distribution' outputs), read by decision().
// Shared by the Node example (index.js) and the browser example (examples/web/): require() in Node,
// <script> in the browser (window.SkinOnnx.*). Pixels are packed RGB uint8 (3 bytes per pixel, row-major).
(function (root, factory) {
  'use strict';
  const api = factory();
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.SkinOnnx = Object.assign(root.SkinOnnx || {}, api);
}(typeof self !== 'undefined' ? self : this, () => {
'use strict';

const SCHEMA_KEY = 'skinonnx_schema_version';
const MAX_PIXELS = 50000000; // the Python tool's default decompression-bomb guard

// Python's round(): halves go to the even neighbour (used for the centre-crop offset).
function roundHalfEven(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d !== 0.5) return d < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}

// The preprocessing contract, from the metadata (all values are strings; lists are JSON). Throws on a
// file that is not a skinonnx schema-1 model.
function readContract(meta) {
  if (!(SCHEMA_KEY in meta)) throw new Error('not a skinonnx model (no skinonnx_schema_version metadata key)');
  if (meta[SCHEMA_KEY] !== '1') throw new Error(`metadata schema ${meta[SCHEMA_KEY]} is not supported (this example reads 1)`);
  if (meta.interpolation !== 'bilinear') throw new Error(`interpolation ${meta.interpolation} is not implemented here`);
  const outputs = JSON.parse(meta.output_names || '[]');
  if (!outputs.includes('label') || !outputs.includes('in_distribution')) {
    throw new Error("no 'label'/'in_distribution' outputs (exported before them): run skinonnx export again");
  }
  const classes = JSON.parse(meta.classes);
  return {
    classes,
    positiveIndex: Number(meta.positive_index),
    // the malignancy group (two classes: the positive class); p_malignant is their summed probability
    malignantClasses: meta.malignant_classes ? JSON.parse(meta.malignant_classes)
      : [classes[Number(meta.positive_index)]],
    threshold: Number(meta.decision_threshold),
    refusal: JSON.parse(meta.decision).refusal,
    imageSize: Number(meta.image_size),
    resizeSize: Number(meta.resize_size),
    mean: JSON.parse(meta.mean),
    std: JSON.parse(meta.std),
    inputName: meta.input_name,
    uint8: (meta.input_dtype || 'float32') === 'uint8',
  };
}

// Shorter side -> resizeSize; the longer side is truncated, as Python's int() does.
function resizedSize(width, height, r) {
  return width <= height ? [r, Math.trunc((r * height) / width)] : [Math.trunc((r * width) / height), r];
}

// Pillow decodes a JPEG at least twice resizeSize on both sides at 1/2, 1/4 or 1/8 scale (libjpeg DCT
// scaling). Decoders without that control approximate it by averaging a x a blocks (boxReduce).
function draftFactor(width, height, r) {
  const scale = Math.min(Math.floor(width / r), Math.floor(height / r));
  return [8, 4, 2, 1].find((a) => scale >= a);
}

function boxReduce(rgb, width, height, a) {
  const ow = Math.ceil(width / a);
  const oh = Math.ceil(height / a);
  const out = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const sums = [0, 0, 0];
      let n = 0;
      for (let yy = y * a; yy < Math.min(height, (y + 1) * a); yy++) {
        for (let xx = x * a; xx < Math.min(width, (x + 1) * a); xx++) {
          const i = (yy * width + xx) * 3;
          sums[0] += rgb[i];
          sums[1] += rgb[i + 1];
          sums[2] += rgb[i + 2];
          n++;
        }
      }
      for (let c = 0; c < 3; c++) out[(y * ow + x) * 3 + c] = Math.round(sums[c] / n);
    }
  }
  return { data: out, width: ow, height: oh };
}

function centerCrop(image, s) {
  const left = roundHalfEven((image.width - s) / 2);
  const top = roundHalfEven((image.height - s) / 2);
  const out = new Uint8Array(s * s * 3);
  for (let y = 0; y < s; y++) {
    const from = ((top + y) * image.width + left) * 3;
    out.set(image.data.subarray(from, from + s * 3), y * s * 3);
  }
  return out;
}

// uint8 HWC -> float32 CHW, (x / 255 - mean) / std, each step rounded to float32 as numpy does.
function normalize(hwc, s, mean, std) {
  const f = Math.fround;
  const out = new Float32Array(3 * s * s);
  const m = mean.map(f);
  const d = std.map(f);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < s * s; i++) {
      out[c * s * s + i] = f(f(f(hwc[i * 3 + c] / 255) - m[c]) / d[c]);
    }
  }
  return out;
}

// Row i of a run's outputs -> the graph's decision: the class name, or the refusal text when the image is not
// in distribution, and the malignancy ('p_malignant', 'malignant'; null in files exported before them).
// Nothing is compared here: the file decides.
function decision(contract, outputs, i = 0) {
  const inDistribution = Boolean(outputs.in_distribution.data[i]);
  const label = inDistribution ? contract.classes[Number(outputs.label.data[i])] : contract.refusal;
  const pMalignant = outputs.p_malignant ? Number(outputs.p_malignant.data[i]) : null;
  const malignant = outputs.malignant ? Boolean(outputs.malignant.data[i]) : null;
  return { label, inDistribution, pMalignant, malignant };
}

return {
  SCHEMA_KEY, MAX_PIXELS, roundHalfEven, readContract, resizedSize, draftFactor, boxReduce, centerCrop, normalize,
  decision,
};
}));
