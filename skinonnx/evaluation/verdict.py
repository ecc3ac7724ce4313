"""What a report says first about a model's ROC AUC, decided once for the terminal, report.html, MODEL_CARD.md and
`compare`: every AUC estimate at hand (the evaluated split; for a fold ensemble also the pooled out-of-fold one),
whether an interval includes chance (0.5), and for two estimates whether they agree and which to believe.

Agreement is judged on the difference of two independent estimates (the out-of-fold images and the test split are
disjoint): its margin is ``z * sqrt(se1² + se2²)`` with each standard error read from its interval's half-width
(normal approximation). Two intervals can overlap while the difference is still beyond its margin, so overlap alone
is not the test. Plain data in, plain data out; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from .metrics import fmt

CHANCE_AUC = 0.5
OOF_CONFIDENCE = 0.95  # the out-of-fold interval's level (training/cv_oof.py bootstraps at 95 %)


@dataclass(frozen=True)
class AucEstimate:
    """One ROC AUC with its interval and where it was measured."""

    name: str  # "test" (the evaluated split), "out-of-fold" ...
    auc: float | None
    ci: tuple[float, float] | None
    n: int | None
    confidence: float = 0.95
    independent_of_selection: bool = True  # False: the same images chose epoch, temperature or threshold

    @property
    def has_interval(self) -> bool:
        return self.ci is not None and all(v is not None and math.isfinite(v) for v in self.ci)

    @property
    def includes_chance(self) -> bool | None:
        """Whether the interval holds 0.5; None (unknown) without an interval (``--no-ci``)."""
        if not self.has_interval:
            return None
        return self.ci[0] <= CHANCE_AUC <= self.ci[1]  # type: ignore[index]

    def text(self) -> str:
        interval = f" [{fmt(self.ci[0])}, {fmt(self.ci[1])}]" if self.has_interval else ""  # type: ignore[index]
        return f"{self.name} {fmt(self.auc)}{interval}" + (f" on {self.n} images" if self.n else "")

    def standard_error(self) -> float | None:
        if not self.has_interval:
            return None
        z = NormalDist().inv_cdf(0.5 + self.confidence / 2)
        return (self.ci[1] - self.ci[0]) / (2 * z)  # type: ignore[index]


@dataclass(frozen=True)
class Verdict:
    """The headline: the estimates side by side, warnings (chance, in-sample), and which estimate to believe."""

    estimates: tuple[AucEstimate, ...]
    warnings: tuple[str, ...]
    advice: str | None

    @property
    def no_better_than_chance(self) -> bool | None:
        """True when an interval holds 0.5, False when every estimate has one and none does, else None (unknown)."""
        said = [e.includes_chance for e in self.estimates]
        if any(said):
            return True
        return None if None in said else False

    def as_dict(self) -> dict[str, Any]:
        return {"estimates": [{"name": e.name, "roc_auc": e.auc, "roc_auc_ci": None if e.ci is None else list(e.ci),
                               "n": e.n, "includes_chance": e.includes_chance} for e in self.estimates],
                "no_better_than_chance": self.no_better_than_chance,
                "warnings": list(self.warnings), "advice": self.advice}

    def lines(self) -> list[str]:
        """Plain sentences, in order: the estimates side by side, every warning, the advice."""
        return ["ROC AUC " + " | ".join(e.text() for e in self.estimates), *self.warnings,
                *([self.advice] if self.advice else [])]


def chance_warning(e: AucEstimate) -> str | None:
    """The one sentence every report shows when an AUC interval includes 0.5, or when nobody can tell (no CI)."""
    if e.includes_chance is None and e.auc is not None:
        return (f"Unknown whether better than chance: no interval for the {e.name} ROC AUC (--no-ci); on these "
                f"{e.n or '?'} images an AUC of {fmt(e.auc)} may not differ from 0.5. Run without --no-ci to know.")
    if not e.includes_chance:
        return None
    return (f"No better than chance: the {e.name} ROC AUC interval [{fmt(e.ci[0])}, {fmt(e.ci[1])}] "  # type: ignore
            f"includes 0.5; on these {e.n or '?'} images the model does not separate the classes measurably better "
            "than chance.")


def which_to_believe(oof: AucEstimate, test: AucEstimate) -> str:
    """A sentence on two independent estimates of one model's AUC: do they agree, and which one to believe, why."""
    se = [oof.standard_error(), test.standard_error()]
    if oof.auc is None or test.auc is None or None in se:
        return (f"Without intervals (--no-ci) it cannot be said whether the {oof.name} and {test.name} figures "
                f"agree; the {oof.name} one rests on more images, the {test.name} one is independent of model "
                "selection.")
    z = NormalDist().inv_cdf(0.975)
    margin = z * math.hypot(*se)  # type: ignore[arg-type]
    diff = test.auc - oof.auc
    said = f"({test.name} − {oof.name} = {diff:+.3f}, 95 % margin ±{margin:.3f})"
    if abs(diff) <= margin:
        tight = min((oof, test), key=lambda e: e.standard_error() or math.inf)
        return (f"The two estimates agree within their uncertainty {said}. Believe the {tight.name} figure: it has "
                f"the tighter interval ({tight.n} images); the {test.name} images, independent of model selection, "
                "confirm it.")
    if test.auc > oof.auc:
        return (f"The two estimates disagree beyond their uncertainty {said}. Expect the lower, {oof.name} figure: "
                f"it rests on {oof.n} images and has the tighter interval, while a higher AUC on {test.n} "
                f"{test.name} images can be the luck of a small split or a test set easier than train+val.")
    return (f"The two estimates disagree beyond their uncertainty {said}. Believe the lower, {test.name} figure: the "
            f"{test.name} images are independent of model selection, while the {oof.name} predictions also chose each "
            "member's best epoch, the temperature and the threshold (optimistic); a drop this large suggests the test "
            "images differ from train+val.")


def estimates_of(summary: Mapping[str, Any]) -> tuple[AucEstimate, ...]:
    """The evaluated split's AUC, then (fold ensembles) the pooled out-of-fold AUC recorded at training."""
    m, ci, boot = summary["metrics"], summary.get("ci"), summary.get("bootstrap")
    split = summary["data"]["split"]
    in_pool = bool(summary["data"].get("trained_on"))
    out = [AucEstimate(split, m.get("roc_auc"), _pair(ci.get("roc_auc") if ci else None), m.get("n"),
                       boot["confidence"] if boot else 0.95, independent_of_selection=not in_pool)]
    cv = summary.get("cross_validation")
    if cv and (cv.get("oof") or {}).get("roc_auc") is not None:
        oof = cv["oof"]
        out.append(AucEstimate("out-of-fold", oof["roc_auc"], _pair(oof.get("roc_auc_ci")), oof.get("n"),
                               OOF_CONFIDENCE, independent_of_selection=False))
    return tuple(out)


def verdict_of(summary: Mapping[str, Any]) -> Verdict:
    """The verdict every report shows first (see the module docstring)."""
    estimates = estimates_of(summary)
    warnings = [w for w in (chance_warning(e) for e in estimates) if w]
    evaluated = estimates[0]
    if not evaluated.independent_of_selection:
        warnings.append(f"The {evaluated.name} split was trained on ({summary['data']['trained_on']}): its figures are "
                        "optimistic; evaluate the test split.")
    advice = which_to_believe(estimates[1], evaluated) if len(estimates) > 1 and evaluated.independent_of_selection \
        else None
    return Verdict(estimates, tuple(warnings), advice)


def _pair(values: Sequence[Any] | None) -> tuple[float, float] | None:
    if not values or len(values) != 2 or any(v is None for v in values):
        return None
    return float(values[0]), float(values[1])
