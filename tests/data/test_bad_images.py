"""Bad and odd image files: refused with a one-line reason, or decoded to the right upright RGB pixels.

Every command decodes through ``skinonnx.data.images.load_rgb``; the unit tests pin its behaviour and the
CLI tests prove ``predict``, ``test`` and ``train`` skip-and-report instead of crashing.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinonnx.data.images import load_rgb
from skinonnx.errors import ImageError

from ..badfiles import (
    cli_error,
    cli_ok,
    jpeg_bytes,
    make_imagefolder,
    python_subprocess,
    rgb_pattern,
    tiny_onnx,
    unprivileged_prefix,
    write_bmp_bomb,
    write_png16_rgb,
    write_png_bomb,
)

# --- refused files: (name, builder, words the reason must contain) -----------------------------


def _zero_byte(p: Path) -> Path:
    p = p / "empty.jpg"
    p.write_bytes(b"")
    return p


def _truncated_jpeg(p: Path) -> Path:
    data = jpeg_bytes(rgb_pattern(64, 64))
    p = p / "half_copied.jpg"
    p.write_bytes(data[: len(data) // 2])
    return p


def _html_named_jpg(p: Path) -> Path:
    p = p / "download.jpg"
    p.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    return p


def _tiny_1x1(p: Path) -> Path:
    p = p / "pixel.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(p)
    return p


def _png_bomb(p: Path) -> Path:
    p = p / "bomb.png"
    write_png_bomb(p)
    return p


def _bmp_bomb(p: Path) -> Path:
    p = p / "bomb.bmp"
    write_bmp_bomb(p)
    return p


def _gif(p: Path) -> Path:
    p = p / "animation.gif"
    rgb_pattern(32, 32).convert("P").save(p, "GIF")
    return p


def _gif_named_png(p: Path) -> Path:
    p = p / "really_a_gif.png"
    rgb_pattern(32, 32).convert("P").save(p, "GIF")
    return p


def _symlink_loop(p: Path) -> Path:
    (p / "loop.jpg").symlink_to(p / "loop.jpg")
    return p / "loop.jpg"


def _dangling_symlink(p: Path) -> Path:
    (p / "moved.jpg").symlink_to(p / "no_longer_here.jpg")
    return p / "moved.jpg"


def _folder_named_jpg(p: Path) -> Path:
    (p / "album.jpg").mkdir()
    return p / "album.jpg"


def _fifo_named_jpg(p: Path) -> Path:
    os.mkfifo(p / "pipe.jpg")  # opening it for reading would block forever
    return p / "pipe.jpg"


REFUSED: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("zero-byte file", _zero_byte, ("empty file",)),
    ("truncated JPEG", _truncated_jpeg, ("truncated",)),
    ("HTML named .jpg", _html_named_jpg, ("not a supported image",)),
    ("1x1 image", _tiny_1x1, ("1x1", "at least 8x8")),
    ("decompression bomb PNG 30000x30000", _png_bomb, ("900,000,000 pixels exceeds", "--max-pixels")),
    ("decompression bomb BMP header", _bmp_bomb, ("900,000,000 pixels exceeds", "--max-pixels")),
    ("unsupported format (GIF)", _gif, ("not a supported image",)),
    ("GIF named .png", _gif_named_png, ("not a supported image",)),
    ("symlink loop", _symlink_loop, ("cannot access", "symbolic links")),
    ("dangling symlink", _dangling_symlink, ("file not found",)),
    ("folder named .jpg", _folder_named_jpg, ("not a regular file",)),
    ("FIFO named .jpg", _fifo_named_jpg, ("not a regular file",)),
]


@pytest.mark.parametrize(("builder", "words"), [(b, w) for _, b, w in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_bad_file_is_refused_with_its_reason(tmp_path: Path, builder, words) -> None:
    path = builder(tmp_path)
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert info.value.path == str(path)
    for word in words:
        assert word in info.value.problem
    assert "\n" not in info.value.message and info.value.message.startswith(str(path))


def test_bomb_is_refused_from_the_header_without_decoding(tmp_path: Path, monkeypatch) -> None:
    bomb = _png_bomb(tmp_path)
    assert bomb.stat().st_size < 200_000  # a small file that decodes to 900 megapixels
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_rgb(bomb)
    assert decoded == []


def test_bomb_refusal_allocates_no_pixel_memory(tmp_path: Path) -> None:
    """In a fresh process, refusing the bomb keeps peak memory far below its decoded size (2.7 GB RGB)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc to read the process's peak memory")
    bomb = _png_bomb(tmp_path)
    # VmHWM: peak resident memory of this process image (unlike ru_maxrss, not inherited across exec)
    code = ("import sys\nfrom skinonnx.data.images import load_rgb\nfrom skinonnx.errors import ImageError\n"
            "try:\n    load_rgb(sys.argv[1])\nexcept ImageError as e:\n    print('refused', e.problem)\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print('peak_kb', hwm.split()[1])")
    out = python_subprocess(code, str(bomb))
    assert out.returncode == 0, out.stderr
    assert "refused" in out.stdout
    peak_mb = int(out.stdout.split("peak_kb")[1]) / 1024
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB while refusing a 900-megapixel bomb"


def test_pixel_limit_can_be_raised_for_trusted_files(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    rgb_pattern(120, 100).save(path)
    with pytest.raises(ImageError, match="12,000 pixels exceeds the limit of 10,000"):
        load_rgb(path, max_pixels=10_000)
    assert load_rgb(path, max_pixels=12_000).size == (120, 100)


def test_unreadable_file_in_process(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads any file regardless of its mode; "
                    "test_unreadable_file_is_skipped_by_predict covers it as an unprivileged user")
    path = tmp_path / "locked.png"
    rgb_pattern().save(path)
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        load_rgb(path)


def test_unreadable_file_is_skipped_by_predict() -> None:
    """Real file modes, with root dropped to 'nobody' through setpriv (root ignores modes)."""
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot test real file permissions")
    base = Path(tempfile.mkdtemp(prefix="skinonnx-perm-"))  # pytest's tmp folders are closed to other users
    try:
        base.chmod(0o777)
        folder = base / "imgs"
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
        for i in range(2):
            rgb_pattern(20, 20, i).save(folder / f"ok_{i}.png")
        locked = folder / "locked.png"
        rgb_pattern(20, 20, 9).save(locked)
        locked.chmod(0)
        model = tiny_onnx(base / "m.onnx")
        model.chmod(0o644)
        out = base / "pred.csv"
        code = "import sys\nfrom skinonnx.cli import main\nmain(sys.argv[1:])"
        run = python_subprocess(code, "predict", "--onnx", str(model), str(folder), "-o", str(out),
                                "--provider", "cpu", "--quiet", user_prefix=prefix)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Traceback" not in run.stderr
        assert f"skipped {locked}: permission denied" in run.stderr
        rows = list(csv.DictReader(out.read_text().splitlines()))
        assert {r["path"]: r["error"] for r in rows if r["error"]} == {str(locked): "permission denied"}
        assert len(rows) == 3
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- odd but valid files: exact pixels ------------------------------------------------------


def test_png_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (200, 10, 10, 255)   # opaque red
    rgba[:, 8:] = (0, 255, 0, 0)       # fully transparent green
    rgba[0, 0] = (0, 0, 0, 128)        # half-transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert (out[1:, :8] == (200, 10, 10)).all()
    assert (out[:, 8:] == 255).all()
    assert abs(int(out[0, 0, 0]) - 127) <= 1


def test_palette_png_gives_the_palette_colours(tmp_path: Path) -> None:
    img = Image.new("P", (16, 16))
    img.putpalette([255, 0, 0, 0, 128, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1] * 64)
    img.save(tmp_path / "p.png")
    out = np.asarray(load_rgb(tmp_path / "p.png"))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 1]) == (0, 128, 0) and tuple(out[0, 2]) == (10, 20, 30)


def test_palette_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (16, 16))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putdata([0, 1] * 128)
    img.save(tmp_path / "pt.png", transparency=1)
    out = np.asarray(load_rgb(tmp_path / "pt.png"))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 1]) == (255, 255, 255)


def test_cmyk_jpeg_comes_back_as_its_rgb_colours(tmp_path: Path) -> None:
    colours = [(200, 40, 30), (20, 120, 220), (240, 240, 240), (30, 30, 30)]
    rgb = np.zeros((32, 32, 3), np.uint8)
    for i, c in enumerate(colours):
        rgb[:, i * 8:(i + 1) * 8] = c
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=100)
    assert Image.open(tmp_path / "print.jpg").mode == "CMYK"
    out = np.asarray(load_rgb(tmp_path / "print.jpg")).astype(int)
    for i, c in enumerate(colours):
        assert np.abs(out[4:28, i * 8 + 2:i * 8 + 6] - np.array(c)).max() <= 8, (c, out[16, i * 8 + 4])


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(load_rgb(tmp_path / "g16.png"))
    expected = np.rint(values / 65535.0 * 255.0).astype(np.uint8)
    assert (out[..., 0] == expected).all() and (out[..., 1] == expected).all() and (out[..., 2] == expected).all()


def test_dark_16bit_grey_png_stays_dark(tmp_path: Path) -> None:
    values = (np.arange(32 * 32).reshape(32, 32) % 250).astype(np.uint16)  # all below 256 of 65535
    Image.fromarray(values).save(tmp_path / "dark16.png")
    assert np.asarray(load_rgb(tmp_path / "dark16.png")).max() <= 1


def test_16bit_rgb_png_keeps_the_colour(tmp_path: Path) -> None:
    values = np.zeros((16, 16, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32768, 257 * 10
    write_png16_rgb(tmp_path / "rgb16.png", values)
    out = np.asarray(load_rgb(tmp_path / "rgb16.png")).astype(int)
    assert np.abs(out - np.array([255, 128, 10])).max() <= 1


@pytest.mark.parametrize("mode", ["L", "1", "LA"])
def test_grayscale_becomes_three_equal_channels(tmp_path: Path, mode: str) -> None:
    grey = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)), "L")
    img = grey.convert(mode) if mode != "LA" else Image.merge("LA", (grey, Image.new("L", grey.size, 255)))
    img.save(tmp_path / "g.png")
    out = np.asarray(load_rgb(tmp_path / "g.png"))
    assert out.shape == (16, 16, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert (out[..., 0] == np.asarray(img.convert("L"))).all()


# EXIF Orientation -> the transpose a viewer applies to show the photo upright
UPRIGHT_FROM_STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                       4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                       6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
STORED_FROM_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                       4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                       6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _upright_scene() -> Image.Image:
    """Portrait 24x40 with a unique colour in each corner, so any wrong turn or flip shows."""
    arr = np.full((40, 24, 3), 90, np.uint8)
    arr[:8, :8], arr[:8, -8:], arr[-8:, :8], arr[-8:, -8:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    return Image.fromarray(arr)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_gives_upright_pixels_png(tmp_path: Path, orientation: int) -> None:
    upright = _upright_scene()
    stored = upright.transpose(STORED_FROM_UPRIGHT[orientation])
    assert np.array_equal(np.asarray(stored.transpose(UPRIGHT_FROM_STORED[orientation])), np.asarray(upright))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "photo.png", exif=exif.tobytes())
    out = load_rgb(tmp_path / "photo.png")
    assert np.array_equal(np.asarray(out), np.asarray(upright))


def test_exif_rotated_phone_jpeg_is_upright(tmp_path: Path) -> None:
    upright = _upright_scene().resize((48, 80), Image.Resampling.NEAREST)
    exif = Image.Exif()
    exif[0x0112] = 6  # the usual portrait phone photo: stored sideways, "rotate 90° CW to view"
    (tmp_path / "phone.jpg").write_bytes(jpeg_bytes(upright.transpose(Image.Transpose.ROTATE_90), quality=100,
                                                    exif=exif.tobytes()))
    assert Image.open(tmp_path / "phone.jpg").size == (80, 48)  # stored landscape
    out = np.asarray(load_rgb(tmp_path / "phone.jpg")).astype(int)
    assert out.shape == (80, 48, 3)
    assert np.abs(out - np.asarray(upright).astype(int))[4:-4, 4:-4].mean() < 3


def test_mutated_files_never_crash_the_decoder(tmp_path: Path) -> None:
    """Seeded fuzzing: truncations and byte flips of every accepted format decode or raise ImageError only."""
    import io

    rng = random.Random(1234)
    img = rgb_pattern(40, 48, 5)
    originals = {}
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        originals[ext] = buf.getvalue()
    outcomes = {"decoded": 0, "refused": 0}
    for ext, data in originals.items():
        for trial in range(30):
            blob = bytearray(data)
            if trial % 2:
                blob = blob[: rng.randrange(1, len(blob))]
            else:
                for _ in range(rng.randint(1, 6)):
                    blob[rng.randrange(len(blob) if trial % 4 else min(len(blob), 300))] = rng.randrange(256)
            path = tmp_path / f"m.{ext}"
            path.write_bytes(bytes(blob))
            try:
                out = load_rgb(path)
            except ImageError as exc:
                assert exc.problem and "\n" not in exc.problem
                outcomes["refused"] += 1
            else:
                assert out.mode == "RGB" and min(out.size) >= 8
                outcomes["decoded"] += 1
    assert outcomes["refused"] > 20  # the mutations really did break files


# --- through the commands ---------------------------------------------------------------------


def _good_odd_files(folder: Path) -> list[Path]:
    """Valid files in unusual shapes that every command must accept."""
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    rgba = rgb_pattern(20, 20, 1).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    rgb_pattern(20, 20, 2).convert("P").save(folder / "palette.png")
    rgb_pattern(20, 20, 3).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(folder / "grey16.png")
    write_png16_rgb(folder / "rgb16.png", np.full((20, 20, 3), 40000, np.uint16))
    rgb_pattern(20, 20, 4).convert("L").save(folder / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    (folder / "phone.JPG").write_bytes(jpeg_bytes(rgb_pattern(30, 20, 5), exif=exif.tobytes()))
    return sorted(set(folder.iterdir()) - before)


def _bad_files(folder: Path) -> dict[Path, str]:
    """One of each refused kind (FIFO and symlink loop included) -> a word its reason contains."""
    folder.mkdir(parents=True, exist_ok=True)
    words = {}
    for _, builder, reason in REFUSED:
        if builder in (_gif, _folder_named_jpg):  # not image files by name, or a folder: not listed
            continue
        words[builder(folder)] = reason[0]
    return words


def test_predict_skips_and_reports_every_bad_file(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    good = _good_odd_files(folder)
    bad = _bad_files(folder)
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "pred.json"
    output = cli_ok("predict", "--onnx", model, folder, "-o", out, "--provider", "cpu", "--quiet")
    result = json.loads(out.read_text())
    assert sorted(Path(r["path"]) for r in result["predictions"]) == good
    skipped = {Path(s["path"]): s["problem"] for s in result["skipped"]}
    assert set(skipped) == set(bad)
    for path, word in bad.items():
        assert word in skipped[path]
        assert f"skipped {path}: {skipped[path]}" in output
    assert f"{len(good)} images classified" in output and f"{len(bad)} skipped" in output


def test_predict_pixel_limit_option(tmp_path: Path) -> None:
    rgb_pattern(120, 100).save(tmp_path / "big.png")
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "p.csv"
    cli_error("predict", "--onnx", model, tmp_path / "big.png", "-o", out, "--max-pixels", "10000", "--quiet",
              says=("none of the 1 inputs could be classified",))
    assert "exceeds the limit of 10,000" in out.read_text()
    cli_ok("predict", "--onnx", model, tmp_path / "big.png", "-o", out, "--max-pixels", "12000", "--quiet")
    assert [row["error"] for row in csv.DictReader(out.read_text().splitlines())] == [""]


def test_test_command_skips_and_reports_bad_files(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "data", {"test": {"benign": 3, "malignant": 3}})
    bad = _bad_files(data / "test" / "malignant")
    good = _good_odd_files(data / "test" / "benign")
    out = tmp_path / "report"
    output = cli_ok("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", data, "--output", out,
                    "--provider", "cpu", "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert {Path(s["path"]) for s in summary["skipped"]} == set(bad)
    assert summary["metrics"]["n"] == 6 + len(good)
    assert len(list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))) == 6 + len(good)
    for path in bad:
        assert f"skipped {path}:" in output


def test_test_command_pixel_limit_option(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "data", {"test": {"benign": 2, "malignant": 2}}, size=40)
    model = tiny_onnx(tmp_path / "m.onnx")
    output = cli_ok("test", "--onnx", model, "--data", data, "--output", tmp_path / "r", "--max-pixels", "1000000",
                    "--quiet")
    assert "skipped" not in output
    cli_error("test", "--onnx", model, "--data", data, "--output", tmp_path / "r", "--max-pixels", "1000", "--quiet",
              says=("no readable images in the test split",))


def test_predict_does_not_follow_a_symlink_loop_in_a_folder_or_glob(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    rgb_pattern(20, 20, 1).save(folder / "a.png")
    rgb_pattern(20, 20, 2).save(folder / "2024" / "b.png")
    (folder / "2024" / "back").symlink_to(folder, target_is_directory=True)  # photos/2024/back -> photos
    model = tiny_onnx(tmp_path / "m.onnx")
    expected = [str(folder / "2024" / "b.png"), str(folder / "a.png")]
    for spec in (folder, f"{folder}/**/*.png"):
        out = tmp_path / "p.json"
        cli_ok("predict", "--onnx", model, spec, "-o", out, "--quiet")
        result = json.loads(out.read_text())
        assert sorted(p["path"] for p in result["predictions"]) == expected, spec
        assert result["skipped"] == []
