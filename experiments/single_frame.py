"""The paper's Table 2: VONet on single frames (image FG-ARI / mIoU) for MOVi-C, D, E.

    python -m experiments.single_frame --root=runs/single_frame --data_dir=/data/tfds
    python -m experiments.single_frame --dry_run

Protocol: sequence length 1 (--config.train.segment_length=1), no replay (fresh initial slots for
every frame, --config.replay.enabled=False), and evaluation on frames as independent images
(--config.eval.independent_frames=True: fresh slots per frame, FG-ARI / mIoU per frame, averaged
per video, then over videos). Prints the table beside the paper's numbers and writes
<root>/table2.json. Expected wall time: one full training run per (dataset, seed).
"""
import json
import pathlib

from absl import app, flags

from experiments import launcher

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "runs/single_frame", "Folder of the runs' workdirs.")
flags.DEFINE_list("datasets", ["movi_c", "movi_d", "movi_e"], "Config names.")
flags.DEFINE_integer("seeds", 1, "Seeds per dataset.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_list("extra", [], "Extra --config.x=y overrides for every run.")
flags.DEFINE_bool("dry_run", False, "Only print the commands.")

PROTOCOL = ["--config.train.segment_length=1", "--config.replay.enabled=False",
            "--config.eval.independent_frames=True"]
PAPER = {"movi_c": (47.0, 36.2), "movi_d": (51.0, 28.5), "movi_e": (50.3, 18.1)}


def main(argv):
  del argv
  runs = [launcher.Run(f"{d}_single_seed{s}", d, s, PROTOCOL)
          for d in FLAGS.datasets for s in range(FLAGS.seeds)]
  results = launcher.run_all(runs, FLAGS.root, FLAGS.data_dir, FLAGS.extra, FLAGS.dry_run)
  if FLAGS.dry_run:
    return
  lines, table = launcher.paper_table(results, runs, PAPER, ("image FG-ARI", "image mIoU"))
  print("\n".join(lines))
  pathlib.Path(FLAGS.root, "table2.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
  app.run(main)
