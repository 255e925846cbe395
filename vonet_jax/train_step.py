"""The jitted computations of training: init, loss, update step, replay collection.

All run under `jax.jit` on the global mesh of `vonet_jax.sharding` (batch split along the data
axis, state replicated), on any number of devices and processes.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vonet_jax import optim, schedules, seeds, sharding
from vonet_jax.models.vonet import VONet, make_model


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw PRNG key data, uint32 [2]


def _rngs(rng, *names):
  return dict(zip(names, jax.random.split(rng, len(names))))


def bulk_key(config, key):
  """The key of dropout masks or Gumbel noise, from a threefry key, per `train.bulk_rng`: the key
  itself, or an 'rbg' key (XLA's RngBitGenerator) derived from it."""
  if config.train.bulk_rng == "rbg":
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
  return key


def model_rngs(config, rng) -> dict:
  """The rngs of one training forward pass: noise (initial slots, posterior samples) from
  threefry; dropout and Gumbel noise, the bulk of the random bits, per `train.bulk_rng`."""
  rngs = _rngs(rng, "noise", "gumbel", "dropout")
  return dict(rngs, gumbel=bulk_key(config, rngs["gumbel"]),
              dropout=bulk_key(config, rngs["dropout"]))


def init_variables(config: ml_collections.ConfigDict, rng) -> dict:
  """Parameters and BatchNorm statistics of a fresh model (traced on a [1, 1, ...] input)."""
  model = make_model(config, train=True)
  res, m = config.data.resolution, config.model
  frames = jnp.zeros((1, 1, res, res, 3), jnp.uint8)
  r = jnp.zeros((1, m.num_slots, m.slot_size))
  first = jnp.ones((1, 1), bool)
  init = jax.jit(lambda key: model.init(_rngs(key, "params", "noise", "gumbel", "dropout"),
                                        frames, r, first, 1.0))
  return dict(init(rng))


def model_key(config) -> jax.Array:
  """The key of `init_train_state`: from config.model_seed, or config.seed where that is -1."""
  return jax.random.key(seeds.seed_of(config, "model_seed"))


def init_train_state(config, rng, optimizer: optax.GradientTransformation) -> TrainState:
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(config, init_rng)
  return TrainState(params=variables["params"], batch_stats=variables["batch_stats"],
                    opt_state=optimizer.init(variables["params"]),
                    rng=jax.random.key_data(state_rng))


def segment_loss(config, model: VONet, params, batch_stats, batch, iteration, rng):
  """Loss of SPEC.md section 2 on a batch of segments.

  batch: frames uint8 [B, T, H, W, 3], state float32 [B, K, D] (input state of the first step),
  frame_index int32 [B, T] (position in its video), first bool [B, T] (reset to fresh initial
  slots there: where a video starts, and at every segment's start for wo-Replay).
  L = dVAE squared error + token cross-entropy + beta * KL summed over slots, per frame; a
  video's last frame is masked out (code); mean over [B, T] including the masked zeros.
  Returns (loss, (new batch_stats, metrics, outputs)).
  """
  tau = schedules.gumbel_temperature(config, iteration)
  beta = schedules.kl_weight(config, iteration)
  (_, out), new_vars = model.apply(
      {"params": params, "batch_stats": batch_stats}, batch["frames"], batch["state"],
      batch["first"],
      tau, rngs=model_rngs(config, rng), mutable=["batch_stats"])
  kl = out["kl"].sum(axis=-1)  # [B, T]
  weight = jnp.ones_like(kl)
  if config.train.mask_last_frame:
    weight = (batch["frame_index"] != config.data.num_frames - 1).astype(kl.dtype)
  per_frame = out["dvae_mse"] + out["token_ce"] + beta * kl  # [B, T]
  loss = jnp.mean(per_frame * weight)
  mean = lambda x: jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)
  metrics = dict(loss=loss, dvae_mse=mean(out["dvae_mse"]), token_ce=mean(out["token_ce"]),
                 kl_total=mean(kl), kl_per_slot=mean(kl) / out["kl"].shape[-1], beta=beta, tau=tau)
  return loss, (new_vars["batch_stats"], metrics, out)


def make_train_step(config, optimizer, mesh):
  """Jitted (state, batch, iteration) -> (state, metrics); donates the state."""
  model = make_model(config, train=True)

  def step(state: TrainState, batch, iteration):
    rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    grad_fn = jax.grad(functools.partial(segment_loss, config, model), has_aux=True)
    grads, (batch_stats, metrics, _) = grad_fn(state.params, state.batch_stats, batch,
                                               iteration, step_rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    for group, sub in optim.split_by_group(grads).items():
      metrics[f"grad_norm/{group}"] = optax.global_norm(sub)
    metrics["lr/main"] = schedules.main_learning_rate(config, iteration)
    metrics["lr/decoder"] = jnp.asarray(config.train.decoder_lr)
    metrics["lr/dvae"] = jnp.asarray(config.train.dvae_lr)
    new_state = TrainState(params=params, batch_stats=batch_stats, opt_state=opt_state,
                           rng=jax.random.key_data(rng))
    return new_state, metrics

  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, dat, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))


def make_collect_step(config, mesh):
  """Jitted replay collection: the encoder side in inference mode for all workers at once.

  (variables, frames uint8 [W, F, H, W, 3], r_prev [W, K, D], first bool [W, F], rng) ->
  (r_last [W, K, D], r_in [W, F, K, D] = the input state of every step). W = workers of all
  processes (sharded over devices).
  """
  model = make_model(config, train=False)

  def collect(variables, frames, r_prev, first, rng):
    r_last, out = model.apply(variables, frames, r_prev, first, method=VONet.encode,
                              rngs={"noise": rng})
    return r_last, out["r_in"]

  rep, dat = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(collect, in_shardings=(rep, dat, dat, dat, rep), out_shardings=(dat, dat))
