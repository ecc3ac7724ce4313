"""The exported graph's ``ood_score`` output: how unlike the training images an input is, computed in the graph.

Method (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples"): the
pooled features ``f`` of ResNet50 (``avgpool``, D = 2048) of the training split are modelled as one
Gaussian per class with a *shared* covariance ``S``; an image's score is its squared Mahalanobis
distance to the nearest class mean, divided by the number of whitened directions k so that training
images score about 1 whatever the model:

    ood_score = min_c (f - mu_c)^T S^-1 (f - mu_c) / k  =  min_c || f W - mu_c W ||^2,   W = V L^-1/2 / sqrt(k)

With a few hundred images the 2048-d sample covariance is singular, so ``S`` is the Ledoit-Wolf
shrinkage estimate (sklearn; ``oas`` and a ``pca:K`` projection are the measured alternatives,
benchmarks/ood.py and docs/SAFETY.md). In the graph this is one MatMul ``[N, D] x [D, k]``, a
subtraction of the C projected means and a sum of squares: ~D*k multiply-adds per image (about 1 % of
ResNet50 at 64 px, 0.1 % at 224 px). Its nodes are named ``ood/...``, so the fp16 copy can keep them in
float32 (scores of far-away images would overflow float16's 65504) and INT8 (which quantizes only Conv)
leaves them alone.

Weak features (a network trained from scratch on a few hundred images) accept greyscale, blurred and flat
images, pink blobs and close-ups of skin; so the exported score has a second, model-free part, the
Mahalanobis distance of the input's image statistics (colour, saturation, sharpness, layout:
:mod:`.ood_statistics`), and is their maximum after dividing each by its own ``accept`` quantile on the
validation split:

    ood_score = max(feature / s_f, statistics / s_s)

Ensembles and test-time augmentation: each member has its own Gaussians (fitted on its own training
split); a member's feature score is the mean over the TTA views, the file's feature score the mean over the
members; the image statistics are computed once, on the input as given.

``ood_threshold`` (metadata): the ``accept`` quantile (default 95 %) of the scores of the validation split
(out-of-fold images for a cross-validation ensemble): an image scoring above it is refused, "not assessed:
unlike the training images". Torch side; the runtime reads the score and threshold torch-free.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..deploy.contract import OOD_KEY, OOD_OUTPUT, OOD_REFUSAL, OOD_THRESHOLD_KEY, ModelContract
from ..deploy.decision import accepted
from ..errors import ExportError, SkinOnnxError
from .ood_statistics import StatisticsFit, StatisticsHead, batch_statistics, fit_statistics

DEFAULT_OOD_ACCEPT = 0.95
DEFAULT_COVARIANCE = "pca:64"  # measured better than full-rank shrinkage (docs/SAFETY.md)
THRESHOLD_MARGIN = 1e-5
COVARIANCES = ("ledoit_wolf", "oas", "pca:K")
FEATURE_LAYER = "avgpool"



def has_pooled_features(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision-style ResNet with an ``avgpool`` feeding its ``fc``."""
    return isinstance(getattr(model, FEATURE_LAYER, None), nn.Module) and isinstance(getattr(model, "fc", None),
                                                                                    nn.Linear)


# --------------------------------------------------------------------------- fitting (numpy)


@dataclass
class GaussianFit:
    """Class means and the whitening of the shared covariance; ``score(f)`` as the graph computes it."""

    means: np.ndarray  # [C, D]
    whitening: np.ndarray  # [D, k], already divided by sqrt(k)
    covariance: str
    shrinkage: float | None
    n_per_class: list[int]

    @property
    def components(self) -> int:
        return int(self.whitening.shape[1])

    def score(self, features: np.ndarray) -> np.ndarray:
        g = np.asarray(features, np.float64) @ self.whitening
        centres = self.means @ self.whitening
        return ((g[:, None, :] - centres[None]) ** 2).sum(-1).min(1)


def fit_gaussians(features: np.ndarray, labels: Sequence[int], covariance: str = DEFAULT_COVARIANCE) -> GaussianFit:
    """Class-conditional Gaussians with a shared covariance, estimated by ``covariance``:
    ``ledoit_wolf`` / ``oas`` (sklearn shrinkage, full rank) or ``pca:K`` (the K leading directions of the
    pooled within-class covariance only)."""
    from sklearn.covariance import OAS, LedoitWolf

    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    classes = sorted(set(y.tolist()))
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2 * len(classes) + 1:
        raise ExportError(f"the out-of-distribution score is fitted on the training images and needs at least "
                          f"{2 * len(classes) + 1} ({len(x)} given): train on more images, or export with --no-ood")
    means = np.stack([x[y == c].mean(0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    shrinkage = None
    if covariance in ("ledoit_wolf", "oas"):
        est = (LedoitWolf if covariance == "ledoit_wolf" else OAS)(assume_centered=True).fit(centred)
        cov, shrinkage = est.covariance_, float(est.shrinkage_)
        k = None
    elif covariance.startswith("pca:") and covariance[4:].isdigit() and int(covariance[4:]) > 0:
        cov = centred.T @ centred / max(1, len(x) - len(classes))
        k = min(int(covariance[4:]), len(x) - len(classes), x.shape[1])
    else:
        raise SkinOnnxError(f"unknown covariance estimator '{covariance}' (choose {', '.join(COVARIANCES)})")
    values, vectors = np.linalg.eigh(cov)
    if k is not None:  # the k leading directions
        values, vectors = values[-k:], vectors[:, -k:]
    floor = max(float(values.max()) * 1e-12, 1e-30)  # shrinkage keeps them positive; guard round-off
    whitening = vectors / np.sqrt(np.maximum(values, floor))
    whitening /= np.sqrt(whitening.shape[1])
    return GaussianFit(means, whitening, covariance, shrinkage, [int((y == c).sum()) for c in classes])


def fit_threshold(scores: np.ndarray, accept: float = DEFAULT_OOD_ACCEPT) -> float:
    """The smallest score that accepts at least ``accept`` of ``scores`` (accepted: score <= threshold)."""
    if not 0.5 <= accept < 1.0:
        raise SkinOnnxError(f"--ood-accept must be in [0.5, 1), got {accept}")
    scores = np.asarray(scores, np.float64)
    if not len(scores) or not np.all(np.isfinite(scores)):
        raise ExportError("the OOD threshold needs finite scores of validation images")
    k = max(1, math.ceil(accept * len(scores) - 1e-9))  # the k-th smallest score accepts k of n >= accept * n
    # plus a relative 1e-5: ONNX Runtime's float32 sums differ from PyTorch's by ~1e-6 relative, which must not
    # flip the images the threshold was fitted on
    return float(np.sort(scores)[k - 1]) * (1 + THRESHOLD_MARGIN)


# --------------------------------------------------------------------------- graph (torch)


class MahalanobisHead(nn.Module):
    """Pooled features [N, D] -> min over classes of the squared, whitened distance [N] (see module doc)."""

    def __init__(self, fit: GaussianFit) -> None:
        super().__init__()
        self.register_buffer("whitening", torch.from_numpy(fit.whitening.astype(np.float32)))
        self.register_buffer("centres", torch.from_numpy((fit.means @ fit.whitening).astype(np.float32)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        g = features @ self.whitening
        return ((g.unsqueeze(1) - self.centres.unsqueeze(0)) ** 2).sum(-1).min(dim=1).values


class OodScore(nn.Module):
    """Members' pooled features (each [V*N, D, 1, 1], views stacked) and the input [N, 3, S, S] -> one score [N].

    Without ``statistics``: the feature distance (mean over views, then members). With it (every export):
    ``max(feature / s_f, statistics / s_s)``, each part divided by its own scale (``part_scales``: the part's
    ``accept`` quantile on validation), so an image unlike the training images in either way scores high.
    ``parts = True`` returns both unscaled parts [N, 2] instead (used while fitting the scales)."""

    def __init__(self, heads: Sequence[MahalanobisHead], views: int = 1,
                 statistics: StatisticsHead | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.views = views
        self.statistics = statistics
        self.parts = False
        self.register_buffer("inverse_scales", torch.ones(2))

    def set_scales(self, scales: Sequence[float]) -> None:
        self.inverse_scales = torch.tensor([1.0 / float(s) for s in scales], dtype=torch.float32)

    def forward(self, features: list[torch.Tensor], x: torch.Tensor | None = None) -> torch.Tensor:
        scores = []
        for head, pooled in zip(self.heads, features, strict=True):
            score = head(pooled.flatten(1))
            if self.views > 1:
                score = score.reshape(self.views, -1).mean(0)
            scores.append(score)
        feature = scores[0] if len(scores) == 1 else torch.stack(scores, 1).mean(1)
        if self.statistics is None:
            return feature
        if x is None:
            raise ExportError("the image-statistics part of the OOD score needs the input batch")
        parts = torch.stack([feature, self.statistics(x)], 1)
        return parts if self.parts else (parts * self.inverse_scales).max(dim=1).values


class OodOutput:
    """Appends ``ood_score`` to ``base``'s outputs (an ExportWrapper or EnsembleWrapper), in place, by hooks.

    ``base`` gets the child ``ood`` (graph nodes ``ood/...``: ``contract.keeps_float32``) and a forward hook that
    appends its score; the members' ``avgpool`` outputs are captured by forward hooks while ``base`` runs.
    Nothing is re-parented, so the traced graph keeps the model's own node names (``/model/layer4/...``,
    ``/members.<k>/...``), which INT8 ``--keep-fp32`` relies on. :meth:`remove` undoes it all."""

    def __init__(self, base: nn.Module, members: Sequence[nn.Module], score: OodScore) -> None:
        self.base = base
        base.add_module("ood", score)
        self._captured: list[list[torch.Tensor]] = [[] for _ in members]
        self._active = False
        self._handles = [base.register_forward_pre_hook(self._start), base.register_forward_hook(self._finish)]
        self._handles += [getattr(m, FEATURE_LAYER).register_forward_hook(
            lambda _m, _i, out, keep=keep: keep.append(out) if self._active else None)
            for m, keep in zip(members, self._captured, strict=True)]

    def _start(self, _module: nn.Module, _inputs: Any) -> None:
        for keep in self._captured:
            keep.clear()
        self._active = True

    def _finish(self, module: nn.Module, inputs: Any, outputs: Any) -> tuple[torch.Tensor, ...]:
        self._active = False
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        score = module.ood([keep[-1] for keep in self._captured], inputs[0])  # the input: image statistics
        for keep in self._captured:
            keep.clear()
        return (*outputs, score)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        del self.base.ood


# --------------------------------------------------------------------------- features of real images


def preprocessed_batches(paths: Iterable[str | os.PathLike[str]], prep: Preprocessing, *, batch_size: int = 32,
                         max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterable[tuple[list[str], np.ndarray]]:
    """``(readable paths, NCHW float32 batch)`` chunks; unreadable images are skipped."""
    from ..deploy.runtime import iter_preprocessed

    for chunk in iter_preprocessed(paths, prep, batch_size=batch_size, max_pixels=max_pixels):
        good = [(p, a) for p, a, _ in chunk if a is not None]
        if good:
            yield [p for p, _ in good], np.stack([a for _, a in good])


@torch.no_grad()
def pooled_features(model: nn.Module, batch: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, D] float64, logits [N, C] float64)`` of one preprocessed batch."""
    if not has_pooled_features(model):
        raise ExportError("the OOD score needs a ResNet with an avgpool + linear head")
    model = model.eval()
    captured: list[torch.Tensor] = []
    handle = getattr(model, FEATURE_LAYER).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        x = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        logits = model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1).double().numpy(), logits.double().numpy()


def statistics_of(paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, *,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[str], np.ndarray]:
    """The image statistics (:mod:`.ood_statistics`) of every readable image of ``paths`` (in order)."""
    kept, rows = [], []
    for names, batch in preprocessed_batches(paths, prep, max_pixels=max_pixels):
        kept += names
        rows.append(batch_statistics(batch, prep))
    if not rows:
        raise ExportError("none of the images for the OOD fit could be read")
    return kept, np.concatenate(rows)


def features_of(model: nn.Module, paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, *,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[str], np.ndarray]:
    """Pooled features of every readable image of ``paths`` (in order)."""
    kept, rows = [], []
    for names, batch in preprocessed_batches(paths, prep, max_pixels=max_pixels):
        kept += names
        rows.append(pooled_features(model, batch)[0])
    if not rows:
        raise ExportError("none of the images for the OOD fit could be read")
    return kept, np.concatenate(rows)


@torch.no_grad()
def wrapper_scores(wrapper: nn.Module, paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, *,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The graph's ``ood_score`` computed by PyTorch for real images (the threshold is fitted on these)."""
    wrapper.eval()
    out = [wrapper(torch.from_numpy(batch))[-1].double().numpy()
           for _, batch in preprocessed_batches(paths, prep, max_pixels=max_pixels)]
    if not out:
        raise ExportError("none of the validation images for the OOD threshold could be read")
    return np.concatenate(out)


# --------------------------------------------------------------------------- what export calls


@dataclass
class OodFit:
    """Everything export needs: the graph module, the threshold and the metadata that describes them."""

    score: OodScore
    threshold: float
    record: dict[str, Any] = field(default_factory=dict)

    def contract(self, contract: ModelContract) -> ModelContract:
        """``contract`` with ``ood_score`` as its last output and the two metadata keys."""
        from dataclasses import replace

        extra = {**contract.extra, OOD_THRESHOLD_KEY: repr(self.threshold), OOD_KEY: json.dumps(self.record)}
        return replace(contract, output_names=(*contract.output_names, OOD_OUTPUT), extra=extra)

    def attach(self, base: nn.Module, members: Sequence[nn.Module]) -> OodOutput:
        """Give ``base`` the ``ood_score`` output (in place); export then traces ``base``."""
        return OodOutput(base, members, self.score)

    def text(self) -> str:
        r = self.record
        return (f"OOD score: max of the features' Mahalanobis distance ({r['covariance']}) and the image statistics' "
                f"{r['image_statistics']['neighbours']}-NN distance, fitted on {r['fit']['n']} {r['fit']['split']} "
                "images; "
                f"threshold {self.threshold:.4g} accepts {r['threshold_fit']['accepted']:.1%} of "
                f"{r['threshold_fit']['n']} {r['threshold_fit']['split']} images")


def fit_single(model: nn.Module, train: Sequence[Any], val: Sequence[Any], prep: Preprocessing, *,
               accept: float = DEFAULT_OOD_ACCEPT, covariance: str = DEFAULT_COVARIANCE, tta: str = "none",
               views: int = 1, base: nn.Module | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               split_names: tuple[str, str] = ("train", "val")) -> OodFit:
    """One model: Gaussians of features and image statistics on ``train`` samples (``.path``, ``.label``),
    the parts' scales and the threshold on ``val``.

    ``base``: a module like the one that will be exported around ``model`` (for TTA ``tta`` with ``views``
    views, an EnsembleWrapper); the threshold is fitted on the same computation as the graph's."""
    paths, labels = _paths_labels(train)
    kept, feats = features_of(model, paths, prep, max_pixels=max_pixels)
    fit = fit_gaussians(feats, [labels[p] for p in kept], covariance)
    stats = fit_statistics(statistics_of(paths, prep, max_pixels=max_pixels)[1])
    score = OodScore([MahalanobisHead(fit)], views, StatisticsHead(prep, stats))
    base = base if base is not None else _PlainLogits(model)
    parts = _parts(base, model, score, [s.path for s in val], prep, max_pixels)
    threshold, val_scores = fit_parts(score, parts, accept)
    record = _record([fit], stats, len(kept), split_names[0], parts, val_scores, threshold, accept, split_names[1],
                     tta, score)
    return OodFit(score, threshold, record)


def fit_members(members: Sequence[nn.Module], oof_rows: Sequence[tuple[str, int, int]], prep: Preprocessing,
                single: Callable[[nn.Module], nn.Module], *, accept: float = DEFAULT_OOD_ACCEPT,
                covariance: str = DEFAULT_COVARIANCE, tta: str = "none", views: int = 1,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> OodFit:
    """A fold ensemble: member k's Gaussians on the images of the other folds (its training split);
    the threshold on each member's score of its own held-out fold (``oof_rows``: path, label, fold).

    The file's score is the mean of the K member scores, and an out-of-fold image has an unbiased score
    from one member only; the mean of K such scores varies less than one, so a threshold from single
    members' held-out scores accepts at least ``accept`` of new in-distribution images (conservative).
    The image statistics do not depend on the member: the file's Gaussian is fitted on all the images, and
    each held-out fold is scored by one fitted on the other folds, like its member.
    ``single(member)``: the member alone as the graph runs it (its TTA views)."""
    kept_stats, all_stats = statistics_of([p for p, _, _ in oof_rows], prep, max_pixels=max_pixels)
    stats_by_path = dict(zip(kept_stats, all_stats, strict=True))
    fits, held_out = [], []
    for k, member in enumerate(members):
        train = [(p, y) for p, y, fold in oof_rows if fold != k]
        kept, feats = features_of(member, [p for p, _ in train], prep, max_pixels=max_pixels)
        label = dict(train)
        fits.append(fit_gaussians(feats, [label[p] for p in kept], covariance))
        stats_k = fit_statistics(np.stack([stats_by_path[p] for p, _ in train if p in stats_by_path]))
        held_out.append(_parts(single(member), member, OodScore([MahalanobisHead(fits[-1])], views,
                                                                StatisticsHead(prep, stats_k)),
                               [p for p, _, fold in oof_rows if fold == k], prep, max_pixels))
    parts = np.concatenate(held_out)
    stats = fit_statistics(all_stats)
    score = OodScore([MahalanobisHead(f) for f in fits], views, StatisticsHead(prep, stats))
    threshold, scores = fit_parts(score, parts, accept)
    n_fit = sum(sum(f.n_per_class) for f in fits) // max(1, len(fits))
    record = _record(fits, stats, n_fit, "each member's training folds", parts, scores, threshold, accept,
                     "out-of-fold (each image scored by the member that did not train on it)", tta, score)
    return OodFit(score, threshold, record)


def _parts(base: nn.Module, model: nn.Module, score: OodScore, paths: Sequence[Any], prep: Preprocessing,
           max_pixels: int) -> np.ndarray:
    """[N, 2]: the unscaled feature and statistics parts of ``paths``' scores, as ``base`` computes them."""
    hooks = OodOutput(base, [model], score)
    score.parts = True
    try:
        return wrapper_scores(base, paths, prep, max_pixels=max_pixels)
    finally:
        score.parts = False
        hooks.remove()


def fit_parts(score: OodScore, parts: np.ndarray, accept: float) -> tuple[float, np.ndarray]:
    """Scale each part by its own ``accept`` quantile on validation (``parts`` [N, 2]), then the threshold on
    their maximum, computed in float32 as the graph does; ``(threshold, validation scores)``."""
    score.set_scales([max(fit_threshold(parts[:, i], accept), 1e-12) for i in range(parts.shape[1])])
    scores = (parts.astype(np.float32) * score.inverse_scales.numpy()).max(1).astype(np.float64)
    return fit_threshold(scores, accept), scores


class _PlainLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _paths_labels(samples: Sequence[Any]) -> tuple[list[str], dict[str, int]]:
    paths = [str(s.path) for s in samples]
    return paths, {str(s.path): int(s.label) for s in samples}


def _record(fits: Sequence[GaussianFit], stats: StatisticsFit, n_fit: int, fit_split: str, parts: np.ndarray,
            scores: np.ndarray, threshold: float, accept: float, threshold_split: str, tta: str,
            score: OodScore) -> dict[str, Any]:
    first = fits[0]
    scales = [1.0 / float(v) for v in score.inverse_scales]
    return {
        "method": "mahalanobis", "covariance": first.covariance,
        "shrinkage": [f.shrinkage for f in fits] if len(fits) > 1 else first.shrinkage,
        "feature": f"{FEATURE_LAYER} ({first.means.shape[1]})", "components": first.components,
        "score": "max(feature / s_f, image_statistics / s_s): feature = min over classes of the squared "
                 "Mahalanobis distance of the pooled features to the class mean (shared covariance), divided by "
                 "the number of whitened directions; image_statistics = squared Mahalanobis distance of the "
                 "input's colour, sharpness and layout statistics to the training images', divided by their "
                 "number; each divided by its own accept quantile on the threshold split; higher = more unlike "
                 "the training images",
        "image_statistics": stats.record(),
        "parts": {"names": ["feature", "image_statistics"], "scales": scales, "combination": "max",
                  "refused_alone": [1 - float(np.mean(accepted(parts[:, i] / scales[i], threshold)))
                                    for i in range(2)]},
        "accept_if": f"{OOD_OUTPUT} <= {OOD_THRESHOLD_KEY}", "refusal": OOD_REFUSAL,
        "members": len(fits), "combination": "mean" if len(fits) > 1 else "single", "tta": tta,
        "fit": {"split": fit_split, "n": int(n_fit), "per_class": first.n_per_class},
        "threshold_fit": {"split": threshold_split, "n": len(scores), "accept": accept,
                          "accepted": float(np.mean(accepted(scores, threshold))),
                          "median_score": float(np.median(scores))},
    }


def reference_ood_scores(wrapper: nn.Module, batch: np.ndarray) -> np.ndarray:
    """PyTorch's ``ood_score`` for a preprocessed batch: the parity reference."""
    with torch.no_grad():
        wrapper.eval()
        return wrapper(torch.from_numpy(batch))[-1].double().numpy()


def data_splits(root: str | os.PathLike[str], seed: int, positive_class: str | None = None,
                config: dict[str, Any] | None = None) -> tuple[list[Any], list[Any], str]:
    """The training and validation samples of ``root`` (the data the model was trained on), without the images
    its run excluded (``config``'s exclusion record)."""
    from ..data.exclusions import apply_recorded
    from ..data.layouts import discover

    found = apply_recorded(discover(Path(root), positive_class=positive_class, seed=seed, write_split_file=False),
                           config)
    train = found.split("train")
    val_name = "val" if found.splits.get("val") else None
    if val_name is None:
        raise ExportError(f"{root}: the OOD threshold needs a validation split (or use --no-ood)")
    return train, found.split(val_name), val_name


def fit_for_checkpoint(model: nn.Module, state: dict[str, Any], data: str | None, *,
                       accept: float = DEFAULT_OOD_ACCEPT, covariance: str = DEFAULT_COVARIANCE, tta: str = "none",
                       views: int = 1, base: nn.Module | None = None) -> OodFit:
    """Fit on the checkpoint's own data (``--data``, else the training data it records): train + val splits."""
    from ..data.training_data import model_data

    root = model_data(data, state.get("data_root"), needed_for="the OOD score (export --no-ood leaves it out)")
    config = state.get("config") or {}
    positive = state.get("positive_index")  # None: more than two classes (their labels are the class order)
    train, val, val_name = data_splits(root, int(config.get("seed", 0)),
                                       None if positive is None else state["classes"][int(positive)], config)
    return fit_single(model, train, val, Preprocessing.from_dict(state["preprocessing"]), accept=accept,
                      covariance=covariance, tta=tta, views=views, base=base,
                      max_pixels=int(config.get("max_pixels", DEFAULT_MAX_PIXELS)), split_names=("train", val_name))
