"""The SSL study end to end (docs/ssl_study.md), resumable, and its command line:

  python -m transfusion_jax.experiments.ssl_study --workdir DIR [--mini] [--config.FIELD=VALUE ...]

1. generates the miniature study's source and target sets under DIR/data (skipped when there);
2. pretrains the model on the source (the study's "ImageNet" checkpoint) and, with SimCLR, on the target's 2,000
   unlabeled training images (DIR/ssl/<model>/pretrained.npz);
3. fine-tunes random, transfer and ssl on each seed's 200 labelled images, stacked, and scores every run's final
   weights on the test images;
4. probes every run's init per block and measures its similarity to init beside its nulls;
5. computes the gates and the verdicts of S0-S2, and writes DIR/report.md, DIR/ssl_study.json and DIR/figures.

Rerunning with the same DIR skips everything finished. DIR records the design (ssl_study_config.json) and refuses
another, and a quickstart's DIR: use a DIR of its own.
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from transfusion_jax.experiments.ssl_study import design, execute, reuse, verdicts
from transfusion_jax.experiments.ssl_study import report as report_lib
from transfusion_jax.experiments.study import sources
from transfusion_jax.experiments.study.measures import measure_runs
from transfusion_jax.experiments.study.report import Timing
from transfusion_jax.experiments.study.run import enable_compile_cache
from transfusion_jax.train import config_lib


def analyse(workdir: str, c, summaries: dict, ssl_summary: dict, source_summary: dict, log=print):
    """The findings of finished runs: gates, verdicts, per-arm AUCs, probes and similarity summaries, power."""
    measures, labels = measure_runs(workdir, summaries, log)
    scores = {(k.init, k.seed): m.test_scores for k, m in measures.items()}
    checks = [
        verdicts.pretext_check(c, ssl_summary),
        verdicts.source_check(c, source_summary),
        *verdicts.stability_checks(c, measures),
    ]
    judged = verdicts.evaluate(c, scores, labels, checks)
    probe = reuse.measure_probes(workdir, c, log)
    if not np.array_equal(np.asarray(probe["labels"]).astype(bool), labels):
        raise RuntimeError("The probes' test labels differ from the runs' test scores' labels.")
    sim = reuse.measure_similarity(workdir, c, log)
    seeds = list(c.study.seeds)
    similarity, contrasts = {}, {}
    for method in c.study.similarity.methods:
        similarity[method], contrasts[method] = reuse.summarise_similarity(sim, c.arms, seeds, method, c.confidence)
    source_final = (source_summary.get("val") or {}).get("final") or {}
    return report_lib.Findings(
        verdicts=judged,
        checks=checks,
        aucs=verdicts.run_aucs(scores, labels),
        final_val={(k.init, k.seed): m.final_val_auc for k, m in measures.items()},
        curves={arm: [m.curve for k, m in measures.items() if k.init == arm] for arm in c.arms},
        probes=reuse.summarise_probes(probe, c.arms, seeds, c.confidence),
        similarity=similarity,
        similarity_contrasts=contrasts,
        similarity_size={"num_images": sim.num_images, "reduction": sim.reduction, "sizes": report_lib.sizes_text(sim)},
        power=verdicts.power_rows(judged, c),
        ssl_summary=ssl_summary,
        source_accuracy=source_final.get("accuracy"),
    )


def run_study(workdir: str, c, log=print) -> str:
    """Everything, resumable; returns the path of DIR/report.md."""
    start, cpu, load = time.perf_counter(), os.times(), os.getloadavg()
    workdir = os.path.abspath(workdir)
    design.check_config(c)
    execute.check_workdir(workdir, c)
    if c.study.sources == "shipped":  # before any work: the transfer arm's checkpoint
        sources.check_shipped(c.study, (c.model,))
    keys = design.run_keys(c)
    log(f"in-domain SSL study in {workdir}: {len(keys)} fine-tuning runs ({', '.join(c.arms)} x {len(c.study.seeds)} "
        f"seeds) + source and SSL pretraining")  # fmt: skip
    paths = execute.make_data(workdir, c, log)
    source = execute.pretrain_source(workdir, c, paths, log)
    ssl_summary = execute.pretrain_ssl(workdir, c, paths, log)
    summaries = execute.finetune_all(workdir, c, paths, log)
    findings = analyse(workdir, c, summaries, ssl_summary, source, log)
    now, every = os.times(), [*summaries.values(), source, ssl_summary]
    timing = Timing(
        wall=time.perf_counter() - start,
        cpu=now.user - cpu.user + now.system - cpu.system,
        load=(load[0], os.getloadavg()[0]),
        trained=sum(1 for s in every if not s["skipped"]),
        runs=len(every),
    )
    path = report_lib.write(workdir, c, findings, timing)
    for v in findings.verdicts:
        log(f"{v.claim.id} {v.claim.contrast}: {v.interval.estimate:+.3f} [{v.interval.low:+.3f}, "
            f"{v.interval.high:+.3f}] -> {v.verdict} ({v.why})")  # fmt: skip
    log(f"done in {timing.wall:.0f} s: {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments.ssl_study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--mini", action="store_true", help="tiny models and data: the tests' size, seconds")
    args, config_flags = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    try:
        c = config_lib.apply_flags(design.get_config("mini" if args.mini else "default"), config_flags)
        design.check_config(c)
    except ValueError as e:
        parser.error(str(e))
    enable_compile_cache(args.workdir)
    run_study(args.workdir, c)
    return 0
