"""Iteration-counted schedules of SPEC.md sections 2-3: main learning rate, beta, tau.

Every schedule counts iterations from the start of replay collection, so training (which starts
once `config.replay.initial_frames` frames are stored) begins part-way along them.
"""
import jax.numpy as jnp
import ml_collections


def _linear(step, start_value, end_value, start_step, end_step):
  frac = jnp.clip((step - start_step) / max(end_step - start_step, 1), 0.0, 1.0)
  return start_value + frac * (end_value - start_value)


def main_learning_rate(config: ml_collections.ConfigDict, iteration):
  """Linear warm-up start -> peak over [0, warmup], hold until hold_until, linear decay to end
  at decay_until, constant after."""
  t = config.train
  warm = _linear(iteration, t.main_lr_start, t.main_lr_peak, 0, t.main_warmup_steps)
  decay = _linear(iteration, t.main_lr_peak, t.main_lr_end, t.main_hold_until, t.main_decay_until)
  return jnp.where(iteration < t.main_hold_until, warm, decay)


def kl_weight(config: ml_collections.ConfigDict, iteration):
  """beta: linear 0 -> beta_max over beta_warmup_steps, divided by model.kl_weight_divisor."""
  t = config.train
  beta = _linear(iteration, 0.0, t.beta_max, 0, t.beta_warmup_steps)
  return beta / config.model.kl_weight_divisor


def gumbel_temperature(config: ml_collections.ConfigDict, iteration):
  """tau: linear tau_start -> tau_end over tau_steps, constant after."""
  t = config.train
  return _linear(iteration, t.tau_start, t.tau_end, 0, t.tau_steps)


def first_training_iteration(config: ml_collections.ConfigDict) -> int:
  """Iteration at which the replay buffer first holds `initial_frames` frames (per process).

  Every iteration stores num_workers * frames_per_iteration frames; e.g. 50k / 32 -> 1563.
  """
  r = config.replay
  per_iteration = r.num_workers * r.frames_per_iteration
  return max(-(-r.initial_frames // per_iteration), 1)
