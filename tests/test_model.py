"""Tests of the assembled VONet model (SPEC.md sections 2 and 7) on tiny sizes or abstractly."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import movi_a, movi_d
from configs import tiny as tiny_configs
from vonet_jax import train, train_step
from vonet_jax.models.attention import RecurrentAttention, key_context_logits
from vonet_jax.models.unet_input import BroadcastConv
from vonet_jax.models.slots import InitialSlots, balanced_kl, gaussian_kl
from vonet_jax.models.vonet import VONet, make_model, masked_mean_of_values


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def abstract_params(config):
  return jax.eval_shape(lambda k: train_step.init_variables(config, k), jax.random.key(0))["params"]


@pytest.mark.parametrize("config_module,total,unet", [
    (movi_a, 25_319_396, 3_248_609), (movi_d, 24_187_876, 2_117_089)])
def test_full_size_parameter_counts(config_module, total, unet):
  # SPEC.md section 7. Exact: the GRU is PyTorch-style with both bias sets (slots.GRUCell).
  p = abstract_params(config_module.get_config())
  assert count(p) == total
  attention = p["dynamics"]["attention"]
  assert count(attention["unet"]["mask_transformer"]) == 12_598_272
  assert count(attention["unet"]) - count(attention["unet"]["mask_transformer"]) == unet
  assert count(p["decoder"]["transformer"]) == 4_735_872
  assert count(p["decoder"]["token_embedding"]) == 786_432
  assert count(p["decoder"]["logits"]) == 786_816
  assert count(p["dvae"]) == 676_355
  assert count(p["dvae"]["encoder"]) == 290_176
  assert count(p["dvae"]["decoder"]) == 386_179
  assert count(p["backbone"]) - count(p["backbone"]["pos_emb"]) == 343_424
  assert count(p["dynamics"]["trajectory"]["gru"]) == 2 * (128 * 384 + 384)


@pytest.fixture(scope="module")
def tiny():
  config = tiny_configs.get_config()
  variables = train_step.init_variables(config, jax.random.key(0))
  return config, variables


def encode(config, variables, frames, r_prev, first, seed=0):
  model = make_model(config, train=False)
  return model.apply(variables, frames, r_prev, first, method=VONet.encode,
                     rngs={"noise": jax.random.key(seed)})


def random_inputs(config, b=2, t=3, seed=0):
  rng = np.random.default_rng(seed)
  res, m = config.data.resolution, config.model
  frames = rng.integers(0, 256, (b, t, res, res, 3), dtype=np.uint8)
  r_prev = rng.normal(size=(b, m.num_slots, m.slot_size)).astype(np.float32)
  return frames, r_prev


def test_masks_are_a_partition_of_unity(tiny):
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  first = np.array([[True, False, False], [False, False, False]])
  _, out = encode(config, variables, frames, r_prev, first)
  masks = np.asarray(out["masks"])  # [B, T, K, h, w]
  assert masks.shape == (2, 3, 3, 16, 16)
  assert (masks >= 0).all()
  np.testing.assert_allclose(masks.sum(axis=2), 1.0, atol=1e-5)


def test_slot_permutation_equivariance(tiny):
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  first = np.zeros((2, 3), bool)  # no reset: the outputs are a function of r_prev
  perm = np.array([2, 0, 1])
  _, out = encode(config, variables, frames, r_prev, first)
  _, out_p = encode(config, variables, frames, r_prev[:, perm], first)
  for key in ("masks", "est_log_masks", "r", "post_mu", "post_log_sigma", "prior_mu",
              "prior_log_sigma", "kl"):
    np.testing.assert_allclose(np.asarray(out_p[key]), np.asarray(out[key])[:, :, perm],
                               atol=2e-4, rtol=2e-4, err_msg=key)


def test_initial_slots_are_permutation_equivariant(tiny):
  config, variables = tiny
  init = InitialSlots(ml_collections.FrozenConfigDict(config.model.init_transformer))
  params = {"params": variables["params"]["dynamics"]["initial_slots"]}
  noise = jax.random.normal(jax.random.key(3), (2, 3, config.model.slot_size))
  perm = np.array([1, 2, 0])
  np.testing.assert_allclose(init.apply(params, noise[:, perm]),
                             init.apply(params, noise)[:, perm], atol=1e-5)


def test_unroll_resets_where_a_video_starts(tiny):
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  first = np.array([[False, True, False], [False, False, False]])
  _, out_a = encode(config, variables, frames, r_prev, first)
  _, out_b = encode(config, variables, frames, r_prev + 1.0, first)
  # Video 0 resets at t=1: from there on nothing depends on the stored state.
  np.testing.assert_allclose(out_a["masks"][0, 1:], out_b["masks"][0, 1:], atol=1e-6)
  assert not np.allclose(out_a["masks"][0, 0], out_b["masks"][0, 0], atol=1e-4)
  assert not np.allclose(out_a["masks"][1, 2], out_b["masks"][1, 2], atol=1e-4)
  # The state carried from t to t+1 is r_t.
  np.testing.assert_allclose(out_a["r_in"][1, 1:], out_a["r"][1, :-1], atol=1e-6)


def test_estimated_mask_is_local_and_wo_unet_uses_it(tiny):
  config, variables = tiny
  frames, r_prev = random_inputs(config, t=1)
  first = np.zeros((2, 1), bool)
  changed = frames.copy()
  changed[:, :, :4, :4] = 255 - changed[:, :, :4, :4]  # top-left 4x4 pixels of 32x32
  _, a = encode(config, variables, frames, r_prev, first)
  _, b = encode(config, variables, changed, r_prev, first)
  diff = np.abs(np.asarray(a["est_log_masks"]) - np.asarray(b["est_log_masks"])).max(axis=(0, 1, 2))
  assert diff[:4, :4].max() > 1e-4  # [h, w] = 16x16 feature map
  assert diff[10:, 10:].max() == 0.0  # outside the receptive field of the 2 backbone blocks
  cfg = config.copy_and_resolve_references()
  cfg.model.use_unet = False
  _, out = encode(cfg, variables, frames, r_prev, first)
  np.testing.assert_allclose(out["masks"], np.exp(out["est_log_masks"]), atol=1e-6)


def test_unet_zero_output_starts_the_masks_at_the_estimated_masks(tiny):
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  first = np.zeros((2, 3), bool)
  _, out = encode(config, variables, frames, r_prev, first)
  assert np.abs(out["log_masks"] - out["est_log_masks"]).max() > 0.1  # by default
  cfg = config.copy_and_resolve_references()
  cfg.model.unet_zero_output = True
  _, out = encode(cfg, train_step.init_variables(cfg, jax.random.key(0)), frames, r_prev, first)
  np.testing.assert_allclose(out["log_masks"], out["est_log_masks"], atol=1e-6)


def test_broadcast_conv_closed_form_equals_plain_conv():
  c = jax.random.normal(jax.random.key(0), (5, 6))
  plain = BroadcastConv(7, 9, 8, method="plain")
  closed = BroadcastConv(7, 9, 8, method="closed_form")
  params = plain.init(jax.random.key(1), c)
  np.testing.assert_allclose(closed.apply(params, c), plain.apply(params, c), atol=1e-5)


def _assert_same_values_and_gradients(f, plain, args, weights):
  """f(*args) equals plain(*args), and so do the gradients of sum(f * weights) w.r.t. each arg."""
  np.testing.assert_allclose(f(*args), plain(*args), rtol=1e-5, atol=1e-5)
  argnums = tuple(range(len(args)))
  grads = [jax.grad(lambda *a: jnp.sum(g(*a) * weights), argnums=argnums)(*args)
           for g in (f, plain)]
  for g, ref in zip(*grads):
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5)


def test_masked_mean_of_values_equals_the_mean_of_the_values():
  # The slot step's input y: the masked mean of the values F @ W + b, from the masked mean of F.
  ks = jax.random.split(jax.random.key(0), 5)
  masks = jax.nn.softmax(jax.random.normal(ks[0], (2, 3, 5, 4)), axis=1)
  features = jax.random.normal(ks[1], (2, 5, 4, 6))
  kernel, bias = jax.random.normal(ks[2], (6, 7)), jax.random.normal(ks[3], (7,))
  weights = jax.random.normal(ks[4], (2, 3, 7))

  def plain(masks, features, kernel, bias):
    values = features @ kernel + bias  # [B, h, w, C]
    return jnp.einsum("bkhw,bhwc->bkc", masks, values) / 20

  _assert_same_values_and_gradients(masked_mean_of_values, plain,
                                    (masks, features, kernel, bias), weights)


def test_key_context_logits_equal_the_dot_products_of_the_keys():
  # The estimated masks' logits: the keys F @ W + b dotted with each context, from W @ context.
  ks = jax.random.split(jax.random.key(0), 5)
  features = jax.random.normal(ks[0], (2, 5, 4, 6))
  context = jax.random.normal(ks[1], (2, 3, 7))
  kernel, bias = jax.random.normal(ks[2], (6, 7)), jax.random.normal(ks[3], (7,))
  weights = jax.random.normal(ks[4], (2, 3, 5, 4))

  def plain(features, context, kernel, bias):
    keys = features @ kernel + bias  # [B, h, w, C]
    return jnp.einsum("bhwc,bkc->bkhw", keys, context) / jnp.sqrt(7.0)

  _assert_same_values_and_gradients(key_context_logits, plain,
                                    (features, context, kernel, bias), weights)


def test_recurrent_attention_matches_a_python_loop(tiny):
  config, _ = tiny
  cfg = ml_collections.FrozenConfigDict(config.model)
  features = jax.random.normal(jax.random.key(0), (2, 16, 16, cfg.feature_size))
  r = jax.random.normal(jax.random.key(1), (2, cfg.num_slots, cfg.slot_size))
  monet = RecurrentAttention(cfg)
  params = monet.init(jax.random.key(2), features, r)
  masks = np.asarray(monet.apply(params, features, r))
  np.testing.assert_allclose(masks.sum(axis=1), 1.0, atol=1e-5)
  assert (masks >= 0).all()
  # Reference: the same U-Net step called slot after slot in Python, in probability space.
  from vonet_jax.models.attention import _MonetStep
  from vonet_jax.models.transformer import FeedForward
  p = params["params"]
  context = FeedForward(cfg.mlp_hidden, cfg.feature_size).apply({"params": p["context"]}, r)
  step = _MonetStep(cfg)
  scope = jnp.ones((2, 16, 16))
  expected = []
  for k in range(cfg.num_slots - 1):
    _, log_mask = step.apply({"params": p["step"]}, jnp.log(scope), features, context[:, k])
    expected.append(jnp.exp(log_mask))
    scope = scope - expected[-1]
  expected.append(scope)
  np.testing.assert_allclose(masks, np.stack(expected, axis=1), atol=1e-5)


def test_gradients_of_the_loss_terms(tiny):
  """dVAE: no gradient from cross-entropy or KL. KL balancing: the prior gets kappa and the
  posterior 1 - kappa of the plain KL's gradient."""
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  first = np.array([[True, False, False], [False, False, True]])

  def term(params, name, kappa=None):
    cfg = config.copy_and_resolve_references()
    if kappa is not None:
      cfg.model.kl_balance = kappa
    m = make_model(cfg, train=False)
    _, out = m.apply({"params": params, "batch_stats": variables["batch_stats"]}, frames, r_prev,
                     first, 0.5, rngs={"noise": jax.random.key(0), "gumbel": jax.random.key(1)})
    return out[name].sum()

  # One compiled function for the three gradients (run op by op, they took a minute).
  g_ce, g_bal, g_plain = jax.jit(lambda p: (
      jax.grad(term)(p, "token_ce"), jax.grad(term)(p, "kl", 0.7),
      jax.grad(term)(p, "kl", 0.5)))(variables["params"])  # 0.5 * (KL + KL) = plain KL
  for g in (g_ce, g_bal):
    assert count(g["dvae"]) > 0
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree_util.tree_leaves(g["dvae"]))
  prior = lambda g: g["dynamics"]["prior"]
  posterior = lambda g: g["dynamics"]["posterior"]
  for part, share in ((prior, 0.7), (posterior, 0.3)):
    for a, b in zip(jax.tree_util.tree_leaves(part(g_bal)), jax.tree_util.tree_leaves(part(g_plain))):
      np.testing.assert_allclose(a, share / 0.5 * b, rtol=1e-4, atol=1e-3)


def test_segment_loss_resets_where_the_batch_says(tiny):
  """The loss unrolls from the stored state unless the batch's `first` says reset (wo-Replay
  resets every segment's first frame: then the stored state must not matter)."""
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  index = np.array([[5, 6, 7], [8, 9, 10]])  # no video starts inside these segments
  model = make_model(config, train=True)

  @jax.jit  # compiled once for the four calls (op by op they took a minute)
  def segment_loss(state, first):
    batch = dict(frames=frames, state=state, frame_index=index, first=first)
    return train_step.segment_loss(config, model, variables["params"], variables["batch_stats"],
                                   batch, 100, jax.random.key(3))[0]

  def loss(state, replay):
    return float(segment_loss(state, train.segment_resets(index, replay)))

  assert loss(r_prev, True) != loss(r_prev + 1.0, True)
  assert loss(r_prev, False) == loss(r_prev + 1.0, False)
  np.testing.assert_array_equal(train.segment_resets(np.array([[22, 23, 0]]), True),
                                [[False, False, True]])


def test_bulk_rng_rbg_redraws_only_dropout_and_gumbel_noise(tiny):
  """train.bulk_rng='rbg': the same slot noise (KL identical), other dropout and Gumbel draws
  (dVAE error differs), with the right distributions."""
  config, variables = tiny
  frames, r_prev = random_inputs(config)
  index = np.array([[0, 1, 2], [5, 6, 7]])
  batch = dict(frames=frames, state=r_prev, frame_index=index, first=index == 0)
  metrics = {}
  for impl in ("threefry", "rbg"):
    cfg = config.copy_and_resolve_references()
    cfg.train.bulk_rng = impl
    _, (_, metrics[impl], _) = train_step.segment_loss(
        cfg, make_model(cfg, train=True), variables["params"], variables["batch_stats"], batch,
        100, jax.random.key(3))
  np.testing.assert_array_equal(metrics["rbg"]["kl_total"], metrics["threefry"]["kl_total"])
  assert float(metrics["rbg"]["dvae_mse"]) != float(metrics["threefry"]["dvae_mse"])
  assert np.isfinite(float(metrics["rbg"]["loss"]))
  cfg = config.copy_and_resolve_references()
  cfg.train.bulk_rng = "rbg"
  rngs = train_step.model_rngs(cfg, jax.random.key(3))
  assert jax.random.key_impl(rngs["dropout"]) != jax.random.key_impl(rngs["noise"])
  keep = jax.random.bernoulli(rngs["dropout"], 0.9, (1_000_000,))
  assert abs(float(keep.mean()) - 0.9) < 0.002  # 6.7 standard deviations
  gumbel = jax.random.gumbel(rngs["gumbel"], (1_000_000,))
  assert abs(float(gumbel.mean()) - np.euler_gamma) < 0.01  # 7.8 standard deviations


def test_gaussian_kl_matches_closed_form_and_balancing_value():
  mu_q, ls_q, mu_p, ls_p = (jnp.array([[0.3, -1.0]]), jnp.array([[0.1, -0.2]]),
                            jnp.array([[0.0, 0.5]]), jnp.array([[0.4, 0.0]]))
  sq, sp = np.exp(ls_q), np.exp(ls_p)
  expected = np.mean(np.log(sp / sq) + (sq ** 2 + (mu_q - mu_p) ** 2) / (2 * sp ** 2) - 0.5)
  np.testing.assert_allclose(gaussian_kl(mu_q, ls_q, mu_p, ls_p), [expected], rtol=1e-6)
  np.testing.assert_allclose(balanced_kl((mu_q, ls_q), (mu_p, ls_p), 0.7), [expected], rtol=1e-6)


def test_reconstruct_decodes_images(tiny):
  config, variables = tiny
  model = make_model(config, train=False)
  z = jax.random.normal(jax.random.key(0), (2, config.model.num_slots, config.model.slot_size))
  images = model.apply(variables, z, method=VONet.reconstruct)
  assert images.shape == (2, 32, 32, 3)
