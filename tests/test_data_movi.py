"""Tests of vonet_jax.data.movi on the real MOVi-A sample (10 train + 2 validation videos).

The sample lives beside the project at ../shared/data/tfds (see that folder's README); tests that
need it skip when it is absent. The error tests need nothing.
"""
import collections
import hashlib
import itertools
import socket
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from tests.paths import SAMPLE, needs_sample
from vonet_jax.data import movi
from vonet_jax.errors import UserError

NUM_TRAIN = 10


def sample_config(**data):
  config = base.get_base_config()
  config.data.data_dir = str(SAMPLE)
  config.data.update(data)
  return config


def fingerprint(video):
  return hashlib.sha1(np.ascontiguousarray(video).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def stored_train():
  """Counter of the train split's video fingerprints, read with plain TFDS."""
  builder = tfds.builder("movi_a/128x128:1.0.0", data_dir=str(SAMPLE))
  stored = builder.as_dataset("train", decoders=tfds.decode.PartialDecoding({"video": True}))
  return collections.Counter(fingerprint(v["video"]) for v in tfds.as_numpy(stored))


@pytest.fixture(scope="module")
def train_stream_head():
  """The first 3 epochs (30 videos) of the stream from the start."""
  return [v["video"] for v in itertools.islice(movi.train_videos(sample_config()), 3 * NUM_TRAIN)]


@needs_sample
def test_validation_reads_every_video_once_in_order():
  videos = list(movi.validation_videos(sample_config()))
  assert sorted(v["name"] for v in videos) == ["1055", "1142"]
  for v in videos:
    assert v["video"].shape == (24, 128, 128, 3) and v["video"].dtype == np.uint8
    assert v["segmentations"].shape == (24, 128, 128) and v["segmentations"].dtype == np.int32
    ids = np.unique(v["segmentations"])
    assert ids[0] == 0 and 1 <= ids[-1] <= 24  # background plus objects 1..n, MOVi-A: n <= 10
    assert isinstance(v["name"], str)
  again = list(movi.validation_videos(sample_config()))
  assert [v["name"] for v in again] == [v["name"] for v in videos]
  assert all((a["video"] == b["video"]).all() for a, b in zip(again, videos))


@needs_sample
def test_validation_num_videos():
  assert len(list(movi.validation_videos(sample_config(), num_videos=1))) == 1
  assert len(list(movi.validation_videos(sample_config(), num_videos=5))) == 2
  assert not list(movi.validation_videos(sample_config(), num_videos=0))


@needs_sample
def test_train_stream_is_endless_and_each_epoch_is_a_permutation(train_stream_head, stored_train):
  epochs = [train_stream_head[i * NUM_TRAIN:(i + 1) * NUM_TRAIN] for i in range(3)]
  counts = [collections.Counter(fingerprint(v) for v in epoch) for epoch in epochs]
  assert counts[0] == counts[1] == counts[2] == stored_train  # the whole split, every epoch
  orders = [[fingerprint(v) for v in epoch] for epoch in epochs]
  assert orders[0] != orders[1] or orders[1] != orders[2]  # reshuffled per epoch
  for video in train_stream_head:
    assert video.shape == (24, 128, 128, 3) and video.dtype == np.uint8


@needs_sample
@pytest.mark.parametrize("start", [1, 9, 10, 23])
def test_train_stream_resumes_exactly(train_stream_head, start):
  resumed = itertools.islice(movi.train_videos(sample_config(), start=start),
                             len(train_stream_head) - start)
  for got, want in itertools.zip_longest(resumed, train_stream_head[start:]):
    assert got is not None and want is not None
    np.testing.assert_array_equal(got["video"], want)


@needs_sample
def test_train_stream_is_split_between_processes(monkeypatch, stored_train):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  parts = []
  for index in (0, 1):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    parts.append([fingerprint(v["video"]) for v in
                  itertools.islice(movi.train_videos(sample_config()), NUM_TRAIN // 2)])
  assert collections.Counter(parts[0] + parts[1]) == stored_train  # disjoint halves


@needs_sample
def test_train_stream_order_follows_the_seed_or_video_order_seed(train_stream_head):
  config = sample_config()
  config.seed = 1
  other = [fingerprint(v["video"]) for v in itertools.islice(movi.train_videos(config),
                                                              NUM_TRAIN)]
  mine = [fingerprint(v) for v in train_stream_head[:NUM_TRAIN]]
  assert sorted(other) == sorted(mine) and other != mine
  config.video_order_seed = 0  # seed 0's order, whatever config.seed says
  again = [fingerprint(v["video"]) for v in itertools.islice(movi.train_videos(config),
                                                              NUM_TRAIN)]
  assert again == mine


@needs_sample
def test_resize_to_64_and_fewer_frames():
  full = next(movi.validation_videos(sample_config(), num_videos=1))
  small = next(movi.validation_videos(sample_config(resolution=64, num_frames=6), num_videos=1))
  assert small["name"] == full["name"]
  assert small["video"].shape == (6, 64, 64, 3) and small["video"].dtype == np.uint8
  assert small["segmentations"].shape == (6, 64, 64)
  assert small["segmentations"].dtype == np.int32
  area = full["video"][:6].astype(np.float64).reshape(6, 64, 2, 64, 2, 3).mean(axis=(2, 4))
  assert np.abs(small["video"] - area).max() <= 1.0  # area average, rounded
  # Nearest neighbour: every id is one of the four ids of its 2x2 block.
  blocks = full["segmentations"][:6].reshape(6, 64, 2, 64, 2)
  assert (blocks == small["segmentations"][:, :, None, :, None]).any(axis=(2, 4)).all()
  train = next(movi.train_videos(sample_config(resolution=64)))
  assert train["video"].shape == (24, 64, 64, 3) and train["video"].dtype == np.uint8


def test_missing_dataset_fails_fast_with_one_line(tmp_path):
  config = base.get_base_config()
  config.data.data_dir = str(tmp_path)
  start = time.monotonic()
  with pytest.raises(UserError) as error:
    movi.train_videos(config)  # raised by the call, before any item is asked for
  assert time.monotonic() - start < 10
  message = str(error.value)
  assert "\n" not in message
  for needle in ("movi_a", str(tmp_path), "gsutil -m cp -r gs://kubric-public/tfds/movi_a",
                 "--config.data.data_dir", "configs/synthetic_small.py"):
    assert needle in message
  with pytest.raises(UserError):
    movi.validation_videos(config)


def test_unreachable_gcs_fails_fast(monkeypatch):
  config = base.get_base_config()  # data_dir: gs://kubric-public/tfds

  def no_dns(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_dns)
  with pytest.raises(UserError, match=r"unreachable in data_dir gs://kubric-public/tfds"):
    next(movi.train_videos(config))

  def hangs(*args, **kwargs):
    time.sleep(30)

  monkeypatch.setattr(socket, "getaddrinfo", hangs)
  monkeypatch.setattr(movi, "REMOTE_TIMEOUT_S", 0.2)
  start = time.monotonic()
  with pytest.raises(UserError, match="no answer within"):
    next(movi.validation_videos(config))
  assert time.monotonic() - start < 5


def test_bad_config_values():
  config = base.get_base_config()
  config.data.name = "movi_z"
  with pytest.raises(UserError, match="config.data.name"):
    next(movi.train_videos(config))
  config = base.get_base_config()
  config.data.num_frames = 30
  with pytest.raises(UserError, match="num_frames"):
    next(movi.validation_videos(config))
