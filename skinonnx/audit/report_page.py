"""audit.html: duplicate pairs side by side (leakage first), unreadable and poor images, likely label errors.

Same conventions as report.html (reporting/html_report.py): one offline file plus its ``audit_files/``
thumbnails, a Content-Security-Policy that allows only the page's own inline style and script (by hash)
and its own folder's images, so nothing is fetched from anywhere. Every image has a checkbox; the ticked
paths form an exclusion list (``--exclude-list FILE`` or an index CSV's ``exclude`` column) shown in a
text box and downloadable as ``exclude.txt``. The audit's own suggestion is pre-ticked.
"""

from __future__ import annotations

import hashlib
import html
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from ..atomic import write_text, write_with
from ..cpus import physical_cores
from ..data.images import load_rgb
from ..errors import ImageError
from ..reporting.html_assets import ERROR_REPORTER
from ..reporting.html_assets import STYLE as REPORT_STYLE
from ..reporting.html_assets import csp as report_csp
from .quality import EXPLAIN

FILES_DIR = "audit_files"
THUMB = 112
SHOWN = 300  # pairs per section and flagged images drawn on the page; audit.json lists them all
_THUMB_NAME = re.compile(r"^[0-9a-f]{16}\.jpg$")

STYLE = REPORT_STYLE + """
.pair{display:flex;gap:10px;align-items:flex-start;border:1px solid #ddd;border-radius:6px;padding:6px;margin:6px 0}
.pair.leak{border-color:#c62828}
.pair figure,.cards figure{margin:0;width:150px;font-size:12px;overflow-wrap:anywhere}
.pair img,.cards img{display:block;width:112px;height:112px;background:#eee}
.pair .why{font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.bad{color:#c62828;font-weight:700}
textarea{width:100%;height:120px;font:12px monospace}
"""

SCRIPT = """
(function () {""" + ERROR_REPORTER + """
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input.ex'));
  var out = document.getElementById('exclude-text'), count = document.getElementById('exclude-count');
  function update() {
    var seen = {}, lines = [];
    boxes.forEach(function (b) {
      var p = b.getAttribute('data-path');
      if (b.checked && !seen[p]) { seen[p] = true; lines.push(p); }
    });
    lines.sort();
    out.value = lines.join('\\n') + (lines.length ? '\\n' : '');
    count.textContent = String(lines.length);
  }
  boxes.forEach(function (b) {
    b.addEventListener('change', function () {  // one path may appear in several places: keep them in step
      boxes.forEach(function (o) {
        if (o.getAttribute('data-path') === b.getAttribute('data-path')) { o.checked = b.checked; }
      });
      update();
    });
  });
  document.getElementById('download').addEventListener('click', function () {
    var a = document.createElement('a');
    a.href = 'data:text/plain;charset=utf-8,' + encodeURIComponent(out.value);
    a.download = 'exclude.txt';
    document.body.appendChild(a);
    a.click();
    a.remove();
  });
  update();
  document.body.setAttribute('data-ready', '1');
})();
"""


def csp() -> str:
    return report_csp(STYLE, SCRIPT)


def thumb_name(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:16] + ".jpg"


def write_thumbnails(paths: dict[str, Path], folder: Path, max_pixels: int) -> set[str]:
    """``folder/<name>.jpg`` (112 px, aspect kept) per relative path; the names written. Stale ones removed."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, Path]) -> str | None:
        rel, path = item
        try:
            image = load_rgb(path, max_pixels=max_pixels, draft_size=2 * THUMB)
        except (ImageError, OSError):
            return None
        image.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
        name = thumb_name(rel)
        write_with(folder / name, lambda tmp: image.save(tmp, format="JPEG", quality=82))
        return name

    with ThreadPoolExecutor(max_workers=max(1, physical_cores())) as pool:
        written = {n for n in pool.map(one, sorted(paths.items())) if n}
    for stale in folder.iterdir():
        if _THUMB_NAME.match(stale.name) and stale.name not in written:
            stale.unlink(missing_ok=True)
    return written


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Page:
    def __init__(self, thumbs: set[str], excluded: set[str]) -> None:
        self.thumbs, self.excluded = thumbs, excluded

    def figure(self, item: dict[str, Any], caption: str = "") -> str:
        rel = item["path"]
        name = thumb_name(rel)
        img = (f'<img src="{FILES_DIR}/{name}" width="{THUMB}" height="{THUMB}" alt="" loading="lazy">'
               if name in self.thumbs else '<div class="bad">no image</div>')
        checked = " checked" if rel in self.excluded else ""
        return (f"<figure>{img}<figcaption><code>{_e(rel)}</code><br>{_e(item.get('split', ''))} · "
                f"{_e(item.get('label', ''))}{(' · ' + caption) if caption else ''}<br><label><input type=\"checkbox\" "
                f"class=\"ex\" data-path=\"{_e(rel)}\"{checked}> exclude</label></figcaption></figure>")

    def pair(self, p: dict[str, Any]) -> str:
        kind = "byte-identical files" if p["exact"] else f"near copy: {p['distance']} of 256 hash bits differ"
        flags = []
        if p["leakage"]:
            flags.append(f'<span class="bad">leakage: {_e(p["b"]["split"])} image duplicates a {_e(p["a"]["split"])} '
                         "image</span>")
        if p["conflict"]:
            flags.append('<span class="bad">labels differ</span>')
        return (f'<div class="pair{" leak" if p["leakage"] else ""}">{self.figure(p["a"])}{self.figure(p["b"])}'
                f'<div class="why">{_e(kind)}<br>{"<br>".join(flags)}</div></div>')


def _more(n: int) -> str:
    return f'<p class="muted">{n - SHOWN} more in audit.json.</p>' if n > SHOWN else ""


def shown_paths(doc: dict[str, Any]) -> set[str]:
    """The images the page draws (so only their thumbnails are made)."""
    leaks = [p for p in doc["pairs"] if p["leakage"]][:SHOWN]
    within = [p for p in doc["pairs"] if not p["leakage"]][:SHOWN]
    shown = {p[side]["path"] for p in leaks + within for side in ("a", "b")}
    shown |= {q["path"] for q in doc["quality"][:SHOWN]}
    if doc.get("label_issues"):
        shown |= {r["path"] for r in doc["label_issues"]["ranked"]}
    return shown


def render(doc: dict[str, Any], thumbs: set[str]) -> str:
    page = _Page(thumbs, set(doc["suggested_exclusions"]))
    s = doc["summary"]
    data = doc["data"]
    tiles = [("leakage pairs", s["leakage_pairs"]), ("duplicate pairs", s["duplicate_pairs"]),
             ("conflicting labels", s["conflicting_pairs"]), ("unreadable", s["unreadable"]),
             ("poor quality", len(doc["quality"])),
             ("likely label errors", "no --run" if s["label_issues_flagged"] is None else s["label_issues_flagged"])]
    parts = [f"<h1>Data audit: {_e(data['root'])}</h1>",
             f'<p class="muted">{s["images"]} images, {_e(data["layout"])} layout, classes '
             f'{_e(", ".join(data["classes"]))}; {_e(doc["created_at"])}. Nothing was changed: tick what to exclude '
             "and use the list below.</p>",
             '<div class="head">' + "".join(f"<div class=\"tile\"><b>{_e(v)}</b>{_e(k)}</div>" for k, v in tiles)
             + "</div>"]
    leaks = [p for p in doc["pairs"] if p["leakage"]]
    within = [p for p in doc["pairs"] if not p["leakage"]]
    parts.append(f"<h2>Leakage: images in two splits ({len(leaks)})</h2>")
    parts.append("".join(page.pair(p) for p in leaks[:SHOWN]) + _more(len(leaks)) or "<p>None found.</p>")
    parts.append(f"<h2>Duplicates within a split ({len(within)})</h2>")
    parts.append("".join(page.pair(p) for p in within[:SHOWN]) + _more(len(within)) or "<p>None found.</p>")
    parts.append(f"<h2>Unreadable images ({len(doc['unreadable'])})</h2>")
    parts.append("<ul>" + "".join(f"<li><code>{_e(u['path'])}</code>: {_e(u['problem'])} "
                                  f"<label><input type=\"checkbox\" class=\"ex\" data-path=\"{_e(u['path'])}\" checked>"
                                  " exclude</label></li>" for u in doc["unreadable"]) + "</ul>"
                 if doc["unreadable"] else "<p>None.</p>")
    parts.append(f"<h2>Image quality ({len(doc['quality'])})</h2>")
    parts.append('<div class="cards">' + "".join(
        page.figure(q, ", ".join(EXPLAIN.get(k, k) for k in q["issues"])) for q in doc["quality"][:SHOWN]) + "</div>"
        + _more(len(doc["quality"]))
        if doc["quality"] else "<p>No image flagged.</p>")
    labels = doc.get("label_issues")
    parts.append("<h2>Likely label errors</h2>")
    if labels is None:
        parts.append("<p>Not checked: give <code>--run RUN</code>, a cross-validation run (<code>train --folds 5"
                     "</code>), to rank the training images by how strongly the out-of-fold models disagree with "
                     "their labels.</p>")
    else:
        parts.append(f"<p>{labels['flagged']} of {labels['images']} images flagged by {_e(labels['method'])}, "
                     f"run <code>{_e(labels['run'])}</code>. Most suspicious first; a person decides.</p>")
        flag = '<span class="bad">flagged</span> '
        parts.append('<div class="cards">' + "".join(page.figure(
            r, f"#{r['rank']} {flag if r['flagged'] else ''}p({_e(r['label'])}) = {r['quality']:.3f}")
            for r in labels["ranked"]) + "</div>")
    parts.append("<h2>Exclusion list</h2>")
    parts.append('<p><span id="exclude-count">0</span> paths ticked (pre-ticked: one image of each duplicate group '
                 "is kept, the others and unreadable files are ticked). Save it as a file and pass "
                 "<code>--exclude-list FILE</code>, or set the <code>exclude</code> column of an index CSV. "
                 '<button type="button" id="download">Download exclude.txt</button></p>'
                 '<textarea id="exclude-text" readonly></textarea>')
    body = "\n".join(parts)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp()}\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>skinonnx data audit</title><style>{STYLE}</style></head>\n<body>\n"
            f'<ul id="js-errors" hidden></ul>\n{body}\n'
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def write_page(doc: dict[str, Any], output: Path, image_paths: dict[str, Path], max_pixels: int) -> Path:
    thumbs = write_thumbnails(image_paths, output / FILES_DIR, max_pixels)
    return write_text(output / "audit.html", render(doc, thumbs))
