#!/usr/bin/env node
'use strict';
// Classify skin-lesion images with a skinonnx ONNX model from Node.js.
//
//   npm ci --ignore-scripts          (once, in this folder)
//   node index.js MODEL.onnx IMAGE... [--resize pillow|sharp]
//
// Prints one JSON object per image: {"path", "label", "probabilities": {class: p}, "logits": [...]}.
// Everything it needs comes from the model's metadata (docs/EMBEDDING.md). Works with the float
// model and with the uint8-input variant from `export --embed-preprocessing`.
//
// --resize pillow (default): a line-by-line port of Pillow's BILINEAR filter (pillow_resize.js),
//   so the model sees the same pixels as in Python: probabilities agree with `predict` to ~1e-6.
// --resize sharp: sharp's own linear kernel (libvips). A different resizer; see EMBEDDING.md for
//   the differences to expect.

const fs = require('fs');
const ort = require('onnxruntime-node');
const sharp = require('sharp');
const { readOnnxHeader } = require('./onnx_metadata');
const { resizeBilinear } = require('./pillow_resize');
const shared = require('./contract');

const {
  MAX_PIXELS, roundHalfEven, resizedSize, draftFactor, boxReduce, centerCrop, normalize, decision,
} = shared;

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}

function readContract(meta) {
  try {
    return shared.readContract(meta);
  } catch (err) {
    return fail(err.message);
  }
}

// Decode (EXIF orientation applied, alpha composited on white, ICC profile ignored as Pillow does)
// and resize the shorter side to r. Returns packed RGB uint8.
async function decodeAndResize(path, r, mode) {
  const open = () => sharp(path, { autoOrient: true, ignoreIcc: true, failOn: 'error', limitInputPixels: MAX_PIXELS })
    .flatten({ background: '#ffffff' }).toColourspace('srgb');
  const meta = await sharp(path, { autoOrient: true, limitInputPixels: MAX_PIXELS }).metadata();
  const width = meta.autoOrient ? meta.autoOrient.width : meta.width;
  const height = meta.autoOrient ? meta.autoOrient.height : meta.height;
  const [w, h] = resizedSize(width, height, r);
  if (mode === 'sharp') {
    const pipeline = open();
    if (w !== width || h !== height) pipeline.resize(w, h, { kernel: 'linear', fit: 'fill' });
    const { data, info } = await pipeline.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    return { data, width: info.width, height: info.height };
  }
  const { data, info } = await open().removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  let image = { data, width: info.width, height: info.height };
  const a = meta.format === 'jpeg' ? draftFactor(width, height, r) : 1;
  if (a > 1) image = boxReduce(image.data, image.width, image.height, a);
  const [w2, h2] = resizedSize(image.width, image.height, r);
  return { data: resizeBilinear(image.data, image.width, image.height, w2, h2), width: w2, height: h2 };
}

async function inputFor(path, contract, mode) {
  const image = await decodeAndResize(path, contract.resizeSize, mode);
  const s = contract.imageSize;
  if (contract.uint8) {
    // the uint8 variant crops in the graph: the resized image goes in as it is
    return new ort.Tensor('uint8', Uint8Array.from(image.data), [1, image.height, image.width, 3]);
  }
  return new ort.Tensor('float32', normalize(centerCrop(image, s), s, contract.mean, contract.std), [1, 3, s, s]);
}

async function main(argv) {
  const args = [];
  let mode = 'pillow';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--resize') mode = argv[++i];
    else if (argv[i].startsWith('--')) fail(`unknown option ${argv[i]}`);
    else args.push(argv[i]);
  }
  if (!['pillow', 'sharp'].includes(mode)) fail(`--resize must be pillow or sharp, got ${mode}`);
  if (args.length < 2) fail('usage: node index.js MODEL.onnx IMAGE... [--resize pillow|sharp]');
  const [modelPath, ...images] = args;
  let bytes;
  try {
    bytes = fs.readFileSync(modelPath);
  } catch (err) {
    fail(`cannot read ${modelPath}: ${err.code || err.message}`);
  }
  let header;
  try {
    header = readOnnxHeader(bytes);
  } catch (err) {
    fail(`${modelPath}: ${err.message}`);
  }
  const contract = readContract(header.metadata);
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  if (session.inputNames[0] !== contract.inputName) fail(`graph input ${session.inputNames[0]} != metadata input_name`);
  process.stderr.write(`model ${modelPath}: input '${contract.inputName}' ${contract.uint8 ? 'uint8 NHWC' : 'float32 NCHW'}`
    + `, opset ${header.opsets['ai.onnx']}, resize ${mode}\n`);
  let classified = 0;
  for (const path of images) {
    try {
      const input = await inputFor(path, contract, mode);
      const result = await session.run({ [contract.inputName]: input });
      const p = Array.from(result.probabilities.data);
      const { label, inDistribution, pMalignant, malignant } = decision(contract, result);
      const probabilities = Object.fromEntries(contract.classes.map((c, i) => [c, p[i]]));
      const logits = Array.from(result.logits.data);
      const row = { path, label, in_distribution: inDistribution, probabilities, logits };
      if (pMalignant !== null) Object.assign(row, { p_malignant: pMalignant, malignant }); // older files lack them
      process.stdout.write(`${JSON.stringify(row)}\n`);
      classified++;
    } catch (err) {
      process.stdout.write(`${JSON.stringify({ path, error: String(err.message || err).split('\n')[0] })}\n`);
    }
  }
  if (classified === 0) process.exit(1);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => fail(err.message || String(err)));
}

module.exports = { decodeAndResize, centerCrop, normalize, readContract, roundHalfEven };
