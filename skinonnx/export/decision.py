"""The graph's decision outputs: ``label`` and ``in_distribution``, appended to every exported graph.

A handful of ONNX nodes after ``probabilities`` (and ``ood_score``) apply :class:`~skinonnx.deploy.decision.
DecisionRule` in float32, so every app reads one decision instead of re-implementing it. The nodes are named
``decision/...``: the fp16 copy keeps them in float32, INT8 (Conv only) leaves them alone, and the uint8-input
variant only changes the graph's input. Cost: a Gather, two comparisons and a Where per image.
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
    OOD_OUTPUT,
    OOD_REFUSAL,
    ModelContract,
)
from ..deploy.decision import DECISION_DOC, DecisionRule


def with_decision_outputs(contract: ModelContract) -> ModelContract:
    """``contract`` with ``label`` and ``in_distribution`` as its last outputs (once)."""
    names = tuple(n for n in contract.output_names if n not in DECISION_OUTPUTS)
    return replace(contract, output_names=(*names, *DECISION_OUTPUTS),
                   extra={**contract.extra, DECISION_KEY: json.dumps({**DECISION_DOC, "refusal": OOD_REFUSAL})})


def add_decision_outputs(proto: onnx.ModelProto, contract: ModelContract) -> None:
    """Append the decision nodes and the two outputs to ``proto``'s graph, in place."""
    graph = proto.graph
    rule = DecisionRule.of(contract)
    pos = rule.positive_index
    has_ood = rule.ood_threshold is not None and any(o.name == OOD_OUTPUT for o in graph.output)
    graph.initializer.extend([
        numpy_helper.from_array(np.array(pos, np.int64), "decision/positive_index"),
        numpy_helper.from_array(np.array(rule.threshold, np.float32), "decision/threshold"),
        numpy_helper.from_array(np.array(pos, np.int64), "decision/positive_label"),
        numpy_helper.from_array(np.array(1 - pos, np.int64), "decision/other_label"),
    ])
    node = helper.make_node
    nodes = [
        node("Gather", ["probabilities", "decision/positive_index"], ["decision/p_positive"], "decision/gather",
             axis=1),
        node("GreaterOrEqual", ["decision/p_positive", "decision/threshold"], ["decision/is_positive"],
             "decision/at_threshold"),
        node("Where", ["decision/is_positive", "decision/positive_label", "decision/other_label"], [LABEL_OUTPUT],
             "decision/label"),
        node("IsNaN", ["decision/p_positive"], ["decision/p_nan"], "decision/p_is_nan"),
        node("Not", ["decision/p_nan"], ["decision/p_ok" if has_ood else IN_DISTRIBUTION_OUTPUT], "decision/p_ok"),
    ]
    if has_ood:  # NaN fails LessOrEqual by itself; -inf/+inf are refused explicitly
        graph.initializer.append(numpy_helper.from_array(np.array(rule.ood_threshold, np.float32),
                                                         "decision/ood_threshold"))
        nodes += [
            node("LessOrEqual", [OOD_OUTPUT, "decision/ood_threshold"], ["decision/ood_below"], "decision/ood_below"),
            node("IsInf", [OOD_OUTPUT], ["decision/ood_inf"], "decision/ood_is_inf"),
            node("Not", ["decision/ood_inf"], ["decision/ood_finite"], "decision/ood_finite"),
            node("And", ["decision/ood_below", "decision/ood_finite"], ["decision/ood_ok"], "decision/ood_ok"),
            node("And", ["decision/p_ok", "decision/ood_ok"], [IN_DISTRIBUTION_OUTPUT], "decision/in_distribution"),
        ]
    graph.node.extend(nodes)
    graph.output.extend([helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.INT64, ["batch"]),
                         helper.make_tensor_value_info(IN_DISTRIBUTION_OUTPUT, TensorProto.BOOL, ["batch"])])
