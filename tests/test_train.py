"""End-to-end tests of training: resume after SIGKILL, checkpoint errors, non-finite loss,
evaluation on the real MOVi-A sample.

The runs go through `python -m vonet_jax.main` in subprocesses (as a user would) on
configs/tiny.py; the test run's persistent compilation cache (conftest.py) keeps recompiles cheap.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.paths import ROOT, SAMPLE, needs_sample

# The tiny config on the real MOVi-A sample: no dataset build needed.
MOVI = ["--config.data.name=movi_a", f"--config.data.data_dir={SAMPLE}",
        "--config.data.num_frames=24"]


@pytest.fixture(scope="module")
def env():
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")


def main_command(workdir, *overrides, mode="train"):
  return [sys.executable, "-m", "vonet_jax.main", "--config=configs/tiny.py",
          f"--workdir={workdir}", f"--mode={mode}", *MOVI, *overrides]


def run_main(env, workdir, *overrides, mode="train", check=True):
  result = subprocess.run(main_command(workdir, *overrides, mode=mode), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  if check and result.returncode != 0:
    raise AssertionError(f"exit {result.returncode}:\n{result.stderr[-3000:]}")
  return result


def final_params(workdir, step):
  """Parameters of checkpoint `step`, as a flat {path: array} dict (restored in this process)."""
  from configs import tiny
  from vonet_jax import evaluate
  config = tiny.get_config()
  config.data.num_frames = 24
  _, variables = evaluate.restore_variables(config, str(workdir), step)
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}


def committed(workdir, step):
  return (workdir / "checkpoints" / str(step) / "commit_success.txt").exists()


# An 8-iteration run with checkpoints 4 and 8 and pictures at iteration 5: the reference of the
# resume test and the starting point of the checkpoint-error test (one run for both).
N = 4
COMMON = [f"--config.train.num_iterations={2 * N}", f"--config.checkpoint_every={N}",
          f"--config.log_images_every={N + 1}"]


@pytest.fixture(scope="module")
def straight(env, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight") / "run"
  run_main(env, workdir, *COMMON)
  return workdir


@needs_sample
def test_resume_after_sigkill_is_exact(env, straight, tmp_path):
  # The straight run again, killed (SIGKILL) once checkpoint N is committed, while iteration
  # N + 1 compiles its picture function; then resumed.
  killed = tmp_path / "killed"
  proc = subprocess.Popen(main_command(killed, *COMMON), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not committed(killed, N) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not committed(killed, 2 * N)
  run_main(env, killed, *COMMON)
  a, b = final_params(straight, 2 * N), final_params(killed, 2 * N)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@needs_sample
def test_the_summaries_hold_the_losses_and_the_video_wait(straight):
  from vonet_jax import summaries
  tags = ("loss", "dvae_mse", "token_ce", "kl_total", "beta", "replay_fill", "video_wait_s")
  scalars = {tag: summaries.read_scalars(straight, tag) for tag in tags}
  for tag in tags:
    assert sorted(scalars.get(tag, {})) == [2, 4, 6, 8], (tag, sorted(scalars))
  wait = [scalars["video_wait_s"][step] for step in (2, 4, 6, 8)]
  assert all(w >= 0 for w in wait) and wait == sorted(wait)  # seconds in all: never decreases
  assert all(np.isfinite(list(scalars["loss"].values())))


@needs_sample
def test_checkpoint_errors_and_non_finite_loss(env, straight, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)  # checkpoints 4 and 8
  # Another config: one line naming the mismatched shapes, no traceback, nothing deleted.
  other = run_main(env, workdir, "--config.train.num_iterations=12", "--config.model.slot_size=8",
                   check=False)
  assert other.returncode == 2
  assert "Traceback" not in other.stderr
  line = other.stderr.strip().splitlines()[-1]
  assert line.startswith("error:") and "saved" in line and "expected" in line, line
  assert committed(workdir, 4) and committed(workdir, 8)
  # A truncated newest checkpoint: falls back to the previous good one with a warning.
  (workdir / "checkpoints" / "8" / "commit_success.txt").unlink()
  result = run_main(env, workdir, "--config.train.num_iterations=8", "--config.eval.seeds=1",
                    mode="eval")
  assert "corrupt" in result.stderr and "Evaluated step 4" in result.stdout
  assert (workdir / "checkpoints" / "8.corrupt").is_dir()  # kept, not deleted
  # A non-finite loss stops training, keeps the last good checkpoint and saves nothing new.
  bad = run_main(env, workdir, "--config.train.num_iterations=8", "--config.train.beta_max=inf",
                 check=False)
  assert bad.returncode == 2
  assert "non-finite loss" in bad.stderr.strip().splitlines()[-1]
  steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert "4" in steps and "5" not in steps and "8" not in steps


@needs_sample
def test_evaluation_on_the_movi_a_sample(env, tmp_path):
  workdir = tmp_path / "run"
  relative = os.path.relpath(workdir, ROOT)  # as users type it (orbax needs absolute paths)
  result = run_main(env, relative, "--config.train.num_iterations=4", "--config.eval.seeds=2",
                    "--config.checkpoint_every=2",
                    "--config.train.release_memory_every=0", mode="train_eval")
  report = json.loads((workdir / "eval" / "4" / "metrics.json").read_text())
  assert report["num_videos"] == 2 and report["across_seeds"]["fg_ari"]["seeds"] == 2
  for seed in report["per_seed"]:
    assert sorted(v["name"] for v in seed["videos"]) == ["1055", "1142"]
    for v in seed["videos"]:
      assert 0.0 <= v["miou"] <= 1.0 and -1.0 <= v["fg_ari"] <= 1.0
  assert "FG-ARI" in result.stdout and "mIoU" in result.stdout
  # experiments/slot_diagnostics.py on the same run: the untrained variables and checkpoint 4.
  rows_json = tmp_path / "diagnostics.json"
  subprocess.run([sys.executable, "-m", "experiments.slot_diagnostics", "--config=configs/tiny.py",
                  *MOVI, f"--workdir={workdir}", "--num_videos=2", "--steps=4", "--untrained",
                  f"--json_out={rows_json}"], cwd=ROOT, env=env, check=True, capture_output=True,
                 timeout=600)
  rows = json.loads(rows_json.read_text())
  assert [r["step"] for r in rows] == [0, 4]
  for r in rows:
    assert len(r["fg_ari_per_frame"]) == 24 and len(r["slot_spread"]) == 24
    assert 1 <= r["codebook"]["words"] <= 32  # configs/tiny.py's vocabulary
