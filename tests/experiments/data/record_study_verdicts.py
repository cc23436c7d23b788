"""How study_verdicts_f097dd2.json was made: study_scenarios' constructed studies through the study's verdicts as the
code of commit f097dd2 computed them (transfusion_jax/experiments/study_verdicts.py, before the study package), with
that commit's tests/experiments/study_world.py building the inputs (its per-process string hash replaced by the
stable one today's study_world uses, so that the inputs are the same in every process).

  git worktree add --detach OLD f097dd2
  PYTHONPATH=OLD python tests/experiments/data/record_study_verdicts.py OLD \
      tests/experiments/data/study_verdicts_f097dd2.json

Run with today's code on PYTHONPATH (and any OLD) it writes today's numbers instead, for a diff.
"""

import json
import os
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
old_checkout, out_path = sys.argv[1:3]
sys.path.insert(0, os.path.dirname(HERE))  # study_scenarios: plain data, no package imports
import study_scenarios  # noqa: E402

try:
    from transfusion_jax.experiments import study_verdicts  # the code before the study package
except ImportError:
    study_verdicts = None
if study_verdicts is not None:
    sys.path.insert(0, os.path.join(old_checkout, "tests", "experiments"))
import study_world  # noqa: E402  (the old one when recording the old code)

study_world.hash = lambda key: zlib.crc32(repr((key.model, key.data, key.init, key.seed)).encode())  # = stable_hash
scenarios = {}
for name, spec in study_scenarios.SCENARIOS.items():
    c, measures, sim, diag = study_scenarios.build(spec, study_world)
    if study_verdicts is not None:
        result = study_verdicts.evaluate(c, measures, study_world.LABELS, diag, sim)
    else:
        result, _ = study_world.verdicts_of(c, measures, sim, diag)
    scenarios[name] = study_scenarios.record(result)
with open(out_path, "w") as f:
    f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in scenarios.items()))
    f.write("\n}\n")
print(f"wrote {out_path}: {len(scenarios)} scenarios ({'the old' if study_verdicts else 'today'}'s code)")
