"""Tiny self-supervised setups shared by the tests: a two-layer CBR on 16 px images, and grey shape images."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from transfusion_jax.data import preprocess, synthetic
from transfusion_jax.ssl import config as ssl_config
from transfusion_jax.ssl import steps, trainer
from transfusion_jax.train import partition
from transfusion_jax.train import state as state_lib

SIZE = 16


def tiny_config(method: str, **changes):
    c = ssl_config.base_config(method)
    c.model.name = "cbr_small"
    c.model.overrides.widths = (4, 8)
    c.data.image_size = SIZE
    c.ssl.projector.update(hidden_dim=16, out_dim=8)
    c.ssl.predictor.hidden_dim = 16
    c.batch_size = 16
    c.update(changes)
    return c


def setup(config, mesh, num_steps: int = 10, warmup: int = 2):
    """(jitted train step, step-0 state on the mesh, net, target net, optimizer) of `config`."""
    sample = jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)
    encoder = state_lib.build_model(config, trainer.ENCODER_OUTPUTS)
    net, target_net = steps.build_nets(config, encoder, trainer.encoder_feature_dim(encoder, sample))
    variables = trainer.initial_variables(config, net, encoder, sample)
    tx, _ = steps.make_optimizer(config, variables["params"], num_steps, warmup)
    state = jax.device_put(steps.init_state(net, target_net, tx, variables), partition.replicated(mesh))
    norm = preprocess.get_normalization("torchvision")
    step = steps.make_train_step(config, net, target_net, tx, trainer.view_config(config), norm, mesh, num_steps)
    return step, state, net, target_net, tx


def batch(mesh, seed: int = 0, n: int = 16) -> dict:
    """Random images in 0..1 (the pipeline's raw batch), split over the mesh, all valid."""
    images = np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    sharding = NamedSharding(mesh, P(partition.DATA_AXIS))
    return {"image": jax.device_put(images, sharding), "valid": jax.device_put(np.ones(n, bool), sharding)}


def grey_shapes(seed: int, count: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [count, size, size, 3] grey images, shape labels 0..4): data.synthetic's source shapes (disc, square,
    ring, stripes, checker) at random places and scales over random backgrounds, turned grey."""
    labels = np.random.default_rng(seed).integers(5, size=count)
    images = [
        Image.fromarray(synthetic.render_source(np.random.default_rng([seed, i]), int(label), 2 * size))
        .convert("L")
        .resize((size, size), Image.BILINEAR)
        .convert("RGB")
        for i, label in enumerate(labels)
    ]
    return np.stack([np.asarray(im) for im in images]), labels
