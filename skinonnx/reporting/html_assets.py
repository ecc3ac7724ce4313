"""The one inline stylesheet and script of report.html, and the Content-Security-Policy that allows exactly them.

The policy (``default-src 'none'``, images from the report's own folder or ``data:``, style and script only by
their SHA-256) makes the browser refuse every other request; the script writes script errors and refused
requests into the page (``#js-errors``), sorts/filters/pages the table and unfolds card sections.
"""

from __future__ import annotations

import base64
import hashlib


def sha256_source(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1b1b}
body{margin:0 auto;max-width:1200px;padding:0 16px 40px}
h1{font-size:22px;margin:18px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.banner{background:#fff3cd;border:1px solid #e0c36c;padding:6px 10px;border-radius:4px}
.head{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.tile{border:1px solid #ccc;border-radius:6px;padding:8px 12px;min-width:170px}
.tile b{display:block;font-size:22px}
.ci{color:#555;font-size:12px}
.verdict{border-left:4px solid #888;padding:4px 10px;margin:8px 0}
.verdict.warn{border-color:#c0392b;background:#fdecea;font-weight:600}
.muted{color:#666}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 6px;text-align:left;vertical-align:middle}
th button{font:inherit;font-weight:600;background:none;border:0;cursor:pointer;padding:0}
.prov td:first-child{color:#555;white-space:nowrap;width:1%}
code{font-size:12px;word-break:break-all}
.figs{display:flex;flex-wrap:wrap;gap:12px}
.figs figure{margin:0;max-width:100%}
.figs img{width:380px;max-width:100%;height:auto;border:1px solid #eee}
.cases{display:flex;flex-wrap:wrap;gap:10px}
.case{margin:0;width:228px;border:2px solid #ccc;border-radius:6px;padding:4px}
.case.FN{border-color:#c62828}
.case.FP{border-color:#ef8f00}
.case img{display:block;width:226px;height:112px;background:#eee}
.case figcaption{font-size:12px;overflow-wrap:anywhere}
.tag{font-weight:700}
.FN .tag{color:#c62828}
.FP .tag{color:#b36b00}
.tag.refused{color:#6a1b9a;border:1px solid #6a1b9a;border-radius:3px;padding:0 3px}
td img{display:block;width:114px;height:56px;background:#eee}
.controls{display:flex;gap:10px;margin:6px 0;flex-wrap:wrap}
#js-errors{color:#b00020;border:1px solid #b00020;padding:4px 20px}
"""

# Shown on the page (#js-errors, body[data-errors]): a missing image, a script error or a CSP refusal; every
# skinonnx page (report.html, audit.html) starts its script with it, so a browser test can read one attribute.
ERROR_REPORTER = """
  var errors = document.getElementById('js-errors');
  function report(message) {
    errors.hidden = false;
    var item = document.createElement('li');
    item.textContent = message;
    errors.appendChild(item);
    document.body.setAttribute('data-errors', String(errors.children.length));
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    report(t && t !== window && t.src ? 'could not load ' + t.getAttribute('src') : 'script error: ' + e.message);
  }, true);
  document.addEventListener('securitypolicyviolation', function (e) {
    report('refused by the content security policy: ' + e.violatedDirective + ' ' + e.blockedURI);
  });
"""

SCRIPT = """
(function () {
  var CARD_PAGE = parseInt(document.body.getAttribute('data-card-page'), 10);""" + ERROR_REPORTER + """
  var body = document.querySelector('#rest tbody');
  if (body) {
    var rows = Array.prototype.slice.call(body.rows);
    var text = document.getElementById('filter-text'), outcome = document.getElementById('filter-outcome');
    var shown = document.getElementById('shown'), more = document.getElementById('more');
    var PAGE = parseInt(body.getAttribute('data-page'), 10), limit = PAGE, direction = {};
    var show = function () {  // rows past the page stay display:none: no layout, no image request
      var needle = text.value.toLowerCase(), want = outcome.value, n = 0;
      rows.forEach(function (r) {
        var ok = (!needle || r.getAttribute('data-name').indexOf(needle) >= 0) &&
                 (!want || r.getAttribute('data-outcome') === want);
        if (ok) { n += 1; }
        r.hidden = !(ok && n <= limit);
        var src = r.getAttribute('data-thumb');
        if (!r.hidden && src && !r.cells[0].firstChild) {  // images only for rows on screen
          addImage(r.cells[0], src, 114, 56, false);
        }
      });
      shown.textContent = String(Math.min(n, limit)) + ' of ' + String(n);
      more.hidden = n <= limit;
    };
    var sort = function (key, numeric) {
      direction[key] = -(direction[key] || -1);
      var d = direction[key];
      rows.sort(function (a, b) {
        var x = a.getAttribute('data-' + key), y = b.getAttribute('data-' + key);
        if (numeric) { return d * (parseFloat(x) - parseFloat(y)); }
        return d * (x < y ? -1 : x > y ? 1 : 0);
      });
      var frag = document.createDocumentFragment();
      rows.forEach(function (r) { frag.appendChild(r); });
      body.appendChild(frag);
      show();
    };
    text.addEventListener('input', function () { limit = PAGE; show(); });
    outcome.addEventListener('change', function () { limit = PAGE; show(); });
    more.addEventListener('click', function () { limit += PAGE; show(); });
    document.querySelectorAll('#rest th button').forEach(function (b) {
      b.addEventListener('click', function () { sort(b.getAttribute('data-key'), b.hasAttribute('data-numeric')); });
    });
    show();
  }
  function addImage(holder, src, width, height, first) {
    var img = document.createElement('img');
    img.loading = 'lazy';
    img.width = width;
    img.height = height;
    img.alt = '';
    img.src = src;
    holder.insertBefore(img, first ? holder.firstChild : null);
  }
  document.querySelectorAll('.more-cards').forEach(function (button) {
    button.addEventListener('click', function () {
      var hidden = button.previousElementSibling.querySelectorAll('figure[hidden]');
      for (var i = 0; i < Math.min(CARD_PAGE, hidden.length); i += 1) {
        hidden[i].hidden = false;
        addImage(hidden[i], hidden[i].getAttribute('data-thumb'), 226, 112, true);
      }
      button.hidden = hidden.length <= CARD_PAGE;
    });
  });
  window.addEventListener('load', function () {
    document.body.setAttribute('data-load-ms', String(Math.round(performance.now())));
  });
  document.body.setAttribute('data-render-ms', String(Math.round(performance.now())));
  document.body.setAttribute('data-ready', '1');
})();
"""


def csp(style: str = STYLE, script: str = SCRIPT) -> str:
    """A page's Content-Security-Policy: nothing but its own folder's images and its two inline blocks."""
    return (f"default-src 'none'; img-src 'self' data:; style-src '{sha256_source(style)}'; "
            f"script-src '{sha256_source(script)}'; base-uri 'none'; form-action 'none'")
