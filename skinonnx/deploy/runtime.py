"""ONNX Runtime inference: sessions with an explicit provider, batched prediction on files.

Deployment path: imports onnxruntime, numpy and Pillow only, never torch.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cpus import physical_cores
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..errors import ImageError, ModelFileError, ProviderError
from ..softmax import softmax
from .contract import (
    CAM_OUTPUT,
    DECISION_OUTPUTS,
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    LABEL_OUTPUTS,
    MALIGNANT_OUTPUT,
    MEMBER_OUTPUT,
    OOD_OUTPUT,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)
from .decision import decide, malignancy

PROVIDER_CHAINS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
PROVIDER_CHOICES = ("auto", *PROVIDER_CHAINS)


def session_options(threads: int | None = None, optimized_model_path: str | None = None, *,
                    spinning: bool = False):
    """CPU session settings. ``spinning`` off (default): idle intra-op threads sleep instead of
    busy-waiting, which costs a little on idle cores but keeps a shared CPU from collapsing
    (docs/SPEED.md, benchmarks/contention.py)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
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
    banner = io.StringIO()  # ORT *prints* a multi-line "EP Error ... Falling back" banner; we report it
    try:
        with contextlib.redirect_stdout(banner):
            session = ort.InferenceSession(str(path), sess_options=opts, providers=list(chain))
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if provider != "cpu" and ("CUDA" in first or "cuda" in first or "TensorRT" in first):
            raise ProviderError(f"provider '{provider}' failed to start: {first}") from None
        raise ModelFileError(f"{path}: not a valid ONNX model ({first[:300]})") from None
    used = session.get_providers()[0]
    if used != chain[0]:
        reason = _fallback_reason(banner.getvalue()) or "no usable GPU or CUDA libraries?"
        raise ProviderError(f"provider '{provider}' was requested but ONNX Runtime could not use it ({reason}) "
                            f"and would run on {used}; refusing to fall back silently. "
                            "Use --provider cpu to run on the CPU.")
    return session, used


def _fallback_reason(banner: str) -> str:
    """The gist of ORT's printed 'EP Error' banner, e.g. 'Please install TensorRT libraries ...'."""
    for line in banner.splitlines():
        if line.startswith("EP Error"):
            text = line.removeprefix("EP Error").strip()
            if text.startswith("/") and ") " in text:  # drop "/src/file.cc:729 void f(args) " before the message
                text = text.split(") ", 1)[1]
            return text[:300]
    return ""


@dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: np.ndarray | None  # per class, in contract.classes order
    error: str | None = None
    logits: np.ndarray | None = None  # raw (uncalibrated) logits, when asked for and the model has them
    cam: np.ndarray | None = None  # (h, w) map of the positive class's log-odds, when asked for and present
    members: np.ndarray | None = None  # an ensemble's per-member positive-class probabilities, when asked for
    ood_score: float | None = None  # the graph's out-of-distribution score, when the model has one
    in_distribution: bool | None = None  # the graph's decision output; False: "not assessed" (None: unreadable)
    label: int | None = None  # the graph's decision: index into contract.classes (at an overridden threshold: the rule)
    p_malignant: float | None = None  # the graph's malignancy group probability (float32)
    malignant: bool | None = None  # p_malignant >= threshold (the graph's, or the rule at an overridden threshold)

    @property
    def ok(self) -> bool:
        return self.error is None


class OnnxClassifier:
    """A skinonnx ONNX model plus its contract (from metadata, or explicit overrides)."""

    def __init__(self, path: str | os.PathLike[str], provider: str = "auto", *,
                 contract: ModelContract | None = None, threads: int | None = None,
                 optimized_model_path: str | os.PathLike[str] | None = None, io_binding: bool | None = None) -> None:
        self.path = Path(path)
        self.session, self.provider = create_session(
            self.path, provider, threads=threads,
            optimized_model_path=str(optimized_model_path) if optimized_model_path else None)
        on_gpu = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        # I/O binding: one explicit host-to-device copy per batch into a device OrtValue and the
        # (N x 2) outputs bound to host memory, instead of run()'s per-call staging. Auto on GPUs.
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._device = "cuda" if on_gpu else "cpu"
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        self.contract = contract or ModelContract.from_metadata(meta, source=str(self.path))
        self._input = self.session.get_inputs()[0]
        self._check_input()
        outputs = {o.name: o for o in self.session.get_outputs()}
        self._output = "probabilities" if "probabilities" in outputs else next(iter(outputs))
        self._output_is_logits = self._output != "probabilities"
        self._check_output(outputs[self._output].shape)
        batch_dim = self._input.shape[0]
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self._logits_output = "logits" if "logits" in outputs else (self._output if self._output_is_logits else None)
        self._members_output = MEMBER_OUTPUT if MEMBER_OUTPUT in outputs else None
        cam = outputs.get(CAM_OUTPUT)
        self._cam_output = CAM_OUTPUT if cam is not None and len(cam.shape) == 3 else None
        self._ood_output = OOD_OUTPUT if OOD_OUTPUT in outputs else None
        if self._ood_output is not None and self.contract.ood_threshold is None:
            raise ModelFileError(f"{self.path}: the graph has an '{OOD_OUTPUT}' output but the metadata no "
                                 "'ood_threshold' (or does not list the output in 'output_names')")
        # files exported before the decision outputs: skinonnx.deploy.decision applies the same rule
        self._decision_outputs = [n for n in DECISION_OUTPUTS if n in outputs]

    @property
    def has_ood(self) -> bool:
        """Whether the graph has the ``ood_score`` output and the metadata its ``ood_threshold`` (docs/SAFETY.md)."""
        return self._ood_output is not None

    @property
    def ood_threshold(self) -> float | None:
        """Images with ``ood_score`` above this are refused ("not assessed"); None without an OOD score."""
        return self.contract.ood_threshold if self.has_ood else None

    @property
    def has_decision_outputs(self) -> bool:
        """Whether the graph itself outputs ``label`` and ``in_distribution`` (else the rule is applied here)."""
        return all(name in self._decision_outputs for name in LABEL_OUTPUTS)

    @property
    def has_cam(self) -> bool:
        """Whether the graph has the ``cam`` output (exports since skinonnx 0.x; docs/EMBEDDING.md)."""
        return self._cam_output is not None

    @property
    def has_members(self) -> bool:
        """Whether the graph is a fold ensemble with a ``member_probabilities`` [N, K] output."""
        return self._members_output is not None

    @property
    def n_members(self) -> int:
        """K of a fold ensemble (its ``member_probabilities`` width), 0 for a single model."""
        if self._members_output is None:
            return 0
        return int(json.loads(self.metadata.get("ensemble", "{}")).get("members", 0))

    @property
    def input_name(self) -> str:
        return self._input.name

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

    def _check_output(self, shape: list) -> None:
        n_classes = len(self.contract.classes)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_classes):
            raise ModelFileError(f"{self.path}: output '{self._output}' has shape {shape}; expected "
                                 f"[N, {n_classes}] for the classes {list(self.contract.classes)}")

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """A batch in the model's input format -> per-class probabilities (N, C).

        Float models take normalised NCHW float32; uint8 models take RGB NHWC uint8
        (see :meth:`Preprocessing.pixels_from_file`).
        """
        return self.predict_arrays_with_logits(batch, with_logits=False)[0]

    def predict_arrays_with_logits(self, batch: np.ndarray, *, with_logits: bool = True
                                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """NCHW float32 batch -> (probabilities (N, C), raw logits (N, C) or None), in one run.

        A model exported with a fixed batch size is run in chunks of that size (the last one padded).
        """
        probs, logits, *_ = self.predict_arrays_full(batch, with_logits=with_logits)
        return probs, logits

    def predict_arrays_full(self, batch: np.ndarray, *, with_logits: bool = True, with_cam: bool = False,
                            with_members: bool = False
                            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(probabilities, logits or None, cam (N, h, w) or None, member probabilities [N, K] or None) in one
        run; ``cam`` and ``member_probabilities`` only when asked for and the graph has them."""
        named = self.run_outputs(batch, with_logits=with_logits, with_cam=with_cam, with_members=with_members,
                                 with_ood=False)
        return (named["probabilities"], named.get("logits"), named.get(CAM_OUTPUT), named.get(MEMBER_OUTPUT))

    def run_outputs(self, batch: np.ndarray, *, with_logits: bool = True, with_cam: bool = False,
                    with_members: bool = False, with_ood: bool = True, threshold: float | None = None
                    ) -> dict[str, np.ndarray]:
        """One run -> ``{"probabilities": (N, C), "label": (N,), "in_distribution": (N,), "p_malignant": (N,),
        "malignant": (N,)}`` (the decision: :func:`~skinonnx.deploy.decision.decide` and ``malignancy``, at
        ``threshold`` when it overrides the file's) plus, when asked for and the graph has them, ``"logits"``,
        ``"cam"``, ``"member_probabilities"`` and ``"ood_score"`` (N,)."""
        wanted = [self._output, *self._decision_outputs]
        if with_logits and self._logits_output is not None and self._logits_output != self._output:
            wanted.append(self._logits_output)
        if with_cam and self._cam_output is not None:
            wanted.append(self._cam_output)
        if with_members and self._members_output is not None:
            wanted.append(self._members_output)
        if self._ood_output is not None and (with_ood or not self.has_decision_outputs):
            wanted.append(self._ood_output)
        batch = np.ascontiguousarray(batch, np.uint8 if self.takes_uint8 else np.float32)
        step = self._fixed_batch
        if step is None or len(batch) == step:
            outs = self._run(wanted, batch)
        else:
            parts = []
            for start in range(0, len(batch), step):
                part = batch[start:start + step]
                padded = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), batch.dtype)])
                parts.append([o[:len(part)] for o in self._run(wanted, padded)])
            outs = [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]
        named = dict(zip(wanted, outs, strict=True))
        out = outs[0]
        logits = None
        if with_logits and self._logits_output is not None:
            logits = np.asarray(named[self._logits_output], dtype=np.float64)
        cam = named.get(self._cam_output) if with_cam and self._cam_output is not None else None
        members = named.get(self._members_output) if with_members and self._members_output is not None else None
        if self._output_is_logits:
            out = softmax(out, self.contract.temperature)
        result = {"probabilities": np.asarray(out, dtype=np.float64)}
        if logits is not None:
            result["logits"] = logits
        if cam is not None:
            result[CAM_OUTPUT] = np.asarray(cam, np.float32)
        if members is not None:
            result[MEMBER_OUTPUT] = np.asarray(members, np.float64)
        if self._ood_output is not None and OOD_OUTPUT in named:
            result[OOD_OUTPUT] = np.asarray(named[self._ood_output], np.float64).reshape(-1)
        result[LABEL_OUTPUT], result[IN_DISTRIBUTION_OUTPUT] = decide({**named, **result}, self.contract, threshold)
        result[P_MALIGNANT_OUTPUT], result[MALIGNANT_OUTPUT] = malignancy({**named, **result}, self.contract,
                                                                          threshold)
        if not with_ood:
            result.pop(OOD_OUTPUT, None)
        return result

    def _run(self, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
        try:
            if self.io_binding:
                return self._run_bound(outputs, batch)
            return self.session.run(outputs, {self._input.name: batch})
        except Exception as exc:  # onnxruntime's own exception types: one clear line, not a traceback
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime could not run the model on a "
                                 f"{'x'.join(map(str, batch.shape))} input ({first})") from None

    def _run_bound(self, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._input.name, ort.OrtValue.ortvalue_from_numpy(batch, self._device, 0))
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def predict_files(self, paths: Sequence[str | os.PathLike[str]], *, batch_size: int = 16,
                      workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                      progress: bool = False, with_logits: bool = False,
                      with_cam: bool = False, with_members: bool = False, with_ood: bool = True,
                      threshold: float | None = None) -> Iterator[Prediction]:
        """Predict in input order; unreadable files come back with ``error`` set, the rest still run.

        ``with_logits`` / ``with_cam`` also fill :attr:`Prediction.logits` / :attr:`Prediction.cam`
        (where the graph has them); ``with_ood`` (default) fills :attr:`Prediction.ood_score` and
        :attr:`Prediction.in_distribution` when the model has an OOD score. :attr:`Prediction.label` and
        :attr:`Prediction.in_distribution` are the graph's decision (``threshold``: the same rule at another one).

        Decoding and preprocessing run in a thread pool (Pillow releases the GIL) one or two
        batches ahead of inference, so the model rarely waits for JPEG decoding.
        """
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", desc="predict", disable=not progress, leave=False)
        try:
            for chunk in iter_preprocessed(paths, self.preprocessing, batch_size=batch_size, workers=workers,
                                           max_pixels=max_pixels, pixels_only=self.takes_uint8):
                good = [(p, a) for p, a, _ in chunk if a is not None]
                named = (self.run_outputs(np.stack([a for _, a in good]), with_logits=with_logits, with_cam=with_cam,
                                          with_members=with_members, with_ood=with_ood, threshold=threshold)
                         if good else {"probabilities": np.empty((0, 0))})
                columns = {k: iter(v) for k, v in named.items()}
                for p, a, err in chunk:
                    if a is None:
                        yield Prediction(p, None, err)
                        continue
                    row = {k: next(v) for k, v in columns.items()}
                    yield Prediction(p, row["probabilities"], None, row.get("logits"), row.get(CAM_OUTPUT),
                                     row.get(MEMBER_OUTPUT),
                                     float(row[OOD_OUTPUT]) if OOD_OUTPUT in row else None,
                                     bool(row[IN_DISTRIBUTION_OUTPUT]), int(row[LABEL_OUTPUT]),
                                     float(row[P_MALIGNANT_OUTPUT]), bool(row[MALIGNANT_OUTPUT]))
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
