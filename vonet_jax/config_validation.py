"""Checks of config values, each failing with one line that names the key and the fix."""
import ml_collections

from vonet_jax import seeds
from vonet_jax.errors import UserError

DATASETS = ("movi_a", "movi_b", "movi_c", "movi_d", "movi_e", "synthetic")
RESOLUTIONS = (32, 64, 128)


def _require(ok: bool, key: str, message: str):
  if not ok:
    raise UserError(f"config.{key}: {message}")


def validate_config(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises UserError naming the first bad key; num_devices = global device count."""
  d, m, t, r = config.data, config.model, config.train, config.replay
  _require(d.name in DATASETS, "data.name",
           f"unknown dataset {d.name!r}; use one of {', '.join(DATASETS)}")
  _require(d.resolution in RESOLUTIONS, "data.resolution",
           f"{d.resolution} is not supported; use one of {RESOLUTIONS}")
  levels = len(m.unet_channels)
  feature = d.resolution // 2
  _require(levels >= 1 and feature % (2 ** (levels - 1)) == 0, "model.unet_channels",
           f"{levels} levels need a feature map ({feature}) divisible by {2 ** (levels - 1)}; "
           "use fewer U-Net levels or a larger resolution")
  _require(m.num_slots >= 1, "model.num_slots", f"must be >= 1, got {m.num_slots}")
  _require(m.slot_size >= 1, "model.slot_size", f"must be >= 1, got {m.slot_size}")
  _require(0.0 <= m.kl_balance <= 1.0, "model.kl_balance",
           f"kappa must be in [0, 1], got {m.kl_balance}")
  _require(m.kl_weight_divisor > 0, "model.kl_weight_divisor",
           f"must be > 0, got {m.kl_weight_divisor}")
  _require(m.broadcast_conv in ("closed_form", "plain"), "model.broadcast_conv",
           f"use 'closed_form' or 'plain', got {m.broadcast_conv!r}")
  _require(m.unet_input in ("fused", "plain"), "model.unet_input",
           f"use 'fused' or 'plain', got {m.unet_input!r}")
  _require(m.attention_impl in ("xla", "einsum"), "model.attention_impl",
           f"use 'xla' or 'einsum', got {m.attention_impl!r}")
  _require(m.conv3x3 in ("auto", "winograd", "direct"), "model.conv3x3",
           f"use 'auto', 'winograd' or 'direct', got {m.conv3x3!r}")
  tokens = (d.resolution // 4) ** 2
  _require(m.decoder.causal_blocks >= 1 and tokens % m.decoder.causal_blocks == 0,
           "model.decoder.causal_blocks", f"must divide the {tokens} dVAE tokens of a "
           f"{d.resolution}x{d.resolution} frame, got {m.decoder.causal_blocks}")
  _require(0.0 <= m.decoder.token_dropout < 1.0, "model.decoder.token_dropout",
           f"must be in [0, 1), got {m.decoder.token_dropout}")
  _require(m.compute_dtype in ("float32", "bfloat16"), "model.compute_dtype",
           f"use 'float32' or 'bfloat16', got {m.compute_dtype!r}")
  _require(t.batch_size >= 1 and t.batch_size % num_devices == 0, "train.batch_size",
           f"{t.batch_size} is not divisible by the {num_devices} devices; "
           f"use a multiple of {num_devices}")
  _require(t.bulk_rng in ("threefry", "rbg"), "train.bulk_rng",
           f"use 'threefry' or 'rbg', got {t.bulk_rng!r}")
  _require(t.release_memory_every >= 0, "train.release_memory_every",
           f"must be >= 0 (0: never), got {t.release_memory_every}")
  _require(t.segment_length >= 1, "train.segment_length", f"must be >= 1, got {t.segment_length}")
  _require(t.num_iterations >= 1, "train.num_iterations", f"must be >= 1, got {t.num_iterations}")
  _require(r.num_workers >= 1, "replay.num_workers", f"must be >= 1, got {r.num_workers}")
  _require(r.frames_per_iteration >= 1, "replay.frames_per_iteration",
           f"must be >= 1, got {r.frames_per_iteration}")
  _require(r.capacity_per_worker >= t.segment_length, "replay.capacity_per_worker",
           f"must hold at least one segment ({t.segment_length} steps), "
           f"got {r.capacity_per_worker}")
  _require(r.initial_frames <= r.num_workers * r.capacity_per_worker, "replay.initial_frames",
           f"{r.initial_frames} exceeds the buffer's capacity "
           f"({r.num_workers} x {r.capacity_per_worker}); lower it or enlarge the buffer")
  _require(config.eval.batch_size >= 1 and config.eval.batch_size % num_devices == 0,
           "eval.batch_size", f"{config.eval.batch_size} is not divisible by the "
           f"{num_devices} devices; use a multiple of {num_devices}")
  for key in seeds.PARTS:
    _require(config[key] >= -1, key, f"must be a seed >= 0, or -1 to use `seed`; got {config[key]}")
  _require(config.eval.seeds >= 1, "eval.seeds", f"must be >= 1, got {config.eval.seeds}")
