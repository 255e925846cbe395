"""Video data: MOVi through TFDS and the built-in MOVi-style dataset.

`train_videos` and `validation_videos` (from `movi.py`) are imported lazily, so that the
simulation modules (`simulate.py`, `render.py`) load without TensorFlow in worker processes.
"""

__all__ = ["train_videos", "validation_videos"]


def __getattr__(name):
  if name in __all__:
    from vonet_jax.data import movi  # pylint: disable=import-outside-toplevel
    return getattr(movi, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
