"""Tests of vonet_jax.slot_diagnostics: the measurements on known arrays, and on a tiny model."""
import jax
import numpy as np

from configs import tiny
from vonet_jax import metrics, slot_diagnostics, train_step


def test_slot_spread_is_zero_for_identical_slots_and_the_mean_distance_otherwise():
  same = np.ones((4, 3, 5))  # [T, K, D]
  spread = slot_diagnostics.slot_spread(same)
  np.testing.assert_allclose(spread, np.zeros(4))
  r = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]])  # mean 0, distances 1,1,3,3
  np.testing.assert_allclose(slot_diagnostics.slot_spread(r), [2.0])
  assert spread.shape == (4,)


def test_mask_confidence_matches_the_threshold_rule():
  masks = np.zeros((1, 2, 1, 4))  # [T, K, H, W]
  masks[0, 0, 0] = [1.0, 0.5, 0.3, 0.2]
  masks[0, 1, 0] = [0.0, 0.5, 0.7, 0.2]  # the last pixel sums to 0.4: only its peak matters
  peak, above = slot_diagnostics.mask_confidence(masks, 0.6)
  np.testing.assert_allclose(peak, [(1.0 + 0.5 + 0.7 + 0.2) / 4])
  np.testing.assert_allclose(above, [0.5])


def test_codebook_use_counts_words_and_their_entropy():
  use = slot_diagnostics.codebook_use(np.array([[3, 3, 7, 7]]))
  assert use["words"] == 2
  np.testing.assert_allclose(use["entropy"], np.log(2))
  assert slot_diagnostics.codebook_use(np.full((5,), 9)) == dict(words=1, entropy=0.0)


def test_fg_ari_per_frame_scores_frames_apart_where_the_video_score_sees_a_switch():
  truth = np.zeros((1, 2, 2, 4), int)  # [N, T, H, W]: objects 1 and 2 on the right
  truth[..., 2:] = [1, 2]
  switched = truth.copy()
  switched[0, 1] = np.where(truth[0, 1] > 0, 3 - truth[0, 1], 0)  # the slots trade objects
  np.testing.assert_allclose(slot_diagnostics.fg_ari_per_frame(truth, switched, 3), [1.0, 1.0])
  assert metrics.fg_ari(truth, switched, 3)[0] < 0.5  # the video score counts the switch
  merged = np.where(truth > 0, 1, 0)  # one segment for both objects in both frames
  np.testing.assert_allclose(slot_diagnostics.fg_ari_per_frame(truth, merged, 3), [0.0, 0.0])


def test_diagnose_a_fresh_tiny_model():
  config = tiny.get_config()
  variables = train_step.init_variables(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  t, res = config.data.num_frames, config.data.resolution
  videos = [dict(video=rng.integers(0, 256, (t, res, res, 3), dtype=np.uint8),
                 segmentations=rng.integers(0, 3, (t, res, res))) for _ in range(2)]
  report = slot_diagnostics.diagnose(config, variables, videos)
  assert len(report["slot_spread"]) == len(report["mask_peak"]) == t
  assert report["slot_spread"][0] > 0  # fresh initial slots differ
  assert all(1 / config.model.num_slots <= p <= 1 for p in report["mask_peak"])
  assert -1 <= report["fg_ari_argmax"] <= 1
  assert len(report["fg_ari_per_frame"]) == t
  assert all(-1 <= a <= 1 for a in report["fg_ari_per_frame"] if np.isfinite(a))
  ce = report["token_ce"]
  assert all(np.isfinite(v) and v > 0 for v in ce.values())
  assert ce["own"] != ce["zero"]  # an untrained decoder's output depends on its slots
  assert 1 < report["codebook"]["words"] <= config.model.dvae.vocab_size  # random frames
