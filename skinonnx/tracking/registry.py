"""`export` and `test` on a tracked run: the ONNX file logged as an MLflow model (signature + skinonnx metadata)
and registered as a new version of the run's registered model; `test`'s metrics and report logged to the run
whose exported model has the evaluated file's SHA-256. No torch; onnx is imported for the export only.

Both act only when the training run was tracked (its folder has tracking.json), and both warn instead of
failing: the export and the report are already written when they run."""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..hashing import file_sha256
from .run_record import read_record
from .store import ui_command
from .tracker import _stderr, client_for, warn_failure

SHA_TAG = "skinonnx.onnx_sha256"  # space-separated SHA-256 of every ONNX file exported from the run


def registered_model_name(run_dir: str | Path) -> str:
    """``skinonnx-<run name>``: one registered model per training run, one version per export."""
    return f"skinonnx-{Path(run_dir).name}"


def _signature(model):
    """The graph's inputs and outputs as MLflow tensor specs (dynamic axes as -1)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def specs(values) -> Schema:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            out.append(TensorSpec(np.dtype(tensor_dtype_to_np_dtype(tensor.elem_type)), shape, value.name))
        return Schema(out)

    return ModelSignature(inputs=specs(model.graph.input), outputs=specs(model.graph.output))


def log_exported_model(onnx_path: str | Path, run_dir: str | Path | None, *,
                       echo: Callable[[str], None] = _stderr) -> str | None:
    """Log ``onnx_path`` to the MLflow run of ``run_dir`` and register a new model version; returns
    "name version N" (None when the run was not tracked or tracking failed, which is warned about)."""
    record = read_record(run_dir) if run_dir else None
    if record is None:
        return None
    uri, run_id = record["uri"], record["run_id"]
    try:
        import mlflow
        import onnx

        client = client_for(uri)
        model = onnx.load(str(onnx_path), load_external_data=False)
        metadata = {p.key: p.value for p in model.metadata_props}
        name = registered_model_name(run_dir)  # type: ignore[arg-type]
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(model, name=Path(onnx_path).stem.replace(".", "-"),
                                         signature=_signature(model), metadata=metadata,
                                         registered_model_name=name)
        sha = file_sha256(onnx_path)
        known = client.get_run(run_id).data.tags.get(SHA_TAG, "")
        client.set_tag(run_id, SHA_TAG, " ".join(dict.fromkeys([*known.split(), sha])))
        version = info.registered_model_version
        if version is not None:
            client.set_model_version_tag(name, str(version), "sha256", sha)
        echo(f"registered {name} version {version} in MLflow ({ui_command(uri)})")
        return f"{name} version {version}"
    except Exception as exc:  # the export is written; tracking only warns
        warn_failure(uri, exc, echo)
        return None


def _numbers(prefix: str, values: Mapping[str, Any] | None) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in (values or {}).items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v) == float(v)}


def log_test_results(onnx_path: str | Path, metadata: Mapping[str, str], summary: Mapping[str, Any],
                     report_dir: Path, *, echo: Callable[[str], None] = _stderr) -> str | None:
    """Log `test`'s metrics (``test_<split>_<metric>``) and report folder to the run whose exported model has this
    file's SHA-256; None when the model's training run was not tracked (nothing to log to)."""
    record = read_record(metadata.get("training_run_dir") or "")
    if record is None:
        return None
    uri = record["uri"]
    try:
        client = client_for(uri)
        sha = file_sha256(onnx_path)
        found = client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()],
                                   filter_string=f"tags.`{SHA_TAG}` LIKE '%{sha}%'", max_results=1)
        if not found:
            echo(f"note: no MLflow run in {uri} exported this model (sha256 {sha[:12]}...); test results not tracked")
            return None
        run_id, split = found[0].info.run_id, str(summary.get("data", {}).get("split", "test"))
        metrics = _numbers(f"test_{split}_", summary.get("metrics"))
        for name, bounds in (summary.get("ci") or {}).items():
            if isinstance(bounds, list | tuple) and len(bounds) == 2 and all(
                    isinstance(b, numbers.Real) for b in bounds):
                metrics[f"test_{split}_{name}_ci_low"], metrics[f"test_{split}_{name}_ci_high"] = bounds
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
        client.log_artifacts(run_id, str(report_dir), artifact_path=f"test-{split}-{sha[:8]}")
        echo(f"test results logged to MLflow run {run_id} ({ui_command(uri)})")
        return run_id
    except Exception as exc:  # the report is written; tracking only warns
        warn_failure(uri, exc, echo)
        return None
