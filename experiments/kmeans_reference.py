"""Non-learned reference: k-means on colour and position, scored like the model.

    python -m experiments.kmeans_reference --config=configs/synthetic_learn.py \\
        --json_out=experiments/results/kmeans_synthetic.json

Clusters each validation video's pixels (all frames jointly) into config.model.num_slots segments
with `vonet_jax.kmeans_baseline` and scores them with the same FG-ARI / mIoU code and the same
videos as `--mode=eval`. Expected wall time: about 0.1-0.3 s per video.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from vonet_jax import data, kmeans_baseline, metrics

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("num_videos", None, "First validation videos only.")
flags.DEFINE_string("json_out", None, "Write the per-video and mean scores here.")


def main(argv):
  del argv
  config = FLAGS.config
  k = config.model.num_slots
  results = []
  for video in data.validation_videos(config, FLAGS.num_videos):
    pred = kmeans_baseline.kmeans_segmentation(video["video"], k, seed=config.seed)
    ari, iou = metrics.fg_ari_and_miou(video["segmentations"][None], pred[None], k)
    results.append(dict(name=video["name"], fg_ari=float(ari[0]), miou=float(iou[0])))
  summary = {m: metrics.summarize([r[m] for r in results]) for m in ("fg_ari", "miou")}
  print(f"k-means (K={k}) on {len(results)} videos of {config.data.name}: "
        f"FG-ARI {100 * summary['fg_ari']['mean']:.1f}, mIoU {100 * summary['miou']['mean']:.1f}")
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump(dict(summary, videos=results, num_segments=k), f, indent=1)


if __name__ == "__main__":
  app.run(main)
