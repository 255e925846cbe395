"""The paper's Table 1: FG-ARI and mIoU of VONet on MOVi-A..E, 3 seeds each.

    python -m experiments.table1 --root=runs/table1 --data_dir=/data/tfds            # train + eval
    python -m experiments.table1 --root=runs/table1 --dry_run                         # commands only
    python -m experiments.table1 --root=runs/table1 --datasets=movi_a --seeds=1 \\
        --extra=--config.train.num_iterations=2000                                    # a short try

Trains (or reuses existing workdirs under --root) 5 datasets x --seeds runs with the configs of
SPEC.md section 1, evaluates each on the whole validation split, and prints Table 1 as markdown
beside the paper's numbers (SPEC.md section 6); also writes <root>/table1.json. Expected wall
time: the paper needed about 36 h per run on 4x RTX 3090; see the README for our per-update
figures.
"""
import json
import pathlib

from absl import app, flags

from experiments import launcher

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "runs/table1", "Folder of the runs' workdirs.")
flags.DEFINE_list("datasets", ["movi_a", "movi_b", "movi_c", "movi_d", "movi_e"], "Datasets.")
flags.DEFINE_integer("seeds", 3, "Seeds per dataset.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the config's, the public bucket).")
flags.DEFINE_list("extra", [], "Extra --config.x=y overrides for every run.")
flags.DEFINE_bool("dry_run", False, "Only print the commands.")

PAPER = {  # SPEC.md section 6: (FG-ARI, mIoU), percent, mean ± std of 3 seeds.
    "movi_a": ("91.0 ± 1.5", "60.5 ± 2.0"), "movi_b": ("60.6 ± 0.8", "59.7 ± 2.9"),
    "movi_c": ("45.3 ± 0.4", "42.8 ± 0.5"), "movi_d": ("50.7 ± 1.1", "37.7 ± 0.3"),
    "movi_e": ("56.3 ± 0.5", "36.4 ± 0.7")}


def main(argv):
  del argv
  runs = [launcher.Run(f"{d}_seed{s}", d, s) for d in FLAGS.datasets for s in range(FLAGS.seeds)]
  results = launcher.run_all(runs, FLAGS.root, FLAGS.data_dir, FLAGS.extra, FLAGS.dry_run)
  if FLAGS.dry_run:
    return
  lines, table = launcher.paper_table(results, runs, PAPER)
  print("\n".join(lines))
  pathlib.Path(FLAGS.root, "table1.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
  app.run(main)
