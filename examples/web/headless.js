#!/usr/bin/env node
'use strict';
// Drive the browser example in headless Chromium (puppeteer-core, the system's Chromium; no browser
// download): open the page served by `python cli.py web`, choose each image in its file input, read the
// result the page shows. Used by tests/deploy/test_web.py and benchmarks/runtimes.py.
//
//   node headless.js URL IMAGE... [--chromium /usr/bin/chromium] [--screenshot page.png] [--repeat N]
//
// Prints one JSON line per image ({"name", "label", "probabilities", "logits", "threshold", "ms"}) and a
// last line {"summary": {...}}: every request the page made that left its origin, console errors and
// page errors, whether it was cross-origin isolated, the wasm thread count, and timings (passMs: each
// pass over all images with --repeat, file choice to last result).

const puppeteer = require('puppeteer-core');

function parseArgs(argv) {
  const opts = { chromium: process.env.CHROMIUM || '/usr/bin/chromium', screenshot: null, repeat: 1, images: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--chromium') opts.chromium = argv[++i];
    else if (argv[i] === '--screenshot') opts.screenshot = argv[++i];
    else if (argv[i] === '--repeat') opts.repeat = Number(argv[++i]);
    else if (argv[i] === '--user-data-dir') opts.userDataDir = argv[++i];
    else if (!opts.url) opts.url = argv[i];
    else opts.images.push(argv[i]);
  }
  if (!opts.url || !opts.images.length) {
    process.stderr.write('usage: node headless.js URL IMAGE... [--chromium PATH] [--screenshot PNG] [--repeat N]\n');
    process.exit(2);
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const origin = new URL(opts.url).origin;
  const browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    userDataDir: opts.userDataDir,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-default-apps', '--disable-extensions'],
  });
  const outside = [];
  const consoleErrors = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 900, height: 1000 });
    page.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith('data:') && !url.startsWith('blob:') && new URL(url).origin !== origin) outside.push(url);
    });
    page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
    page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
    const t0 = Date.now();
    await page.goto(opts.url, { waitUntil: 'load' });
    await page.waitForFunction(() => ['model', 'error'].includes(document.body.dataset.ready), { timeout: 120000 });
    const loadMs = Date.now() - t0;
    const status = await page.$eval('#model-status', (el) => el.textContent);
    if (await page.evaluate(() => document.body.dataset.ready) === 'error') throw new Error(`page: ${status}`);
    const input = await page.$('#image-file');
    const passMs = [];
    for (let r = 0; r < opts.repeat; r++) {
      const t1 = Date.now();
      await page.evaluate(() => { document.body.dataset.ready = 'busy'; });
      await input.uploadFile(...opts.images);
      await page.waitForFunction(() => document.body.dataset.ready === 'done', { timeout: 600000 });
      passMs.push(Date.now() - t1);
    }
    const classifyMs = passMs.reduce((a, b) => a + b, 0);
    const rows = await page.$$eval('#results .result', (els) => els.map((el) => JSON.parse(el.dataset.result)));
    rows.reverse(); // the page shows the newest first
    for (const row of rows.slice(0, opts.images.length)) {
      row.path = opts.images[rows.indexOf(row)];
      process.stdout.write(`${JSON.stringify(row)}\n`);
    }
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
    const env = await page.evaluate(() => ({
      crossOriginIsolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads, ortVersion: ort.env.versions.web,
      userAgent: navigator.userAgent,
    }));
    const inferenceMs = rows.map((r) => (r.ms ? r.ms.inference : NaN));
    process.stdout.write(`${JSON.stringify({ summary: {
      origin, requestsOutsideOrigin: outside, consoleErrors, ...env, images: rows.length, loadMs, classifyMs, passMs,
      inferenceMs, browser: await browser.version(),
    } })}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  process.stderr.write(`error: ${err.message || err}\n`);
  process.exit(1);
});
