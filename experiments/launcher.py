"""Shared launcher of the paper's table scripts: train + evaluate runs, then collect metrics.

Each run is `python -m vonet_jax.main --config=configs/<dataset>.py --workdir=<root>/<name>
--mode=train_eval --config.seed=<seed> [overrides]`; a run whose workdir already holds an
evaluation (`eval/<step>/metrics.json`) is not repeated, so the scripts also aggregate existing
workdirs (e.g. trained elsewhere, on GPUs).
"""
import dataclasses
import json
import pathlib
import subprocess
import sys
from typing import Optional, Sequence


@dataclasses.dataclass
class Run:
  name: str
  dataset: str
  seed: int
  overrides: Sequence[str] = ()

  def workdir(self, root) -> pathlib.Path:
    return pathlib.Path(root) / self.name

  def command(self, root, data_dir: Optional[str], extra: Sequence[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "vonet_jax.main", f"--config=configs/{self.dataset}.py",
           f"--workdir={self.workdir(root)}", "--mode=train_eval", f"--config.seed={self.seed}",
           *self.overrides, *extra]
    if data_dir:
      cmd.append(f"--config.data.data_dir={data_dir}")
    return cmd


def latest_metrics(workdir) -> Optional[dict]:
  """The metrics.json of the newest evaluated step in workdir, or None."""
  evals = sorted((pathlib.Path(workdir) / "eval").glob("*/metrics.json"),
                 key=lambda p: int(p.parent.name))
  return json.loads(evals[-1].read_text()) if evals else None


def run_all(runs: Sequence[Run], root, data_dir=None, extra=(), dry_run=False) -> dict:
  """Trains and evaluates every run lacking results; returns {run name: metrics or None}."""
  results = {}
  for i, run in enumerate(runs):
    cmd = run.command(root, data_dir, extra)
    if dry_run:
      print(" ".join(cmd))
      continue
    metrics = latest_metrics(run.workdir(root))
    if metrics is None:
      print(f"[{i + 1}/{len(runs)}] {run.name}: {' '.join(cmd)}", flush=True)
      subprocess.run(cmd, check=True)
      metrics = latest_metrics(run.workdir(root))
    else:
      print(f"[{i + 1}/{len(runs)}] {run.name}: existing evaluation found", flush=True)
    results[run.name] = metrics
  return results


def seed_scores(results: dict, names) -> dict:
  """{fg_ari: [...], miou: [...]}: each named run's across-seeds mean (one value per run)."""
  ours = [results[name]["across_seeds"] for name in names]
  return {key: [o[key]["mean"] for o in ours] for key in ("fg_ari", "miou")}


def seed_mean_std(values) -> str:
  """'m ± s' in percent of a list of fractions (population std over seeds)."""
  import numpy as np
  values = np.asarray(values, np.float64) * 100
  return f"{values.mean():.1f} ± {values.std():.1f}" if values.size else "–"


def paper_table(results: dict, runs: Sequence[Run], paper: dict, labels=("FG-ARI", "mIoU")):
  """Markdown lines of our scores beside the paper's, one row per dataset of `runs`, and the
  per-dataset scores ({dataset: seed_scores(...)}).

  paper: {dataset: (FG-ARI, mIoU)} as printed ('–' where the paper has no number).
  labels: the names of the two scores, e.g. ("image FG-ARI", "image mIoU").
  """
  ari_label, iou_label = labels
  lines = [f"| dataset | {ari_label} (ours) | {ari_label} (paper) | {iou_label} (ours) | "
           f"{iou_label} (paper) | seeds |", "|---|---|---|---|---|---|"]
  table = {}
  for d in dict.fromkeys(run.dataset for run in runs):  # in order, once each
    table[d] = seed_scores(results, [run.name for run in runs if run.dataset == d])
    ari, iou = table[d]["fg_ari"], table[d]["miou"]
    paper_ari, paper_iou = paper.get(d, ("–", "–"))
    lines.append(f"| {d} | {seed_mean_std(ari)} | {paper_ari} | {seed_mean_std(iou)} | "
                 f"{paper_iou} | {len(ari)} |")
  return lines, table
