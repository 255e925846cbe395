"""Tests of vonet_jax.metrics against independent references (sklearn ARI, brute-force mIoU)."""
import numpy as np
import pytest
import scipy.optimize
import sklearn.metrics

from vonet_jax import metrics
from vonet_jax.errors import UserError


def reference_fg_ari(true_video, pred_video):
  """sklearn ARI on the foreground pixels of one video (ids >= 25 are background)."""
  true_flat = true_video.reshape(-1)
  pred_flat = pred_video.reshape(-1)
  foreground = (true_flat > 0) & (true_flat < 25)
  if not foreground.any():
    return np.nan
  return sklearn.metrics.adjusted_rand_score(true_flat[foreground], pred_flat[foreground])


def reference_miou(true_video, pred_video):
  """Brute force: one boolean mask per id, IoU matrix, Hungarian matching."""
  true_flat = np.where(true_video.reshape(-1) >= 25, 0, true_video.reshape(-1))
  pred_flat = pred_video.reshape(-1)
  true_masks = [true_flat == i for i in np.unique(true_flat)]
  pred_masks = [pred_flat == j for j in np.unique(pred_flat)]
  iou = np.array([[np.sum(t & p) / np.sum(t | p) for p in pred_masks] for t in true_masks])
  rows, cols = scipy.optimize.linear_sum_assignment(-iou)
  return iou[rows, cols].sum() / len(true_masks)


def blocky_ids(rng, batch, frames, size, num_ids, block=4):
  """Random piecewise-constant ids [B, T, size, size] (structured, like objects)."""
  coarse = rng.integers(0, num_ids, (batch, frames, size // block, size // block))
  return np.repeat(np.repeat(coarse, block, axis=2), block, axis=3)


def random_pairs(rng):
  """(true, pred) pairs: random noise, blocky, and blocky with corrupted predictions."""
  yield rng.integers(0, 6, (3, 2, 8, 8)), rng.integers(0, 5, (3, 2, 8, 8))
  true = blocky_ids(rng, 3, 4, 16, 7)
  yield true, true.copy()
  noisy = np.where(rng.random(true.shape) < 0.2, rng.integers(0, 12, true.shape), true)
  yield true, noisy
  yield true, blocky_ids(rng, 3, 4, 16, 12, block=8)
  with_outlier = true.copy()
  with_outlier[0, 0, :4, :4] = 64
  yield with_outlier, noisy


def test_segmentation_from_masks_threshold_rule():
  masks = np.zeros((2, 3, 1, 4), np.float32)  # [T=2, K=3, H=1, W=4]
  masks[0, :, 0, 0] = [0.1, 0.8, 0.1]   # confident slot 1 -> id 2
  masks[0, :, 0, 1] = [0.29, 0.28, 0.2]  # below threshold -> null 0
  masks[0, :, 0, 2] = [0.3, 0.2, 0.1]   # exactly at threshold -> kept, id 1
  masks[0, :, 0, 3] = [0.0, 0.0, 1.0]   # id 3
  ids = metrics.segmentation_from_masks(masks)
  assert ids.shape == (2, 1, 4) and ids.dtype == np.int32
  np.testing.assert_array_equal(ids[0, 0], [2, 0, 1, 3])
  np.testing.assert_array_equal(ids[1, 0], [0, 0, 0, 0])
  np.testing.assert_array_equal(metrics.segmentation_from_masks(masks, threshold=0.0)[1, 0],
                                [1, 1, 1, 1])


def test_segmentation_from_masks_rejects_missing_slot_axis():
  with pytest.raises(UserError):
    metrics.segmentation_from_masks(np.zeros((4, 4)))


def test_fg_ari_and_miou_match_references():
  rng = np.random.default_rng(0)
  for true, pred in random_pairs(rng):
    ari, iou = metrics.fg_ari_and_miou(true, pred)
    np.testing.assert_allclose(metrics.fg_ari(true, pred), ari)
    np.testing.assert_allclose(metrics.miou(true, pred), iou)
    for b in range(true.shape[0]):
      np.testing.assert_allclose(ari[b], reference_fg_ari(true[b], pred[b]), atol=1e-12)
      np.testing.assert_allclose(iou[b], reference_miou(true[b], pred[b]), atol=1e-12)


def test_perfect_prediction_scores_one():
  rng = np.random.default_rng(1)
  true = blocky_ids(rng, 2, 3, 16, 6)
  pred = (true * 7 + 3) % 11  # A relabelling (7 is invertible mod 11).
  np.testing.assert_allclose(metrics.fg_ari(true, pred), 1.0)
  np.testing.assert_allclose(metrics.miou(true, pred), 1.0)


def test_permutation_invariance_of_predicted_ids():
  rng = np.random.default_rng(2)
  true = blocky_ids(rng, 2, 3, 16, 6)
  pred = blocky_ids(rng, 2, 3, 16, 9, block=8)
  permuted = rng.permutation(12)[pred]
  np.testing.assert_allclose(metrics.fg_ari(true, permuted), metrics.fg_ari(true, pred))
  np.testing.assert_allclose(metrics.miou(true, permuted), metrics.miou(true, pred))


def test_video_is_one_clustering_over_time():
  """An identity switch between frames is penalised; per-frame scores would not see it."""
  true = np.zeros((1, 2, 4, 4), np.int32)
  true[:, :, :, :2] = 1
  true[:, :, :, 2:] = 2
  pred = true.copy()
  pred[0, 1] = 3 - true[0, 1]  # Swap ids 1 and 2 in frame 1.
  assert metrics.fg_ari(true, pred)[0] < 0.5
  assert metrics.miou(true, pred)[0] < 1.0
  assert metrics.fg_ari(true.reshape(2, 1, 4, 4), pred.reshape(2, 1, 4, 4)).tolist() == [1., 1.]


def test_video_without_foreground_has_nan_fg_ari():
  true = np.zeros((2, 2, 4, 4), np.int32)
  true[1, 0, 0, 0] = 30  # Outlier id: background too.
  pred = np.ones_like(true)
  assert np.isnan(metrics.fg_ari(true, pred)).all()
  np.testing.assert_allclose(metrics.miou(true, pred), 1.0)
  summary = metrics.summarize(np.array([0.5, np.nan, 0.7]))
  assert summary["n"] == 2 and summary["n_excluded"] == 1
  np.testing.assert_allclose(summary["mean"], 0.6)
  empty = metrics.summarize(metrics.fg_ari(true, pred))
  assert np.isnan(empty["mean"]) and empty["n"] == 0 and empty["n_excluded"] == 2


def test_single_ground_truth_object():
  true = np.zeros((1, 1, 4, 4), np.int32)
  true[..., 1:3, 1:3] = 5
  one_cluster = np.where(true > 0, 2, 0)
  split = one_cluster.copy()
  split[..., 1, 1:3] = 3
  assert metrics.fg_ari(true, one_cluster)[0] == 1.0
  assert metrics.fg_ari(true, split)[0] == 0.0
  for pred in (one_cluster, split):
    np.testing.assert_allclose(metrics.fg_ari(true, pred), reference_fg_ari(true[0], pred[0]))
  np.testing.assert_allclose(metrics.miou(true, one_cluster), 1.0)
  np.testing.assert_allclose(metrics.miou(true, split), (1.0 + 0.5) / 2)


def test_single_foreground_pixel_and_all_one_predicted_id():
  true = np.zeros((1, 1, 3, 3), np.int32)
  true[0, 0, 1, 1] = 1
  pred = np.zeros_like(true)
  assert metrics.fg_ari(true, pred)[0] == 1.0  # sklearn convention for one point.
  # All pixels in one predicted id: FG-ARI 0 with >1 true objects, mIoU = best single IoU / #ids.
  true = np.array([[[[0, 1, 1, 2]]]])
  pred = np.full_like(true, 4)
  assert metrics.fg_ari(true, pred)[0] == 0.0
  np.testing.assert_allclose(metrics.miou(true, pred), 0.5 / 3)
  np.testing.assert_allclose(metrics.miou(true, pred), reference_miou(true[0], pred[0]))


def test_unmatched_ground_truth_counts_zero():
  true = np.array([[[[0, 1, 2, 3]]]])
  pred = np.array([[[[1, 1, 2, 2]]]])  # Two predicted ids for four true ids.
  np.testing.assert_allclose(metrics.miou(true, pred), (0.5 + 0.5) / 4)


def test_contingency_table_counts_every_pixel():
  rng = np.random.default_rng(3)
  true = rng.integers(0, 40, (2, 3, 5, 5))
  pred = rng.integers(0, 11, (2, 3, 5, 5))
  tables = metrics.contingency_tables(true, pred, max_pred_id=10)
  assert tables.shape == (2, metrics.MAX_TRUE_ID, 11)
  assert (tables.sum(axis=(1, 2)) == 75).all()
  background = (true == 0) | (true >= 25)
  np.testing.assert_array_equal(tables[:, 0].sum(axis=1), background.sum(axis=(1, 2, 3)))


def test_huge_ground_truth_ids_are_background_not_wrapped():
  true = np.array([[[2**32 + 3, 2**32 + 3, 1, 1]]], np.int64)  # Would wrap to 3 as int32.
  pred = np.array([[[1, 2, 3, 3]]])
  tables = metrics.contingency_tables(true, pred)
  assert tables[0, 0].sum() == 2 and tables[0, 3].sum() == 0
  np.testing.assert_allclose(metrics.miou(true, pred), (0.5 + 1.0) / 2)


@pytest.mark.parametrize("true, pred, kwargs", [
    (np.full((1, 2, 2), -1), np.zeros((1, 2, 2), int), {}),
    (np.zeros((1, 2, 2), int), np.full((1, 2, 2), -2), {}),
    (np.zeros((1, 2, 2), int), np.full((1, 2, 2), 256), {}),
    (np.zeros((1, 2, 2), int), np.full((1, 2, 2), 12), {"max_pred_id": 11}),
    (np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int), {}),
    (np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), np.float32), {}),
    (np.zeros((4,), int), np.zeros((4,), int), {}),
    (np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), {"max_pred_id": 10**6}),
])
def test_bad_ids_raise(true, pred, kwargs):
  for metric in (metrics.fg_ari, metrics.miou):
    with pytest.raises(UserError):
      metric(true, pred, **kwargs)
