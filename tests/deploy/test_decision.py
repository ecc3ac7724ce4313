"""The file decides: the graph's ``label``/``in_distribution`` outputs, the one Python rule, and old files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from skinonnx.data.far_ood import write_far_ood_images
from skinonnx.deploy.contract import DECISION_OUTPUTS, IN_DISTRIBUTION_OUTPUT, LABEL_OUTPUT, OOD_REFUSAL
from skinonnx.deploy.decision import DecisionRule, decide, label_text
from skinonnx.deploy.runtime import OnnxClassifier, create_session
from skinonnx.errors import SkinOnnxError

from ..conftest import REAL_DATA, TrainedModel, run_cli

pytestmark = pytest.mark.slow


def _images(trained: TrainedModel, tmp_path: Path, real_data: Path | None) -> list[Path]:
    """Lesions (synthetic, and real ISIC JPEGs where present) plus far-OOD photos and generated images."""
    lesions = sorted(trained.data.glob("test/*/*.png")) + sorted(trained.data.glob("val/*/*.png"))
    isic = sorted(real_data.glob("test/*/*.jpg"))[:24] if real_data is not None else []
    return lesions + isic + write_far_ood_images(tmp_path / "far", size=96)


@pytest.fixture
def maybe_real_data() -> Path | None:
    """The real ISIC images where present (the test runs on the synthetic and far-OOD images either way)."""
    return REAL_DATA if (REAL_DATA / "test").is_dir() else None


def _raw_outputs(model: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    session, _ = create_session(model, "cpu")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch}), strict=True))


def test_graph_decision_equals_the_python_rule(trained: TrainedModel, tmp_path: Path,
                                               maybe_real_data: Path | None) -> None:
    """At the file's own threshold, the rule applied to ONNX Runtime's probabilities and ood_score gives exactly
    the graph's label and in_distribution, on lesions, real ISIC images and far-OOD photos."""
    model = OnnxClassifier(trained.onnx, "cpu")
    assert model.has_decision_outputs and model.has_ood
    paths = _images(trained, tmp_path, maybe_real_data)
    batch = np.stack([model.preprocessing.from_file(p) for p in paths])
    raw = _raw_outputs(trained.onnx, batch)
    rule = DecisionRule.of(model.contract)
    assert raw[LABEL_OUTPUT].dtype == np.int64 and raw[IN_DISTRIBUTION_OUTPUT].dtype == np.bool_
    assert np.array_equal(raw[LABEL_OUTPUT], rule.labels(raw["probabilities"]))
    assert np.array_equal(raw[IN_DISTRIBUTION_OUTPUT], rule.in_distribution(raw["probabilities"], raw["ood_score"]))
    assert raw[IN_DISTRIBUTION_OUTPUT].any() and not raw[IN_DISTRIBUTION_OUTPUT].all()  # both decisions occur
    # what every consumer reads: the same decision
    label, inside = decide(model.run_outputs(batch), model.contract)
    assert np.array_equal(label, raw[LABEL_OUTPUT]) and np.array_equal(inside, raw[IN_DISTRIBUTION_OUTPUT])


def test_nan_and_infinite_inputs_are_not_assessed(trained: TrainedModel, tmp_path: Path) -> None:
    """A NaN or infinite input gives NaN scores: the graph refuses it, predict's row says "not assessed"."""
    model = OnnxClassifier(trained.onnx, "cpu")
    size = model.preprocessing.image_size
    batch = np.zeros((3, 3, size, size), np.float32)
    batch[0, 0, 0, 0] = np.nan
    batch[1] = np.inf
    raw = _raw_outputs(trained.onnx, batch)
    assert not raw[IN_DISTRIBUTION_OUTPUT][0] and not raw[IN_DISTRIBUTION_OUTPUT][1]
    rows = model.run_outputs(batch)
    assert [label_text(model.contract, lab, ok) for lab, ok in
            zip(rows[LABEL_OUTPUT][:2], rows[IN_DISTRIBUTION_OUTPUT][:2], strict=True)] == [OOD_REFUSAL] * 2


def test_threshold_override_uses_the_same_rule_and_is_checked(trained: TrainedModel) -> None:
    model = OnnxClassifier(trained.onnx, "cpu")
    size = model.preprocessing.image_size
    batch = np.random.default_rng(0).normal(size=(16, 3, size, size)).astype(np.float32)
    out = model.run_outputs(batch, threshold=0.0)
    assert (out[LABEL_OUTPUT] == model.contract.positive_index).all()  # p >= 0 everywhere
    out = model.run_outputs(batch, threshold=1.0)
    p = out["probabilities"][:, model.contract.positive_index]
    assert np.array_equal(out[LABEL_OUTPUT] == model.contract.positive_index, p.astype(np.float32) >= 1.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(SkinOnnxError, match="not in \\[0, 1\\]"):
            model.run_outputs(batch, threshold=bad)
    result = run_cli("predict", "--onnx", trained.onnx, trained.data / "test", "--threshold", "1.5", expect=2)
    assert "1.5" in result.output


def _without_decision_outputs(src: Path, dst: Path) -> None:
    """A file as exported before the decision outputs existed: no outputs, no nodes, no 'decision' key."""
    proto = onnx.load(str(src))
    keep = [o for o in proto.graph.output if o.name not in DECISION_OUTPUTS]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    nodes = [n for n in proto.graph.node if not n.name.startswith("decision/")]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    inits = [t for t in proto.graph.initializer if not t.name.startswith("decision/")]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)
    meta = {p.key: p.value for p in proto.metadata_props}
    meta["output_names"] = json.dumps([n for n in json.loads(meta["output_names"]) if n not in DECISION_OUTPUTS])
    meta.pop("decision")
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(dst))


def test_old_files_are_decided_by_the_one_module(trained: TrainedModel, tmp_path: Path) -> None:
    """Without the outputs, the runtime applies the rule itself: predict's rows are the same as the new file's."""
    old = tmp_path / "old.onnx"
    _without_decision_outputs(trained.onnx, old)
    assert not OnnxClassifier(old, "cpu").has_decision_outputs
    images = [*sorted(trained.data.glob("test/*/*.png")), *write_far_ood_images(tmp_path / "far", size=64)[::3]]
    rows = {}
    for model in (trained.onnx, old):
        out = tmp_path / f"{model.stem}.json"
        run_cli("predict", "--onnx", model, *images, "-o", out, "--provider", "cpu", "--quiet")
        rows[model] = [{k: v for k, v in r.items()} for r in json.loads(out.read_text())["predictions"]]
    assert rows[trained.onnx] == rows[old]
    assert any(r["prediction"] == OOD_REFUSAL for r in rows[old])
