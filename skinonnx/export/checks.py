"""Every export check in one place: a file against its reference on the same real images.

Parity (ONNX Runtime vs PyTorch), the uint8-input variant, fp16 and ORT format each build one
:class:`Comparison`: per output ✓/✗ with max |Δ| against its tolerance, and the share of labels that agree.
:meth:`Comparison.require` fails closed: it raises, so the caller's ``atomic_path`` never renames the file.
INT8's accuracy gate (:func:`run_gate`, :class:`GateReport`) adds ROC-AUC and a noise reference on top. One
picker of real images (:func:`real_images`) and one metadata writer (:func:`write_metadata`) serve every check
and every file. No torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.exclusions import apply_recorded
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import Sample, discover
from ..data.preprocessing import Preprocessing
from ..deploy.contract import (
    DECISION_OUTPUTS,
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    LABEL_OUTPUTS,
    MALIGNANT_OUTPUT,
    OOD_OUTPUT,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)
from ..deploy.decision import DecisionRule
from ..deploy.runtime import OnnxClassifier, create_session, iter_preprocessed
from ..errors import AtolError, DataError, ExportError, ImageError, ShapeError, SkinOnnxError
from ..evaluation.metrics import roc_auc


@dataclass
class Check:
    """One output (or one column of it) at one batch size; ``tolerance`` inf: reported, not gated."""

    output: str
    max_abs_diff: float
    tolerance: float
    batch_size: int | None = None
    shape_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.shape_ok and self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        mark, batch = "✓" if self.ok else "✗", "" if self.batch_size is None else f" batch {self.batch_size:>2}"
        if not self.shape_ok:
            return f"  {mark} {self.output:<13}{batch}: shape mismatch"
        limit = "reported" if math.isinf(self.tolerance) else f"atol {self.tolerance:.0e}"
        return f"  {mark} {self.output:<13}{batch}: max |Δ| = {self.max_abs_diff:.2e} ({limit})"


@dataclass
class Comparison:
    """``title`` names the two sides; ``provider`` is the ONNX Runtime provider that ran the checked file."""

    title: str
    n_images: int
    provider: str = "CPUExecutionProvider"
    checks: list[Check] = field(default_factory=list)
    label_agreement: float = 1.0  # the graph's ``label`` vs the rule on the reference's probabilities
    refusal_agreement: float = 1.0  # the graph's ``in_distribution`` vs the rule on the reference's ood_score
    undecided: int = 0  # images so close to a threshold that the tolerance allows either decision
    malignant_agreement: float = 1.0  # the graph's ``malignant`` vs the rule on the reference's p_malignant

    @property
    def ok(self) -> bool:
        return (all(c.ok for c in self.checks) and self.label_agreement == 1.0 and self.refusal_agreement == 1.0
                and self.malignant_agreement == 1.0)

    def max_diff(self, output: str) -> float:
        return max((c.max_abs_diff for c in self.checks if c.output == output), default=float("nan"))

    @property
    def max_prob_diff(self) -> float:
        return self.max_diff("probabilities")

    def text(self) -> str:
        mark = {True: "✓", False: "✗"}
        near = f" ({self.undecided} within the tolerance of a threshold not counted)" if self.undecided else ""
        return "\n".join([f"{self.title}:", *(c.line() for c in self.checks),
                          f"  {mark[self.label_agreement == 1.0]} {LABEL_OUTPUT}: agrees on {self.label_agreement:.1%}"
                          f" of images{near}",
                          f"  {mark[self.malignant_agreement == 1.0]} {MALIGNANT_OUTPUT}: agrees on "
                          f"{self.malignant_agreement:.1%} of images",
                          f"  {mark[self.refusal_agreement == 1.0]} {IN_DISTRIBUTION_OUTPUT}: agrees on "
                          f"{self.refusal_agreement:.1%} of images"])

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "title": self.title, "n_images": self.n_images, "provider": self.provider,
                "label_agreement": self.label_agreement, "refusal_agreement": self.refusal_agreement,
                "undecided": self.undecided, "malignant_agreement": self.malignant_agreement,
                "max_abs_diff_probabilities": self.max_prob_diff,
                "checks": [{"output": c.output, "batch_size": c.batch_size, "max_abs_diff": c.max_abs_diff,
                            "atol": c.tolerance, "ok": c.ok} for c in self.checks]}

    def add(self, expected: dict[str, np.ndarray], got: dict[str, np.ndarray], tolerances: dict[str, float], *,
            batch_size: int | None = None, columns: dict[str, Sequence[str]] | None = None) -> None:
        """One check per expected output (``columns``: one per named column, e.g. an ensemble's members);
        an output without a tolerance is reported only."""
        for name, want in expected.items():
            if name in DECISION_OUTPUTS:  # compared as decisions (:meth:`add_decisions`), not as numbers
                continue
            have, tol = got.get(name), tolerances.get(name, math.inf)
            if have is None or have.shape != want.shape:
                self.checks.append(Check(name, math.inf, tol, batch_size, shape_ok=False))
            elif name in (columns or {}):
                self.checks += [Check(label, float(np.max(np.abs(have[:, i] - want[:, i]))), tol, batch_size)
                                for i, label in enumerate(columns[name])]  # type: ignore[index]
            else:
                self.checks.append(Check(name, float(np.max(np.abs(have - want))), tol, batch_size))

    def add_decisions(self, reference: dict[str, np.ndarray], got: dict[str, np.ndarray], rule: DecisionRule,
                      tolerances: dict[str, float]) -> None:
        """The checked graph's ``p_malignant`` (within the probabilities' tolerance per summed class), ``malignant``,
        ``label`` and ``in_distribution`` against the one rule applied to the reference's ``probabilities`` and
        ``ood_score``; 0 disagreements allowed. An image whose reference score lies within its output's tolerance of
        a threshold (or, K classes, whose top two biased log-probabilities are that close) may go either way and is
        not counted."""
        if any(name not in got for name in LABEL_OUTPUTS):
            self.checks.append(Check(LABEL_OUTPUT, math.inf, 0.0, shape_ok=False))
            return
        # a reference without ood_score (a recheck against the checkpoint alone): the file's own score is the input
        probs, scores = reference["probabilities"], reference.get(OOD_OUTPUT, got.get(OOD_OUTPUT))
        tol = tolerances.get("probabilities", 0.0)
        if P_MALIGNANT_OUTPUT in got and MALIGNANT_OUTPUT in got:  # files before them (a recheck) have label only
            want_p = rule.p_malignant(probs)
            have_p = np.asarray(got[P_MALIGNANT_OUTPUT], np.float64).reshape(-1)
            self.checks.append(Check(P_MALIGNANT_OUTPUT, float(np.max(np.abs(have_p - want_p), initial=0.0)),
                                     tol * len(rule.group)))
            near_threshold = np.abs(want_p - rule.threshold) <= tol * len(rule.group)
            same_malignant = np.asarray(got[MALIGNANT_OUTPUT]).reshape(-1) == rule.malignant(probs)
            self.malignant_agreement = min(self.malignant_agreement, float(np.mean(same_malignant[~near_threshold]))
                                           if (~near_threshold).any() else 1.0)
        if probs.shape[1] == 2 and rule.class_bias is None:
            decided = np.abs(probs[:, rule.positive_index] - rule.threshold) > tol
        else:  # argmax(log p + bias): the top two scores further apart than the tolerance can move them
            with np.errstate(divide="ignore", invalid="ignore"):
                top = np.sort(np.log(np.asarray(probs, np.float64)) + np.asarray(rule.class_bias or 0.0), axis=1)
                top_p = np.sort(np.asarray(probs, np.float64), axis=1)
                decided = (top[:, -1] - top[:, -2]) > 2 * tol / np.maximum(top_p[:, -2], 1e-12) + 1e-6
        same_label = np.asarray(got[LABEL_OUTPUT]).reshape(-1) == rule.labels(probs)
        self.label_agreement = min(self.label_agreement, float(np.mean(same_label[decided])) if decided.any() else 1.0)
        sure = decided
        if rule.ood_threshold is not None and scores is not None:  # NaN scores are decided: refused
            sure = sure & ~(np.abs(scores - rule.ood_threshold) <= tolerances.get(OOD_OUTPUT, 0.0))
        same_refusal = np.asarray(got[IN_DISTRIBUTION_OUTPUT]).reshape(-1) == rule.in_distribution(probs, scores)
        self.refusal_agreement = min(self.refusal_agreement, float(np.mean(same_refusal[sure])) if sure.any() else 1.0)
        self.undecided = int((~sure).sum())

    def require(self, what: str, not_written: Path | None = None) -> Comparison:
        """Raise (after the whole report is built) unless every check passed."""
        tail = f"; {not_written} not written" if not_written is not None else ""
        if any(not c.shape_ok for c in self.checks):
            raise ShapeError(self.text() + f"\n{what} FAILED: output shapes differ{tail}")
        if not self.ok:
            bad = ", ".join(sorted({c.output for c in self.checks if not c.ok})) or "labels"
            raise AtolError(self.text() + f"\n{what} FAILED: {bad} differ by more than the tolerance{tail}")
        return self


def run_outputs(session, batch: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Every output of an ONNX Runtime session for ``batch``, run ``batch_size`` images at a time."""
    feed, names = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    chunks = [session.run(names, {feed: batch[i:i + batch_size]}) for i in range(0, len(batch), batch_size)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}


def compare_files(reference: Path, candidate: Path, batch: np.ndarray, tolerances: dict[str, float], title: str,
                  *, provider: str = "cpu") -> Comparison:
    """Two files with the same float input (fp32 vs its fp16 or ORT-format copy): every output, and the
    candidate's decisions against the reference file's rule (:func:`rule_of`)."""
    want = run_outputs(create_session(reference, provider)[0], batch, 8)
    session, used = create_session(candidate, provider)
    got = run_outputs(session, batch, 8)
    report = Comparison(f"{title} on {len(batch)} real images", len(batch), used)
    report.add(want, got, tolerances)
    report.add_decisions(want, got, rule_of(reference), tolerances)
    return report


def rule_of(path: str | os.PathLike[str]) -> DecisionRule:
    """The decision rule a skinonnx file's metadata states (what its graph applies)."""
    from ..deploy.info import read_header

    return DecisionRule.of(ModelContract.from_metadata(read_header(path).metadata, source=str(path)))


# --------------------------------------------------------------------------- INT8: labels and ROC-AUC

NOISE_GREY_LEVELS = 0.5  # sigma of the reference pixel noise, in 8-bit grey levels


@dataclass
class GateReport:
    """INT8 vs fp32 on the same real images: label agreement at the threshold and the ROC-AUC change."""

    split: str
    n_images: int
    label_agreement: float
    auc_fp32: float
    auc_int8: float
    max_prob_diff: float
    mean_prob_diff: float
    min_agreement: float
    max_auc_change: float
    threshold: float
    median_margin: float = float("nan")  # median |p_fp32 - threshold|: how close the fp32 scores sit to the boundary
    noise_agreement: float = float("nan")  # fp32 vs fp32 on the same images plus invisible pixel noise (reference)
    skipped: int = 0
    ood_agreement: float = float("nan")  # accept/refuse decisions (ood_score vs its threshold) that agree; NaN: no OOD
    ood_noise_agreement: float = float("nan")  # fp32's own accept/refuse decisions kept under invisible pixel noise

    @property
    def ood_ok(self) -> bool:
        """The INT8 file refuses the same images as "not assessed" (as often as labels must agree)."""
        return bool(np.isnan(self.ood_agreement)) or self.ood_agreement >= self.min_agreement

    @property
    def auc_change(self) -> float:
        return abs(self.auc_int8 - self.auc_fp32)

    @property
    def agreement_ok(self) -> bool:
        return self.label_agreement >= self.min_agreement

    @property
    def auc_ok(self) -> bool:
        return bool(np.isfinite(self.auc_change)) and self.auc_change <= self.max_auc_change + 1e-12

    @property
    def ok(self) -> bool:
        return self.agreement_ok and self.auc_ok and self.ood_ok

    def text(self) -> str:
        mark = {True: "✓", False: "✗"}
        lines = [f"INT8 accuracy gate on {self.n_images} real {self.split} images (INT8 vs fp32 ONNX, threshold "
                 f"{self.threshold:.4f}):",
                 f"  {mark[self.agreement_ok]} labels agree on {self.label_agreement:.1%} of images "
                 f"(need >= {self.min_agreement:.1%})",
                 f"  {mark[self.auc_ok]} ROC-AUC {self.auc_fp32:.4f} -> {self.auc_int8:.4f}, "
                 f"|Δ| = {self.auc_change:.4f} (allowed {self.max_auc_change:.4f})",
                 *([] if np.isnan(self.ood_agreement) else [
                     f"  {mark[self.ood_ok]} out-of-distribution decisions agree on {self.ood_agreement:.1%} of "
                     f"images (need >= {self.min_agreement:.1%})"]),
                 f"    max |Δp| = {self.max_prob_diff:.4f}, mean |Δp| = {self.mean_prob_diff:.4f}; fp32 scores lie a "
                 f"median {self.median_margin:.4f} from the threshold",
                 f"    reference: fp32 keeps {self.noise_agreement:.1%} of its own labels"
                 + ("" if np.isnan(self.ood_noise_agreement) else
                    f" and {self.ood_noise_agreement:.1%} of its out-of-distribution decisions")
                 + f" when pixels get {NOISE_GREY_LEVELS} grey level of random noise"]
        if self.skipped:
            lines.append(f"    {self.skipped} unreadable image(s) skipped")
        lines.append("INT8 gate ok" if self.ok else "INT8 gate FAILED")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        ood = None if np.isnan(self.ood_agreement) else self.ood_agreement  # strict JSON: no NaN
        ood_noise = None if np.isnan(self.ood_noise_agreement) else self.ood_noise_agreement
        return {**asdict(self), "ood_agreement": ood, "ood_noise_agreement": ood_noise, "auc_change": self.auc_change,
                "ok": self.ok}


def run_gate(fp32: OnnxClassifier, int8: OnnxClassifier, samples: Sequence[Sample], min_agreement: float,
             max_auc_change: float, *, split: str, group: Sequence[int], seed: int = 0) -> GateReport:
    """Run both models on the same preprocessed images; compare labels (each file's own) and the ROC-AUC of
    ``p_malignant`` (two classes: the positive class's probability).

    ``group`` is the data's indices of the model's malignancy classes (Sample.label space; two classes: the
    positive class).
    """
    threshold = fp32.contract.threshold
    prep = fp32.preprocessing
    noise_scale = (NOISE_GREY_LEVELS / 255.0 / np.asarray(prep.std, np.float32))[None, :, None, None]
    rng = np.random.default_rng(seed)
    p32, p8, truth, label_same, noise_same, ood_same, ood_noise_same = [], [], [], [], [], [], []
    with_ood = fp32.has_ood and int8.has_ood
    skipped, i = 0, 0
    for chunk in iter_preprocessed([s.path for s in samples], fp32.preprocessing, batch_size=8):
        arrays = []
        for _, array, _ in chunk:
            if array is None:
                skipped += 1
            else:
                arrays.append(array)
                truth.append(int(samples[i].label in group))
            i += 1
        if arrays:
            batch = np.stack(arrays)
            out32, out8 = (m.run_outputs(batch, with_logits=False, with_ood=False) for m in (fp32, int8))
            p32.append(np.asarray(out32[P_MALIGNANT_OUTPUT], np.float64))
            p8.append(np.asarray(out8[P_MALIGNANT_OUTPUT], np.float64))
            label_same.append(out32[LABEL_OUTPUT] == out8[LABEL_OUTPUT])  # each file's own decision outputs
            if with_ood:
                ood_same.append(out32[IN_DISTRIBUTION_OUTPUT] == out8[IN_DISTRIBUTION_OUTPUT])
            noise = rng.standard_normal(batch.shape, dtype=np.float32) * noise_scale
            noisy = fp32.run_outputs(batch + noise, with_logits=False, with_ood=False)
            noise_same.append(out32[LABEL_OUTPUT] == noisy[LABEL_OUTPUT])
            if with_ood:  # fp32's own accept/refuse decisions under invisible noise: what INT8 can be held to
                ood_noise_same.append(out32[IN_DISTRIBUTION_OUTPUT] == noisy[IN_DISTRIBUTION_OUTPUT])
    if not p32:
        raise DataError(f"no readable images in the {split} split for the INT8 gate")
    prob32, prob8, y = np.concatenate(p32), np.concatenate(p8), np.asarray(truth)
    agreement = float(np.mean(np.concatenate(label_same)))
    noise_agreement = float(np.mean(np.concatenate(noise_same)))
    diff = np.abs(prob32 - prob8)
    return GateReport(split, len(y), agreement, roc_auc(y, prob32), roc_auc(y, prob8), float(diff.max()),
                      float(diff.mean()), min_agreement, max_auc_change, threshold,
                      float(np.median(np.abs(prob32 - threshold))), noise_agreement, skipped,
                      float(np.mean(np.concatenate(ood_same))) if ood_same else float("nan"),
                      float(np.mean(np.concatenate(ood_noise_same))) if ood_noise_same else float("nan"))


# --------------------------------------------------------------------------- the real images every check uses


def pick_samples(samples: Sequence[Sample], limit: int, seed: int) -> list[Sample]:
    """A seeded subset of at most ~``limit`` samples, stratified by class, in file order (same files every run)."""
    if len(samples) <= limit:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[int]] = {}
    for i, sample in enumerate(samples):
        by_label.setdefault(sample.label, []).append(i)
    chosen: list[int] = []
    for _, index in sorted(by_label.items()):
        take = min(len(index), max(1, round(limit * len(index) / len(samples))))
        chosen.extend(int(i) for i in rng.choice(index, size=take, replace=False))
    return [samples[i] for i in sorted(chosen)]


def real_images(data: str | os.PathLike[str], limit: int, *, seed: int = 0,
                config: dict[str, Any] | None = None) -> tuple[list[Path], str]:
    """Up to ``limit`` images of the validation split (else the first split), both classes, less those the
    model's run excluded (``config``): the files every export check runs on; and where they came from."""
    found = apply_recorded(discover(data, seed=seed, write_split_file=False), config)
    split = "val" if found.splits.get("val") else next(iter(found.splits))
    return [s.path for s in pick_samples(found.splits[split], limit, seed)], f"{data} ({split} split)"


def load_parity_images(paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, limit: int, *,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Preprocess up to ``limit`` readable images with the shared definition; (N, 3, S, S) float32."""
    arrays = []
    for path in paths:
        if len(arrays) >= limit:
            break
        try:
            arrays.append(prep.from_file(path, max_pixels=max_pixels))
        except ImageError:
            continue
    if not arrays:
        raise SkinOnnxError("the export check needs real images, and none of the given ones could be read")
    return np.stack(arrays)


def write_metadata(proto, metadata: dict[str, str], doc: str | None = None) -> None:  # onnx.ModelProto
    """The one way the export stage labels a file: skinonnx as producer, exactly ``metadata``, ``doc``."""
    proto.producer_name, proto.producer_version = "skinonnx", __version__
    if doc is not None:
        proto.doc_string = doc
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)


def check_variant_graph(model, what: str) -> None:  # onnx.ModelProto
    """``onnx.checker`` (full) on a derived graph (fp16, uint8 input): a failure names the variant."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{what} graph failed the ONNX checker: {exc}") from None
