'use strict';
// Run the page's start-up (app.js) in Node against a real `web` server: the DOM is a stand-in, ONNX Runtime Web a
// stub session; fetch, the page's scripts and the model bytes are real. Prints the page's texts as JSON.
const path = require('path');
const [url, pageDir] = process.argv.slice(2);
const elements = {};
const el = (id) => (elements[id] ||= { id, textContent: '', className: '', hidden: false, dataset: {}, disabled: true,
  addEventListener() {}, replaceChildren(...c) { this.children = c.length; }, prepend() {} });
global.document = { getElementById: el, baseURI: url, body: { dataset: {} },
  createElement: () => ({ dataset: {}, style: {}, append() {} }) };
global.self = { crossOriginIsolated: false };
if (typeof navigator === 'undefined') global.navigator = { hardwareConcurrency: 2 }; // Node 20 has none
const lib = (name) => require(path.join(pageDir, 'lib', name));
global.SkinOnnx = { ...lib('onnx_metadata.js'), ...lib('contract.js'), ...lib('pillow_resize.js') };
let modelBytes = 0;
global.ort = { env: { wasm: {}, versions: { web: 'stub' } },
  InferenceSession: { create: async (bytes) => { modelBytes = bytes.length; return { inputNames: ['input'] }; } } };
const requested = [];
const realFetch = global.fetch;
global.fetch = (u, o) => { requested.push(String(u)); return realFetch(new URL(u, url), o); };
require(path.join(pageDir, 'app.js'));
const t0 = Date.now();
(function wait() {
  const ready = document.body.dataset.ready;
  if (['model', 'error'].includes(ready) || Date.now() - t0 > 60000) {
    setTimeout(() => {
      const text = Object.fromEntries(Object.entries(elements).map(([k, v]) => [k, v.textContent]));
      process.stdout.write(JSON.stringify({ ready, requested, modelBytes, text, adviceHidden: el('model-advice').hidden })
        + '\n');
    }, 50);
  } else setTimeout(wait, 20);
}());
