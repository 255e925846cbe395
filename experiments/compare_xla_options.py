"""Updates compiled with different XLA:CPU options, timed alternately in one process.

    python -m experiments.compare_xla_options --config=configs/movi_a.py \
        --config.train.batch_size=4 --options=xla_cpu_experimental_ynn_fusion_type=reduce

On a shared machine an update's time drifts by a third or more within minutes, so two
benchmark runs one after the other can disagree more than two kernel choices do. Here the
update is compiled once with the process's options (the baseline: XLA_FLAGS and
`process_setup.prepare()`) and once more per --options entry (compile options overriding them:
`name=value` pairs joined by `;`; enum values as XLA's flags take them, e.g. `reduce`,
`dot,reduce`), and the executables take turns on the same state, each round in the reverse
order of the last, so that every variant sees the same windows. Prints each update's time and
each variant's median and mean over --rounds rounds after one untimed round, and how many library
(YNNPACK) fusions its executable holds (--json_out: also to a JSON file).
"""
import functools
import json
import os

import numpy as np
from absl import flags

from experiments.benchmark_train import FLAGS, UpdateLoop, lower_update
from experiments.by_turns import run_by_turns
from vonet_jax import host_memory, process_setup

flags.DEFINE_multi_string("options", [], "A variant's compile options, `name=value;...`.")

# XLA's flags take these enums' values in lower case; compile options take the proto's names.
_ENUM_PREFIXES = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_"}


def parse_options(text: str) -> dict:
  """`"a=x;b=y"` -> {"a": "x", "b": "y"}, enum lists spelt as compile options want them."""
  options = {}
  for item in filter(None, text.split(";")):
    name, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--options entry {item!r} is not name=value")
    prefix = _ENUM_PREFIXES.get(name)
    if prefix:
      value = ",".join(prefix + v.strip().upper() for v in value.split(",") if v.strip())
    options[name] = value
  return options


def main(argv):
  del argv
  setup = lower_update(FLAGS.config)
  variants = {"baseline": {}} | {text: parse_options(text) for text in FLAGS.options}
  compiled = {name: setup.lowered.compile(compiler_options=opts) for name, opts in variants.items()}
  # Library (YNNPACK) fusions in each executable: shows that a variant's options took effect.
  fusions = {name: c.as_text().count("kind=kCustom") for name, c in compiled.items()}
  print("library fusions per variant:", fusions, flush=True)
  host_memory.release_freed_memory()
  loop = UpdateLoop(setup)  # one state, advanced by every variant in turn
  times = run_by_turns({name: functools.partial(loop, c) for name, c in compiled.items()},
                       FLAGS.rounds)
  summary = {name: dict(median_s=float(np.median(t)), mean_s=float(np.mean(t)), runs_s=t,
                       library_fusions=fusions[name]) for name, t in times.items()}
  for name, s in summary.items():
    print(f"{name}: median {s['median_s']:.3f} s, mean {s['mean_s']:.3f} s")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(dict(config=FLAGS.config.data.name, batch_size=FLAGS.config.train.batch_size,
                     xla_flags=os.environ.get("XLA_FLAGS", ""), variants=summary), f, indent=1)


if __name__ == "__main__":
  process_setup.run(main)
