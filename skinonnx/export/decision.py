"""The graph's decision outputs: ``p_malignant``, ``malignant``, ``label`` and ``in_distribution``, appended to
every exported graph.

A handful of ONNX nodes after ``probabilities`` (and ``ood_score``) apply :class:`~skinonnx.deploy.decision.
DecisionRule` in float32, so every app reads one decision instead of re-implementing it: ``p_malignant`` is the
group's probabilities added one by one in class order (as the Python rule adds them, so the two agree bit for
bit), ``malignant`` compares it with the threshold; ``label`` is, for two classes, the positive class where
``malignant`` else the other, and for more ``ArgMax(Log(probabilities) + class_bias)``. The nodes are named
``decision/...``: the fp16 copy keeps them in float32, INT8 (Conv only) leaves them alone, and the uint8-input
variant only changes the graph's input. Cost: a few Gathers, comparisons and a Where (or Log, Add, ArgMax) per
image.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..deploy.contract import (
    DECISION_KEY,
    DECISION_OUTPUTS,
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    MALIGNANT_OUTPUT,
    OOD_OUTPUT,
    OOD_REFUSAL,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)
from ..deploy.decision import DECISION_DOC, DecisionRule


def with_decision_outputs(contract: ModelContract) -> ModelContract:
    """``contract`` with the decision outputs as its last outputs (once)."""
    names = tuple(n for n in contract.output_names if n not in DECISION_OUTPUTS)
    return replace(contract, output_names=(*names, *DECISION_OUTPUTS),
                   extra={**contract.extra, DECISION_KEY: json.dumps({**DECISION_DOC, "refusal": OOD_REFUSAL})})


def add_decision_outputs(proto: onnx.ModelProto, contract: ModelContract) -> None:
    """Append the decision nodes and the four outputs to ``proto``'s graph, in place."""
    graph = proto.graph
    rule = DecisionRule.of(contract)
    pos = rule.positive_index
    has_ood = rule.ood_threshold is not None and any(o.name == OOD_OUTPUT for o in graph.output)
    node = helper.make_node
    constants = {"decision/threshold": np.array(rule.threshold, np.float32)}
    nodes = []
    for j, index in enumerate(rule.group):  # p_malignant: the group's probabilities added in class order
        constants[f"decision/index_{index}"] = np.array(index, np.int64)
        last = j == len(rule.group) - 1
        taken = P_MALIGNANT_OUTPUT if last and j == 0 else f"decision/p_{index}"
        nodes.append(node("Gather", ["probabilities", f"decision/index_{index}"], [taken], f"decision/gather_{index}",
                          axis=1))
        if j:
            previous = f"decision/p_{rule.group[0]}" if j == 1 else f"decision/sum_{j - 1}"
            nodes.append(node("Add", [previous, taken], [P_MALIGNANT_OUTPUT if last else f"decision/sum_{j}"],
                              f"decision/sum_{j}"))
    nodes.append(node("GreaterOrEqual", [P_MALIGNANT_OUTPUT, "decision/threshold"], [MALIGNANT_OUTPUT],
                      "decision/at_threshold"))
    if len(contract.classes) == 2 and rule.class_bias is None:  # the threshold rule on the positive class
        constants["decision/positive_label"] = np.array(pos, np.int64)
        constants["decision/other_label"] = np.array(1 - pos, np.int64)
        nodes.append(node("Where", [MALIGNANT_OUTPUT, "decision/positive_label", "decision/other_label"],
                          [LABEL_OUTPUT], "decision/label"))
    else:  # the diagnosis: argmax(log p + class_bias), the first class on a tie
        bias = rule.class_bias if rule.class_bias is not None else (0.0,) * len(contract.classes)
        constants["decision/class_bias"] = np.asarray(bias, np.float32)
        nodes += [node("Log", ["probabilities"], ["decision/log_p"], "decision/log"),
                  node("Add", ["decision/log_p", "decision/class_bias"], ["decision/biased"], "decision/bias"),
                  node("ArgMax", ["decision/biased"], [LABEL_OUTPUT], "decision/label", axis=1, keepdims=0)]
    nodes += [node("IsNaN", [P_MALIGNANT_OUTPUT], ["decision/p_nan"], "decision/p_is_nan"),
              node("Not", ["decision/p_nan"], ["decision/p_ok" if has_ood else IN_DISTRIBUTION_OUTPUT],
                   "decision/p_ok")]
    if has_ood:  # NaN fails LessOrEqual by itself; -inf/+inf are refused explicitly
        constants["decision/ood_threshold"] = np.array(rule.ood_threshold, np.float32)
        nodes += [
            node("LessOrEqual", [OOD_OUTPUT, "decision/ood_threshold"], ["decision/ood_below"], "decision/ood_below"),
            node("IsInf", [OOD_OUTPUT], ["decision/ood_inf"], "decision/ood_is_inf"),
            node("Not", ["decision/ood_inf"], ["decision/ood_finite"], "decision/ood_finite"),
            node("And", ["decision/ood_below", "decision/ood_finite"], ["decision/ood_ok"], "decision/ood_ok"),
            node("And", ["decision/p_ok", "decision/ood_ok"], [IN_DISTRIBUTION_OUTPUT], "decision/in_distribution"),
        ]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    graph.node.extend(nodes)
    graph.output.extend([helper.make_tensor_value_info(P_MALIGNANT_OUTPUT, TensorProto.FLOAT, ["batch"]),
                         helper.make_tensor_value_info(MALIGNANT_OUTPUT, TensorProto.BOOL, ["batch"]),
                         helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, ["batch"]),
                         helper.make_tensor_value_info(IN_DISTRIBUTION_OUTPUT, TensorProto.BOOL, ["batch"])])
