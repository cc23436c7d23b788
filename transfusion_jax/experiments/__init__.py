"""Experiments end to end: the quickstart on built-in data, the sweep runner over configs/*.py, the paper's tables.

python -m transfusion_jax.experiments.quickstart --workdir DIR
python -m transfusion_jax.experiments sweep --config configs/retina.py --models ... --inits ... --workdir ROOT
python -m transfusion_jax.experiments report ROOT
"""
