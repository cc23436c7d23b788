"""The miniature study (docs/study.md): every claim of the paper made testable on generated data.

Modules, each one concern, importing only those above it in this list:
  design           the one config schema (`get_config(arg)`, plain data) and what follows from it alone: the
                   planned runs (`RunKey`, `plan`), each model's blocks, the checks before anything runs
  workdir          where everything lives under DIR, the design record, the analyses' JSON caches
  recipes          the trainer configs of source pretraining and fine-tuning
  cost             what a design costs before it runs (XLA's FLOP counts of the trainer's programs)
  execute          data generation and every run, through `experiments.runs.train_many`
  measures         per-run measures (`RunMeasures`), the test scoring into each run's test_scores.npz
  diagnose         G1's and G2's measurements of each model (`Diagnostics`)
  representations  similarity to init and between seeds, beside nulls (`ModelSimilarity`)
  gates            G1-G4, each computed once into a record of its numbers (`Gate`)
  contrasts        each measure's contrast interval (`MEASURES`): AUC, ln steps, similarity to init, seed pairs
  claims           the claims table (`CLAIMS`) and the secondary numbers: data
  verdicts         pure functions from effects and gates to verdicts (`evaluate`)
  report           report.md and its figures, rendered from the above; `publish`
  run              `run_study` and the command line the quickstart and `python -m transfusion_jax.experiments
                   study` share

configs/study.py is the design's launch file (it returns `design.get_config`); benchmarks/study_pilot.py reads the
same schema. Importing this package imports none of its modules: import the one you need.
"""
