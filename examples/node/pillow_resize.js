// Pillow's Image.resize(size, Image.BILINEAR) for 8-bit RGB, ported line by line from
// Pillow's src/libImaging/Resample.c so that a JavaScript app gets the model's exact pixels.
//
// The algorithm (docs/EMBEDDING.md, "Resize"):
// * separable: a horizontal pass into a temporary uint8 image, then a vertical pass;
//   a pass is skipped when that side keeps its size;
// * triangle filter (support 1) whose support is scaled by the reduction factor when
//   shrinking (antialiasing), pixel centres at i + 0.5;
// * weights are normalised to sum 1, then turned into 22-bit fixed point; each output
//   value is (sum(pixel * weight) + 2^21) >> 22, clamped to 0..255.
//
// Works in Node (require) and in the browser (<script>: window.SkinOnnx.resizeBilinear).
(function (root, factory) {
  'use strict';
  const api = factory();
  if (typeof module === 'object' && module.exports) module.exports = api;
  else root.SkinOnnx = Object.assign(root.SkinOnnx || {}, api);
}(typeof self !== 'undefined' ? self : this, () => {
'use strict';

const PRECISION_BITS = 32 - 8 - 2;

function bilinearFilter(x) {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

// For each output index: the first input index, the number of inputs, and their fixed-point weights.
function precomputeCoeffs(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 1.0 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterScale;
    // C's (int) cast truncates toward zero; the values here are >= -0.5, so trunc == C behaviour
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bilinearFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      // normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS))
        : Math.trunc(0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, weights };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

function horizontal(src, width, rowFirst, rows, outWidth, c) {
  const out = new Uint8Array(outWidth * rows * 3);
  for (let y = 0; y < rows; y++) {
    const rowIn = (y + rowFirst) * width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = c.bounds[xx * 2];
      const n = c.bounds[xx * 2 + 1];
      const kOff = xx * c.ksize;
      let s0 = 1 << (PRECISION_BITS - 1);
      let s1 = s0;
      let s2 = s0;
      for (let x = 0; x < n; x++) {
        const w = c.weights[kOff + x];
        const i = rowIn + (x + xmin) * 3;
        s0 += src[i] * w;
        s1 += src[i + 1] * w;
        s2 += src[i + 2] * w;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

function vertical(src, width, outHeight, c, rowShift) {
  const out = new Uint8Array(width * outHeight * 3);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = c.bounds[yy * 2] - rowShift;
    const n = c.bounds[yy * 2 + 1];
    const kOff = yy * c.ksize;
    for (let xx = 0; xx < width; xx++) {
      let s0 = 1 << (PRECISION_BITS - 1);
      let s1 = s0;
      let s2 = s0;
      for (let y = 0; y < n; y++) {
        const w = c.weights[kOff + y];
        const i = ((y + ymin) * width + xx) * 3;
        s0 += src[i] * w;
        s1 += src[i + 1] * w;
        s2 += src[i + 2] * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/**
 * Resize packed RGB uint8 pixels (row-major, 3 bytes per pixel) like Pillow's BILINEAR.
 * @returns {Uint8Array} outWidth * outHeight * 3 bytes
 */
function resizeBilinear(rgb, width, height, outWidth, outHeight) {
  if (width === outWidth && height === outHeight) return Uint8Array.from(rgb);
  const ch = precomputeCoeffs(width, outWidth);
  const cv = precomputeCoeffs(height, outHeight);
  let data = rgb;
  let rowShift = 0;
  if (width !== outWidth) {
    // only the input rows the vertical pass will read are resampled (as Pillow does)
    const first = cv.bounds[0];
    const last = cv.bounds[outHeight * 2 - 2] + cv.bounds[outHeight * 2 - 1];
    data = horizontal(rgb, width, first, last - first, outWidth, ch);
    rowShift = first;
  }
  if (height !== outHeight) {
    data = vertical(data, outWidth, outHeight, cv, rowShift);
  }
  return data;
}

return { resizeBilinear };
}));
