#!/usr/bin/env python3
"""Classify skin-lesion images with a skinonnx ONNX model: onnxruntime, numpy and Pillow only.

    python examples/python_minimal.py exports/model.onnx IMAGE [IMAGE ...]

Prints one JSON object per image: {"path", "label", "in_distribution", "probabilities": {class: p},
"logits": [...]}. The decision is the graph's own: its ``label`` output (an index into the metadata's
classes) and ``in_distribution`` (false: the image is unlike the training images and gets no class, only
the metadata's refusal text). The preprocessing comes from the metadata, following docs/EMBEDDING.md.
Needs no skinonnx package. Works with the float model and with the uint8-input variant
(`export --embed-preprocessing`). 8-bit images; see EMBEDDING.md for 16-bit and CMYK files.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load_rgb(path: str, resize_size: int) -> Image.Image:
    """Decode like the contract: JPEG draft scale, EXIF orientation, alpha composited on white."""
    image = Image.open(path)
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (resize_size, resize_size))  # libjpeg DCT scaling 1/2, 1/4 or 1/8 when large
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def resize_shorter_side(image: Image.Image, r: int) -> Image.Image:
    w, h = image.size
    size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


def center_crop(pixels: np.ndarray, s: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = round((h - s) / 2), round((w - s) / 2)  # Python round: halves to even
    return pixels[top:top + s, left:left + s]


def main(model_path: str, image_paths: list[str]) -> None:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("skinonnx_schema_version") != "1":
        sys.exit(f"{model_path}: not a skinonnx schema-1 model")
    classes = json.loads(meta["classes"])
    outputs = ["logits", "probabilities", "label", "in_distribution"]
    if not set(outputs) <= {o.name for o in session.get_outputs()}:
        sys.exit(f"{model_path}: no 'label'/'in_distribution' outputs (exported before them): run skinonnx export")
    refusal = json.loads(meta["decision"])["refusal"]
    # the malignancy outputs (p_malignant: the malignancy group's summed probability; malignant: at the threshold)
    malignancy = [n for n in ("p_malignant", "malignant") if n in {o.name for o in session.get_outputs()}]
    size, resize = int(meta["image_size"]), int(meta["resize_size"])
    mean = np.asarray(json.loads(meta["mean"]), np.float32)
    std = np.asarray(json.loads(meta["std"]), np.float32)
    takes_uint8 = meta.get("input_dtype", "float32") == "uint8"

    for path in image_paths:
        pixels = np.asarray(resize_shorter_side(load_rgb(path, resize), resize), dtype=np.uint8)
        if takes_uint8:  # the graph crops, scales and normalises
            batch = pixels[None]
        else:
            x = (center_crop(pixels, size).astype(np.float32) / np.float32(255.0) - mean) / std
            batch = x.transpose(2, 0, 1)[None]
        logits, probabilities, label, in_distribution, *group = session.run(outputs + malignancy,
                                                                            {meta["input_name"]: batch})
        p, inside = probabilities[0], bool(in_distribution[0])
        row = {"path": path, "label": classes[int(label[0])] if inside else refusal, "in_distribution": inside,
               "probabilities": {c: float(p[i]) for i, c in enumerate(classes)},
               "logits": [float(v) for v in logits[0]]}
        if malignancy:  # files exported before these outputs lack them
            row.update({"p_malignant": float(group[0][0]), "malignant": bool(group[1][0])})
        print(json.dumps(row))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python examples/python_minimal.py MODEL.onnx IMAGE [IMAGE ...]")
    main(sys.argv[1], sys.argv[2:])
