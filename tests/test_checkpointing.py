"""Tests of vonet_jax/checkpointing.py: round trip, retention, config mismatch, corrupt steps.

Tiny pytrees keep it fast. The host buffer is 4 KiB of random bytes so that it lands in its own
OCDBT data file (values under 1 KiB are inlined in b-tree nodes), which the corruption tests
truncate or delete.
"""
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vonet_jax.checkpointing import CORRUPT_SUFFIX, Checkpointer, RestoredCheckpoint
from vonet_jax.errors import UserError


def make_train_state(seed, features=4):
  """Flax-like params, adam state (namedtuples + EmptyState), a raw and a typed rng key."""
  rng = np.random.RandomState(seed)
  params = {"params": {
      "Dense_0": {"kernel": jnp.asarray(rng.randn(3, features), jnp.float32),
                  "bias": jnp.asarray(rng.randn(features), jnp.float32)},
      "norm": {"scale": jnp.asarray(rng.randn(features), jnp.bfloat16)}}}
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(seed, jnp.int32),
          "rng": jax.random.PRNGKey(seed), "key": jax.random.key(seed)}


def make_host_state(seed):
  """Replay-buffer-like numpy arrays: random uint8 frames, float32 states, 0-d counters."""
  rng = np.random.RandomState(100 + seed)
  return {"buffer": {"frames": rng.randint(0, 256, (64, 64), dtype=np.uint8),
                     "states": rng.randn(7, 3).astype(np.float32)},
          "positions": np.arange(5, dtype=np.int32) + seed,
          "steps_added": np.asarray(1000 + seed, np.int64),
          "loss_ema": np.asarray(0.1 * seed, np.float32)}


def abstract(tree):
  """ShapeDtypeStructs with shardings, as a trainer builds with jax.eval_shape."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def assert_bit_equal(actual, expected):
  """Same tree structure, and every leaf has the same dtype, shape and bytes."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    if jax.dtypes.issubdtype(e.dtype, jax.dtypes.prng_key):
      a, e = jax.random.key_data(a), jax.random.key_data(e)
    a, e = np.asarray(a), np.asarray(e)
    assert (a.dtype, a.shape) == (e.dtype, e.shape)
    assert a.tobytes() == e.tobytes()


def save_steps(directory, steps, max_to_keep=5, enable_async=True):
  """Saves `steps` (state seeded by the step) and waits."""
  with Checkpointer(directory, max_to_keep=max_to_keep, enable_async=enable_async) as ckpt:
    for step in steps:
      assert ckpt.save(step, make_train_state(step), make_host_state(step))
    ckpt.wait()


def restore(ckpt, step=None, features=4):
  return ckpt.restore(step, train_state_template=abstract(make_train_state(0, features)),
                      host_state_template=make_host_state(0))


def largest_data_file(step_dir):
  """Path of the biggest file under an OCDBT `d/` directory of the step (the host buffer)."""
  files = [os.path.join(root, name) for root, _, names in os.walk(step_dir)
           if os.path.basename(root) == "d" for name in names]
  return max(files, key=os.path.getsize)


def test_round_trip_is_bit_exact(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [7])
  with Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == 7 and ckpt.all_steps() == [7]
    restored = restore(ckpt)
  assert isinstance(restored, RestoredCheckpoint) and restored.step == 7
  assert_bit_equal(restored.train_state, make_train_state(7))
  assert_bit_equal(restored.host_state, make_host_state(7))
  assert type(restored.train_state["opt_state"][0]).__name__ == "ScaleByAdamState"
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored.train_state))
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored.host_state))


def test_restore_into_concrete_template_and_without_host_template(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [3])
  with Checkpointer(directory) as ckpt:
    restored = ckpt.restore(train_state_template=make_train_state(0))
  assert_bit_equal(restored.train_state, make_train_state(3))
  assert_bit_equal(restored.host_state, make_host_state(3))


def test_restore_train_state_only(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [4])
  with Checkpointer(directory) as ckpt:
    restored = ckpt.restore(train_state_template=abstract(make_train_state(0)),
                            restore_host_state=False)
  assert restored.step == 4 and restored.host_state is None
  assert_bit_equal(restored.train_state, make_train_state(4))


def test_restore_specific_step(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [1, 2, 3])
  with Checkpointer(directory) as ckpt:
    restored = restore(ckpt, step=2)
    assert restored.step == 2
    assert_bit_equal(restored.train_state, make_train_state(2))
    assert_bit_equal(restored.host_state, make_host_state(2))
    with pytest.raises(UserError, match=r"step 9 not found .*available: \[1, 2, 3\]"):
      restore(ckpt, step=9)


def test_no_checkpoint_restores_none(tmp_path):
  with Checkpointer(tmp_path / "checkpoints") as ckpt:
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    assert restore(ckpt) is None


@pytest.mark.parametrize("enable_async", [True, False])
def test_keeps_last_n(tmp_path, enable_async):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [10, 20, 30, 40], max_to_keep=2, enable_async=enable_async)
  assert sorted(os.listdir(directory)) == ["30", "40"]
  with Checkpointer(directory, max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [30, 40]
    assert restore(ckpt).step == 40


def test_saving_an_existing_step_is_a_no_op(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [5])
  with Checkpointer(directory) as ckpt:
    assert not ckpt.save(5, make_train_state(6), make_host_state(6), force=True)
    ckpt.wait()
    assert_bit_equal(restore(ckpt).train_state, make_train_state(5))


def test_bad_max_to_keep_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="max_to_keep"):
    Checkpointer(tmp_path / "checkpoints", max_to_keep=0)


def test_other_config_names_the_mismatched_shapes(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [1])
  with Checkpointer(directory) as ckpt:
    with pytest.raises(UserError) as info:
      restore(ckpt, features=8)
    message = str(info.value)
    assert "\n" not in message
    assert "checkpoint step 1" in message and "different config" in message
    assert "train_state params/params/Dense_0/bias saved (4,) vs expected (8,)" in message
    assert "train_state params/params/Dense_0/kernel saved (3, 4) vs expected (3, 8)" in message
    assert "more)" in message  # adam mu/nu mismatch too; only the first few are listed
    assert "fresh --workdir" in message
    template = make_host_state(0)
    template["buffer"]["frames"] = np.zeros((128, 64), np.uint8)
    template["extra"] = np.zeros(2, np.float32)
    with pytest.raises(UserError) as info:
      ckpt.restore(train_state_template=abstract(make_train_state(0)),
                   host_state_template=template)
    message = str(info.value)
    assert "host_state buffer/frames saved (64, 64) vs expected (128, 64)" in message
    assert "host_state extra missing from checkpoint (expected (2,))" in message
  assert os.listdir(directory) == ["1"]  # nothing renamed or deleted


# A failed tensorstore read leaves sibling reads that call back into orbax's closed event loop.
ignore_orbax_teardown = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


def truncate_data(step_dir):
  path = largest_data_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def delete_data(step_dir):
  os.remove(largest_data_file(step_dir))


def delete_step_metadata(step_dir):
  os.remove(step_dir / "_CHECKPOINT_METADATA")


def delete_commit_marker(step_dir):
  os.remove(step_dir / "commit_success.txt")


def truncate_item_metadata(step_dir):
  path = step_dir / "train_state" / "_METADATA"
  os.truncate(path, os.path.getsize(path) // 2)


@ignore_orbax_teardown
@pytest.mark.parametrize("corrupt", [truncate_data, delete_data, delete_step_metadata,
                                     delete_commit_marker, truncate_item_metadata])
def test_corrupt_newest_falls_back_to_previous(tmp_path, caplog, corrupt):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [1, 2])
  corrupt(directory / "2")
  bad_files = sorted(os.listdir(directory / "2"))
  with Checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == 2
    with caplog.at_level(logging.WARNING):
      restored = restore(ckpt)
    assert restored.step == 1
    assert_bit_equal(restored.train_state, make_train_state(1))
    assert_bit_equal(restored.host_state, make_host_state(1))
    assert any("step 2" in r.getMessage() and "corrupt" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    # The bad step is kept on disk, moved aside, and no longer blocks saving step 2.
    assert sorted(os.listdir(directory / ("2" + CORRUPT_SUFFIX))) == bad_files
    assert ckpt.all_steps() == [1]
    assert ckpt.save(2, make_train_state(22), make_host_state(22))
    ckpt.wait()
    assert_bit_equal(restore(ckpt).train_state, make_train_state(22))
  assert sorted(os.listdir(directory)) == ["1", "2", "2" + CORRUPT_SUFFIX]


@ignore_orbax_teardown
def test_all_corrupt_is_a_user_error_and_renames_nothing(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [1, 2])
  truncate_data(directory / "1")
  delete_step_metadata(directory / "2")
  with Checkpointer(directory) as ckpt:
    with pytest.raises(UserError, match=r"no usable checkpoint .* all corrupt") as info:
      restore(ckpt)
    assert "\n" not in str(info.value)
  assert sorted(os.listdir(directory)) == ["1", "2"]


@ignore_orbax_teardown
def test_requested_corrupt_step_is_a_user_error(tmp_path):
  directory = tmp_path / "checkpoints"
  save_steps(directory, [1, 2])
  truncate_data(directory / "1")
  with Checkpointer(directory) as ckpt:
    with pytest.raises(UserError, match=r"checkpoint step 1 .* is corrupt"):
      restore(ckpt, step=1)
    assert restore(ckpt).step == 2
  assert sorted(os.listdir(directory)) == ["1", "2"]
