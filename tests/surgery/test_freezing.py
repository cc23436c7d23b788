"""Freezing blocks with optax masks: frozen leaves never move (weight decay included), the others do."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from surgery_helpers import TINY, flat, tiny_init

from transfusion_jax.models import get_model
from transfusion_jax.surgery import freezing as fz

MODEL = get_model("cbr_small", 2, **TINY)
X = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
Y = jnp.array([0, 1, 1, 0])


@jax.jit
def grads_of(params, batch_stats):
    def loss(p):
        logits, _ = MODEL.apply({"params": p, "batch_stats": batch_stats}, X, train=True, mutable=["batch_stats"])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    return jax.grad(loss)(params)


def run(optimizer, params, batch_stats, steps=3, zero_grads=False):
    state = optimizer.init(params)
    for _ in range(steps):
        g = jax.tree.map(jnp.zeros_like, params) if zero_grads else grads_of(params, batch_stats)
        updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def moved(before, after):
    """{path: whether the leaf changed}."""
    a, b = flat(before), flat(after)
    return {k: not np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a}


OPTIMIZERS = {
    "adamw": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "sgd+decay": lambda: optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9)),
}


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize(
    "frozen,is_frozen",
    [
        (["layer1"], lambda k: k.startswith("layer1/")),  # all but conv1
        (["layer1", "layer2", "layer3", "layer4"], lambda k: not k.startswith("head/")),  # train only the head
        ([r"layer[23]/bn/.*", "head"], lambda k: k.startswith(("layer2/bn/", "layer3/bn/", "head/"))),
    ],
)
def test_frozen_leaves_stay_and_the_rest_move(opt, frozen, is_frozen):
    variables = tiny_init(0)
    params = variables["params"]
    after = run(fz.freeze(OPTIMIZERS[opt](), params, frozen), params, variables["batch_stats"])
    for path, changed in moved(params, after).items():
        assert changed != is_frozen(path), (path, changed)


def test_weight_decay_alone_does_not_move_frozen_weights():
    variables = tiny_init(0)
    params = variables["params"]
    # Without the mask, zero gradients still move every weight through decay: the test can tell.
    plain = run(OPTIMIZERS["sgd+decay"](), params, variables["batch_stats"], zero_grads=True)
    assert all(moved(params, plain)[k] for k in flat(params) if not k.endswith("bias"))
    masked = run(
        fz.freeze(OPTIMIZERS["sgd+decay"](), params, ["layer1", "layer2"]),
        params,
        variables["batch_stats"],
        zero_grads=True,
    )
    for path, changed in moved(params, masked).items():
        if path.startswith(("layer1/", "layer2/")):
            assert not changed, path


def test_all_blocks_except_and_typos():
    params = tiny_init(0)["params"]
    assert fz.all_blocks_except(params, ["head"]) == ["layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(ValueError, match="Unknown blocks"):
        fz.all_blocks_except(params, ["heads"])
    with pytest.raises(ValueError, match=r"matches no parameter. Blocks: .*layer4"):
        fz.freeze(optax.sgd(0.1), params, ["conv1"])
    with pytest.raises(ValueError, match="neither a block name nor a valid regex"):
        fz.freeze(optax.sgd(0.1), params, ["layer[1"])


def test_labels_and_no_state_for_frozen_leaves():
    params = tiny_init(0)["params"]
    labels = flat(fz.frozen_labels(params, ["layer1", "head/bias"]))
    assert {k for k, v in labels.items() if v == "frozen"} == {
        "layer1/conv/kernel",
        "layer1/bn/scale",
        "layer1/bn/bias",
        "head/bias",
    }
    state = fz.freeze(optax.adam(1e-3), params, ["layer1"]).init(params)
    mu = flat(state.inner_states["trainable"].inner_state[0].mu)
    assert isinstance(mu["layer1/conv/kernel"], optax.MaskedNode)  # Adam keeps no moments for frozen leaves
    assert mu["layer2/conv/kernel"].shape == (7, 7, 4, 8)


@pytest.mark.parametrize(
    "patterns,fixed_blocks",
    [
        (["layer1"], {"layer1"}),
        ([r"layer[12]/.*"], {"layer1", "layer2"}),
        ([r"layer3/bn/(scale|bias)"], {"layer3"}),
        ([r"layer3/bn/scale"], set()),  # its bias still trains, so the BatchNorm is not a fixed function
        ([r".*/kernel"], set()),
    ],
)
def test_statistics_are_fixed_when_their_batchnorm_parameters_all_are(patterns, fixed_blocks):
    variables = tiny_init(0)
    fixed = flat(fz.frozen_statistics(variables["params"], variables["batch_stats"], patterns))
    assert set(fixed) == set(flat(variables["batch_stats"]))
    assert {k.split("/")[0] for k, v in fixed.items() if v} == fixed_blocks
