"""What a design costs before anything runs: runs, training steps, images evaluated and XLA's FLOP counts of the
trainer's own programs, per network (docs/study.md §9, "The design's cost, counted")."""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from transfusion_jax import models
from transfusion_jax.experiments.study.design import MODELS, RunKey, plan
from transfusion_jax.experiments.study.recipes import finetune_config, pretrain_config
from transfusion_jax.models import cpu_kernels
from transfusion_jax.train import partition, preflight
from transfusion_jax.train import state as state_lib
from transfusion_jax.train import steps as steps_lib

_NO_PATHS = {"source": "", "target": ""}  # counting reads no data


@dataclasses.dataclass(frozen=True)
class NetworkCost:
    """What one network of the design costs: its runs (fine-tuning; pretraining apart), training steps, images put
    through an eval forward pass, and XLA's FLOP counts of one train step (a batch) and of one image's forward."""

    runs: int
    pretrain_runs: int
    train_steps: int
    images_evaluated: int
    train_flops: float  # all its training steps (pretraining included)
    eval_flops: float  # all its images evaluated
    step_flops: float  # one fine-tuning train step on a batch
    image_flops: float  # one image's eval forward

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops


def step_flops(c, widths: Sequence[int], num_classes: int, config) -> tuple[float, float]:
    """(FLOPs of one train step on a batch of `c.batch_size`, FLOPs of one image's eval forward) of the trainer's own
    step functions for `config` (its optimizer) at `c.image_size`, on one device, from XLA's cost analysis of the
    lowered programs with the standard operations (not the CPU kernels, which also multiply zeros): nothing is
    compiled or run (compiling would cost ~5 s a program on 2 cores; the compiled programs' counts are within 2 % of
    these for the study's models)."""
    model = models.get_model(c.family, num_classes, widths=tuple(widths))
    size, batch = c.image_size, c.batch_size
    state, tx = state_lib.abstract_train_state(config, model, jnp.zeros((1, size, size, 3)))
    inputs = {
        "image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
        "valid": jax.ShapeDtypeStruct((batch,), jnp.bool_),
    }
    mesh = partition.make_data_mesh(jax.devices()[:1])
    rng = jax.eval_shape(lambda: jax.random.key(0))
    with cpu_kernels.standard_operations():  # the design's arithmetic on any platform
        train = steps_lib.make_train_step(model, tx, "softmax", mesh).lower(state, inputs, rng).cost_analysis()
        forward = steps_lib.make_eval_step(model, "softmax", mesh).lower(state, inputs).cost_analysis()
    return float(train["flops"]), float(forward["flops"]) / batch


def _runs_of(c, network: str) -> list[RunKey]:
    """The fine-tuning runs a network trains: Slim's are the large model's slim runs, kept apart."""
    slim = network == "slim"
    return [k for k in plan(c) if (k.init == "slim") == slim and (slim or k.model == network)]


def _finetune_cost(c, network: str, mine: list[RunKey]) -> NetworkCost:
    config = finetune_config(c, _NO_PATHS, mine[0], "")
    step, image = step_flops(c, c.slim_widths if network == "slim" else c.widths[network], 2, config)
    evaluated = len(mine) * (len(preflight.eval_steps(config)) * c.target.validation + c.target.test)
    steps = len(mine) * c.finetune.steps
    return NetworkCost(len(mine), 0, steps, evaluated, steps * step, evaluated * image, step, image)


def _with_pretraining(c, network: str, mine: list[RunKey], cost: NetworkCost) -> NetworkCost:
    """`cost` plus the network's source pretraining and the analyses' forward passes (G2's probes over the train
    images of each random init; step 0 and the final step of every full-data random and transfer run over the test
    images, for similarity)."""
    pre = pretrain_config(c, _NO_PATHS, network)
    pre_step, pre_image = step_flops(c, c.widths[network], c.source.classes, pre)
    pre_images = len(preflight.eval_steps(pre)) * c.source.classes * c.source.test_per_class
    analyses = c.gates.random_inits * c.target.train + sum(
        2 * c.target.test for k in mine if k.data == "full" and k.init in ("random", "transfer")
    )
    return dataclasses.replace(
        cost,
        pretrain_runs=1,
        train_steps=cost.train_steps + c.pretrain.steps,
        images_evaluated=cost.images_evaluated + pre_images + analyses,
        train_flops=cost.train_flops + c.pretrain.steps * pre_step,
        eval_flops=cost.eval_flops + pre_images * pre_image + analyses * cost.image_flops,
    )


def design_cost(c) -> dict[str, NetworkCost]:
    """{network ('small' | 'large' | 'slim'): NetworkCost} of the models run. Images evaluated: the validation
    passes and the test scoring of every fine-tuning run, the source evaluations of pretraining, and the analyses'
    forward passes. Not counted: data generation, the similarity measures themselves, the probes' fitting, the
    report."""
    out = {}
    slim = ["slim"] if any(k.init == "slim" for k in plan(c)) else []
    for network in [m for m in MODELS if m in c.models_run] + slim:
        mine = _runs_of(c, network)
        if not mine:  # a model run without cells of its own
            continue
        cost = _finetune_cost(c, network, mine)
        out[network] = cost if network == "slim" else _with_pretraining(c, network, mine, cost)
    return out


def describe_cost(costs: dict[str, NetworkCost]) -> str:
    runs = sum(n.runs for n in costs.values())
    pretrain = sum(n.pretrain_runs for n in costs.values())
    train = sum(n.train_flops for n in costs.values()) / 1e12
    evaluated = sum(n.eval_flops for n in costs.values()) / 1e12
    per = ", ".join(f"{name} {n.runs} runs, {n.flops / 1e12:.2f} TFLOP" for name, n in costs.items())
    return (f"this design: {runs} fine-tuning runs + {pretrain} pretraining, {train:.2f} TFLOP of training and "
            f"{evaluated:.2f} TFLOP of evaluation (XLA's count; {per})")  # fmt: skip
