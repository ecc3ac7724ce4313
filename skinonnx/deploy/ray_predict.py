"""`predict --engine ray`: batch inference on Ray Data, one ONNX Runtime session per actor (no torch).

The image paths become a Ray dataset; ``map_batches`` sends batches of paths to a pool of actors,
each holding one :class:`OnnxClassifier` loaded once. An actor runs the same code as local
``predict`` (:meth:`OnnxClassifier.predict_files`: decoding in threads one or two batches ahead of
inference), so probabilities are the same. Only paths go in and a few numbers per image come back
through the object store, never pixels. The driver streams results into the job's journal (Parquet
part files), so a job interrupted at any point resumes where it stopped.

Faults: Ray Data restarts a killed actor (``max_restarts=-1``) and retries its batch; the journal
keeps the first row of each image, so every image ends up exactly once.

Ray is imported lazily: it is an optional extra (``pip install 'skinonnx[scale]'``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..cpus import physical_cores
from ..errors import SkinOnnxError
from .contract import ModelContract
from .journal import Journal, prediction_row
from .runtime import OnnxClassifier, Prediction

PATHS_PER_TASK = 4  # a Ray batch is this many inference batches: decode/infer overlap inside, few round trips


class OrtPredictor:
    """One actor: one ONNX Runtime session, loaded once, reused for every batch of paths it is sent."""

    def __init__(self, onnx_path: str, provider: str, contract: ModelContract, threads: int, batch_size: int,
                 max_pixels: int, threshold: float) -> None:
        self.classifier = OnnxClassifier(onnx_path, provider, contract=contract, threads=threads)
        self.threads, self.batch_size, self.max_pixels = threads, batch_size, max_pixels
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The fields of :class:`Prediction` as columns (NaN / -1 where a file was unreadable)."""
        paths = [str(p) for p in batch["path"]]
        n = len(paths)
        probs = np.full((n, len(self.classifier.contract.classes)), np.nan)
        members = np.full((n, max(1, self.classifier.n_members)), np.nan)
        errors, ood = np.full(n, "", dtype=object), np.full(n, np.nan)
        labels, inside = np.full(n, -1, np.int64), np.zeros(n, bool)
        p_malignant, malignant = np.full(n, np.nan, np.float32), np.zeros(n, bool)
        preds = self.classifier.predict_files(paths, batch_size=self.batch_size, workers=self.threads,
                                              max_pixels=self.max_pixels, with_members=self.classifier.has_members,
                                              threshold=self.threshold)
        for i, pred in enumerate(preds):
            if not pred.ok:
                errors[i] = pred.error
                continue
            probs[i], labels[i], inside[i] = pred.probabilities, pred.label, pred.in_distribution
            p_malignant[i], malignant[i] = pred.p_malignant, pred.malignant
            ood[i] = np.nan if pred.ood_score is None else pred.ood_score
            if pred.members is not None:
                members[i] = pred.members
        return {"path": np.asarray(paths, dtype=object), "probabilities": probs, "error": errors, "ood_score": ood,
                "label": labels, "in_distribution": inside, "members": members, "p_malignant": p_malignant,
                "malignant": malignant}


def _prediction(batch: dict[str, np.ndarray], i: int, classifier: OnnxClassifier) -> Prediction:
    """Row ``i`` of an actor's columns as the local engine's :class:`Prediction` (same row, same function)."""
    path, error = str(batch["path"][i]), str(batch["error"][i])
    if error:
        return Prediction(path, None, error)
    score = float(batch["ood_score"][i])
    return Prediction(path, batch["probabilities"][i], None, members=batch["members"][i] if classifier.has_members
                      else None, ood_score=score if classifier.has_ood else None,
                      in_distribution=bool(batch["in_distribution"][i]), label=int(batch["label"][i]),
                      p_malignant=float(batch["p_malignant"][i]), malignant=bool(batch["malignant"][i]))


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise SkinOnnxError("--engine ray needs Ray Data: pip install 'skinonnx[scale]' "
                            "(or pip install 'ray[data]' pyarrow)") from None
    return ray


def start_ray(address: str | None, *, num_cpus: int | None = None):
    """Connect to ``address``, or start a private local Ray bound to 127.0.0.1 (no dashboard).

    Returns (ray module, whether we started it and must shut it down).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(num_cpus=num_cpus or physical_cores(), include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", _node_ip_address="127.0.0.1")
    except (OSError, RuntimeError, ValueError) as exc:  # OSError: ConnectionError, a too-long socket path...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise SkinOnnxError(f"could not start or reach {where}: {str(exc).strip().splitlines()[0][:300]}") from None
    return ray, True


def run_ray_predict(classifier: OnnxClassifier, paths: Sequence[str], journal: Journal, *, threshold: float,
                    batch_size: int = 16, max_pixels: int, address: str | None = None, workers: int | None = None,
                    gpus_per_worker: float = 0.0, provider: str = "auto", threads: int | None = None,
                    progress: bool = True, echo: Callable[[str], None] = print) -> None:
    """Predict ``paths`` on an actor pool of ``workers`` and add every row to ``journal``; each actor runs
    ``threads`` ONNX Runtime (and decode) threads (default: the cluster's CPUs shared out)."""
    from tqdm import tqdm

    ray, started = start_ray(address)
    for name in ("ray", "ray.data"):  # Ray Data's own INFO/WARNING lines (progress, "execution finished")
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
    try:
        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        if gpus_per_worker > 0:
            if gpus < gpus_per_worker:
                raise SkinOnnxError(f"--gpus-per-worker {gpus_per_worker}: the Ray cluster has {gpus:g} GPUs")
            workers = workers or max(1, int(gpus // gpus_per_worker))
            provider = "cuda" if provider == "auto" else provider
        workers = workers or cpus
        if workers > cpus:
            raise SkinOnnxError(f"--ray-workers {workers}: the Ray cluster has {cpus} CPUs (each worker needs one)")
        threads = threads or max(1, cpus // workers)  # ORT threads (and decode threads) per actor
        where = f"cluster {address}" if address else "local, 127.0.0.1"
        echo(f"Ray ({where}): {workers} workers x {threads} CPU{'s' if threads > 1 else ''}"
             + (f" x {gpus_per_worker:g} GPU" if gpus_per_worker else ""))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        per_task = batch_size * PATHS_PER_TASK
        dataset = ray.data.from_items([{"path": p} for p in paths],
                                      override_num_blocks=max(1, min(-(-len(paths) // per_task), 10_000)))
        results = dataset.map_batches(
            OrtPredictor, batch_size=per_task, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
            num_gpus=gpus_per_worker or None,
            fn_constructor_kwargs={"onnx_path": str(Path(classifier.path).resolve()), "provider": provider,
                                   "contract": classifier.contract, "threads": threads, "batch_size": batch_size,
                                   "max_pixels": max_pixels, "threshold": threshold})
        contract = classifier.contract
        with tqdm(total=len(paths), unit="img", desc="predict (ray)", disable=not progress, leave=False) as bar:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                rows = [prediction_row(contract, threshold, _prediction(batch, i, classifier),
                                       n_members=classifier.n_members) for i in range(len(batch["path"]))]
                journal.add(rows)
                bar.update(len(rows))
    except SkinOnnxError:
        raise
    except Exception as exc:  # Ray's own error types (a failing actor start, a lost cluster): one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise SkinOnnxError(f"the Ray job failed ({type(exc).__name__}: {first}); finished images are kept, "
                            "run the same command again to continue") from None
    finally:
        if started:
            ray.shutdown()

