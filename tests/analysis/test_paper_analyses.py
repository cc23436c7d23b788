"""Fig. 2 / Fig. 3 analysis functions on a tiny module: JSON written, values consistent with the parts."""

import json

import numpy as np
import pytest
from test_activation_collector import images, tiny_models

from transfusion_jax.analysis import Reduction, paper


def test_top_layers_similarity_writes_mean_of_layers(tmp_path):
    model_a, model_b, _ = tiny_models()
    out = tmp_path / "fig2" / "rand_rand.json"
    result = paper.top_layers_similarity(
        model_a[0],
        model_a[1],
        model_b[1],
        images(2),
        ["layer2", "pre_logits"],
        method="cka",
        reduction=Reduction(mode="mean"),
        out=out,
    )
    assert json.loads(out.read_text()) == result
    scores = [result["per_layer"][name]["score"] for name in ("layer2", "pre_logits")]
    assert result["mean"] == pytest.approx(np.mean(scores))
    same = paper.top_layers_similarity(
        model_a[0], model_a[1], model_a[1], images(2), ["layer2"], method="cka", reduction=Reduction(mode="mean")
    )
    assert same["mean"] == pytest.approx(1.0, abs=1e-6)


def test_similarity_to_init_reports_similarity_and_weight_change(tmp_path):
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
        out=tmp_path / "fig3.json",
    )
    assert result["relative_weight_change"] == {"layer1": 0.0, "layer2": pytest.approx(0.5), "head": 0.0}
    assert result["similarity"]["layer1"]["score"] == pytest.approx(1.0, abs=1e-5)  # untouched block
    assert set(result["similarity"]) == {"layer1", "layer2", "pre_logits"}
    assert json.loads((tmp_path / "fig3.json").read_text())["similarity"]["layer2"]["reduction"]["mode"] == "positions"
