"""Fig. 2 / Fig. 3 analysis functions on a tiny module: JSON-ready results, values consistent with the parts."""

import json

import numpy as np
import pytest
from test_activation_collector import images, tiny_models

from transfusion_jax.analysis import Reduction, paper


def test_top_layers_similarity_is_the_mean_of_its_layers():
    model_a, model_b, _ = tiny_models()
    result = paper.top_layers_similarity(
        model_a[0],
        model_a[1],
        model_b[1],
        images(2),
        ["layer2", "pre_logits"],
        method="cka",
        reduction=Reduction(mode="mean"),
    )
    assert json.loads(json.dumps(result)) == result
    scores = [result["per_layer"][name]["score"] for name in ("layer2", "pre_logits")]
    assert result["mean"] == pytest.approx(np.mean(scores))
    same = paper.top_layers_similarity(
        model_a[0], model_a[1], model_a[1], images(2), ["layer2"], method="cka", reduction=Reduction(mode="mean")
    )
    assert same["mean"] == pytest.approx(1.0, abs=1e-6)


def test_similarity_to_init_reports_similarity_and_weight_change():
    model_a, _, module = tiny_models()
    params = model_a[1]["params"]
    trained = {"params": {**params, "layer2": {k: 1.5 * v for k, v in params["layer2"].items()}}}
    result = paper.similarity_to_init(
        model_a[0],
        model_a[1],
        trained,
        images(3, batches=2),
        method="cca",
        reduction=Reduction(mode="positions"),
    )
    assert result["relative_weight_change"] == {"layer1": 0.0, "layer2": pytest.approx(0.5), "head": 0.0}
    assert result["similarity"]["layer1"]["score"] == pytest.approx(1.0, abs=1e-5)  # untouched block
    assert set(result["similarity"]) == {"layer1", "layer2", "pre_logits"}
    assert json.loads(json.dumps(result))["similarity"]["layer2"]["reduction"]["mode"] == "positions"
