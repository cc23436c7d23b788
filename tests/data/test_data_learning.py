"""End to end: a small conv net trained through the real pipeline on synthetic Retina reaches a held-out AUC well
above 0.9 on CPU (measured: 0.96 after 300 steps, about 2 minutes on the 2-core dev machine).

Too slow for the default run; enable with TRANSFUSION_SLOW_TESTS=1.
"""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

from data_helpers import make_config
from transfusion_jax.data import build_dataset

pytestmark = pytest.mark.skipif(os.environ.get('TRANSFUSION_SLOW_TESTS') != '1',
                                reason='slow (about 2 minutes); set TRANSFUSION_SLOW_TESTS=1')


class SmallNet(nn.Module):
  """Three conv+pool stages and a global max pool: lesions are small and anywhere in the disc."""

  @nn.compact
  def __call__(self, x):
    for width in (16, 32, 32):
      x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3))(x)), (2, 2), (2, 2))
    return nn.Dense(2)(jnp.max(x, axis=(1, 2)))


def test_small_cnn_learns_synthetic_retina():
  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  c = make_config('synthetic_retina', image_size=48, num_workers=2, normalization='torchvision',
                  **{'synthetic.num_examples': 600, 'synthetic.native_size': 64})
  train = build_dataset(c, 'train', train=True)
  c.synthetic.num_examples = 200
  test = build_dataset(c, 'test', train=False)
  net = SmallNet()
  params = net.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    def loss(p):
      per_example = optax.softmax_cross_entropy_with_integer_labels(net.apply(p, batch['image']), batch['label'])
      return jnp.sum(per_example * batch['valid']) / jnp.sum(batch['valid'])
    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  batches = train.batches(32, mesh=mesh, seed=0)
  for _ in range(300):
    params, opt_state = step(params, opt_state, next(batches))
  scores, labels = [], []
  for batch in test.batches(32, mesh=mesh):
    valid = np.asarray(batch['valid'])
    scores.append(np.asarray(jax.nn.softmax(net.apply(params, batch['image']))[:, 1])[valid])
    labels.append(np.asarray(batch['label'])[valid])
  assert roc_auc_score(np.concatenate(labels), np.concatenate(scores)) > 0.9
