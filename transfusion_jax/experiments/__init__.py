"""Everything run-level: the sweep runner over configs/*.py, a run's saved weights (run_weights), the paper's figures
(figures) and tables (report), the instruments beyond the paper on finished runs (instruments), and the quickstart
on built-in data.

python -m transfusion_jax.experiments.quickstart --workdir DIR
python -m transfusion_jax.experiments sweep --config configs/retina.py --models ... --inits ... --workdir ROOT
python -m transfusion_jax.experiments report ROOT
python -m transfusion_jax.experiments fig2|fig3|fig4|weights|filters ... --out DIR
python -m transfusion_jax.experiments probes|resilience|interpolate|sanity|calibration ... --out ROOT/analyses
python -m transfusion_jax.experiments reuse ROOT
"""
