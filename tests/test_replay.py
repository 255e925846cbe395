"""Tests of vonet_jax/replay.py: video workers and the FIFO replay buffer (SPEC.md section 4).

Stored steps carry their own identity so that every sampled value can be checked: frame pixel
channels 0 and 1 hold the logical step s (low and high byte) and channel 2 the worker; states
hold s * 16 + worker; the frame index is s % 7.
"""
import numpy as np
import pytest
import scipy.stats

from vonet_jax.replay import ReplayBuffer, VideoWorkers

FRAME_SHAPE = (2, 3, 3)
STATE_SHAPE = (2, 4)


def labelled_videos(num_frames, start=0, frame_shape=FRAME_SHAPE):
  """Endless stream: video n has channels (n % 256, frame index, n // 256)."""
  n = start
  while True:
    video = np.zeros((num_frames,) + frame_shape, np.uint8)
    video[..., 0] = n % 256
    video[..., 1] = np.arange(num_frames)[:, None, None]
    video[..., 2] = n // 256
    yield {"video": video, "id": n}
    n += 1


def random_videos(num_frames, start=0, frame_shape=FRAME_SHAPE):
  """Endless stream of random videos; video n is the same whatever `start` was."""
  n = start
  while True:
    rng = np.random.default_rng(n)
    yield {"video": rng.integers(0, 256, (num_frames,) + frame_shape, dtype=np.uint8)}
    n += 1


def encoded_steps(num_workers, first_step, num_steps):
  """Steps first_step.. of every worker, as add() arguments, each encoding (worker, step)."""
  steps = first_step + np.arange(num_steps)                              # [F]
  workers = np.arange(num_workers)                                       # [W]
  frames = np.zeros((num_workers, num_steps) + FRAME_SHAPE, np.uint8)
  frames[..., 0] = (steps % 256)[None, :, None, None]
  frames[..., 1] = (steps // 256)[None, :, None, None]
  frames[..., 2] = workers[:, None, None, None]
  states = np.broadcast_to(
      (steps[None, :] * 16 + workers[:, None]).astype(np.float32)[:, :, None, None],
      (num_workers, num_steps) + STATE_SHAPE)
  frame_index = np.broadcast_to((steps % 7).astype(np.int32), (num_workers, num_steps))
  return frames, states, frame_index


def filled_buffer(num_workers=4, capacity=50, segment_length=3, total_steps=131, chunk=2):
  """A buffer with `total_steps` encoded steps per worker, added `chunk` at a time."""
  buffer = ReplayBuffer(num_workers, capacity, FRAME_SHAPE, STATE_SHAPE, segment_length)
  added = 0
  while added < total_steps:
    num = min(chunk, total_steps - added)
    buffer.add(*encoded_steps(num_workers, added, num))
    added += num
  return buffer


def decode_steps(frames):
  """uint8 [..., H, W, 3] -> (step, worker) int64 [...], read from pixel (0, 0)."""
  pixel = frames[..., 0, 0, :].astype(np.int64)
  return pixel[..., 0] + 256 * pixel[..., 1], pixel[..., 2]


# --- VideoWorkers -------------------------------------------------------------------------


def test_video_workers_play_videos_in_order_with_resets():
  num_workers, length = 3, 5          # length not divisible by 2 frames per call
  workers = VideoWorkers(labelled_videos(length), num_workers, length, FRAME_SHAPE)
  assert workers.videos_consumed == 0  # nothing drawn before the first call
  frames, index = zip(*[workers.next_frames(2) for _ in range(12)])
  frames = np.concatenate(frames, axis=1)                                # [W, 24, H, W, 3]
  index = np.concatenate(index, axis=1)                                  # [W, 24]
  assert frames.dtype == np.uint8 and frames.shape == (num_workers, 24) + FRAME_SHAPE
  assert index.dtype == np.int32 and index.shape == (num_workers, 24)
  j = np.arange(24)
  np.testing.assert_array_equal(index, np.broadcast_to(j % length, index.shape))
  np.testing.assert_array_equal(frames[..., 0, 0, 1], index)            # frame index channel
  video_id = frames[..., 0, 0, 0].astype(np.int64) + 256 * frames[..., 0, 0, 2].astype(np.int64)
  # Workers needing a video at the same step take the stream in increasing worker order.
  expected_id = num_workers * (j[None, :] // length) + np.arange(num_workers)[:, None]
  np.testing.assert_array_equal(video_id, expected_id)
  assert workers.videos_consumed == num_workers * 5                      # ceil(24 / 5) each
  np.testing.assert_array_equal(workers.positions, np.full(num_workers, 24 % length))


def test_video_workers_resume_is_exact():
  num_workers, length = 4, 5
  original = VideoWorkers(random_videos(length), num_workers, length, FRAME_SHAPE)
  for num in (2, 3, 2, 1, 2, 2, 4):
    original.next_frames(num)
  state = original.state_dict()
  assert set(state) == {"videos", "positions", "videos_consumed"}
  assert state["videos"].shape == (num_workers, length) + FRAME_SHAPE
  assert all(isinstance(v, np.ndarray) for v in state.values())
  resumed = VideoWorkers(random_videos(length, start=int(state["videos_consumed"])),
                         num_workers, length, FRAME_SHAPE)
  resumed.load_state_dict(state)
  for _ in range(10):
    for a, b in zip(original.next_frames(2), resumed.next_frames(2)):
      np.testing.assert_array_equal(a, b)
  assert original.videos_consumed == resumed.videos_consumed


def test_video_workers_state_dict_is_a_copy_and_checks():
  workers = VideoWorkers(random_videos(5), 2, 5, FRAME_SHAPE)
  workers.next_frames(2)
  state = workers.state_dict()
  saved = {k: v.copy() for k, v in state.items()}
  workers.next_frames(4)
  for key in state:
    np.testing.assert_array_equal(state[key], saved[key])
  with pytest.raises(ValueError):
    VideoWorkers(random_videos(5), 3, 5, FRAME_SHAPE).load_state_dict(state)
  with pytest.raises(ValueError):
    VideoWorkers(random_videos(6), 2, 5, FRAME_SHAPE).next_frames(1)     # wrong length
  with pytest.raises(RuntimeError):
    VideoWorkers(iter([]), 2, 5, FRAME_SHAPE).next_frames(1)             # stream ended


# --- ReplayBuffer: contents -----------------------------------------------------------------


def test_sampled_segments_are_consecutive_and_match_storage():
  buffer = filled_buffer(num_workers=4, capacity=50, segment_length=3, total_steps=131)
  rng = np.random.default_rng(0)
  for _ in range(50):
    batch = buffer.sample(37, rng)
    assert batch["frames"].shape == (37, 3) + FRAME_SHAPE and batch["frames"].dtype == np.uint8
    assert batch["state"].shape == (37,) + STATE_SHAPE and batch["state"].dtype == np.float32
    for key in ("frame_index", "worker", "start"):
      assert batch[key].dtype == np.int32
    assert batch["frame_index"].shape == (37, 3)
    step, worker = decode_steps(batch["frames"])                         # [B, T]
    start = batch["start"].astype(np.int64)
    np.testing.assert_array_equal(step, start[:, None] + np.arange(3))
    np.testing.assert_array_equal(worker, np.broadcast_to(batch["worker"][:, None], (37, 3)))
    np.testing.assert_array_equal(batch["frame_index"], step % 7)
    expected_state = (start * 16 + batch["worker"]).astype(np.float32)
    np.testing.assert_array_equal(
        batch["state"], np.broadcast_to(expected_state[:, None, None], batch["state"].shape))


def test_fifo_overwrite_after_wrap_around():
  capacity, total, length = 50, 131, 3
  buffer = filled_buffer(capacity=capacity, segment_length=length, total_steps=total, chunk=3)
  assert buffer.steps_added == total and buffer.fill == capacity
  assert buffer.write_pointer == total % capacity
  assert buffer.num_steps == 4 * capacity
  # Storage holds exactly the last C steps, step s in slot s % C.
  step, worker = decode_steps(buffer.state_dict()["frames"])             # [W, C]
  slots = np.arange(capacity)
  expected = total - capacity + (slots - total) % capacity
  np.testing.assert_array_equal(step, np.broadcast_to(expected, step.shape))
  np.testing.assert_array_equal(worker, np.broadcast_to(np.arange(4)[:, None], worker.shape))
  # Sampled steps are never overwritten ones; every valid start is reachable.
  rng = np.random.default_rng(1)
  starts = np.concatenate([buffer.sample(32, rng)["start"] for _ in range(300)])
  assert starts.min() == total - capacity and starts.max() == total - length


def test_partly_filled_buffer_samples_only_stored_steps():
  buffer = filled_buffer(capacity=50, segment_length=3, total_steps=9)
  rng = np.random.default_rng(2)
  batch = buffer.sample(400, rng)
  step, _ = decode_steps(batch["frames"])
  assert step.min() == 0 and step.max() == 8
  np.testing.assert_array_equal(step, batch["start"][:, None] + np.arange(3))


def test_add_more_steps_than_capacity_keeps_the_last():
  buffer = ReplayBuffer(2, 5, FRAME_SHAPE, STATE_SHAPE, segment_length=2)
  buffer.add(*encoded_steps(2, 0, 12))
  step, _ = decode_steps(buffer.state_dict()["frames"])
  np.testing.assert_array_equal(step[0], [10, 11, 7, 8, 9])
  assert buffer.steps_added == 12 and buffer.write_pointer == 2


def test_frame_index_resets_at_first_frames_of_videos():
  num_workers, length, capacity = 3, 5, 13
  workers = VideoWorkers(labelled_videos(length), num_workers, length, FRAME_SHAPE)
  buffer = ReplayBuffer(num_workers, capacity, FRAME_SHAPE, STATE_SHAPE, segment_length=3)
  for _ in range(20):
    frames, index = workers.next_frames(2)
    states = np.broadcast_to(index.astype(np.float32)[:, :, None, None],
                             index.shape + STATE_SHAPE)
    buffer.add(frames, states, index)
  rng = np.random.default_rng(3)
  crossings = 0
  for _ in range(40):
    batch = buffer.sample(12, rng)
    index = batch["frame_index"]
    t_in_video = batch["frames"][..., 0, 0, 1]
    video_id = batch["frames"][..., 0, 0, 0].astype(np.int64)
    np.testing.assert_array_equal(index, t_in_video)
    np.testing.assert_array_equal(batch["state"][:, 0, 0], index[:, 0])
    reset = index[:, 1:] == 0
    crossings += reset.sum()
    # Inside a video: same video, next frame. At a reset: previous was the last frame.
    same = video_id[:, 1:] == video_id[:, :-1]
    np.testing.assert_array_equal(same, ~reset)
    np.testing.assert_array_equal(index[:, 1:][~reset], index[:, :-1][~reset] + 1)
    np.testing.assert_array_equal(index[:, :-1][reset], length - 1)
  assert crossings > 0


# --- ReplayBuffer: sampling distribution ----------------------------------------------------


def test_sampling_is_stratified_and_uniform():
  num_workers, capacity, length, total, batch_size = 4, 50, 3, 131, 10
  buffer = filled_buffer(num_workers, capacity, length, total)
  rng = np.random.default_rng(4)
  num_batches = 4000
  workers = np.empty((num_batches, batch_size), np.int64)
  starts = np.empty((num_batches, batch_size), np.int64)
  for i in range(num_batches):
    batch = buffer.sample(batch_size, rng)
    workers[i], starts[i] = batch["worker"], batch["start"]
  per_worker = np.stack([(workers == w).sum(axis=1) for w in range(num_workers)], axis=1)
  # Every batch: floor(B / W) or one more per worker, B in all.
  assert set(np.unique(per_worker)) <= {2, 3}
  np.testing.assert_array_equal(per_worker.sum(axis=1), batch_size)
  # Which workers get the extra segments: uniform.
  worker_counts = per_worker.sum(axis=0) - 2 * num_batches
  assert scipy.stats.chisquare(worker_counts).pvalue > 1e-3
  # Start offsets within the window of valid starts: uniform, per worker too.
  num_starts = capacity - length + 1
  offsets = starts - (total - capacity)
  assert offsets.min() >= 0 and offsets.max() < num_starts
  assert scipy.stats.chisquare(np.bincount(offsets.ravel(), minlength=num_starts)).pvalue > 1e-3
  for w in range(num_workers):
    counts = np.bincount(offsets[workers == w], minlength=num_starts)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3


def test_ready_and_sample_errors():
  buffer = ReplayBuffer(4, 50, FRAME_SHAPE, STATE_SHAPE, segment_length=3)
  assert buffer.num_steps == 0 and not buffer.ready(0)
  with pytest.raises(RuntimeError):
    buffer.sample(4, np.random.default_rng(0))
  buffer.add(*encoded_steps(4, 0, 2))
  assert not buffer.ready(0)                                             # fill < segment length
  buffer.add(*encoded_steps(4, 2, 2))
  assert buffer.num_steps == 16 and buffer.ready(16) and not buffer.ready(17)
  with pytest.raises(ValueError):
    buffer.add(*encoded_steps(3, 0, 2))                                  # wrong worker count
  frames, states, index = encoded_steps(4, 0, 2)
  with pytest.raises(ValueError):
    buffer.add(frames.astype(np.float32), states, index)
  with pytest.raises(ValueError):
    ReplayBuffer(4, 2, FRAME_SHAPE, STATE_SHAPE, segment_length=3)


# --- ReplayBuffer: checkpointing ------------------------------------------------------------


def test_state_dict_round_trip_gives_identical_samples(tmp_path):
  original = filled_buffer(total_steps=77)
  state = original.state_dict()
  assert all(isinstance(v, np.ndarray) for v in state.values())
  assert np.shares_memory(state["frames"], original.state_dict()["frames"])  # views, no copy
  np.savez(tmp_path / "replay.npz", **state)
  with np.load(tmp_path / "replay.npz") as saved:
    restored_state = {k: saved[k] for k in saved.files}
  copied = ReplayBuffer(4, 50, FRAME_SHAPE, STATE_SHAPE, 3)
  copied.load_state_dict(restored_state)
  adopted = ReplayBuffer(4, 50, FRAME_SHAPE, STATE_SHAPE, 3)
  adopted.load_state_dict({k: v.copy() for k, v in state.items()}, copy=False)
  assert not np.shares_memory(copied.state_dict()["frames"], state["frames"])
  buffers = (original, copied, adopted)
  for first_step in (77, 79, 81):
    for buffer in buffers:
      buffer.add(*encoded_steps(4, first_step, 2))
    rngs = [np.random.default_rng(5) for _ in buffers]
    samples = [b.sample(9, r) for b, r in zip(buffers, rngs)]
    for other in samples[1:]:
      for key in samples[0]:
        np.testing.assert_array_equal(samples[0][key], other[key])
  for key in ("steps_added", "write_pointer", "fill"):
    assert {int(b.state_dict()[key]) for b in buffers} == {int(original.state_dict()[key])}


def test_load_state_dict_rejects_mismatches():
  state = {k: v.copy() for k, v in filled_buffer(total_steps=20).state_dict().items()}
  with pytest.raises(ValueError):
    ReplayBuffer(4, 40, FRAME_SHAPE, STATE_SHAPE, 3).load_state_dict(state)
  bad = dict(state, fill=np.asarray(7, np.int64))
  target = ReplayBuffer(4, 50, FRAME_SHAPE, STATE_SHAPE, 3)
  with pytest.raises(ValueError):
    target.load_state_dict(bad)
  assert target.steps_added == 0                                         # left untouched
