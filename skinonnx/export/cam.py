"""The exported graph's ``cam`` output: where the positive class's evidence lies, computed in the graph.

ResNet50's head is global average pooling of ``layer4``'s maps ``A`` (``[N, K, h, w]``, K = 2048)
followed by one linear layer (weights ``W``, bias ``b``). For two classes the probability depends
only on the log-odds of the positive class ``p`` against the other class ``o``, and that splits
exactly over the ``h x w`` cells (class activation mapping, Zhou et al. 2016, applied to the
log-odds rather than to one logit, which softmax leaves undetermined up to a shared constant):

    z_p - z_o = sum_ij cam[i, j] + (b_p - b_o),    cam[i, j] = sum_k (W_p,k - W_o,k) A[k, i, j] / (h w)

So ``cam[n, i, j]`` is cell (i, j)'s contribution to image n's raw log-odds (logit units, before
the temperature); the cells add up to ``logits[n, p] - logits[n, o]`` minus the classifier's bias
difference, a constant of the model. This is the same map as Grad-CAM of the log-odds on ``layer4``
(``skinonnx.explain``) before its ReLU: for this head the gradient is ``(W_p - W_o) / (h w)``.

More than two classes: the map is the first malignancy class's (the file's ``positive_index``) log-odds against
the mean of the other classes' logits (direction ``W_p - mean_{c != p} W_c``; for two classes exactly the above).
The graph's decided class is not known when it is traced, so it is this one class's map whatever the decision.

Ensembles and test-time augmentation (the seam for them): run :func:`logits_and_cam` per member
(per view), undo each view's spatial transform on its map (an input flipped left-right gives a map
flipped left-right: ``cam.flip(-1)``), and average the maps with the weights that average the
probabilities (:func:`mean_cam`). The averaged map then adds up to the members' mean log-odds (minus
their mean bias difference), not to the log-odds of the averaged probability; it still shows where
the evidence is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ExportError


def has_cam_head(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision-style ResNet: stem, layer1..4, avgpool, a linear fc (2 or more outputs)."""
    parts = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")
    fc = getattr(model, "fc", None)
    return all(hasattr(model, name) for name in parts) and isinstance(fc, nn.Linear) and fc.out_features >= 2


def logits_and_cam(model: nn.Module, x: torch.Tensor, positive_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N, K], cam [N, h, w])`` in one pass.

    The logits are ``model(x)`` itself (layer4's output is captured by a forward hook), so the exported
    graph keeps the model's own nodes and names (``/model/layer4/...``, which INT8 ``--keep-fp32`` uses).
    """
    if not has_cam_head(model):
        raise ExportError("the cam output needs a ResNet with a global-average-pool + linear head")
    captured: list[torch.Tensor] = []
    handle = model.layer4.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    features = captured[-1]
    weight = model.fc.weight
    h, w = int(features.shape[2]), int(features.shape[3])  # fixed by the input size: constants in the graph
    if weight.shape[0] == 2:
        direction = (weight[positive_index] - weight[1 - positive_index]) / (h * w)
    else:  # against the mean of the other classes (see the module docstring)
        others = (weight.sum(dim=0) - weight[positive_index]) / (weight.shape[0] - 1)
        direction = (weight[positive_index] - others) / (h * w)
    cam = (features * direction[None, :, None, None]).sum(dim=1)
    return logits, cam


def mean_cam(cams: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted mean of members' (or views') maps, already aligned to the same image; ``[N, h, w]``."""
    if not cams:
        raise ExportError("no maps to average")
    w = torch.tensor([1.0] * len(cams) if weights is None else [float(v) for v in weights], dtype=cams[0].dtype)
    if len(w) != len(cams) or not torch.all(w >= 0) or float(w.sum()) <= 0:
        raise ExportError("cam weights must be one non-negative number per map, not all zero")
    return torch.einsum("m,mnhw->nhw", w / w.sum(), torch.stack(list(cams)))
