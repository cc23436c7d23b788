"""NT-Xent and BYOL's loss against float64 NumPy references written from the papers' formulas, including NT-Xent's
negatives across devices: with the batch split over 8 simulated devices the jitted loss is the global batch's, not
the mean of each device's own."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from transfusion_jax.ssl import losses
from transfusion_jax.train import partition


def nt_xent_reference(z1, z2, temperature, valid=None):
    """SimCLR's equation (1) averaged over every view of every kept example, in float64, row by row."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    b = len(z1)
    keep = np.tile(np.ones(b, bool) if valid is None else np.asarray(valid, bool), 2)
    per_view, hits = [], []
    for i in np.flatnonzero(keep):
        partner = (i + b) % (2 * b)
        others = [k for k in range(2 * b) if k != i and keep[k]]
        sims = np.array([z[i] @ z[k] / temperature for k in others])
        per_view.append(-(z[i] @ z[partner] / temperature) + np.log(np.sum(np.exp(sims))))
        hits.append(others[int(np.argmax(sims))] == partner)
    return float(np.mean(per_view)), float(np.mean(hits))


def byol_reference(p1, p2, t1, t2):
    def cos(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    return float(np.mean(2 - 2 * cos(p1, t2)) + np.mean(2 - 2 * cos(p2, t1)))


def _projections(seed, b=8, d=5, shift=0.0):
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=(b, d)).astype(np.float32)
    z2 = (z1 + rng.normal(scale=0.7, size=(b, d)) + shift).astype(np.float32)  # partners related, not equal
    return z1, z2


class LossesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.1, 0.5, 1.0)
    def test_nt_xent_matches_float64_reference(self, temperature):
        nt_xent = self.variant(lambda a, b, v: losses.nt_xent(a, b, temperature, v))
        for seed in range(3):
            z1, z2 = _projections(seed)
            valid = np.ones(len(z1), bool)
            loss, metrics = nt_xent(z1, z2, valid)
            want, accuracy = nt_xent_reference(z1, z2, temperature)
            np.testing.assert_allclose(float(loss), want, rtol=1e-5)
            np.testing.assert_allclose(float(metrics["contrastive_accuracy"]), accuracy)

    @chex.variants(with_jit=True, without_jit=True)
    def test_nt_xent_leaves_invalid_examples_out_of_losses_and_negatives(self):
        z1, z2 = _projections(3, b=10)
        valid = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], bool)
        loss, _ = self.variant(lambda a, b, v: losses.nt_xent(a, b, 0.2, v))(z1, z2, valid)
        np.testing.assert_allclose(float(loss), nt_xent_reference(z1, z2, 0.2, valid)[0], rtol=1e-5)
        kept = nt_xent_reference(z1[valid], z2[valid], 0.2)[0]  # the same as dropping the rows beforehand
        np.testing.assert_allclose(float(loss), kept, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_byol_matches_float64_reference_and_its_targets_get_no_gradient(self):
        rng = np.random.default_rng(0)
        p1, p2, t1, t2 = (rng.normal(size=(6, 4)).astype(np.float32) for _ in range(4))
        byol = self.variant(losses.byol)
        np.testing.assert_allclose(float(byol(p1, p2, t1, t2)), byol_reference(p1, p2, t1, t2), rtol=1e-5)
        grads = self.variant(jax.grad(losses.byol, argnums=(0, 1, 2, 3)))(p1, p2, t1, t2)
        assert np.abs(grads[0]).max() > 1e-3 and np.abs(grads[1]).max() > 1e-3  # the predictions learn
        assert not np.any(grads[2]) and not np.any(grads[3])  # the targets are constants (stop_gradient)


def test_nt_xent_negatives_come_from_every_device():
    """z split over 8 devices, 2 examples each: the jitted loss equals the reference over all 16 examples (each
    view's negatives are the 30 other views), and differs from what per-device negatives (each device's own 2
    examples) would give, so the comparison can tell the two apart."""
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py sets 8 simulated CPU devices"
    mesh = partition.make_data_mesh(devices)
    z1, z2 = _projections(7, b=16, d=6)
    sharded = NamedSharding(mesh, P(partition.DATA_AXIS))
    a, b = jax.device_put(z1, sharded), jax.device_put(z2, sharded)
    assert len(a.addressable_shards) == 8 and a.addressable_shards[0].data.shape == (2, 6)
    loss, metrics = jax.jit(lambda x, y: losses.nt_xent(x, y, 0.1))(a, b)
    global_loss, global_accuracy = nt_xent_reference(z1, z2, 0.1)
    np.testing.assert_allclose(float(loss), global_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["contrastive_accuracy"]), global_accuracy)
    per_device = np.mean([nt_xent_reference(z1[k : k + 2], z2[k : k + 2], 0.1)[0] for k in range(0, 16, 2)])
    assert abs(per_device - global_loss) > 1.0  # 3 negatives per view instead of 30: a far smaller loss


def test_projection_std_tells_collapse_from_spread():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(4096, 16)).astype(np.float32)
    assert float(losses.projection_std(jnp.asarray(spread))) == pytest.approx(1 / np.sqrt(16), rel=0.02)
    collapsed = np.tile(spread[:1], (64, 1)) + 1e-6 * rng.normal(size=(64, 16)).astype(np.float32)
    assert float(losses.projection_std(jnp.asarray(collapsed))) < 1e-5
