"""MOVi videos (and the built-in `synthetic_movi`) from TFDS as numpy, for training and evaluation.

`config.data.name` picks the dataset: 'movi_a'..'movi_e' read `{name}/128x128:1.0.0` from
`config.data.data_dir` (default: the public copy gs://kubric-public/tfds), 'synthetic' reads the
built-in dataset of `synthetic.py`, building it there on first use. Both go through
`tfds.builder` / a TFDS builder and the same reading code. Only `video` (and, for evaluation,
`segmentations` and the video name) are parsed; depth, flow, instances etc. are never decoded.
Frames are resized on the host when `config.data.resolution` differs from the stored one (area
for downscaling, bilinear for upscaling; nearest for segmentations), and cut to the first
`config.data.num_frames` frames.

Training stream (`train_videos`), exactly resumable:
  * each process reads its own part of the train split (`tfds.split_for_jax_process`);
  * epoch e visits the process's shard files in an order drawn from (seed, process, e) and
    cuts the records, in that order, into blocks of `config.data.shuffle_buffer` videos;
  * each block is emitted in an order drawn from (seed, process, e, block);
  seed = config.video_order_seed, or config.seed where that is -1.
So item n of the stream is a pure function of n: `train_videos(config, start=n)` seeks to it
by skipping whole shards without reading them, reading raw records of at most one shard and one
block (no decoding), and it then equals the stream from 0 without its first n items.
"""
import dataclasses
import os
import socket
import threading
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vonet_jax import seeds
from vonet_jax.errors import UserError

try:  # TensorFlow must not take GPU memory from JAX (SPEC.md section 8).
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised by someone else
  pass

MOVI_NAMES = ("movi_a", "movi_b", "movi_c", "movi_d", "movi_e")
MOVI_RESOLUTION = 128
MOVI_VERSION = "1.0.0"
STORED_FRAMES = 24
REMOTE_TIMEOUT_S = 10.0
_HOW_TO_GET_MOVI = (
    "copy it locally with `gsutil -m cp -r gs://kubric-public/tfds/{name} <dir>` and pass "
    "--config.data.data_dir=<dir>, or use the built-in dataset (--config=configs/"
    "synthetic_small.py)")


@dataclasses.dataclass(frozen=True)
class _Source:
  """An opened dataset: its builder, the splits to read, the stored frame size."""
  builder: tfds.core.DatasetBuilder
  train_split: str
  validation_split: str
  stored_resolution: int


def train_videos(config, start: int = 0) -> Iterator[dict]:
  """Endless, shuffled stream of this process's training videos.

  Args:
    config: the experiment config (uses config.data.*, config.seed, config.video_order_seed).
    start: videos of the stream already consumed (by this process); the stream resumes there.

  Returns:
    An endless iterator of {'video': uint8[T, H, W, 3]}, T = config.data.num_frames,
    H = W = config.data.resolution. A missing dataset or a bad config raises UserError here,
    not at the first item.
  """
  if start < 0:
    raise UserError(f"train_videos start must be >= 0 (got {start}): pass the number of videos "
                    f"already consumed")
  source = _open(config)
  instructions = list(source.builder.info.splits[
      tfds.split_for_jax_process(source.train_split)].file_instructions)
  count = sum(instruction.take for instruction in instructions)
  if count == 0:
    raise UserError(f"process {_process_index()} got no training videos of {source.train_split} "
                    f"({_process_count()} processes): use fewer processes or more videos")
  block = max(1, min(int(config.data.shuffle_buffer), count))
  seed = seeds.seed_of(config, "video_order_seed")
  return _train_stream(source, instructions, count, block, int(seed) & 0xFFFFFFFF, start, config)


def _train_stream(source: _Source, instructions, count: int, block: int, seed: int, start: int,
                  config) -> Iterator[dict]:
  """The generator behind `train_videos` (which checks everything before it starts)."""
  features = _video_features(source.builder)
  epoch, position = divmod(start, count)
  first_block, offset = divmod(position, block)
  while True:
    rng = np.random.default_rng([seed, _process_index(), epoch, 0])
    order = [instructions[i] for i in rng.permutation(len(instructions))]
    permutations = _block_permutations(seed, epoch, count, block)[first_block:]
    dataset = _epoch_dataset(order, first_block * block, block, permutations, features, config,
                             source.stored_resolution)
    for example in tfds.as_numpy(dataset.skip(offset)):
      yield {"video": example["video"]}
    epoch, first_block, offset = epoch + 1, 0, 0


def validation_videos(config, num_videos: int | None = None,
                      shard_by_process: bool = False, split: str = "validation") -> Iterator[dict]:
  """One deterministic pass over the validation split, in stored order.

  Args:
    config: the experiment config.
    num_videos: read only the first `num_videos` videos (None: all).
    shard_by_process: if True, this process reads only its part of them
      (`tfds.split_for_jax_process`); by default every process reads all.
    split: "validation", or "train" to score training videos the same way (the training
      summaries' rollout scores).

  Returns:
    A finite iterator of {'video': uint8[T, H, W, 3], 'segmentations': int32[T, H, W]
    (0 = background), 'name': str (the video's metadata/video_name)}. Errors raise here.
  """
  if num_videos is not None and num_videos < 0:
    raise UserError(f"num_videos must be >= 0 or None (got {num_videos})")
  source = _open(config)
  split = source.validation_split if split == "validation" else source.train_split
  if num_videos is not None:
    available = source.builder.info.splits[split].num_examples
    if num_videos == 0:
      return iter(())
    # The splits are whole ("validation") or a prefix ("validation[:50]"): take a shorter prefix.
    split = f"{split.split('[')[0]}[:{min(int(num_videos), available)}]"
  if shard_by_process:
    split = tfds.split_for_jax_process(split)
  dataset = source.builder.as_dataset(
      split=split, shuffle_files=False,
      decoders=tfds.decode.PartialDecoding(
          {"video": True, "segmentations": True, "metadata": {"video_name": True}}),
      read_config=tfds.ReadConfig(interleave_cycle_length=1))
  resize = _resizer(config, source.stored_resolution)
  dataset = dataset.map(
      lambda example: {
          "video": resize(example["video"], "video"),
          "segmentations": resize(tf.cast(example["segmentations"][..., 0], tf.int32),
                                  "segmentations"),
          "name": example["metadata"]["video_name"],
      }, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
  return _with_str_names(tfds.as_numpy(dataset))


def _with_str_names(examples) -> Iterator[dict]:
  for example in examples:
    example["name"] = example["name"].decode()
    yield example


def _open(config) -> _Source:
  """Resolves config.data into an opened dataset (builds the synthetic one if needed)."""
  data = config.data
  name, data_dir = str(data.name), str(data.data_dir)
  if int(data.resolution) < 1:
    raise UserError(f"config.data.resolution must be positive (got {data.resolution})")
  if not 1 <= int(data.num_frames) <= STORED_FRAMES:
    raise UserError(f"config.data.num_frames={data.num_frames} is not in 1..{STORED_FRAMES} "
                    f"(videos have {STORED_FRAMES} frames): set it in that range")
  if name == "synthetic":
    # Imported here: it loads PyBullet and registers the builder, which MOVi does not need.
    from vonet_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    if "://" in data_dir:
      raise UserError(f"the built-in dataset is built locally, but data_dir is {data_dir}: "
                      f"set --config.data.data_dir to a local folder")
    stored = synthetic.stored_resolution(int(data.resolution))
    builder, train, validation = synthetic.ensure_dataset(
        data_dir, stored, synthetic.GenerationParams.from_config(config))
    return _Source(builder, train, validation, stored)
  if name not in MOVI_NAMES:
    raise UserError(f"unknown dataset config.data.name={name!r}: use one of "
                    f"{', '.join(MOVI_NAMES)} or 'synthetic'")
  if "://" not in data_dir:
    data_dir = os.path.expanduser(data_dir)
  _check_movi_present(name, data_dir)
  builder = tfds.builder(f"{name}/{MOVI_RESOLUTION}x{MOVI_RESOLUTION}:{MOVI_VERSION}",
                         data_dir=data_dir)
  return _Source(builder, "train", "validation", MOVI_RESOLUTION)


def _check_movi_present(name: str, data_dir: str):
  """UserError within about REMOTE_TIMEOUT_S unless the MOVi dataset's files are there."""
  info_file = os.path.join(data_dir, name, f"{MOVI_RESOLUTION}x{MOVI_RESOLUTION}", MOVI_VERSION,
                           "dataset_info.json")
  where = f"MOVi dataset {name}/{MOVI_RESOLUTION}x{MOVI_RESOLUTION}:{MOVI_VERSION}"
  fix = _HOW_TO_GET_MOVI.format(name=name)
  if "://" not in data_dir:
    if not os.path.isfile(info_file):
      raise UserError(f"{where} not found in data_dir {data_dir} (no {info_file}): {fix}")
    return
  if data_dir.startswith("gs://"):
    problem = _first_error(lambda: socket.getaddrinfo("storage.googleapis.com", 443),
                           REMOTE_TIMEOUT_S)
    if problem:
      raise UserError(f"{where} unreachable in data_dir {data_dir} (no network: {problem}): "
                      f"{fix}")
  found = {}
  problem = _first_error(lambda: found.update(ok=tf.io.gfile.exists(info_file)),
                         REMOTE_TIMEOUT_S)
  if problem:
    raise UserError(f"{where} unreachable in data_dir {data_dir} ({problem}): {fix}")
  if not found.get("ok"):
    raise UserError(f"{where} not found in data_dir {data_dir} (no {info_file}): {fix}")


def _first_error(function, timeout_s: float) -> str | None:
  """Runs `function` in a daemon thread; returns a one-line problem, or None if it worked."""
  outcome = {}

  def run():
    try:
      function()
      outcome["ok"] = True
    except Exception as error:  # pylint: disable=broad-except
      outcome["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:200]

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    return f"no answer within {timeout_s:.0f} s"
  return outcome.get("error")


def _video_features(builder) -> tfds.features.FeaturesDict:
  """The builder's features pruned to `video`: parsing skips every other field."""
  return tfds.decode.PartialDecoding({"video": True}).extract_features(builder.info.features)


def _block_permutations(seed: int, epoch: int, count: int, block: int) -> np.ndarray:
  """int64[num_blocks, block]: row b orders block b of the epoch (the last block's row starts
  with a permutation of its own, shorter length)."""
  rows = []
  for b, begin in enumerate(range(0, count, block)):
    size = min(block, count - begin)
    rng = np.random.default_rng([seed, _process_index(), epoch, 1, b])
    row = np.arange(block)
    row[:size] = rng.permutation(size)
    rows.append(row)
  return np.stack(rows)


def _epoch_dataset(instructions, first_record: int, block: int, permutations: np.ndarray,
                   features, config, stored_resolution: int) -> tf.data.Dataset:
  """Decoded videos of one epoch from record `first_record` on (a block boundary).

  Args:
    instructions: this epoch's file instructions, in reading order.
    first_record: records of the epoch to pass over unread (whole shards) or unparsed.
    block: shuffle block size; permutations: int64[blocks left, block].
    features: pruned features (`_video_features`); config: for resizing.
    stored_resolution: frame size on disk.
  """
  files, skips, takes = [], [], []
  to_drop = first_record
  for instruction in instructions:
    take = instruction.take
    if to_drop >= take:  # whole shard passed over without opening it
      to_drop -= take
      continue
    files.append(instruction.filename)
    skips.append(instruction.skip + to_drop)
    takes.append(take - to_drop)
    to_drop = 0
  records = tf.data.Dataset.from_tensor_slices(
      (tf.constant(files, tf.string), tf.constant(skips, tf.int64),
       tf.constant(takes, tf.int64))).flat_map(
           lambda file, skip, take: tf.data.TFRecordDataset(file).skip(skip).take(take))
  encoded = records.map(
      lambda record: features.deserialize_example(
          record, decoders={"video": tfds.decode.SkipDecoding()})["video"],
      num_parallel_calls=tf.data.AUTOTUNE)
  blocks = tf.data.Dataset.zip(
      encoded.batch(block), tf.data.Dataset.from_tensor_slices(permutations))
  ordered = blocks.map(lambda videos, order: tf.gather(videos, order[:tf.shape(videos)[0]]))
  ordered = ordered.prefetch(1).unbatch()
  resize = _resizer(config, stored_resolution)
  video_feature = features["video"]
  decoded = ordered.map(
      lambda frames: {"video": resize(video_feature.decode_example(frames), "video")},
      num_parallel_calls=tf.data.AUTOTUNE)
  return decoded.prefetch(4)


def _resizer(config, stored_resolution: int):
  """(tensor [T, S, S(, 3)], kind) -> tensor [T', R, R(, 3)] cut to num_frames, resized."""
  size = int(config.data.resolution)
  frames = int(config.data.num_frames)

  def resize(x, kind):
    x = x[:frames]
    if size == stored_resolution:
      return x
    if kind == "segmentations":
      return tf.image.resize(x[..., None], (size, size), method="nearest")[..., 0]
    method = "area" if size < stored_resolution else "bilinear"
    x = tf.image.resize(tf.cast(x, tf.float32), (size, size), method=method)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)

  return resize


def _process_index() -> int:
  return jax.process_index()


def _process_count() -> int:
  return jax.process_count()
