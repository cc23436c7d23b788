"""In-domain self-supervised init against ImageNet transfer on little data (docs/ssl_study.md): a pre-registered
study in the miniature study's world, built from the study package's pieces and `ssl.pretrain_folder`.

  python -m transfusion_jax.experiments.ssl_study --workdir DIR [--mini] [--config.FIELD=VALUE ...]

Modules, each importing only those above it in this list:
  design     the config (`get_config('default' | 'mini')`, plain data), the arms and their runs (`RunKey`s of the
             study's layout), the fine-tuning configs, the checks before anything runs
  execute    data, source pretraining, the SSL pretraining, every fine-tuning run (`study.execute.train`)
  reuse      where the features are reused: per-block probes of each run's init, similarity to init beside its
             nulls (cached JSON)
  verdicts   the claims S0-S2 and the gates, pure functions from intervals to `stats.decide` decisions
  report     report.md, ssl_study.json and the figures
  run        `run_study` and the command line (`__main__`)
"""
