"""ONNX Runtime inference: sessions with an explicit provider, batched prediction on files.

Deployment path: imports onnxruntime, numpy and Pillow only, never torch.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract import ModelContract
from .errors import ImageError, ModelFileError, ProviderError
from .images import DEFAULT_MAX_PIXELS
from .preprocessing import Preprocessing

PROVIDER_CHAINS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
PROVIDER_CHOICES = ("auto", *PROVIDER_CHAINS)


def physical_cores() -> int:
    """Cores this process may use (affinity-aware); ORT's intra-op pool is sized to it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None, optimized_model_path: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = True
    opts.log_severity_level = 3  # errors only; provider fallbacks are detected and reported by us
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    return opts


def create_session(path: str | os.PathLike[str], provider: str = "auto", *, threads: int | None = None,
                   optimized_model_path: str | None = None):
    """Open ``path`` with the requested provider; return ``(session, provider_used)``.

    ``cuda``/``tensorrt`` are never silently replaced by the CPU: ONNX Runtime itself falls
    back quietly when the CUDA libraries or the GPU are missing, so we check what it chose.
    ``auto`` picks CUDA when it really works, else CPU, and says which.
    """
    import onnxruntime as ort

    if provider not in PROVIDER_CHOICES:
        raise ProviderError(f"unknown provider '{provider}'; choose one of {', '.join(PROVIDER_CHOICES)}")
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model not found: {path}")
    available = ort.get_available_providers()
    opts = session_options(threads, optimized_model_path)
    if provider == "auto":
        if "CUDAExecutionProvider" in available:
            try:
                return create_session(path, "cuda", threads=threads, optimized_model_path=optimized_model_path)
            except ProviderError:
                pass
        provider = "cpu"
    chain = PROVIDER_CHAINS[provider]
    # ORT's provider bridge logs library-loading failures itself; we report them as one clear error.
    ort.set_default_logger_severity(4 if provider != "cpu" else 3)
    if chain[0] not in available:
        raise ProviderError(f"provider '{provider}' ({chain[0]}) is not available in this onnxruntime build "
                            f"(available: {', '.join(available)}); use --provider cpu")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=list(chain))
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if provider != "cpu" and ("CUDA" in first or "cuda" in first or "TensorRT" in first):
            raise ProviderError(f"provider '{provider}' failed to start: {first}") from None
        raise ModelFileError(f"{path}: not a valid ONNX model ({first[:300]})") from None
    used = session.get_providers()[0]
    if used != chain[0]:
        raise ProviderError(f"provider '{provider}' was requested but ONNX Runtime could not use it "
                            f"(no usable GPU or CUDA libraries?) and would run on {used}; refusing to fall back "
                            "silently. Use --provider cpu to run on the CPU.")
    return session, used


@dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: np.ndarray | None  # per class, in contract.classes order
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class OnnxClassifier:
    """A skinonnx ONNX model plus its contract (from metadata, or explicit overrides)."""

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto", *,
                 contract: ModelContract | None = None, threads: int | None = None,
                 optimized_model_path: str | None = None) -> None:
        self.path = Path(path)
        self.session, self.provider = create_session(self.path, provider, threads=threads,
                                                     optimized_model_path=optimized_model_path)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        self.contract = contract or ModelContract.from_metadata(meta, source=str(self.path))
        self._input = self.session.get_inputs()[0]
        self._check_input()
        names = [o.name for o in self.session.get_outputs()]
        self._output = "probabilities" if "probabilities" in names else names[0]
        self._output_is_logits = self._output != "probabilities"

    @property
    def preprocessing(self) -> Preprocessing:
        return self.contract.preprocessing

    @property
    def takes_uint8(self) -> bool:
        """True for ``export --embed-preprocessing`` models: uint8 NHWC in, normalisation in the graph."""
        return self.contract.input_spec.dtype == "uint8"

    def _check_input(self) -> None:
        shape = self._input.shape
        size = self.preprocessing.image_size
        spec = self.contract.input_spec
        want = "tensor(uint8)" if self.takes_uint8 else "tensor(float)"
        layout = "[N, H, W, 3]" if spec.layout == "NHWC" else "[N, 3, H, W]"
        if len(shape) != 4:
            raise ModelFileError(f"{self.path}: input '{self._input.name}' has shape {shape}; expected {layout}")
        if self._input.type != want:
            raise ModelFileError(f"{self.path}: input '{self._input.name}' is {self._input.type}, but the "
                                 f"metadata/options say {spec.dtype} {spec.layout}")
        channels, spatial = (shape[3], shape[1:3]) if spec.layout == "NHWC" else (shape[1], shape[2:])
        fixed = [d for d in spatial if isinstance(d, int)]
        # a uint8 model crops in the graph: any side >= image_size is accepted there
        if (isinstance(channels, int) and channels != 3) or any(
                d < size if self.takes_uint8 else d != size for d in fixed):
            raise ModelFileError(f"{self.path}: input shape {shape} does not match {layout} with H = W = {size} "
                                 "from the metadata/options")

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """A batch in the model's input format -> per-class probabilities (N, C).

        Float models take normalised NCHW float32; uint8 models take RGB NHWC uint8
        (see :meth:`Preprocessing.pixels_from_file`).
        """
        dtype = np.uint8 if self.takes_uint8 else np.float32
        out = self.session.run([self._output], {self._input.name: np.ascontiguousarray(batch, dtype)})[0]
        if self._output_is_logits:
            out = _softmax(out / self.contract.temperature)
        return np.asarray(out, dtype=np.float64)

    def predict_files(self, paths: Sequence[str | os.PathLike[str]], *, batch_size: int = 16,
                      workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                      progress: bool = False) -> Iterator[Prediction]:
        """Predict in input order; unreadable files come back with ``error`` set, the rest still run.

        Decoding and preprocessing run in a thread pool (Pillow releases the GIL) one or two
        batches ahead of inference, so the model rarely waits for JPEG decoding.
        """
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", desc="predict", disable=not progress, leave=False)
        try:
            for chunk in iter_preprocessed(paths, self.preprocessing, batch_size=batch_size, workers=workers,
                                           max_pixels=max_pixels, pixels_only=self.takes_uint8):
                good = [(p, a) for p, a, _ in chunk if a is not None]
                probs = self.predict_arrays(np.stack([a for _, a in good])) if good else np.empty((0, 0))
                rows = iter(probs)
                for p, a, err in chunk:
                    yield Prediction(p, next(rows), None) if a is not None else Prediction(p, None, err)
                bar.update(len(chunk))
        finally:
            bar.close()


def iter_preprocessed(paths: Iterable[str | os.PathLike[str]], prep: Preprocessing, *, batch_size: int,
                      workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, pixels_only: bool = False
                      ) -> Iterator[list[tuple[str, np.ndarray | None, str | None]]]:
    """Yield batches of ``(path, array or None, error or None)``, decoding ahead in threads.

    Arrays are normalised float32 CHW, or with ``pixels_only`` the cropped uint8 HWC pixels
    (for models that normalise in the graph). At most ~3 batches are in flight, so memory
    stays bounded for 10,000+ files.
    """
    workers = workers or max(1, physical_cores())
    load = prep.pixels_from_file if pixels_only else prep.from_file

    def work(p: str) -> tuple[str, np.ndarray | None, str | None]:
        try:
            return p, load(p, max_pixels=max_pixels), None
        except ImageError as exc:
            return p, None, exc.problem
        except MemoryError:
            return p, None, "out of memory while decoding"

    pending: collections.deque[Future] = collections.deque()
    window = batch_size * 3
    with ThreadPoolExecutor(max_workers=workers) as pool:
        source = iter(paths)
        exhausted = False
        batch: list[tuple[str, np.ndarray | None, str | None]] = []
        while True:
            while not exhausted and len(pending) < window:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                pending.append(pool.submit(work, str(nxt)))
            if not pending:
                break
            batch.append(pending.popleft().result())
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
