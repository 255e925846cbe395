"""Executes experiments/explore_checkpoint.ipynb top to bottom against a tiny checkpoint."""
import os
import subprocess
import sys

import nbformat
from nbclient import NotebookClient

from tests.paths import ROOT, SAMPLE, needs_sample


@needs_sample
def test_notebook_runs_on_a_tiny_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-m", "vonet_jax.main", "--config=configs/tiny.py",
                  f"--workdir={workdir}", "--config.train.num_iterations=2",
                  "--config.data.name=movi_a", f"--config.data.data_dir={SAMPLE}",
                  "--config.data.num_frames=24"], cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=600)
  nb = nbformat.read(ROOT / "experiments" / "explore_checkpoint.ipynb", as_version=4)
  choices = [c for c in nb.cells if c.cell_type == "code" and "#@title Paths" in c.source]
  assert len(choices) == 1
  choices[0].source = (f'WORKDIR = {str(workdir)!r}\nCONFIG = "configs/tiny.py"\nSTEP = -1\n'
                       f'VIDEO_INDEX = 1\nSEED = 0\nRECONSTRUCT = True\n'
                       f'OVERRIDES = {{"data.name": "movi_a", "data.data_dir": {str(SAMPLE)!r}, '
                       f'"data.num_frames": 24}}\n')
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(ROOT)}})
  client.execute()  # raises CellExecutionError on any failing cell
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "Restored step 2" in outputs and "FG-ARI" in outputs
  images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
  assert images >= 4  # segmentation, KL, reconstruction, PCA
