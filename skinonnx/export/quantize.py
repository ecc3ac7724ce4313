"""Static INT8 quantization (QDQ) of a skinonnx fp32 ONNX file, gated on real validation images.

Works from the ONNX file alone (onnx + onnxruntime, no torch). The choices, and why:

* static, not dynamic: dynamic quantization re-measures activation ranges on every call and
  ONNX Runtime runs ResNet50 *slower* that way than in fp32 on CPU;
* QDQ format, uint8 activations (asymmetric, per tensor) and int8 weights (symmetric, per
  output channel): the combination ONNX Runtime's x86 kernels (QLinearConv) are fastest with,
  and per-channel weights keep ResNet50's accuracy;
* ``reduce_range`` (7-bit weights) on by default: x86 CPUs with AVX2 or AVX-512 but without
  VNNI compute u8 x s8 products with VPMADDUBSW, whose int16 pair sums can saturate with
  8-bit weights; 7-bit weights cannot overflow there. CPUs with VNNI (and GPUs) never
  saturate, so a file made with it is safe on every x86 machine at a small precision cost;
* only Conv is quantized: that is >99 % of the FLOPs. The residual Add, MaxPool, global
  pooling, the 2048x2 classifier, the temperature and the softmax stay fp32, so the
  probabilities keep full resolution (a quantized softmax output moves in 1/255 steps).
  Quantizing the residual Adds as well (an earlier default) re-rounds the sum at each of the
  16 blocks: on isic-bm it doubled the INT8 error (logit-margin error 8.6 % -> 4.3 % of its
  spread without them) and was *slower* (59.6 vs 65.6 images/s at 224², batch 8, 2 cores);
* calibration on the *training* images, preprocessed exactly as at inference
  (:meth:`Preprocessing.from_file`), never on the validation images the gate then uses;
* bias correction: rounding in the INT8 convolutions shifts the logits *systematically* (on
  isic-bm by 0.1-0.15 standard deviations of the score, all in one direction, which flips
  every image just below the threshold). The mean INT8 - fp32 logit difference over the
  calibration images is subtracted from the fp32 classifier's bias (a data-driven bias
  correction as in Nagel et al. 2019, done once at the last layer);
* ``keep_fp32``: whole ResNet stages (``stem``, ``layer1`` ... ``layer4``) can stay fp32 when a
  model is too sensitive there (``layer4`` holds ~20 % of the FLOPs, and on isic-bm most of the
  INT8 error).

The gate (:func:`.checks.run_gate`) compares the INT8 file with the fp32 file on the validation
split: label agreement at the model's decision threshold and the change in ROC-AUC. A file that
fails is never written under its final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_path
from ..data.exclusions import apply_recorded
from ..data.layouts import LabeledData, discover
from ..data.preprocessing import Preprocessing
from ..deploy.runtime import OnnxClassifier, iter_preprocessed
from ..errors import DataError, QuantizationError
from ..hashing import file_sha256
from ..reporting.provenance import read_training_config
from .checks import NOISE_GREY_LEVELS, GateReport, pick_samples, run_gate, write_metadata

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
FP32_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
QUANTIZED_OP_TYPES = ("Conv",)
DEFAULT_CALIBRATION_IMAGES = 128
DEFAULT_MIN_AGREEMENT = 0.98
DEFAULT_MAX_AUC_CHANGE = 0.01


@dataclass(frozen=True)
class QuantizeSettings:
    """What to calibrate on and what the gate demands (CLI: ``skinonnx quantize --help``)."""

    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    method: str = "minmax"
    reduce_range: bool = True
    per_channel: bool = True
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_auc_change: float = DEFAULT_MAX_AUC_CHANGE
    calibration_split: str = "train"
    gate_split: str = "val"
    batch_size: int = 4  # calibration batch: onnxruntime keeps every activation of one batch (~0.1 GB/image)
    gate_images: int = 0  # 0: the whole gate split; else a seeded subset
    seed: int = 0
    bias_correction: bool = True
    keep_fp32: tuple[str, ...] = ()  # ResNet stages left unquantized

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise QuantizationError(f"unknown calibration method '{self.method}' "
                                    f"(choose {', '.join(CALIBRATION_METHODS)})")
        if self.calibration_images < 1 or self.batch_size < 1 or self.gate_images < 0:
            raise QuantizationError("calibration images and batch size must be at least 1, gate images >= 0")
        unknown = [stage for stage in self.keep_fp32 if stage not in FP32_STAGES]
        if unknown:
            raise QuantizationError(f"unknown stage(s) {', '.join(unknown)} to keep in fp32 "
                                    f"(choose from {', '.join(FP32_STAGES)})")
        if not (0.0 <= self.min_agreement <= 1.0 and self.max_auc_change >= 0.0):
            raise QuantizationError("min_agreement must be in [0, 1] and max_auc_change >= 0")


@dataclass
class QuantizeResult:
    path: Path
    gate: GateReport
    calibration_images: int
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


def default_int8_path(fp32_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    return Path(fp32_path).with_suffix(".int8.onnx")


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over real images, decoded in threads.

    ``__len__``/``set_range`` (in batches) let onnxruntime calibrate one batch at a time and
    merge the ranges or histograms (its "strided" mode): the histogram calibrators otherwise
    hold every activation of every image at once, ~100 MB per 224 px ResNet50 image.
    """

    def __init__(self, paths: Sequence[Path], prep: Preprocessing, input_name: str, batch_size: int) -> None:
        paths = list(paths)
        self.chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        self.prep, self.input_name, self.batch_size = prep, input_name, batch_size
        self.start, self.end = 0, len(self.chunks)
        self.used = 0
        self.skipped: list[tuple[str, str]] = []
        self._batches: Iterator[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, min(end_index, len(self.chunks))
        self._batches = None

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        paths = [p for chunk in self.chunks[self.start:self.end] for p in chunk]
        for chunk in iter_preprocessed(paths, self.prep, batch_size=self.batch_size):
            arrays = [a for _, a, _ in chunk if a is not None]
            self.skipped += [(p, str(e)) for p, a, e in chunk if a is None]
            if arrays:
                self.used += len(arrays)
                yield {self.input_name: np.stack(arrays)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._batches is None:
            self._batches = self._generate()
        return next(self._batches, None)


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def stage_convs(model_path: Path, stages: Sequence[str]) -> list[str]:
    """Names of the Conv nodes of the given ResNet stages in a skinonnx export (``/model/layer4/...``)."""
    import onnx

    convs = [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]
    chosen: list[str] = []
    for stage in stages:  # /model/... in a plain export, /members.<k>/... in an ensemble or TTA export
        marker = re.compile(r"/(model|members\.\d+)/" + ("conv1/" if stage == "stem" else f"{stage}/"))
        found = [name for name in convs if marker.match(name)]
        if not found:
            raise QuantizationError(f"no convolution of stage '{stage}' in {model_path.name}: --keep-fp32 needs a "
                                    "ResNet50 exported by skinonnx")
        chosen += found
    return chosen


def _quantize_file(source: Path, target: Path, reader: _CalibrationReader, settings: QuantizeSettings) -> None:
    """quant_pre_process (shape inference + basic graph optimisation) then static QDQ quantization."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_logger = logging.getLogger("onnxruntime.quantization")  # chatty INFO/WARNING lines
    previous = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="skinonnx-quant-") as tmp, \
                contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print() per batch
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared))
            excluded = stage_convs(prepared, settings.keep_fp32) if settings.keep_fp32 else []
            quantize_static(
                str(prepared), str(target), reader, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=settings.per_channel,
                reduce_range=settings.reduce_range, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=_calibrate_method(settings.method),
                nodes_to_exclude=excluded, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                               "CalibStridedMinMax": 1})  # one batch per pass: bounded memory, any method
    finally:
        quant_logger.setLevel(previous)


def model_logits(model: Path, batches: Sequence[np.ndarray], input_name: str, output: str = "logits") -> np.ndarray:
    """``output`` for every image of the batches, as float64 rows (CPU, default session options)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = [session.run([output], {input_name: batch})[0] for batch in batches]
    return np.concatenate(rows).astype(np.float64)


def mean_logits(model: Path, batches: Sequence[np.ndarray], input_name: str, output: str = "logits") -> np.ndarray:
    """Mean of ``output`` over the batches."""
    return model_logits(model, batches, input_name, output).mean(axis=0)


def correct_logit_bias(path: Path, shift: np.ndarray, output: str = "logits") -> None:
    """Subtract ``shift`` from the bias of the fp32 Gemm that produces ``output`` (in place)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    node = next((n for n in proto.graph.node if output in n.output), None)
    inits = {t.name: t for t in proto.graph.initializer}
    heads = [node] if node is not None and node.op_type == "Gemm" else []
    if not heads and any(p.key in ("ensemble", "tta") for p in proto.metadata_props):
        # an ensemble / TTA graph: ``output`` is the mean of its classifier heads' outputs (members x views),
        # so subtracting ``shift`` from every head's bias moves that mean by exactly -shift
        heads = [n for n in proto.graph.node if n.op_type == "Gemm"]
    if not heads or any(len(n.input) < 3 or n.input[2] not in inits for n in heads):
        raise QuantizationError(f"cannot apply bias correction: '{output}' is not produced by a Gemm with a constant "
                                "bias (use --no-bias-correction)")
    for head in heads:
        bias = inits[head.input[2]]
        corrected = numpy_helper.to_array(bias).astype(np.float64) - shift
        bias.CopyFrom(numpy_helper.from_array(corrected.astype(np.float32), bias.name))
    onnx.save(proto, str(path))


def _bias_correct(fp32_path: Path, int8_path: Path, paths: Sequence[Path], prep: Preprocessing,
                  input_name: str) -> list[float]:
    """Measure the mean INT8 - fp32 logit shift on the calibration images and remove it; return the shift."""
    arrays = ([a for _, a, _ in chunk if a is not None] for chunk in iter_preprocessed(paths, prep, batch_size=8))
    batches = [np.stack(chunk) for chunk in arrays if chunk]  # unreadable files were reported by calibration
    if not batches:
        return []
    shift = mean_logits(int8_path, batches, input_name) - mean_logits(fp32_path, batches, input_name)
    correct_logit_bias(int8_path, shift)
    return [float(v) for v in shift]


def _write_metadata(path: Path, metadata: dict[str, str], doc: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    write_metadata(proto, metadata, doc)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise QuantizationError(f"the quantized graph failed the ONNX checker: {exc}") from None


def _load_data(data: str | os.PathLike[str], fp32: OnnxClassifier, settings: QuantizeSettings) -> LabeledData:
    contract = fp32.contract
    group = {"malignant": list(contract.malignant_classes)} if contract.multiclass else {
        "positive_class": contract.positive_class}
    found = apply_recorded(discover(data, **group, seed=settings.seed, write_split_file=False),
                           read_training_config(None, fp32.metadata))
    if set(found.classes) != set(contract.classes):
        raise DataError(f"the data's classes {list(found.classes)} differ from the model's {list(contract.classes)}")
    gate = found.split(settings.gate_split)
    if len({s.label for s in gate}) < 2:
        raise DataError(f"the {settings.gate_split} split needs images of both classes for the ROC-AUC gate")
    found.split(settings.calibration_split)  # raises a clear error when missing
    return found


def quantize_model(fp32_path: str | os.PathLike[str], output: str | os.PathLike[str] | None,
                   data: str | os.PathLike[str], settings: QuantizeSettings | None = None, *,
                   provider: str = "cpu", echo=print) -> QuantizeResult:
    """fp32 ONNX -> INT8 QDQ ONNX calibrated on ``data``'s training images, written only if the gate passes
    (both files run on ``provider`` for the gate)."""
    settings = settings or QuantizeSettings()
    t0 = time.perf_counter()
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization needs it; deployment installs may lack it)
    except ImportError:
        raise QuantizationError("quantization needs the 'onnx' package: pip install 'skinonnx[train]' "
                                "(or pip install onnx)") from None
    fp32_path = Path(fp32_path)
    output = Path(output) if output is not None else default_int8_path(fp32_path)
    if output.suffix.lower() != ".onnx":
        raise QuantizationError(f"the INT8 output must end in .onnx: {output}")
    if output.resolve() == fp32_path.resolve():
        raise QuantizationError(f"the INT8 output would overwrite the fp32 model {fp32_path}; choose another name")
    fp32 = OnnxClassifier(fp32_path, provider)
    if "quantization" in fp32.metadata:
        raise QuantizationError(f"{fp32_path} is already quantized; pass the fp32 model")
    found = _load_data(data, fp32, settings)
    calibration = pick_samples(found.split(settings.calibration_split), settings.calibration_images, settings.seed)
    reader = _CalibrationReader([s.path for s in calibration], fp32.preprocessing, fp32.input_name,
                                settings.batch_size)
    echo(f"calibrating on {len(calibration)} {settings.calibration_split} images of {found.root} "
         f"({settings.method}, per-channel int8 weights{', 7-bit (reduce_range)' if settings.reduce_range else ''}, "
         "uint8 activations)")
    with atomic_path(output) as tmp:
        try:
            _quantize_file(fp32_path, tmp, reader, settings)
        except (QuantizationError, DataError):
            raise
        except Exception as exc:  # onnx/onnxruntime raise many types; the user needs one line
            if reader.used == 0:
                raise DataError(f"no readable calibration images in the {settings.calibration_split} split "
                                f"({reader.skipped[0][0]}: {reader.skipped[0][1]} ...)" if reader.skipped
                                else "no calibration images") from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise QuantizationError(f"quantization failed: {first[:300]}") from None
        for path, problem in reader.skipped[:5]:
            echo(f"calibration: skipped {path}: {problem}")
        shift: list[float] = []
        if settings.bias_correction:
            shift = _bias_correct(fp32_path, tmp, [s.path for s in calibration], fp32.preprocessing, fp32.input_name)
            if shift:
                echo("bias correction: mean INT8 - fp32 logit shift on the calibration images "
                     f"[{', '.join(f'{v:+.4f}' for v in shift)}] removed")
        int8 = OnnxClassifier(tmp, provider, contract=fp32.contract)
        gate_samples = found.split(settings.gate_split)
        if settings.gate_images:
            gate_samples = pick_samples(gate_samples, settings.gate_images, settings.seed)
        gate = run_gate(fp32, int8, gate_samples, settings.min_agreement, settings.max_auc_change,
                        split=settings.gate_split, seed=settings.seed,
                        group=[found.classes.index(c) for c in fp32.contract.malignant_classes])
        del int8
        echo(gate.text())
        if not gate.ok:
            raise QuantizationError(_gate_failure(gate, output, settings.keep_fp32,
                                                  retry=f"skinonnx quantize --onnx {fp32_path} --data {data}"))
        metadata = {**fp32.metadata, "quantization": json.dumps(_description(settings, reader.used, found, fp32_path,
                                                                            gate, shift))}
        _write_metadata(tmp, metadata, f"INT8 (static QDQ) version of {fp32_path.name}. "
                                       + fp32.session.get_modelmeta().description)
    return QuantizeResult(output, gate, reader.used, time.perf_counter() - t0, metadata)


def _gate_failure(gate: GateReport, output: Path, keep_fp32: Sequence[str] = (),
                  retry: str = "skinonnx quantize --onnx MODEL --data DIR") -> str:
    """Why the gate failed (every failed check named) and advice that can help: a command that runs as printed
    (`export --int8` has no --keep-fp32) only where keeping a stage in fp32 can help."""
    reasons = []
    if not gate.agreement_ok:
        reasons.append(f"labels agree on {gate.label_agreement:.1%} < {gate.min_agreement:.1%}")
    if not gate.auc_ok:
        reasons.append(f"|ΔROC-AUC| = {gate.auc_change:.4f} > {gate.max_auc_change:.4f}"
                       if np.isfinite(gate.auc_change) else "ROC-AUC is undefined")
    if not gate.ood_ok:
        reasons.append(f"out-of-distribution decisions agree on {gate.ood_agreement:.1%} < {gate.min_agreement:.1%}")
    hint, hopeless = "", False
    if not gate.agreement_ok and gate.noise_agreement < gate.min_agreement:
        hint, hopeless = (f" The fp32 model itself changes {1 - gate.noise_agreement:.1%} of its labels under "
                          f"invisible pixel noise ({NOISE_GREY_LEVELS} grey level; half its scores lie within "
                          f"{gate.median_margin:.4f} of the threshold): it is too unstable near its threshold for any "
                          "INT8 version to pass; train it better."), True
    elif not gate.agreement_ok and gate.median_margin < 5 * gate.mean_prob_diff:
        hint = (f" Half the fp32 scores lie within {gate.median_margin:.4f} of the threshold, so INT8's mean change of "
                f"{gate.mean_prob_diff:.4f} flips labels: the model separates the classes weakly.")
    if not gate.ood_ok:
        if gate.ood_noise_agreement < gate.min_agreement:
            hint += (f" The fp32 file itself changes {1 - gate.ood_noise_agreement:.1%} of its out-of-distribution "
                     f"decisions under invisible pixel noise: images sit at the OOD threshold, and no INT8 version can "
                     "agree more than that.")
        else:
            hint += (" The out-of-distribution score reads the pooled features after every stage, so INT8 rounding "
                     "anywhere moves it; keeping one stage in fp32 does not restore it (measured on isic-bm: "
                     "`--keep-fp32 layer4` lowered the agreement from 96.7 % to 95.6 %).")
        hopeless = True
    if hopeless or (gate.agreement_ok and gate.auc_ok):  # nothing a fp32 stage is known to fix
        advice = " Deploy the fp32 model."
    else:
        stages = [*keep_fp32, "layer4" if "layer4" not in keep_fp32 else "layer3"]
        why = "the stage most sensitive to INT8 here" if stages == ["layer4"] else "one more stage in fp32"
        advice = (f" Try: {retry} {' '.join(f'--keep-fp32 {s}' for s in stages)} ({why}), or deploy the fp32 "
                  "model.")
    return (f"INT8 accuracy gate failed on {gate.n_images} {gate.split} images ({'; '.join(reasons)}); {output} "
            f"was not written.{hint}{advice}")


def _description(settings: QuantizeSettings, used: int, found: LabeledData, source: Path,
                 gate: GateReport, shift: list[float]) -> dict[str, Any]:
    import onnxruntime

    return {
        "format": "QDQ", "mode": "static", "weights": "int8 symmetric per-channel" if settings.per_channel
        else "int8 symmetric per-tensor", "reduce_range": settings.reduce_range,
        "activations": "uint8 asymmetric per-tensor", "quantized_op_types": list(QUANTIZED_OP_TYPES),
        "fp32_stages": list(settings.keep_fp32),
        "bias_correction": {"applied": bool(shift), "logit_shift_removed": shift},
        "calibration": {"method": settings.method, "images": used, "split": settings.calibration_split,
                        "data": found.root.name, "seed": settings.seed},
        "gate": gate.to_dict(), "source_model": source.name, "source_model_sha256": file_sha256(source),
        "onnxruntime_version": onnxruntime.__version__, "skinonnx_version": __version__,
        "quantized_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

