"""Training checkpoints: the device train state and the host state, saved together per step.

`Checkpointer` wraps one `orbax.checkpoint.CheckpointManager` over `<workdir>/checkpoints`. Each
step directory holds two items:

- `train_state`: a pytree of jax arrays (params, optimizer state, batch stats, rng, ...), saved
  and restored with its shardings (`ocp.args.StandardSave` / `StandardRestore`).
- `host_state`: a dict of numpy arrays (replay buffer contents, worker positions, counters),
  restored as numpy arrays with the saved structure.

Saving is asynchronous (orbax default): `save` returns once the data is copied off the device
and host arrays are deep-copied (so the caller may keep mutating its buffers; the copy costs
as much memory as the host state while the write is in flight), and the files are written in a
background thread. `wait()` blocks until the write is committed and surfaces its errors.
`max_to_keep` garbage collection is orbax's: older steps are deleted only after a newer save
has committed; a failed save deletes nothing.

Preemption (SIGTERM): never call `save` from inside a signal handler (orbax is not reentrant
and a save may already be in flight on the interrupted frame). The trainer's handler only sets
a flag; at the next loop iteration the trainer calls `save(step, ..., force=True)`, then
`wait()`, then exits. Saving a step that already exists is a logged no-op, so this is safe
right after a periodic save of the same step.

Restore checks each candidate step, newest first, in three stages:

1. Commit markers: the step directory has `commit_success.txt`, a JSON `_CHECKPOINT_METADATA`
   with a `commit_timestamp_nsecs` (both written by orbax only when a save finalizes), and each
   item directory has a JSON `_METADATA`. Orbax itself ignores unfinished
   `*.orbax-checkpoint-tmp-*` directories.
2. Item metadata is read (this opens every array's tensorstore metadata in the OCDBT files) and
   compared with the templates. Different shapes, dtypes or tree paths mean a checkpoint of
   another config: `UserError` naming the first mismatches, before any array is read.
3. The arrays are restored; a tensorstore/IO/decoding error (deleted, truncated or garbled data
   file) marks the step corrupt. Any other error is a real bug and is raised as is.

A corrupt step is skipped with an absl warning and the next older step is tried. Once a good
step is restored, the skipped directories are renamed to `<step>.corrupt` (never deleted;
orbax ignores that name) so later saves of those step numbers are not blocked; delete them by
hand once inspected. If no step is good nothing is renamed and a `UserError` is raised. An
explicitly requested `step` is never replaced by another: if it is corrupt, `UserError`.

Multi-host: every process makes the same calls; orbax's normal multi-process behaviour applies
(the primary host writes metadata and commit markers, all hosts write their shards). Renaming
corrupt directories is done by the primary host followed by a barrier. Corruption is detected
per host, so a data file readable by some hosts and not others is not handled (they would
disagree); on a shared filesystem all hosts see the same files.
"""
import json
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from vonet_jax.errors import UserError

TRAIN_STATE = "train_state"
HOST_STATE = "host_state"
ITEMS = (TRAIN_STATE, HOST_STATE)
CORRUPT_SUFFIX = ".corrupt"

_COMMIT_FILE = "commit_success.txt"
_STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
_ITEM_METADATA_FILE = "_METADATA"
_MAX_LISTED_MISMATCHES = 3
# Substrings of tensorstore / orbax errors raised when stored bytes are missing or unreadable.
_DATA_ERROR_MARKERS = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS", "Error reading",
                       "Error decoding", "Error opening", "OCDBT", "tensorstore", "zarr")


class RestoredCheckpoint(NamedTuple):
  """What `Checkpointer.restore` returns: the step actually restored and both items."""
  step: int
  train_state: Any
  host_state: Optional[dict]


class _CorruptCheckpoint(Exception):
  """Internal: the step's files are incomplete or unreadable; the message says why."""


class Checkpointer:
  """Saves and restores (train_state, host_state) per step under one directory with orbax."""

  def __init__(self, directory: epath.PathLike, max_to_keep: Optional[int] = 3,
               enable_async: bool = True):
    """Args:
      directory: checkpoint root, normally `<workdir>/checkpoints`; created if missing.
      max_to_keep: newest committed steps to keep (None keeps all). Older steps are deleted
        only after a newer save commits.
      enable_async: write files in a background thread (`save` returns early, `wait()` joins).
    """
    if max_to_keep is not None and (isinstance(max_to_keep, bool)
                                    or not isinstance(max_to_keep, int) or max_to_keep < 1):
      raise UserError(f"max_to_keep must be a positive integer or None, got {max_to_keep!r}; "
                      "fix the checkpoint max_to_keep setting in the config.")
    self._directory = epath.Path(directory).resolve()  # orbax needs an absolute path
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in ITEMS:
      registry.add(item, ocp.args.StandardSave, ocp.handlers.StandardCheckpointHandler)
      registry.add(item, ocp.args.StandardRestore, ocp.handlers.StandardCheckpointHandler)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=enable_async)
    self._manager = ocp.CheckpointManager(self._directory, options=options,
                                          handler_registry=registry)
    self._barrier_count = 0

  @property
  def directory(self) -> epath.Path:
    """The checkpoint root directory."""
    return self._directory

  def save(self, step: int, train_state: Any, host_state: Mapping[str, Any],
           force: bool = False) -> bool:
    """Starts saving both items as `step`; returns whether a save was started.

    Safe on the SIGTERM path when called from the training loop (not from the signal handler):
    see the module docstring. Errors of the background write surface at the next `save`,
    `wait` or `close`.

    Args:
      step: training step, >= 0. A step that already exists is left alone (logged, False).
      train_state: pytree of jax arrays.
      host_state: dict (possibly nested) of numpy arrays; 0-d arrays are fine.
      force: save even where orbax's save policy would skip the step.
    """
    step = int(step)
    if step < 0:
      raise ValueError(f"checkpoint step must be >= 0, got {step}")
    if not isinstance(host_state, Mapping):
      raise TypeError(f"host_state must be a dict of numpy arrays, got {type(host_state)}")
    if step in self._manager.all_steps():
      logging.info("Checkpoint step %d already exists in %s; not saving it again.", step,
                   self._directory)
      return False
    args = ocp.args.Composite(**{TRAIN_STATE: ocp.args.StandardSave(train_state),
                                 HOST_STATE: ocp.args.StandardSave(dict(host_state))})
    return bool(self._manager.save(step, args=args, force=force))

  def wait(self) -> None:
    """Blocks until any in-flight save is committed (and old steps collected); raises its error."""
    self._manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    """Newest step known to the manager (including one still being written), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> List[int]:
    """All steps known to the manager, ascending (corrupt ones too, until a restore skips them)."""
    return sorted(self._manager.all_steps())

  def restore(self, step: Optional[int] = None, *, train_state_template: Any,
              host_state_template: Optional[Mapping[str, Any]] = None,
              restore_host_state: bool = True) -> Optional[RestoredCheckpoint]:
    """Restores `step`, or the newest good step, into the templates' structure and shardings.

    Args:
      step: step to restore; None means the newest step that is not corrupt (corrupt newer
        ones are skipped with a warning and renamed to `<step>.corrupt`, see module docstring).
      train_state_template: pytree like the saved train state whose leaves are
        `jax.ShapeDtypeStruct`s (with `sharding`) or concrete arrays; restored arrays get
        their shapes, dtypes and shardings.
      host_state_template: optional dict like the saved host state (numpy arrays or
        ShapeDtypeStructs); only used to check shapes and dtypes. The host state is returned
        as saved: nested dicts of numpy arrays.
      restore_host_state: False skips reading the host arrays (e.g. for evaluation);
        `host_state` is then None. Commit markers and metadata of both items are still checked.

    Returns:
      A `RestoredCheckpoint`, or None when `step` is None and there is no checkpoint at all.

    Raises:
      UserError: the checkpoint does not match the templates (another config), the requested
        step is missing or corrupt, or every step is corrupt.
    """
    self.wait()
    self._manager.reload()
    steps = self.all_steps()
    if step is not None:
      step = int(step)
      if step not in steps:
        raise UserError(f"checkpoint step {step} not found in {self._directory} (available: "
                        f"{steps}); pass one of those steps or omit it to restore the latest.")
      try:
        return self._restore_step(step, train_state_template, host_state_template,
                                  restore_host_state)
      except _CorruptCheckpoint as e:
        raise UserError(f"checkpoint step {step} in {self._directory} is corrupt ({e}); restore "
                        "another step or omit it to restore the newest good one.") from None
    if not steps:
      return None
    skipped = []
    for candidate in reversed(steps):
      try:
        restored = self._restore_step(candidate, train_state_template, host_state_template,
                                      restore_host_state)
      except _CorruptCheckpoint as e:
        logging.warning("Checkpoint step %d in %s is corrupt (%s); falling back to an older "
                        "step.", candidate, self._directory, e)
        skipped.append((candidate, str(e)))
        continue
      self._quarantine([s for s, _ in skipped])
      return restored
    newest, reason = skipped[0]
    raise UserError(f"no usable checkpoint in {self._directory}: steps {steps} are all corrupt "
                    f"(step {newest}: {reason}); restore them from a backup or start from a "
                    "fresh --workdir.")

  def close(self) -> None:
    """Waits for in-flight saves and releases orbax resources."""
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _step_dir(self, step: int) -> epath.Path:
    """The directory orbax uses for `step`."""
    return self._directory / str(step)

  def _restore_step(self, step: int, train_state_template: Any,
                    host_state_template: Optional[Mapping[str, Any]],
                    restore_host_state: bool) -> RestoredCheckpoint:
    """Validates and restores one step; raises `_CorruptCheckpoint` or `UserError`."""
    _check_committed(self._step_dir(step))
    try:
      metadata = self._manager.item_metadata(step)
      saved = {item: _flat_saved(metadata[item]) for item in ITEMS}
    except Exception as e:  # pylint: disable=broad-except
      raise _CorruptCheckpoint(f"unreadable metadata: {_one_line(e)}") from e
    mismatches = _mismatches(TRAIN_STATE, saved[TRAIN_STATE], train_state_template)
    if host_state_template is not None:
      mismatches += _mismatches(HOST_STATE, saved[HOST_STATE], host_state_template)
    if mismatches:
      more = len(mismatches) - _MAX_LISTED_MISMATCHES
      listed = "; ".join(mismatches[:_MAX_LISTED_MISMATCHES]) + (f" (+{more} more)" if more > 0
                                                                  else "")
      raise UserError(f"checkpoint step {step} in {self._directory} was written by a different "
                      f"config: {listed}; use a fresh --workdir or the config that wrote it.")
    items = {TRAIN_STATE: ocp.args.StandardRestore(_abstract(train_state_template))}
    if restore_host_state:
      items[HOST_STATE] = ocp.args.StandardRestore(None)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      if _is_data_error(e):
        raise _CorruptCheckpoint(f"unreadable data: {_one_line(e)}") from e
      raise
    host_state = restored[HOST_STATE] if restore_host_state else None
    return RestoredCheckpoint(step, restored[TRAIN_STATE], host_state)

  def _quarantine(self, steps: Sequence[int]) -> None:
    """Renames corrupt step directories to `<step>.corrupt[.N]` (primary host), then syncs."""
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        source = self._step_dir(step)
        target = source.parent / (source.name + CORRUPT_SUFFIX)
        n = 1
        while target.exists():
          target = source.parent / f"{source.name}{CORRUPT_SUFFIX}.{n}"
          n += 1
        try:
          source.rename(target)
          logging.warning("Moved corrupt checkpoint %s to %s (kept for inspection; delete it "
                          "by hand).", source, target)
        except OSError as e:
          logging.warning("Could not move corrupt checkpoint %s aside (%s); saving step %d "
                          "will be skipped until it is removed.", source, e, step)
    self._barrier_count += 1
    ocp.multihost.sync_global_processes(f"vonet_checkpoint_quarantine_{self._barrier_count}")
    self._manager.reload()


def _check_committed(step_dir: epath.Path) -> None:
  """Raises `_CorruptCheckpoint` unless orbax's commit markers and item metadata are intact."""
  if not (step_dir / _COMMIT_FILE).exists():
    raise _CorruptCheckpoint(f"missing commit marker {_COMMIT_FILE}")
  step_meta = _read_json(step_dir / _STEP_METADATA_FILE)
  if not isinstance(step_meta, dict) or not step_meta.get("commit_timestamp_nsecs"):
    raise _CorruptCheckpoint(f"{_STEP_METADATA_FILE} has no commit timestamp")
  for item in ITEMS:
    if not (step_dir / item).is_dir():
      raise _CorruptCheckpoint(f"missing item directory {item}")
    _read_json(step_dir / item / _ITEM_METADATA_FILE)


def _read_json(path: epath.Path) -> Any:
  """Parses a JSON file, raising `_CorruptCheckpoint` if it is missing or not valid JSON."""
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise _CorruptCheckpoint(f"missing or unreadable {path.parent.name}/{path.name}: "
                             f"{_one_line(e)}") from e


def _path_str(path: Tuple[Any, ...]) -> str:
  """'a/0/b' for a jax key path; dict keys, sequence indices and attribute names alike."""
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(key.name)
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:
      parts.append(str(key))
  return "/".join(parts)


def _flat_saved(item_metadata: Any) -> dict:
  """{path: (shape, dtype)} of an orbax item's saved tree metadata."""
  tree = getattr(item_metadata, "tree", item_metadata)
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_str(path): (tuple(leaf.shape), np.dtype(leaf.dtype)) for path, leaf in leaves}


def _expected(leaf: Any) -> Tuple[Tuple[int, ...], Optional[np.dtype]]:
  """(shape, dtype) the checkpoint must hold for a template leaf; dtype None if not checked."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is None:  # Python scalar: orbax stores it 0-d with a dtype of its choosing.
    return np.shape(leaf), None
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # stored as its key data
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, dtype))
    return tuple(data.shape), np.dtype(data.dtype)
  return tuple(leaf.shape), np.dtype(dtype)


def _mismatches(item: str, saved: dict, template: Any) -> List[str]:
  """Readable differences between saved (shape, dtype)s and a template.

  Shallow paths come first, so params are named before their optimizer-state mirrors.
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(template)
  expected = {_path_str(path): _expected(leaf) for path, leaf in leaves}
  out = []
  for path in sorted(set(saved) | set(expected), key=lambda p: (p.count("/"), p)):
    name = f"{item} {path}"
    if path not in saved:
      out.append(f"{name} missing from checkpoint (expected {expected[path][0]})")
    elif path not in expected:
      out.append(f"{name} saved {saved[path][0]} but not in this config")
    elif saved[path][0] != expected[path][0]:
      out.append(f"{name} saved {saved[path][0]} vs expected {expected[path][0]}")
    elif expected[path][1] is not None and saved[path][1] != expected[path][1]:
      out.append(f"{name} saved {saved[path][1]} vs expected {expected[path][1]}")
  return out


def _abstract(template: Any) -> Any:
  """Template with concrete jax arrays replaced by ShapeDtypeStructs carrying their sharding."""
  def convert(leaf):
    if isinstance(leaf, jax.Array):
      return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf
  return jax.tree.map(convert, template)


def _is_data_error(error: BaseException) -> bool:
  """Whether a restore error means missing/truncated/garbled stored bytes (not a code bug)."""
  if isinstance(error, (OSError, EOFError, json.JSONDecodeError)):
    return True
  return (isinstance(error, (ValueError, RuntimeError))
          and any(marker in str(error) for marker in _DATA_ERROR_MARKERS))


def _one_line(error: BaseException, limit: int = 200) -> str:
  """`Type: first line of message`, shortened, for one-line warnings and errors."""
  lines = str(error).strip().splitlines()
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= limit else text[:limit - 3] + "..."
