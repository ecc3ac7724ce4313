"""``--fine-tune staged``, fastai's ``fine_tune`` for pretrained weights on small data: the new head alone (the
backbone frozen, BatchNorm statistics included) for ``--head-epochs``, then every layer with discriminative
learning rates: the head at ``--lr``, layer3-4 at a tenth, the stem and layer1-2 at a hundredth (fastai's
``slice(lr/100, lr)`` over its three ResNet groups). A random head's first gradients are large and would
wreck pretrained features; early layers hold the most general ones and need the least change.

One optimiser for the whole run, its groups scaled from the start: frozen parameters have no gradient, so the
optimiser leaves them alone until they unfreeze, and the schedule runs over every epoch as in a plain run.
"""

from __future__ import annotations

from torch import nn

#: (name prefixes, learning-rate factor), head first: metrics.csv's ``lr`` is the first group's, the head's
LAYER_GROUPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("fc.",), 1.0), (("layer3.", "layer4."), 0.1), (("conv1.", "bn1.", "layer1.", "layer2."), 0.01))


def lr_factor(name: str) -> float:
    """The learning-rate factor of parameter ``name`` (a torchvision ResNet50 name)."""
    for prefixes, factor in LAYER_GROUPS:
        if name.startswith(prefixes):
            return factor
    raise ValueError(f"{name}: no layer group (not a torchvision ResNet50 parameter)")


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimiser groups: each layer group at ``lr`` x its factor, with and without weight decay (biases and
    BatchNorm parameters take none, as in the plain recipe)."""
    groups = []
    for prefixes, factor in LAYER_GROUPS:
        named = [(n, p) for n, p in model.named_parameters() if n.startswith(prefixes)]
        for decay in (True, False):
            params = [p for _, p in named if (p.ndim > 1) == decay]
            if params:
                groups.append({"params": params, "lr": lr * factor, "weight_decay": weight_decay if decay else 0.0})
    return groups


def head_only(epoch: int, head_epochs: int) -> bool:
    """Whether ``epoch`` (1-based) trains the head alone."""
    return epoch <= head_epochs


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (or unfreeze) every parameter outside the ``fc`` head."""
    for name, param in model.named_parameters():
        if not name.startswith("fc."):
            param.requires_grad_(trainable)
