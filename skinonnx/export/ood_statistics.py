"""The image-statistics part of ``ood_score``: is the input *a dermoscopic photograph* at all, in the graph.

The feature distance (:mod:`.ood`) is only as good as the network's features; those of a network trained
from scratch on a few hundred images accept a greyscale, blurred or flat image, a pink blob or a close-up
of skin. These properties are visible in the pixels, so a second, model-free score measures them on the
preprocessed input (``x * std + mean``: RGB in [0, 1]) with a handful of torch ops traced into the graph:

    chroma_red, chroma_blue   mean log((R + e) / (G + e)), mean log((B + e) / (G + e)): the colour balance
                              (a greyscale image has 0, 0; a colour cast moves them)
    chroma_spread             log mean absolute deviation of log((R + e) / (G + e)) over the pixels
    saturation                log mean (max - min) / (max + e) over the channels
    brightness, contrast      mean grey level and log of its mean absolute deviation
    sharpness, edges          log mean |4-neighbour Laplacian| and log mean |horizontal + vertical difference|
                              of the grey level (blur lowers the first much more than the second)
    centre_contrast           mean grey of the border ring minus the central disc (a lesion is darker
                              than the skin around it)
    centre_saturation         mean saturation of the central disc minus the border ring
    vignette                  mean grey of the edges' middles minus the four corners (the dermatoscope's
                              circular field of view darkens the corners)

(``e`` = 1/255, also added inside each log of a statistic; grey = 0.299 R + 0.587 G + 0.114 B.)

The score is non-parametric, because the training images' statistics are far from Gaussian (heavy-tailed
colour balance, a few very smooth images): the statistics are whitened by the training images' Ledoit-Wolf
covariance and divided by sqrt(d), and the score is the squared distance to the 3rd nearest training image
(Sun et al. 2022's k-NN score, here on statistics instead of features). An image in a rare *combination*
(a cat's yellow fur: in range on each statistic alone) scores high as well as one far out on one statistic.
The graph holds the n training images' whitened statistics (n x 11 floats) and computes the n distances
and a TopK. No Conv in it (INT8 leaves it alone); it lives under the ``ood`` module, so its nodes are named
``ood/...`` like the rest of the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import Preprocessing
from ..errors import ExportError

STATISTICS = ("chroma_red", "chroma_blue", "chroma_spread", "saturation", "brightness", "contrast", "sharpness",
              "edges", "centre_contrast", "centre_saturation", "vignette")
EPS = 1.0 / 255
GREY = (0.299, 0.587, 0.114)
CENTRE_RADIUS = 0.25  # of the side: the central disc
RING = 0.125  # of the side: the border ring's width, and the corner squares' side
NEIGHBOURS = 3  # the score is the distance to the 3rd nearest training image (benchmarks/ood.py: k = 1..20)


def region_weights(size: int) -> dict[str, np.ndarray]:
    """[size, size] weights (each sums to 1) of the regions the statistics compare."""
    c = (np.arange(size) + 0.5) / size - 0.5
    r = np.hypot(c[:, None], c[None, :])
    inside = np.abs(c) < 0.5 - RING
    ring = ~(inside[:, None] & inside[None, :])
    edge = np.abs(c) >= 0.5 - RING
    middle = np.abs(c) < RING
    corners = edge[:, None] & edge[None, :]
    middles = (edge[:, None] & middle[None, :]) | (middle[:, None] & edge[None, :])
    masks = {"centre": r < CENTRE_RADIUS, "ring": ring, "corners": corners, "middles": middles}
    return {k: (m / max(m.sum(), 1)).astype(np.float32) for k, m in masks.items()}


class ImageStatistics(nn.Module):
    """Preprocessed batch [N, 3, S, S] -> the :data:`STATISTICS` [N, len(STATISTICS)] (see module doc)."""

    def __init__(self, prep: Preprocessing) -> None:
        super().__init__()
        s = prep.image_size  # per-channel constants [3, 1, 1]: broadcast over NCHW, not 4-d like conv kernels
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).reshape(3, 1, 1))
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).reshape(3, 1, 1))
        self.register_buffer("grey", torch.tensor(GREY, dtype=torch.float32).reshape(3, 1, 1))
        for name, w in region_weights(s).items():
            self.register_buffer(name, torch.from_numpy(w))

    @staticmethod
    def _laplacian(g: torch.Tensor) -> torch.Tensor:
        lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
        return torch.log(lap.abs().mean((1, 2)) + EPS)

    def _weighted(self, v: torch.Tensor, region: str) -> torch.Tensor:
        return (v * getattr(self, region)).sum((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp(0.0, 1.0)  # any input gives finite statistics
        grey = (rgb * self.grey).sum(1)
        red, green, blue = rgb[:, 0] + EPS, rgb[:, 1] + EPS, rgb[:, 2] + EPS
        red_green = torch.log(red / green)
        high, low = rgb.max(1).values, rgb.min(1).values
        saturation = (high - low) / (high + EPS)
        brightness = grey.mean((1, 2))
        # mean absolute deviations: no square root to magnify float32 round-off on flat images
        spread = (red_green - red_green.mean((1, 2), keepdim=True)).abs().mean((1, 2))
        contrast = (grey - brightness[:, None, None]).abs().mean((1, 2))
        edges = (grey[:, 1:] - grey[:, :-1]).abs().mean((1, 2)) + (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean((1, 2))
        return torch.stack([
            red_green.mean((1, 2)), torch.log(blue / green).mean((1, 2)), torch.log(spread + EPS),
            torch.log(saturation.mean((1, 2)) + EPS),
            brightness, torch.log(contrast + EPS), self._laplacian(grey), torch.log(edges + EPS),
            self._weighted(grey, "ring") - self._weighted(grey, "centre"),
            self._weighted(saturation, "centre") - self._weighted(saturation, "ring"),
            self._weighted(grey, "middles") - self._weighted(grey, "corners")], 1)


@dataclass
class StatisticsFit:
    """The training images' statistics, whitened; ``score`` as the graph computes it."""

    mean: np.ndarray  # [d]
    whitening: np.ndarray  # [d, d], already divided by sqrt(d)
    reference: np.ndarray  # [n, d]: the training images' whitened statistics
    shrinkage: float
    neighbours: int = NEIGHBOURS

    def whiten(self, statistics: np.ndarray) -> np.ndarray:
        return (np.asarray(statistics, np.float64) - self.mean) @ self.whitening

    def score(self, statistics: np.ndarray) -> np.ndarray:
        """Squared whitened distance to the ``neighbours``-th nearest training image."""
        d2 = ((self.whiten(statistics)[:, None, :] - self.reference[None]) ** 2).sum(-1)
        return np.sort(d2, axis=1)[:, self.neighbours - 1]

    def record(self) -> dict[str, object]:
        return {"statistics": list(STATISTICS), "score": f"squared distance to the {self.neighbours}-th nearest "
                f"training image, whitened by the Ledoit-Wolf covariance, divided by {len(STATISTICS)}",
                "covariance": "ledoit_wolf", "shrinkage": self.shrinkage, "neighbours": self.neighbours,
                "n": len(self.reference), "mean": [round(float(v), 6) for v in self.mean]}


def fit_statistics(statistics: np.ndarray) -> StatisticsFit:
    """Whitening (Ledoit-Wolf covariance, / sqrt(d)) of the training images' statistics [n, d], and the
    whitened images themselves: the references of the nearest-neighbour distance."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(statistics, np.float64)
    if x.ndim != 2 or len(x) < x.shape[1] + 2 or not np.all(np.isfinite(x)):
        raise ExportError(f"the image-statistics part of the OOD score needs at least {len(STATISTICS) + 2} "
                          f"readable training images ({len(x)} given): train on more images, or export with --no-ood")
    est = LedoitWolf().fit(x)
    values, vectors = np.linalg.eigh(est.covariance_)
    whitening = vectors / np.sqrt(np.maximum(values, max(float(values.max()) * 1e-12, 1e-30))) / np.sqrt(x.shape[1])
    return StatisticsFit(est.location_, whitening, (x - est.location_) @ whitening, float(est.shrinkage_))


class StatisticsHead(nn.Module):
    """Preprocessed batch [N, 3, S, S] -> squared whitened distance of its statistics to the k-th nearest
    training image [N] (the training images' whitened statistics are a [n, d] constant of the graph)."""

    def __init__(self, prep: Preprocessing, fit: StatisticsFit) -> None:
        super().__init__()
        self.statistics = ImageStatistics(prep)
        self.neighbours = fit.neighbours
        self.register_buffer("whitening", torch.from_numpy(fit.whitening.astype(np.float32)))
        self.register_buffer("centre", torch.from_numpy((fit.mean @ fit.whitening).astype(np.float32)))
        self.register_buffer("reference", torch.from_numpy(fit.reference.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.statistics(x) @ self.whitening - self.centre
        d2 = ((z.unsqueeze(1) - self.reference.unsqueeze(0)) ** 2).sum(-1)  # [N, n]: no cancellation
        return torch.topk(d2, self.neighbours, dim=1, largest=False).values.max(dim=1).values


@torch.no_grad()
def batch_statistics(batch: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """The :data:`STATISTICS` of a preprocessed batch [N, 3, S, S], computed by the graph's own module."""
    return ImageStatistics(prep)(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).double().numpy()
