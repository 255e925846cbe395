"""Tests of vonet_jax.kmeans_baseline on synthetic videos of solid squares."""
import numpy as np
import pytest

from vonet_jax import kmeans_baseline, metrics
from vonet_jax.errors import UserError


def two_squares(frames=24, size=64):
  """Red and blue 12x12 squares moving over grey (size >= 64 shows both).

  Returns:
    video uint8 [T, size, size, 3], true ids int32 [T, size, size] (0 = background).
  """
  video = np.full((frames, size, size, 3), 90, np.uint8)
  true_ids = np.zeros((frames, size, size), np.int32)
  for t in range(frames):
    squares = ((1, (220, 30, 30), (8, 4 + t)), (2, (30, 30, 220), (40, 48 - t)))
    for object_id, color, (y, x) in squares:
      video[t, y:y + 12, x:x + 12] = color
      true_ids[t, y:y + 12, x:x + 12] = object_id
  return video, true_ids


def test_separates_two_squares():
  video, true_ids = two_squares()
  pred = kmeans_baseline.kmeans_segmentation(video, num_segments=3)
  assert pred.shape == true_ids.shape and pred.dtype == np.int32
  assert pred.min() >= 1 and pred.max() <= 3
  ari, iou = metrics.fg_ari_and_miou(true_ids[None], pred[None], max_pred_id=3)
  assert ari[0] > 0.99 and iou[0] > 0.99


def test_more_segments_than_objects_keeps_ids_in_range_and_is_deterministic():
  video, true_ids = two_squares(frames=6)
  pred = kmeans_baseline.kmeans_segmentation(video, num_segments=11, seed=1)
  assert pred.min() >= 1 and pred.max() <= 11
  np.testing.assert_array_equal(pred, kmeans_baseline.kmeans_segmentation(video, 11, seed=1))
  assert metrics.fg_ari(true_ids[None], pred[None], max_pred_id=11)[0] > 0.5


def test_pixel_features_are_weighted_and_scaled():
  video, _ = two_squares(frames=3, size=8)
  features = kmeans_baseline.pixel_features(video)
  assert features.shape == (3 * 8 * 8, 6)
  np.testing.assert_allclose(features[0], [90 / 255] * 3 + [0, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(features[-1, 3:], [kmeans_baseline.POSITION_WEIGHT] * 2
                             + [kmeans_baseline.TIME_WEIGHT], rtol=1e-6)


@pytest.mark.parametrize("video, segments", [
    (np.zeros((2, 4, 4, 3), np.float32), 2),
    (np.zeros((4, 4, 3), np.uint8), 2),
    (np.zeros((2, 4, 4, 3), np.uint8), 0),
])
def test_bad_input_raises(video, segments):
  with pytest.raises(UserError):
    kmeans_baseline.kmeans_segmentation(video, segments)


def test_more_segments_than_colours_does_not_fail():
  video = np.full((1, 4, 4, 3), 7, np.uint8)
  pred = kmeans_baseline.kmeans_segmentation(video, num_segments=10)
  assert pred.shape == (1, 4, 4) and pred.min() >= 1 and pred.max() <= 10
