"""The built-in MOVi-style dataset `synthetic_movi`: a TFDS builder and its command line.

Videos come from `simulate.py` (PyBullet physics, TinyRenderer pictures, MOVi-A scene recipe).
The dataset has MOVi's feature names and types for the fields it has, so `movi.py` reads it with
the code that reads MOVi:

  video          Video uint8 [24, H, W, 3] (PNG frames)
  segmentations  Sequence(Image uint8 [H, W, 1]), length 24; 0 = background, objects 1..n
  metadata       video_name (Text), num_instances (uint16), num_frames, height, width (int32)
  camera         positions [24, 3], quaternions [24, 4], focal_length, sensor_width, field_of_view
  instances      Sequence of shape_label / size_label / material_label / color_label (ClassLabel,
                 MOVi's label names), color, mass, friction, restitution, positions [24, 3],
                 quaternions [24, 4], velocities [24, 3], visibility uint16 [24]

Builder configs '64x64' and '128x128' (version 1.0.0); splits `train` and `validation`.
Video i of a split depends only on (seed, split, i): the seed sequence is (seed, 0 or 1, i), and
the resolution only changes how it is drawn. Examples are stored in index order.

Generation parameters (counts, object range, seed, camera zoom) are builder arguments, recorded in
the dataset's metadata.json. `zoom` multiplies the camera's focal length (1: MOVi-A's camera; 2: the
middle of the same scene, objects twice as large in pixels). `ensure_dataset` accepts an existing
dataset made with the same seed, object range and zoom and at least as many videos as asked (it then
reads the first ones: the same videos a smaller build would have made); anything else is a
`UserError` saying to delete the folder or pick another data_dir. Building takes a lock file, so
processes sharing a data_dir build once. `num_workers` > 1 simulates in a spawn process pool (each
worker starts in a few seconds; the content does not depend on the number of workers).

Command line (absl flags; `--help` lists them):

    python -m vonet_jax.data.synthetic --data_dir=~/tensorflow_datasets --num_videos=200 \\
        --num_validation_videos=20 --resolution=128 [--num_workers=N]
"""
import contextlib
import dataclasses
import fcntl
import functools
import multiprocessing
import os
import time

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vonet_jax.data import simulate
from vonet_jax.errors import UserError

NAME = "synthetic_movi"
RESOLUTIONS = (64, 128)
NUM_FRAMES = 24
SPLIT_IDS = {"train": 0, "validation": 1}
MAX_OBJECTS = 24  # ids >= 25 count as background in the metrics (SPEC.md section 5)
MAX_ZOOM = 4.0  # beyond it most objects leave the picture


@dataclasses.dataclass(frozen=True)
class GenerationParams:
  """What a `synthetic_movi` dataset holds, besides its resolution."""
  num_train_videos: int = 200
  num_validation_videos: int = 20
  min_objects: int = 3
  max_objects: int = 10
  seed: int = 0
  zoom: float = 1.0  # camera focal length / MOVi-A's (render.field_of_view); 1: MOVi-A

  @classmethod
  def from_config(cls, config) -> "GenerationParams":
    """From `config.data.synthetic`; raises UserError on impossible values."""
    s = config.data.synthetic
    params = cls(num_train_videos=int(s.num_train_videos),
                 num_validation_videos=int(s.num_validation_videos),
                 min_objects=int(s.min_objects), max_objects=int(s.max_objects),
                 seed=int(s.seed), zoom=float(s.zoom))
    params.check()
    return params

  def check(self):
    if self.num_train_videos < 1 or self.num_validation_videos < 1:
      raise UserError(
          f"synthetic dataset needs at least one train and one validation video (got "
          f"{self.num_train_videos} and {self.num_validation_videos}): raise "
          f"config.data.synthetic.num_train_videos / num_validation_videos")
    if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
      raise UserError(
          f"synthetic dataset object range {self.min_objects}..{self.max_objects} is invalid: "
          f"set config.data.synthetic.min_objects / max_objects with "
          f"1 <= min <= max <= {MAX_OBJECTS}")
    if not 1.0 <= self.zoom <= MAX_ZOOM:
      raise UserError(f"synthetic dataset zoom {self.zoom} is invalid: set "
                      f"config.data.synthetic.zoom between 1 (MOVi-A's camera) and {MAX_ZOOM}")

  def describe(self) -> str:
    return (f"{self.num_train_videos} train + {self.num_validation_videos} validation videos, "
            f"{self.min_objects}-{self.max_objects} objects, zoom {self.zoom:g}, seed {self.seed}")


@dataclasses.dataclass(eq=False)
class SyntheticMoviConfig(tfds.core.BuilderConfig):
  """One resolution of the dataset."""
  resolution: int = 128


class SyntheticMovi(tfds.core.GeneratorBasedBuilder,
                    skip_registration=__name__ != "vonet_jax.data.synthetic"):
  """MOVi-A-style videos simulated with PyBullet and rendered with TinyRenderer."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [
      SyntheticMoviConfig(name=f"{r}x{r}", resolution=r, description=f"{r}x{r} frames")
      for r in RESOLUTIONS
  ]
  # Nothing is downloaded, so there is no checksums file to find next to this module; without
  # this, TFDS 4.9.10 looks for one and needs the `importlib_resources` package to do so.
  code_path = None

  def __init__(self, *, params: GenerationParams = GenerationParams(), num_workers: int = 1,
               **kwargs):
    """`params`: what to generate (metadata of an existing dataset wins when reading)."""
    self._params = params
    self._num_workers = num_workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    t = NUM_FRAMES
    float32 = np.float32
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.splitlines()[0],
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(t, r, r, 3)),
            "segmentations": tfds.features.Sequence(
                tfds.features.Image(shape=(r, r, 1), dtype=np.uint8), length=t),
            "metadata": {
                "video_name": tfds.features.Text(),
                "num_instances": np.uint16,
                "num_frames": np.int32,
                "height": np.int32,
                "width": np.int32,
            },
            "camera": {
                "positions": tfds.features.Tensor(shape=(t, 3), dtype=float32),
                "quaternions": tfds.features.Tensor(shape=(t, 4), dtype=float32),
                "focal_length": float32,
                "sensor_width": float32,
                "field_of_view": float32,
            },
            "instances": tfds.features.Sequence({
                "shape_label": tfds.features.ClassLabel(names=simulate.SHAPES),
                "size_label": tfds.features.ClassLabel(names=simulate.SIZES),
                "material_label": tfds.features.ClassLabel(names=simulate.MATERIALS),
                "color_label": tfds.features.ClassLabel(names=simulate.COLORS),
                "color": tfds.features.Tensor(shape=(3,), dtype=float32),
                "mass": float32,
                "friction": float32,
                "restitution": float32,
                "positions": tfds.features.Tensor(shape=(t, 3), dtype=float32),
                "quaternions": tfds.features.Tensor(shape=(t, 4), dtype=float32),
                "velocities": tfds.features.Tensor(shape=(t, 3), dtype=float32),
                "visibility": tfds.features.Tensor(shape=(t,), dtype=np.uint16),
            }),
        }),
        metadata=tfds.core.MetadataDict(dataclasses.asdict(self._params)),
        disable_shuffling=True,  # stored in index order: train[:n] = videos 0..n-1
        homepage="https://github.com/google-research/kubric",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    p = self._params
    return {
        "train": self._generate_examples("train", p.num_train_videos),
        "validation": self._generate_examples("validation", p.num_validation_videos),
    }

  def _generate_examples(self, split: str, count: int):
    """Yields (index, example) for videos 0..count-1 of `split`, in order."""
    p = self._params
    make = functools.partial(  # picklable (a function of `simulate`) for worker processes
        simulate.simulate_video, resolution=self.builder_config.resolution,
        min_objects=p.min_objects, max_objects=p.max_objects, num_frames=NUM_FRAMES,
        zoom=p.zoom)
    entropies = [(p.seed, SPLIT_IDS[split], i) for i in range(count)]
    with _mapper(self._num_workers) as map_in_order:
      progress = tqdm.tqdm(map_in_order(make, entropies), total=count, desc=f"{NAME} {split}",
                           unit="video")
      for i, example in enumerate(progress):
        example["metadata"]["video_name"] = f"{split}_{i:06d}"
        yield i, example


@contextlib.contextmanager
def _mapper(num_workers: int):
  """Yields an in-order, lazy map(function, items): built-in, or over a spawn process pool."""
  if num_workers <= 1:
    yield map
    return
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield lambda function, items: pool.imap(function, items, chunksize=1)


def stored_resolution(resolution: int) -> int:
  """The builder config read for a wanted resolution: the smallest stored one at least as
  large, else 128 (the loader resizes on the host)."""
  return min((r for r in RESOLUTIONS if r >= resolution), default=max(RESOLUTIONS))


def ensure_dataset(data_dir: str, resolution: int, params: GenerationParams,
                   num_workers: int = 1):
  """Builds the dataset if absent and checks an existing one against `params`.

  Args:
    data_dir: TFDS data directory (`~` expanded).
    resolution: 64 or 128.
    params: what must be there.
    num_workers: processes simulating videos when building (1: this process).

  Returns:
    (builder, train_split, validation_split): a TFDS builder ready to read, and the split
    names holding exactly the videos `params` asks for (e.g. 'train[:40]').
  """
  params.check()
  if resolution not in RESOLUTIONS:
    raise UserError(f"synthetic dataset resolution {resolution} is not one of {RESOLUTIONS}: "
                    f"use one of those")
  data_dir = os.path.expanduser(data_dir)
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as error:
    raise UserError(f"cannot create data_dir {data_dir} for the built-in dataset "
                    f"({error.strerror}): set --config.data.data_dir to a writable "
                    f"folder") from None
  with _lock(os.path.join(data_dir, f".{NAME}_{resolution}x{resolution}.lock")):
    builder = SyntheticMovi(config=f"{resolution}x{resolution}", data_dir=data_dir,
                            params=params, num_workers=num_workers)
    if not builder.is_prepared():
      tfds.disable_progress_bar()  # our own bar counts videos
      builder.download_and_prepare()
    _check_stored(builder, params)
  return (builder, f"train[:{params.num_train_videos}]",
          f"validation[:{params.num_validation_videos}]")


def _check_stored(builder, params: GenerationParams):
  """UserError unless the stored dataset holds the videos `params` asks for."""
  stored = {"zoom": 1.0, **(builder.info.metadata or {})}  # datasets from before zoom existed
  try:
    have = GenerationParams(**{field.name: field.type(stored[field.name])
                               for field in dataclasses.fields(GenerationParams)})
  except (KeyError, TypeError, ValueError):
    have = None
  ok = (have is not None and have.seed == params.seed and have.zoom == params.zoom
        and have.min_objects == params.min_objects and have.max_objects == params.max_objects
        and have.num_train_videos >= params.num_train_videos
        and have.num_validation_videos >= params.num_validation_videos)
  if not ok:
    what = have.describe() if have else "unknown parameters"
    raise UserError(
        f"built-in dataset at {builder.data_dir} holds {what}, the config asks for "
        f"{params.describe()}: delete {os.path.dirname(builder.data_dir)} to rebuild it, or set "
        f"--config.data.data_dir to another folder")


@contextlib.contextmanager
def _lock(path: str):
  """An exclusive advisory lock on `path` (processes sharing a data_dir build once); none if
  the file cannot be created (a read-only data_dir can still be read)."""
  try:
    handle = open(path, "a")  # pylint: disable=consider-using-with
  except OSError:
    yield
    return
  with handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  params = GenerationParams(num_train_videos=f.num_videos,
                            num_validation_videos=f.num_validation_videos,
                            min_objects=f.min_objects, max_objects=f.max_objects, seed=f.seed,
                            zoom=f.zoom)
  start = time.perf_counter()
  try:
    builder, _, _ = ensure_dataset(f.data_dir, f.resolution, params, num_workers=f.num_workers)
  except UserError as error:
    print(f"error: {error}")
    raise SystemExit(2) from None
  seconds = time.perf_counter() - start
  total = params.num_train_videos + params.num_validation_videos
  print(f"{NAME}/{f.resolution}x{f.resolution} at {builder.data_dir}: {params.describe()}; "
        f"{seconds:.1f} s ({total / seconds:.2f} videos/s including any reuse)")


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  defaults = GenerationParams()
  flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "TFDS data directory.")
  flags.DEFINE_integer("num_videos", defaults.num_train_videos, "Training videos.")
  flags.DEFINE_integer("num_validation_videos", defaults.num_validation_videos,
                       "Validation videos.")
  flags.DEFINE_integer("resolution", 128, f"Frame height = width, one of {RESOLUTIONS}.")
  flags.DEFINE_integer("min_objects", defaults.min_objects, "Fewest objects per video.")
  flags.DEFINE_integer("max_objects", defaults.max_objects, "Most objects per video.")
  flags.DEFINE_integer("seed", defaults.seed, "Dataset seed.")
  flags.DEFINE_float("zoom", defaults.zoom, "Camera focal length / MOVi-A's (larger objects).")
  flags.DEFINE_integer("num_workers", 1, "Processes simulating videos in parallel.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  # Use the registered builder of the importable module (this file runs as __main__).
  from vonet_jax.data import synthetic as _synthetic  # pylint: disable=import-self
  _define_flags()
  app.run(_synthetic.main)
