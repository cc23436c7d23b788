"""The design's cost (study.cost.design_cost): XLA's FLOP counts against a closed form, and the counts of runs,
steps and images against the design's own numbers."""

from transfusion_jax.experiments.study import cost, design, recipes

load_config = design.load_config


def _one_layer_flops(c, num_classes=2):
    config = recipes.finetune_config(c, {"source": "", "target": ""}, design.RunKey("small", "full", "random", 0), "")
    return cost.step_flops(c, (8,), num_classes, config)


def test_flops_of_a_one_layer_cbr_match_the_conv_by_hand():
    """A 7x7 conv 3 -> 8 with SAME padding on 32x32 images, counted as XLA counts it: a multiply and an add for every
    kernel tap that lands inside the image (padding taps are not computed). Along one axis the 32 outputs see
    32 * 7 - 2 * (3 + 2 + 1) = 212 taps, so 2 * 212**2 * 3 * 8 FLOPs per image. The rest of the forward (BN, ReLU,
    the 3x3 max-pool, the mean and a 2-way head) adds under 5 %. A train step adds the kernel's gradient (the same
    count again; the image needs no gradient) and the small rest: between 2x and 2.5x the conv per image."""
    c = load_config("mini", ["batch_size=16"])
    taps = 32 * 7 - 2 * (3 + 2 + 1)
    conv = 2 * taps**2 * 3 * 8
    train, forward = _one_layer_flops(c)
    assert conv <= forward <= 1.05 * conv
    assert 2 * conv <= train / 16 <= 2.5 * conv
    train64, forward64 = _one_layer_flops(load_config("mini", ["batch_size=16", "image_size=64"]))
    conv64 = 2 * (64 * 7 - 12) ** 2 * 3 * 8  # the config's image size is the one counted
    assert conv64 <= forward64 <= 1.05 * conv64 and 2 * conv64 <= train64 / 16 <= 2.5 * conv64


def test_design_cost_counts_runs_steps_and_images_of_each_network():
    c = load_config("mini")
    costs = cost.design_cost(c)
    assert [(k, n.runs, n.pretrain_runs) for k, n in costs.items()] == [
        ("small", 12, 1),
        ("large", 18, 1),
        ("slim", 2, 0),
    ]
    small = costs["small"]
    runs = [k for k in design.plan(c) if k.model == "small"]
    assert small.train_steps == c.pretrain.steps + len(runs) * c.finetune.steps
    analyses = c.gates.random_inits * c.target.train + 2 * len(c.seeds) * 2 * c.target.test  # G2; random, transfer
    pretrain_evals = len(range(c.pretrain.eval_every, c.pretrain.steps + 1, c.pretrain.eval_every))
    source_test = c.source.classes * c.source.test_per_class
    validation = sum(len(c.eval_steps[k.data]) for k in runs) * c.target.validation  # each training set's own grid
    assert small.images_evaluated == validation + len(runs) * c.target.test + analyses + pretrain_evals * source_test
    assert small.train_flops > len(runs) * c.finetune.steps * small.step_flops  # plus pretraining's
    assert small.flops == small.train_flops + small.eval_flops
    default = cost.design_cost(load_config("default"))
    assert [(k, n.runs, n.pretrain_runs) for k, n in default.items()] == [
        ("small", 30, 0),  # shipped source checkpoints: no pretraining in the run
        ("large", 45, 0),
        ("slim", 5, 0),
    ]
    # the large model: 1.5x the small one's arithmetic per image (docs/study.md R7.2)
    assert default["large"].train_steps == 45 * 300
    assert default["large"].image_flops > 1.4 * default["small"].image_flops
    built = cost.design_cost(load_config("default", ["sources=build"]))
    assert built["large"].train_steps == default["large"].train_steps + 800
    assert "this design: 80 fine-tuning runs + 0 pretraining" in cost.describe_cost(default)
