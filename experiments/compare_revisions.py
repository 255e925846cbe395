"""The update (or one model part) of an earlier revision and of the working tree, timed by turns.

    python -m experiments.compare_revisions --config=configs/movi_a.py \
        --config.train.batch_size=4 --old=1dc16ea [--part=unet] --rounds=8

`compare_xla_options` does this for compiler options; this does it for code. The package
`vonet_jax` of revision --old is copied out of git into a temporary directory as `vonet_jax_old`
(its imports renamed), both packages' updates are lowered and compiled at the config's shapes
(`benchmark_train.lower_update`; with --part, one part of `experiments.model_parts`: its forward +
backward alone; --part=collection: the replay collection step), and the two executables run by
turns, each round in the reverse order of the last, after one untimed round. Prints each run, both
medians and means, and in how many rounds the working tree was faster (--json_out: also to a JSON
file). On this shared machine an update's time drifts by a third within minutes: separate benchmark
runs cannot tell changes of a few per cent apart; rounds in one process can, given enough of them
(the spread of the differences says how many). The old revision must have the same entry points
(`train_step.make_train_step`, `init_train_state`, `make_collect_step`, the parts' modules) and
read the same config.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
from absl import flags

from experiments.benchmark_train import FLAGS
from experiments.by_turns import run_by_turns
from experiments.runners import compiled_runner
from vonet_jax import host_memory, process_setup

flags.DEFINE_string("old", None, "The git revision to compare the working tree with.")

_ROOT = pathlib.Path(__file__).resolve().parent.parent
OLD_PACKAGE = "vonet_jax_old"


def export_package(revision: str, directory: pathlib.Path) -> None:
  """Writes revision's `vonet_jax` to directory/vonet_jax_old, imports renamed to match."""
  archive = subprocess.run(["git", "-C", str(_ROOT), "archive", revision, "vonet_jax"],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
  package = directory / OLD_PACKAGE
  (directory / "vonet_jax").rename(package)
  for path in package.rglob("*.py"):
    path.write_text(re.sub(r"\bvonet_jax\b", OLD_PACKAGE, path.read_text()))


def main(argv):
  del argv
  if not FLAGS.old:
    sys.exit("compare_revisions: give the revision to compare with, e.g. --old=HEAD~1")
  directory = tempfile.TemporaryDirectory()  # removed when the program ends
  export_package(FLAGS.old, pathlib.Path(directory.name))
  sys.path.insert(0, directory.name)
  runs = {name: compiled_runner(FLAGS.config, FLAGS.part, package)[1]
          for name, package in (("working tree", "vonet_jax"), (FLAGS.old, OLD_PACKAGE))}
  host_memory.release_freed_memory()
  times = run_by_turns(runs, FLAGS.rounds)
  new, old = times.values()
  differences = np.subtract(old, new)
  summary = dict(config=FLAGS.config.data.name, batch_size=FLAGS.config.train.batch_size,
                 part=FLAGS.part or "update", old=FLAGS.old,
                 median_s={name: float(np.median(t)) for name, t in times.items()},
                 mean_s={name: float(np.mean(t)) for name, t in times.items()},
                 runs_s=times, working_tree_faster_in=int((differences > 0).sum()),
                 mean_gain_s=float(differences.mean()),
                 gain_standard_error_s=float(differences.std(ddof=1) / np.sqrt(len(differences)))
                 if len(differences) > 1 else None)
  print(json.dumps({k: v for k, v in summary.items() if k != "runs_s"}, indent=1))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  process_setup.run(main)
