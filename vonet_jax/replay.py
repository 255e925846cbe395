"""Host-side experience collection and replay for VONet training (SPEC.md section 4).

Two numpy classes, no JAX:

- `VideoWorkers`: W parallel "workers", each playing one training video frame by frame and taking
  the next video of a shared stream when it reaches the end of its own.
- `ReplayBuffer`: per-worker FIFO ring buffers of (frame, input state, frame index) steps, and
  stratified uniform sampling of segments of T consecutive stored steps.

Shapes use W = workers, C = capacity per worker, F = frames per collection call, T = segment
length (or video length for `VideoWorkers`), B = batch size, K = slots, D = slot size.

Time bookkeeping of the buffer: all workers add in lockstep, so every worker has the same number
of steps ever added, `steps_added`. Step number s of a worker ("logical time") lives in ring slot
s % C; the steps still stored are s in [steps_added - fill, steps_added), fill = min(steps_added,
C). Sampled segments report their start in logical time.
"""
from typing import Any, Dict, Iterator, Mapping, Tuple

import numpy as np

VideoStream = Iterator[Mapping[str, Any]]


class VideoWorkers:
  """W workers playing training videos frame by frame, each from frame 0 to its last.

  A worker that has shown the last frame of its video takes the next video of the shared stream
  the next time it must show a frame. When several workers need a video at the same step they
  take them in increasing worker order, so the stream order fully determines who plays what.
  Nothing is drawn from the stream before the first `next_frames` call.

  Resume: save `state_dict()`; on restart build the stream so that its first element is video
  number `videos_consumed` of the original stream (e.g. skip that many), construct the workers
  with it and call `load_state_dict`. Subsequent frames are then identical.
  """

  def __init__(self, videos: VideoStream, num_workers: int, num_frames: int,
               frame_shape: Tuple[int, int, int]):
    """Args:
      videos: iterator of dicts with 'video' uint8 [num_frames, H, W, 3] (other keys ignored).
      num_workers: W.
      num_frames: frames per video, T.
      frame_shape: (H, W, 3).
    """
    self._stream = videos
    self.num_workers = int(num_workers)
    self.num_frames = int(num_frames)
    self.frame_shape = tuple(int(s) for s in frame_shape)
    # Current video of every worker, [W, T, H, W, 3]; zeros until first loaded.
    self._videos = np.zeros((self.num_workers, self.num_frames) + self.frame_shape, np.uint8)
    # Index of the next frame each worker shows, [W]; T means "needs a new video".
    self._positions = np.full((self.num_workers,), self.num_frames, np.int64)
    self.videos_consumed = 0

  @property
  def positions(self) -> np.ndarray:
    """int64 [W]: index of the frame each worker shows next (T: takes a new video first)."""
    return self._positions.copy()

  def _load_next_video(self, worker: int):
    """Copies the next video of the stream into `worker`'s slot and rewinds it to frame 0."""
    try:
      element = next(self._stream)
    except StopIteration:
      raise RuntimeError(
          f"The training video stream ended after {self.videos_consumed} videos; "
          "VideoWorkers needs an endless (repeating) stream.") from None
    video = np.asarray(element["video"])
    expected = (self.num_frames,) + self.frame_shape
    if video.shape != expected or video.dtype != np.uint8:
      raise ValueError(f"Training video has shape {video.shape} and dtype {video.dtype}; "
                       f"expected uint8 {expected}.")
    self._videos[worker] = video
    self._positions[worker] = 0
    self.videos_consumed += 1

  def next_frames(self, num_frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Advances every worker by `num_frames` (F) frames.

    Returns:
      frames: uint8 [W, F, H, W, 3], the frames shown, in order.
      frame_index: int32 [W, F], index of each frame within its video (0: first frame, reset).
    """
    num_frames = int(num_frames)
    w = self.num_workers
    frames = np.empty((w, num_frames) + self.frame_shape, np.uint8)
    frame_index = np.empty((w, num_frames), np.int32)
    rows = np.arange(w)
    for f in range(num_frames):
      for worker in np.flatnonzero(self._positions >= self.num_frames):
        self._load_next_video(int(worker))
      frames[:, f] = self._videos[rows, self._positions]
      frame_index[:, f] = self._positions
      self._positions += 1
    return frames, frame_index

  def state_dict(self) -> Dict[str, np.ndarray]:
    """Copies of the state: videos uint8 [W,T,H,W,3], positions int64 [W], videos_consumed []."""
    return {
        "videos": self._videos.copy(),
        "positions": self._positions.copy(),
        "videos_consumed": np.asarray(self.videos_consumed, np.int64),
    }

  def load_state_dict(self, state: Mapping[str, Any]):
    """Restores `state_dict()` output (copied in); the stream is not touched, see class doc."""
    videos = np.asarray(state["videos"])
    positions = np.asarray(state["positions"])
    if videos.shape != self._videos.shape or positions.shape != self._positions.shape:
      raise ValueError(f"VideoWorkers state has videos {videos.shape}, positions "
                       f"{positions.shape}; expected {self._videos.shape}, "
                       f"{self._positions.shape}.")
    if np.any(positions < 0) or np.any(positions > self.num_frames):
      raise ValueError(f"VideoWorkers state has positions outside [0, {self.num_frames}].")
    self._videos[...] = videos
    self._positions[...] = positions
    self.videos_consumed = int(np.asarray(state["videos_consumed"]))


class ReplayBuffer:
  """Per-worker FIFO ring buffers of steps (frame, input state r_{t-1}, frame index).

  Storage is preallocated once: frames uint8 [W, C, H, W, 3], states float32 [W, C, K, D],
  frame_index int32 [W, C]. All workers add the same number of steps per call.

  Sampling scheme (`sample`): of B segments, every worker gets floor(B / W); the B mod W
  remaining segments go to distinct workers drawn uniformly without replacement. Segments come
  out sorted by worker. Each segment's start is uniform over the fill - T + 1 logical times whose
  T steps are all stored (a segment never wraps from the newest step to the oldest one).
  """

  def __init__(self, num_workers: int, capacity_per_worker: int,
               frame_shape: Tuple[int, int, int], state_shape: Tuple[int, int],
               segment_length: int = 3):
    """Args:
      num_workers: W.
      capacity_per_worker: C, steps kept per worker (oldest overwritten first).
      frame_shape: (H, W, 3).
      state_shape: (K, D), the recurrent state stored with each step.
      segment_length: T, steps per sampled segment.
    """
    self.num_workers = int(num_workers)
    self.capacity = int(capacity_per_worker)
    self.frame_shape = tuple(int(s) for s in frame_shape)
    self.state_shape = tuple(int(s) for s in state_shape)
    self.segment_length = int(segment_length)
    if self.segment_length < 1 or self.segment_length > self.capacity:
      raise ValueError(f"segment_length {self.segment_length} must be in [1, capacity "
                       f"{self.capacity}].")
    w, c = self.num_workers, self.capacity
    # np.zeros maps pages lazily: untouched storage costs no memory.
    self._frames = np.zeros((w, c) + self.frame_shape, np.uint8)
    self._states = np.zeros((w, c) + self.state_shape, np.float32)
    self._frame_index = np.zeros((w, c), np.int32)
    self._steps_added = 0

  # --- Bookkeeping ------------------------------------------------------------------------

  @property
  def steps_added(self) -> int:
    """Steps ever added per worker (logical time of the next step)."""
    return self._steps_added

  @property
  def fill(self) -> int:
    """Steps currently stored per worker, min(steps_added, C)."""
    return min(self._steps_added, self.capacity)

  @property
  def write_pointer(self) -> int:
    """Ring slot the next step goes to."""
    return self._steps_added % self.capacity

  @property
  def num_steps(self) -> int:
    """Steps currently stored over all workers, W * fill."""
    return self.num_workers * self.fill

  def ready(self, min_frames: int) -> bool:
    """Whether at least `min_frames` steps are stored in all and a segment can be sampled."""
    return self.num_steps >= min_frames and self.fill >= self.segment_length

  # --- Writing ----------------------------------------------------------------------------

  def add(self, frames: np.ndarray, states: np.ndarray, frame_index: np.ndarray):
    """Appends F steps to every worker's ring, overwriting the oldest once full.

    Args:
      frames: uint8 [W, F, H, W, 3].
      states: float [W, F, K, D], the INPUT state of each step (cast to float32).
      frame_index: int [W, F], index of each frame in its video (0: reset).
    """
    frames = np.asarray(frames)
    states = np.asarray(states)
    frame_index = np.asarray(frame_index)
    w = self.num_workers
    if frames.ndim != 5 or frames.shape[0] != w or frames.shape[2:] != self.frame_shape:
      raise ValueError(f"frames {frames.shape}; expected [{w}, F, {self.frame_shape}].")
    num_new = frames.shape[1]
    if states.shape != (w, num_new) + self.state_shape:
      raise ValueError(f"states {states.shape}; expected {(w, num_new) + self.state_shape}.")
    if frame_index.shape != (w, num_new):
      raise ValueError(f"frame_index {frame_index.shape}; expected {(w, num_new)}.")
    if frames.dtype != np.uint8:
      raise ValueError(f"frames dtype {frames.dtype}; expected uint8.")
    # More than C new steps: only the last C survive.
    skip = max(num_new - self.capacity, 0)
    slots = (self._steps_added + skip + np.arange(num_new - skip)) % self.capacity
    self._frames[:, slots] = frames[:, skip:]
    self._states[:, slots] = states[:, skip:]
    self._frame_index[:, slots] = frame_index[:, skip:]
    self._steps_added += num_new

  # --- Sampling ---------------------------------------------------------------------------

  def sample(self, batch_size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Samples B segments of T consecutive stored steps (scheme in the class docstring).

    Returns a dict of fresh arrays:
      frames: uint8 [B, T, H, W, 3].
      state: float32 [B, K, D], stored input state of each segment's first step.
      frame_index: int32 [B, T]; 0 where a new video starts (the unroll resets there).
      worker: int32 [B].
      start: int32 [B], logical time of each segment's first step.
    """
    t = self.segment_length
    num_starts = self.fill - t + 1
    if num_starts < 1:
      raise RuntimeError(f"ReplayBuffer holds {self.fill} steps per worker, fewer than the "
                         f"segment length {t}.")
    w = self.num_workers
    base, extra = divmod(int(batch_size), w)
    worker = np.concatenate(
        [np.repeat(np.arange(w), base), rng.choice(w, size=extra, replace=False)])
    worker = np.sort(worker).astype(np.int32)
    oldest = self._steps_added - self.fill
    start = oldest + rng.integers(0, num_starts, size=worker.shape[0])
    slots = (start[:, None] + np.arange(t)) % self.capacity            # [B, T]
    return {
        "frames": self._frames[worker[:, None], slots],
        "state": self._states[worker, slots[:, 0]],
        "frame_index": self._frame_index[worker[:, None], slots],
        "worker": worker,
        "start": start.astype(np.int32),
    }

  # --- Checkpointing ----------------------------------------------------------------------

  def state_dict(self) -> Dict[str, np.ndarray]:
    """The full state as numpy arrays. Storage arrays are VIEWS of the live buffer (no copy):
    save them before the next `add`.

    Keys: frames uint8 [W,C,H,W,3], states float32 [W,C,K,D], frame_index int32 [W,C],
    steps_added int64 [] (write_pointer int64 [] and fill int64 [] are derived, for reading).
    """
    return {
        "frames": self._frames,
        "states": self._states,
        "frame_index": self._frame_index,
        "steps_added": np.asarray(self._steps_added, np.int64),
        "write_pointer": np.asarray(self.write_pointer, np.int64),
        "fill": np.asarray(self.fill, np.int64),
    }

  def load_state_dict(self, state: Mapping[str, Any], copy: bool = True):
    """Restores `state_dict()` output.

    Args:
      state: dict as returned by `state_dict` (write_pointer and fill optional, checked if given).
      copy: True copies into the existing storage. False adopts the given arrays as storage
        when their dtype matches and they are writable and C-contiguous (no second copy of a
        multi-GB restored buffer); the caller must then not use them elsewhere.
    """
    steps_added = int(np.asarray(state["steps_added"]))
    if steps_added < 0:
      raise ValueError(f"ReplayBuffer state has steps_added {steps_added} < 0.")
    derived = {"write_pointer": steps_added % self.capacity,
               "fill": min(steps_added, self.capacity)}
    for key, value in derived.items():
      if key in state and int(np.asarray(state[key])) != value:
        raise ValueError(f"ReplayBuffer state '{key}' is {int(np.asarray(state[key]))}; "
                         f"steps_added {steps_added} implies {value}.")
    storage = (("frames", self._frames), ("states", self._states),
               ("frame_index", self._frame_index))
    for key, current in storage:  # Check everything before changing anything.
      shape = np.shape(state[key])
      if shape != current.shape:
        raise ValueError(f"ReplayBuffer state '{key}' has shape {shape}; expected "
                         f"{current.shape} (same workers, capacity and shapes as saved).")
    new = {}
    for key, current in storage:
      value = np.asarray(state[key])
      adoptable = (value.dtype == current.dtype and value.flags.writeable
                   and value.flags.c_contiguous)
      if copy or not adoptable:
        np.copyto(current, value, casting="same_kind")
        new[key] = current
      else:
        new[key] = value
    self._frames, self._states, self._frame_index = (
        new["frames"], new["states"], new["frame_index"])
    self._steps_added = steps_added
