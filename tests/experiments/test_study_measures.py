"""The study's per-run measures (transfusion_jax/experiments/study/measures.py)."""

import functools

import chex
import jax
import numpy as np
from compile_events import CompileEvents

from transfusion_jax.experiments.study import measures
from transfusion_jax.models import get_model


def test_test_scores_of_runs_of_one_architecture_trace_one_program():
    """Each run scores its test images through its own, equal model (widths from its config.json, a list): the
    second run traces nothing, and the logits are the model's own, chunk by chunk. Fails if the scoring program is
    built per run."""
    images = np.random.default_rng(0).normal(size=(2 * measures.PROBE_BATCH + 3, 16, 16, 3)).astype(np.float32)
    first = get_model("cbr_small", 2, widths=(3, 5))
    variables = [jax.jit(functools.partial(first.init, train=False))(jax.random.key(s), images[:1]) for s in (0, 1)]
    measures._logits(functools.partial(first.apply, train=False), variables[0], images)
    second = get_model("cbr_small", 2, widths=[3, 5])
    with CompileEvents() as compiles:
        logits = measures._logits(functools.partial(second.apply, train=False), variables[1], images)
    assert compiles.traces() == []
    expected = np.asarray(second.apply(variables[1], images, train=False)[0])
    chex.assert_shape(logits, (len(images), 2))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
