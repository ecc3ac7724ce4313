"""`serve`'s one entry point: open the model, then run it on this machine (uvicorn) or on Ray Serve."""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import SkinOnnxError
from .settings import ServeSettings

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def default_model_name(onnx_path: Path) -> str:
    """The file's stem made URL-safe: ``exports/model.onnx`` -> ``model``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", onnx_path.stem).strip("-.") or "model"
    return name[:64]


def check_model_name(name: str) -> str:
    if not MODEL_NAME.fullmatch(name):
        raise SkinOnnxError(f"model name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (it is part of URLs)")
    return name


def serve(onnx_path: Path, settings: ServeSettings, *, host: str, port: int, provider: str = "auto",
          threads: int | None = None, engine: str = "local", address: str | None = None, replicas: int = 1,
          echo=print) -> None:
    """Serve ``onnx_path`` until stopped (SIGTERM / Ctrl-C), with every request's work finished first."""
    from ..runtime import OnnxClassifier
    from .model import ServedModel

    check_model_name(settings.model_name)
    if engine == "ray":
        from .ray_engine import run_ray

        OnnxClassifier(onnx_path, "cpu" if provider == "auto" else provider, threads=1)  # refuse a bad file here
        run_ray(onnx_path, settings, host=host, port=port, provider=provider, threads=threads, address=address,
                replicas=replicas, echo=echo)
        return
    from .local import run_local

    model = ServedModel(OnnxClassifier(onnx_path, provider, threads=threads), settings.model_name)
    echo(f"model {onnx_path} on ONNX Runtime {model.classifier.provider}; {settings.batching_text()}")
    run_local(model, settings, host=host, port=port, echo=echo)
