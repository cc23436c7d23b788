"""The two objectives, written as global-view functions of the whole batch: under jit over a ('data',) mesh with
the batch split across devices, every example's negatives (SimCLR) are all 2B - 2 other views of the global batch,
on every device, as SimCLR's cross-replica negatives; XLA gathers the projections where it needs them.

`valid` [B] (the data contract's flag: False for an image skipped under on_bad_image='skip') drops an example from
every mean and, for SimCLR, from every other example's negatives.
"""

import jax
import jax.numpy as jnp

# Projections are normalised as x / max(|x|, eps), as SimCLR's and BYOL's code do, so a zero vector gives no NaN.
NORM_EPS = 1e-12


def normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def _valid(valid, b: int) -> jax.Array:
    return jnp.ones((b,), bool) if valid is None else jnp.asarray(valid, bool)


def _mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    weights = weights.astype(jnp.float32)
    return jnp.sum(jnp.where(weights > 0, values, 0.0) * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float, valid=None) -> tuple[jax.Array, dict]:
    """SimCLR's NT-Xent (normalised temperature-scaled cross-entropy) of the two views' projections [B, D].

    Over the 2B views: cosine similarities divided by `temperature`, each view's own similarity left out; each view's
    loss is the cross-entropy of picking its partner among the other 2B - 1; the mean over all 2B. Returns
    (loss, {'contrastive_accuracy': share of views whose most similar other view is their partner})."""
    b = z1.shape[0]
    keep = jnp.tile(_valid(valid, b), 2)
    z = normalize(jnp.concatenate([z1, z2]))
    logits = jnp.matmul(z, z.T, precision="highest") / temperature
    logits = jnp.where(jnp.eye(2 * b, dtype=bool) | ~keep[None, :], -jnp.inf, logits)
    partner = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    positive = jnp.take_along_axis(logits, partner[:, None], axis=1)[:, 0]
    loss = _mean(jax.nn.logsumexp(logits, axis=1) - positive, keep)
    accuracy = _mean((jnp.argmax(logits, axis=1) == partner).astype(jnp.float32), keep)
    return loss, {"contrastive_accuracy": accuracy}


def regression(p: jax.Array, z: jax.Array) -> jax.Array:
    """BYOL's per-example loss, the squared distance of the normalised vectors: 2 - 2 cos(p, z)."""
    return 2.0 - 2.0 * jnp.sum(normalize(p) * normalize(z), axis=-1)


def byol(p1: jax.Array, p2: jax.Array, t1: jax.Array, t2: jax.Array, valid=None) -> jax.Array:
    """BYOL's symmetrised loss: each view's online prediction regressed on the other view's target projection,
    the two batch means summed (the paper's L + L~). The targets get no gradient."""
    t1, t2 = jax.lax.stop_gradient(t1), jax.lax.stop_gradient(t2)
    keep = _valid(valid, p1.shape[0])
    return _mean(regression(p1, t2), keep) + _mean(regression(p2, t1), keep)


def projection_std(z: jax.Array, valid=None) -> jax.Array:
    """Mean over dimensions of the std over the batch of the normalised projections: about 1/sqrt(D) while the
    projections spread over the sphere, 0 when they collapse to one point (SimSiam's collapse monitor)."""
    keep = _valid(valid, z.shape[0]).astype(jnp.float32)[:, None]
    u = normalize(z)
    n = jnp.maximum(jnp.sum(keep), 1.0)
    mean = jnp.sum(u * keep, axis=0) / n
    return jnp.mean(jnp.sqrt(jnp.sum(keep * (u - mean) ** 2, axis=0) / n))
