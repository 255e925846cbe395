"""Tests of the built-in MOVi-style dataset: simulation, rendering, TFDS builder, loader, CLI.

Tiny videos (64x64, 2-4 objects) keep the whole file fast.
"""
import collections
import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pybullet
import pytest

from configs import synthetic_small
from vonet_jax.data import movi
from vonet_jax.data import render
from vonet_jax.data import simulate
from vonet_jax.data import synthetic
from vonet_jax.errors import UserError

RESOLUTION = 64
NUM_TRAIN, NUM_VALIDATION = 3, 2


def tiny_config(data_dir, **synthetic_values):
  config = synthetic_small.get_config()
  config.data.data_dir = str(data_dir)
  config.data.resolution = RESOLUTION
  config.data.synthetic.update(num_train_videos=NUM_TRAIN, num_validation_videos=NUM_VALIDATION,
                               min_objects=2, max_objects=4, seed=7)
  config.data.synthetic.update(synthetic_values)
  return config


def fingerprint(video):
  return hashlib.sha1(np.ascontiguousarray(video).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A data_dir where the loader built the tiny dataset on first use."""
  path = tmp_path_factory.mktemp("tfds")
  list(movi.validation_videos(tiny_config(path)))
  return path


def test_same_seed_same_bytes_regardless_of_history():
  first = simulate.simulate_video((7, 0, 1), RESOLUTION, 2, 4)
  simulate.simulate_video((7, 0, 2), RESOLUTION, 2, 4)  # other work in between
  again = simulate.simulate_video((7, 0, 1), RESOLUTION, 2, 4)
  np.testing.assert_array_equal(first["video"], again["video"])
  np.testing.assert_array_equal(first["segmentations"], again["segmentations"])
  other = simulate.simulate_video((7, 0, 3), RESOLUTION, 2, 4)
  assert not np.array_equal(first["video"], other["video"])


@pytest.mark.parametrize("index", range(4))
def test_segmentation_agrees_with_the_pictures(index):
  video = simulate.simulate_video((0, 0, index), RESOLUTION, 3, 6)
  frames, segmentations = video["video"], video["segmentations"][..., 0]
  n = video["metadata"]["num_instances"]
  assert frames.shape == (24, RESOLUTION, RESOLUTION, 3) and frames.dtype == np.uint8
  assert segmentations.dtype == np.uint8 and len(video["instances"]) == n
  assert segmentations.max() <= n
  counts = np.stack([np.bincount(s.ravel(), minlength=n + 1) for s in segmentations])
  for k, instance in enumerate(video["instances"], start=1):
    np.testing.assert_array_equal(instance["visibility"], counts[:, k])  # ids 1..n all visible
    assert counts[:, k].sum() > 0
    if k > 1:  # Kubric order: most visible first
      assert counts[:, k].sum() <= counts[:, k - 1].sum()
  # The floor and its shadows are grey; every object pixel shows its object's colour.
  background = frames[segmentations == 0].astype(int)
  assert (background[:, 0] == background[:, 1]).all() and (
      background[:, 1] == background[:, 2]).all()
  for k, instance in enumerate(video["instances"], start=1):
    pixels = frames[segmentations == k].astype(np.float64)
    rgb = np.asarray(simulate.COLOR_RGB[instance["color_label"]], np.float64)
    # TinyRenderer shades a flat colour: pixel = colour * intensity, up to rounding (checked
    # where no channel is clipped at 255).
    unclipped = pixels[(pixels < 255).all(axis=1)]
    assert len(unclipped) >= len(pixels) // 2
    intensity = unclipped @ rgb / (rgb @ rgb)
    assert np.abs(unclipped - intensity[:, None] * rgb[None]).max() <= 2.0
    assert instance["color_label"] == "gray" or np.ptp(pixels, axis=1).min() > 0


def test_floor_coordinates_match_the_renderer():
  """A thin disc on the floor covers the pixels whose floor point is inside it."""
  client = simulate._client()  # pylint: disable=protected-access
  pybullet.resetSimulation(physicsClientId=client)
  camera = render.sample_camera(np.random.default_rng(3))
  centre, radius = np.array([1.5, -0.5]), 1.0
  visual = pybullet.createVisualShape(pybullet.GEOM_CYLINDER, radius=radius, length=0.01,
                                      rgbaColor=[1, 0, 0, 1], physicsClientId=client)
  disc = pybullet.createMultiBody(0, -1, visual, basePosition=[*centre, 0.005],
                                  physicsClientId=client)
  _, body_ids = render.render_frame(client, camera, RESOLUTION, np.zeros(3, np.uint8))
  distance = np.linalg.norm(camera.floor_coordinates(RESOLUTION) - centre, axis=-1)
  assert (distance[body_ids == disc] < radius + 0.15).all()
  assert (body_ids[distance < radius - 0.15] == disc).all()
  assert (body_ids == disc).sum() > 20


def test_loader_round_trip(data_dir):
  config = tiny_config(data_dir)
  validation = list(movi.validation_videos(config))
  assert [v["name"] for v in validation] == ["validation_000000", "validation_000001"]
  for i, v in enumerate(validation):
    expected = simulate.simulate_video((7, 1, i), RESOLUTION, 2, 4)
    np.testing.assert_array_equal(v["video"], expected["video"])  # PNG is lossless
    np.testing.assert_array_equal(v["segmentations"], expected["segmentations"][..., 0])
    assert v["segmentations"].dtype == np.int32
    assert v["segmentations"].max() == expected["metadata"]["num_instances"]
  stream = [v["video"] for v in itertools.islice(movi.train_videos(config), 2 * NUM_TRAIN)]
  expected = collections.Counter(
      fingerprint(simulate.simulate_video((7, 0, i), RESOLUTION, 2, 4)["video"])
      for i in range(NUM_TRAIN))
  assert collections.Counter(fingerprint(v) for v in stream[:NUM_TRAIN]) == expected
  assert collections.Counter(fingerprint(v) for v in stream[NUM_TRAIN:]) == expected
  resumed = [v["video"] for v in itertools.islice(movi.train_videos(config, start=2), 4)]
  assert [fingerprint(v) for v in resumed] == [fingerprint(v) for v in stream[2:]]


def test_fewer_videos_than_stored_reads_a_prefix(data_dir):
  config = tiny_config(data_dir, num_train_videos=1, num_validation_videos=1)
  names = [v["name"] for v in movi.validation_videos(config)]
  assert names == ["validation_000000"]
  # A prefix of the (already prefixed) split, and the same reader on training videos.
  assert [v["name"] for v in movi.validation_videos(config, num_videos=1)] == names
  train = list(movi.validation_videos(config, num_videos=5, split="train"))
  assert [v["name"] for v in train] == ["train_000000"]
  first = next(movi.train_videos(config))["video"]
  np.testing.assert_array_equal(first, simulate.simulate_video((7, 0, 0), RESOLUTION, 2, 4)[
      "video"])


def test_stored_dataset_that_does_not_match_is_a_one_line_error(data_dir):
  for changed in (dict(num_train_videos=NUM_TRAIN + 1), dict(seed=8), dict(max_objects=5),
                  dict(zoom=2.0)):
    with pytest.raises(UserError) as error:
      next(movi.train_videos(tiny_config(data_dir, **changed)))
    message = str(error.value)
    assert "\n" not in message and "delete" in message and "data_dir" in message


def test_bad_generation_parameters():
  with pytest.raises(UserError, match="min_objects"):
    synthetic.GenerationParams(min_objects=5, max_objects=4).check()
  with pytest.raises(UserError, match="at least one"):
    synthetic.GenerationParams(num_validation_videos=0).check()
  with pytest.raises(UserError, match="zoom"):
    synthetic.GenerationParams(zoom=0.5).check()


def test_zoom_magnifies_the_same_scene():
  """Zoom 2 shows the middle of the same scene: the same objects, twice as large in pixels."""
  wide = simulate.simulate_video((0, 0, 1), RESOLUTION, 3, 5)
  close = simulate.simulate_video((0, 0, 1), RESOLUTION, 3, 5, zoom=2.0)
  assert close["camera"]["focal_length"] == 2 * wide["camera"]["focal_length"]
  np.testing.assert_array_equal(close["instances"][0]["positions"],
                                wide["instances"][0]["positions"])
  # The middle half of the wide picture, upsampled 2x, against the zoomed picture.
  q = RESOLUTION // 4
  middle = (wide["segmentations"][:, q:-q, q:-q, 0] > 0).repeat(2, axis=1).repeat(2, axis=2)
  zoomed = close["segmentations"][..., 0] > 0
  assert zoomed.mean() > 2 * (wide["segmentations"] > 0).mean()
  assert (middle == zoomed).mean() > 0.97


def test_command_line_builds_and_prints_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "vonet_jax.data.synthetic", f"--data_dir={tmp_path}",
       "--num_videos=1", "--num_validation_videos=1", "--resolution=64", "--max_objects=3"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = result.stdout.strip().splitlines()[-1]
  assert summary.startswith("synthetic_movi/64x64 at ") and "1 train + 1 validation" in summary
  assert (tmp_path / "synthetic_movi" / "64x64" / "1.0.0" / "dataset_info.json").is_file()
