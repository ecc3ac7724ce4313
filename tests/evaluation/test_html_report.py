"""report.html: case order, counts equal to summary.json, self-contained under a CSP; loaded in headless
Chromium with no console error and no network request (a planted request is refused, a control without
the CSP is not)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from benchmarks.chromium import dump_dom, find_chromium, screenshot
from benchmarks.report_html import synthetic_summary
from skinonnx.deploy.cam_overlays import relative_to_threshold
from skinonnx.reporting.html_assets import SCRIPT
from skinonnx.reporting.html_report import CARD_PAGE, NEAR_CASES, TABLE_PAGE, cases_from_rows, order_cases, render_html

from ..conftest import TrainedModel, run_cli


def _rows(y: np.ndarray, p: np.ndarray, t: float) -> list[dict]:
    name = {1: "malignant", 0: "benign"}
    return [{"path": f"img/{i:03d}<x>.jpg", "label": name[int(label)], "probability": float(prob),
             "prediction": name[int(prob >= t)]} for i, (label, prob) in enumerate(zip(y, p, strict=True))]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.data: dict[str, str] = {}
        self._open: str | None = None
        self.inline: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._open = attributes.get("data-count") or (tag if tag in ("style", "script") else None)

    def handle_data(self, data):
        if self._open in ("style", "script"):
            self.inline[self._open] = self.inline.get(self._open, "") + data
        elif self._open:
            self.data[self._open] = data
        self._open = None if self._open not in ("style", "script") else self._open

    def handle_endtag(self, tag):
        self._open = None


def parse(text: str) -> _Collect:
    collected = _Collect()
    collected.feed(text)
    return collected


def test_cases_are_ordered_errors_first_and_the_page_is_self_contained() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.4).astype(int)
    p = np.clip(rng.normal(0.4 + 0.25 * y, 0.18), 0, 1)
    t = 0.5
    skipped = [{"path": "bad <1>.jpg", "problem": "corrupt or truncated image data"}]
    summary = synthetic_summary(y, p, t, skipped)
    summary["files"] = ["roc_curve.png", "summary.json"]
    cases = cases_from_rows(_rows(y, p, t), "malignant", t, [f"report_files/{i:05d}.jpg" for i in range(len(y))])
    fn, fp, near, rest = order_cases(cases)
    c = summary["metrics"]["confusion"]
    assert (len(fn), len(fp)) == (c["fn"], c["fp"]) and len(near) == NEAR_CASES
    assert len(fn) + len(fp) + len(near) + len(rest) == len(y)
    # missed malignant lesions, most confidently wrong (lowest probability) first; then FPs highest first
    assert [x.probability for x in fn] == sorted(p[(y == 1) & (p < t)])
    assert [x.probability for x in fp] == sorted(p[(y == 0) & (p >= t)], reverse=True)
    correct_distance = np.sort(np.abs(p[(y == 1) == (p >= t)] - t))
    np.testing.assert_allclose([abs(x.distance) for x in near], correct_distance[:NEAR_CASES])

    page = render_html(summary, cases, has_cam=True)
    doc = parse(page)
    for key, want in (("n_evaluated", 120), ("tp", c["tp"]), ("fn", c["fn"]), ("fn_cards", c["fn"]),
                      ("fp_cards", c["fp"]), ("near_cards", NEAR_CASES), ("rest", len(rest)), ("skipped_rows", 1)):
        assert doc.data[key] == str(want), key
    figures = [a for tag, a in doc.tags if tag == "figure"]
    outcomes = [a["data-outcome"] for a in figures if a.get("data-outcome")]
    assert outcomes[:len(fn) + len(fp)] == ["FN"] * len(fn) + ["FP"] * len(fp)
    assert "bad &lt;1&gt;.jpg" in page and "<x>" not in page  # names are escaped
    # every reference is relative (no scheme, no //host), and the CSP allows exactly the inline code present
    refs = [a.get(k) for _, a in doc.tags for k in ("src", "href") if a.get(k)]
    assert refs and not [r for r in refs if re.match(r"^([a-z]+:|//)", r)]
    csp = next(a["content"] for tag, a in doc.tags if tag == "meta" and a.get("http-equiv") ==
               "Content-Security-Policy")
    assert csp.startswith("default-src 'none';") and "unsafe" not in csp
    for kind in ("style", "script"):
        digest = base64.b64encode(hashlib.sha256(doc.inline[kind].encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp


def test_maps_are_shown_relative_to_the_decision_threshold() -> None:
    """Shifted evenly, the map adds up to the image's margin over the threshold: positive exactly for positive calls."""
    from scipy.special import expit, logit

    rng = np.random.default_rng(3)
    temperature, threshold, bias = 2.5, 0.35, -0.6
    for _ in range(50):
        cam = rng.normal(-0.05, 0.1, (7, 7))
        log_odds = float(cam.sum()) + bias  # what the graph's logits give: the cells plus the bias difference
        shown = relative_to_threshold(cam, log_odds, threshold, temperature)
        assert float(shown.sum()) == pytest.approx(log_odds - temperature * logit(threshold), abs=1e-5)
        np.testing.assert_allclose(shown - cam, (shown - cam).flat[0], atol=1e-6)  # an even shift
        called = expit(log_odds / temperature) >= threshold
        assert (shown.sum() >= 0) == called and (not called or shown.max() > 0)


# Clicks the page's own controls, then writes what it saw into the DOM (allowed by adding its hash to the CSP).
SELFTEST = """
(function () {
  var out = [];
  function rows() { return Array.prototype.slice.call(document.querySelectorAll('#rest tbody tr')); }
  function visible() { return rows().filter(function (r) { return !r.hidden; }); }
  function sorted(sign) {
    var v = visible().map(function (r) { return parseFloat(r.getAttribute('data-p')); });
    return v.every(function (x, i) { return i === 0 || sign * (x - v[i - 1]) >= 0; });
  }
  out.push('start:' + visible().length + ':' + visible().every(function (r) { return r.querySelector('img'); }));
  var button = document.querySelector('#rest th button[data-key="p"]');
  button.click();
  out.push('ascending:' + sorted(1));
  button.click();
  out.push('descending:' + sorted(-1));
  document.getElementById('more').click();
  out.push('more:' + visible().length);
  var outcome = document.getElementById('filter-outcome');
  outcome.value = 'TN';
  outcome.dispatchEvent(new Event('change'));
  out.push('tn:' + visible().length + ':' + visible().every(function (r) {
    return r.getAttribute('data-outcome') === 'TN' && r.querySelector('img'); }));
  var cards = document.querySelector('.more-cards');
  var before = cards.previousElementSibling.querySelectorAll('figure:not([hidden]) img').length;
  cards.click();
  out.push('cards:' + before + ':' + cards.previousElementSibling.querySelectorAll('figure:not([hidden]) img').length);
  document.body.setAttribute('data-selftest', out.join(','));
})();
"""


def test_table_sorts_filters_and_pages_and_cards_unfold_in_chromium(tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); report.html not browser-tested")
    rng = np.random.default_rng(1)
    n = 900
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(rng.normal(0.45 + 0.2 * y, 0.2), 0, 1)
    (tmp_path / "report_files").mkdir()
    Image.new("RGB", (226, 112), (200, 120, 90)).save(tmp_path / "report_files" / "t.jpg")
    cases = cases_from_rows(_rows(y, p, 0.5), "malignant", 0.5, ["report_files/t.jpg"] * n)
    fn, fp, _, rest = order_cases(cases)
    assert len(fp) > CARD_PAGE and len(rest) > 2 * TABLE_PAGE  # both "show more" paths are exercised
    page = render_html(synthetic_summary(y, p, 0.5, []), cases, has_cam=True)
    digest = base64.b64encode(hashlib.sha256(SELFTEST.encode()).digest()).decode()
    page = page.replace(f"<script>{SCRIPT}</script>", f"<script>{SCRIPT}</script><script>{SELFTEST}</script>")
    page = page.replace("script-src '", f"script-src 'sha256-{digest}' '")
    (tmp_path / "interact.html").write_text(page)
    dom = dump_dom(tmp_path / "interact.html").stdout
    found = re.search(r'data-selftest="([^"]*)"', dom)
    assert found, dom[-3000:]
    steps = dict(step.split(":", 1) for step in found.group(1).split(","))
    n_tn = sum(c.outcome == "TN" for c in rest)
    unfolded = fn if len(fn) > CARD_PAGE else fp  # the first section with a "show more" button
    assert steps == {"start": f"{TABLE_PAGE}:true", "ascending": "true", "descending": "true",
                     "more": str(2 * TABLE_PAGE), "tn": f"{min(n_tn, TABLE_PAGE)}:true",
                     "cards": f"{CARD_PAGE}:{min(2 * CARD_PAGE, len(unfolded))}"}
    assert _js_errors(dom) == []


class _Counter(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        _Counter.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def _js_errors(dom: str) -> list[str]:
    block = re.search(r'<ul id="js-errors"[^>]*>(.*?)</ul>', dom, flags=re.S)
    assert block, "the page did not render its error list"
    return re.findall(r"<li>(.*?)</li>", block.group(1))


@pytest.mark.slow
def test_report_html_in_headless_chromium(trained: TrainedModel, tmp_path: Path) -> None:
    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); report.html not browser-tested")
    out = tmp_path / "report"
    run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", out, "--bootstrap", "50", "--quiet")
    s = json.loads((out / "summary.json").read_text())
    assert s["files"][-3:] == ["report.html", "report_files/", "summary.json"]
    thumbs = sorted((out / "report_files").iterdir())
    assert len(thumbs) == s["data"]["n_evaluated"]
    with Image.open(thumbs[0]) as first:  # [crop | crop + heatmap]: the fixture model has the cam output
        assert first.format == "JPEG" and first.size == (2 * 112 + 2, 112)

    run = dump_dom(out / "report.html")
    dom = run.stdout
    assert 'data-ready="1"' in dom, run.stderr[-2000:]
    assert _js_errors(dom) == [] and 'data-errors=' not in dom
    assert run.console_lines() == []  # no console message of any kind
    shown = dict(re.findall(r'data-count="([a-z_]+)">(\d+)<', dom))
    c, d = s["metrics"]["confusion"], s["data"]
    assert {k: int(v) for k, v in shown.items() if k in ("n_evaluated", "n_positive", "n_skipped", "tp", "fn", "tn",
                                                          "fp")} == {
        "n_evaluated": d["n_evaluated"], "n_positive": d["n_positive"], "n_skipped": d["n_skipped"], **c}
    assert int(shown["fn_cards"]) == c["fn"] and int(shown["fp_cards"]) == c["fp"]
    assert int(shown["fn_cards"]) + int(shown["fp_cards"]) + int(shown["near_cards"]) + int(shown["rest"]) \
        == d["n_evaluated"]
    assert dom.count('class="case FN"') == c["fn"]

    png = tmp_path / "report.png"
    screenshot(out / "report.html", png)
    with Image.open(png) as shot:
        pixels = np.asarray(shot.convert("RGB"), dtype=float)
    assert shot.size == (1280, 2400) and pixels.std() > 20  # rendered, not blank

    # The CSP is what keeps the page offline: a planted image, stylesheet and script aimed at a real server on
    # 127.0.0.1 are refused (and reported in the page); the same page without the CSP does reach the server.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        plant = (f'<img src="{base}/leak.png"><link rel="stylesheet" href="{base}/leak.css">'
                 f'<script src="{base}/leak.js"></script></body>')
        page = (out / "report.html").read_text()
        (out / "planted.html").write_text(page.replace("</body>", plant))
        _Counter.hits.clear()
        planted = dump_dom(out / "planted.html").stdout
        assert _Counter.hits == []
        refused = [e for e in _js_errors(planted) if e.startswith("refused by the content security policy")]
        assert len(refused) == 3, _js_errors(planted)
        (out / "control.html").write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                                                 page).replace("</body>", plant))
        dump_dom(out / "control.html")
        assert {"/leak.png", "/leak.css", "/leak.js"} <= set(_Counter.hits)
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_shows_refusals_and_the_risk_coverage_verdict() -> None:
    # issue 29 item 4: no out-of-distribution section, refused images shown as ordinary errors, and a
    # risk-coverage table without the CIs and the verdict the terminal prints
    from skinonnx.reporting.ood_summary import ood_section
    from skinonnx.reporting.safety import safety_summary, terminal_lines

    rng = np.random.default_rng(3)
    y = (rng.random(80) < 0.4).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    t = 0.5
    rows = _rows(y, p, t)
    scores = rng.gamma(2.0, 1.0, len(y))
    for row, score in zip(rows, scores, strict=True):
        row["ood_score"], row["in_distribution"] = float(score), bool(score <= 4.0)
    meta = {"ood": json.dumps({"method": "mahalanobis", "threshold_fit": {"accept": 0.95}})}
    summary = synthetic_summary(y, p, t, [], bootstrap=100)
    summary["ood"] = ood_section(rows, y, p, t, 4.0, meta, bootstrap=100)
    summary.update(safety_summary(y, p, t, rows, ood_threshold=4.0, bootstrap=100))
    refused = [i for i, r in enumerate(rows) if not r["in_distribution"]]
    assert refused and summary["ood"]["n_refused"] == len(refused)
    cases = cases_from_rows(rows, "malignant", t, [None] * len(rows))
    page = render_html(summary, cases, has_cam=False)
    doc = parse(page)
    section = page.split('<section id="ood">')[1].split("</section>")[0]
    assert doc.data["ood_refused"] == str(len(refused)) and f"of {len(y)} images refused" in section
    assert "accepted only" in section and "all images (headline)" in section
    fn, fp, _, _ = order_cases(cases)
    wrong_refused = [c for c in (*fn, *fp) if c.refused]
    assert doc.data["refused_errors"] == str(len(wrong_refused))
    marked = [a for tag, a in doc.tags if tag == "figure" and a.get("data-refused")]
    assert len(marked) >= len(wrong_refused) and wrong_refused  # every refused error card is marked
    table = page.split('<section id="safety">')[1].split("</section>")[0]
    said = [line for line in terminal_lines(summary) if "AURC" in line]
    assert len(said) == len(summary["selective"]["curves"]) == 2
    for line, curve in zip(said, summary["selective"]["curves"].values(), strict=True):
        lo, hi = curve["aurc_ci"]
        assert f"[{lo:.3f}, {hi:.3f}]" in line and f"[{lo:.3f}, {hi:.3f}]" in table  # the CI, as the terminal
        verdict = line.split("; ")[-1].split(" (gain")[0]  # "better than random abstention" or the like
        assert "random abstention" in verdict and verdict in table
