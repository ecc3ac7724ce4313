"""Dynamic batching groups concurrent requests into one ONNX Runtime call and changes no result."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ..conftest import TrainedModel
from .conftest import synthetic_images

pytestmark = pytest.mark.slow


def test_batched_results_equal_one_by_one(trained: TrainedModel) -> None:
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.deploy.serving.batcher import DynamicBatcher
    from skinonnx.deploy.serving.model import ServedModel
    from skinonnx.deploy.serving.problems import RequestProblem

    model = ServedModel(OnnxClassifier(trained.onnx, "cpu", threads=1), "m")
    images = synthetic_images(trained)[:12]
    rows = [model.image_input(p.read_bytes(), 10**7) for p in images]
    alone = [model.run(r) for r in rows]
    sizes: list[int] = []

    async def concurrently() -> list:
        batcher = DynamicBatcher(model.run, max_batch=8, max_wait_s=0.5, max_queue=64, on_batch=sizes.append)
        batcher.start()
        wrong = np.zeros((1, 3, 16, 16), np.float32)  # another shape: never stacked with the others
        results = await asyncio.gather(*(batcher.submit(r) for r in rows), batcher.submit(wrong),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(concurrently())
    assert sorted(sizes) == [1, 4, 8]  # 12 rows of one shape in batches of <= 8; the odd one alone
    assert isinstance(results[-1], RequestProblem) and results[-1].status == 400
    for single, batched in zip(alone, results[:-1], strict=True):
        assert single.keys() == batched.keys()
        for name in single:
            assert batched[name].shape == single[name].shape
            np.testing.assert_allclose(batched[name], single[name], rtol=0, atol=1e-5, err_msg=name)
    probs = [model.classification(b)["probability"] for b in results[:-1]]
    assert np.allclose(probs, [model.classification(a)["probability"] for a in alone], atol=1e-6)
