"""K classes on the deploy path: the graph's p_malignant / malignant / label against the one DecisionRule, the
metadata keys, predict's rows, and the two-class graph keeping its threshold rule."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.deploy.contract import (
    DECISION_OUTPUTS,
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    MALIGNANT_OUTPUT,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)
from skinonnx.deploy.decision import DecisionRule
from skinonnx.deploy.runtime import OnnxClassifier
from skinonnx.deploy.schema import validate
from skinonnx.errors import ModelFileError
from skinonnx.export.decision import add_decision_outputs, with_decision_outputs

from ..conftest import MulticlassModel, run_cli


def _softmax_graph(contract: ModelContract, path: Path) -> Path:
    """logits [N, K] in -> probabilities = Softmax, plus the decision outputs: the decision nodes alone."""
    k = len(contract.classes)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["logits"]),
         helper.make_node("Softmax", ["x"], ["probabilities"], axis=1)],
        "softmax", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", k]) for n in ("logits", "probabilities")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    add_decision_outputs(proto, with_decision_outputs(contract))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def _run(path: Path, logits: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": logits.astype(np.float32)}), strict=True))


def _contract(classes: tuple[str, ...], group: tuple[int, ...], bias: tuple[float, ...] | None,
              threshold: float = 0.4) -> ModelContract:
    return ModelContract(classes=classes, positive_index=group[0], malignant_group=group, class_bias=bias,
                         preprocessing=Preprocessing.for_size(32), threshold=threshold)


def test_the_k_class_graph_decides_as_the_rule_bit_for_bit(tmp_path: Path) -> None:
    classes = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    bias = (0.3, 0.9, -0.2, 1.4, 0.7, -1.5, 0.2)  # strong enough to change many decisions
    contract = _contract(classes, (0, 1, 4), bias)
    logits = np.random.default_rng(0).normal(scale=2.0, size=(4000, 7))
    logits[:, 5] += 1.5  # a common class, as nv is
    out = _run(_softmax_graph(contract, tmp_path / "k7.onnx"), logits)
    rule = DecisionRule.of(contract)
    probs = out["probabilities"]
    assert out[P_MALIGNANT_OUTPUT].dtype == np.float32 and out[MALIGNANT_OUTPUT].dtype == np.bool_
    assert np.array_equal(out[P_MALIGNANT_OUTPUT], rule.p_malignant(probs))  # the same float32 sum
    assert np.allclose(out[P_MALIGNANT_OUTPUT], probs[:, [0, 1, 4]].sum(1), atol=1e-6)
    assert np.array_equal(out[MALIGNANT_OUTPUT], out[P_MALIGNANT_OUTPUT] >= np.float32(0.4))
    assert np.array_equal(out[LABEL_OUTPUT], rule.labels(probs))
    argmax = probs.argmax(1)
    assert np.array_equal(out[LABEL_OUTPUT], np.argmax(np.log(probs.astype(np.float64)) + bias, axis=1))
    assert (out[LABEL_OUTPUT] != argmax).mean() > 0.05  # the bias does change decisions
    assert out[IN_DISTRIBUTION_OUTPUT].all()
    # without a bias: argmax
    plain = _run(_softmax_graph(_contract(classes, (0, 1, 4), None), tmp_path / "plain.onnx"), logits)
    assert np.array_equal(plain[LABEL_OUTPUT], argmax)


def test_the_two_class_graph_keeps_its_threshold_rule_and_adds_p_malignant(tmp_path: Path) -> None:
    contract = ModelContract(classes=("benign", "malignant"), positive_index=1,
                             preprocessing=Preprocessing.for_size(32), threshold=0.3)
    logits = np.random.default_rng(1).normal(size=(2000, 2))
    out = _run(_softmax_graph(contract, tmp_path / "k2.onnx"), logits)
    p = out["probabilities"][:, 1]
    assert np.array_equal(out[P_MALIGNANT_OUTPUT], p)
    assert np.array_equal(out[LABEL_OUTPUT], np.where(p >= np.float32(0.3), 1, 0))  # not the argmax
    assert np.array_equal(out[MALIGNANT_OUTPUT], out[LABEL_OUTPUT] == 1)
    meta = with_decision_outputs(contract).to_metadata()
    assert json.loads(meta["malignant_classes"]) == ["malignant"] and "class_bias" not in meta
    assert ModelContract.from_metadata(meta) == with_decision_outputs(contract)


@pytest.mark.parametrize(("change", "says"), [
    ({"malignant_classes": None}, "needs 'malignant_classes'"),
    ({"malignant_classes": '["a", "b", "c"]'}, "some, not all"),
    ({"malignant_classes": '["z"]'}, "not distinct names from 'classes'"),
    ({"class_bias": "[0.1, 0.2]"}, "'class_bias': 3 finite numbers"),
    ({"positive_index": "1", "positive_class": "b"}, "not the first of 'malignant_classes'"),
])
def test_schema_checks_the_k_class_keys(change: dict[str, str | None], says: str) -> None:
    meta = with_decision_outputs(_contract(("a", "b", "c"), (0, 2), (0.0, 0.1, -0.1))).to_metadata()
    assert validate(meta) == []
    for key, value in change.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    assert any(says in problem for problem in validate(meta)), validate(meta)
    with pytest.raises(ModelFileError):
        ModelContract.from_metadata(meta)


def test_a_k_class_export_predicts_rows_that_agree_with_the_rule(multiclass_model: MulticlassModel,
                                                                  tmp_path: Path) -> None:
    state = torch.load(multiclass_model.checkpoint, weights_only=True)
    clf = OnnxClassifier(multiclass_model.onnx, "cpu")
    contract = clf.contract
    assert contract.classes == ("benign_brown", "benign_red", "malignant_brown")
    assert contract.malignant_classes == ("benign_red", "malignant_brown") and contract.positive_index == 1
    assert list(contract.class_bias) == pytest.approx(state["class_bias"]["offsets"])
    assert contract.threshold == state["decision"]["threshold"]
    assert contract.output_names[-4:] == DECISION_OUTPUTS and validate(clf.metadata) == []

    out = tmp_path / "p.csv"
    run_cli("predict", "--onnx", multiclass_model.onnx, multiclass_model.data / "test", "-o", out, "--quiet")
    with open(out, newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:8] == ["path", "prediction", "p_benign_brown", "p_benign_red", "p_malignant_brown", "p_malignant",
                          "malignant", "label"] and "in_distribution" in header
    run_cli("predict", "--onnx", multiclass_model.onnx, multiclass_model.data / "test", "-o", out.with_suffix(".json"),
            "--quiet")
    rows = json.loads(out.with_suffix(".json").read_text())["predictions"]  # every bit of the float32 values
    assert len(rows) == 9
    probs = np.array([[r[f"p_{c}"] for c in contract.classes] for r in rows])
    rule = DecisionRule.of(contract)
    assert [r["p_malignant"] for r in rows] == rule.p_malignant(probs).tolist()
    assert [r["malignant"] for r in rows] == rule.malignant(probs).tolist()
    assert [r["label"] for r in rows] == [contract.classes[i] for i in rule.labels(probs)]
    assert [r["prediction"] for r in rows if r["in_distribution"]] == [r["label"] for r in rows if r["in_distribution"]]
