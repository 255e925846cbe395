"""Tests of vonet_jax.visualize: shapes, dtypes, colours where ids say, files written."""
import numpy as np
import PIL.Image
import pytest

from vonet_jax import visualize
from vonet_jax.errors import UserError

T, K, H, W = 3, 4, 8, 10


def example(seed=0):
  """A random video [T,H,W,3], soft masks [T,K,H,W], pred and true ids [T,H,W]."""
  rng = np.random.default_rng(seed)
  video = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
  logits = rng.normal(size=(T, K, H, W)) * 3
  masks = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  pred_ids = rng.integers(0, K + 1, (T, H, W))
  true_ids = rng.integers(0, 5, (T, H, W))
  return video, masks, pred_ids, true_ids


def test_colorize_follows_palette():
  ids = np.array([[0, 1, 2, 21]])
  colors = visualize.colorize(ids)
  assert colors.shape == (1, 4, 3) and colors.dtype == np.uint8
  np.testing.assert_array_equal(colors[0, 0], visualize.NULL_COLOR)
  np.testing.assert_array_equal(colors[0, 1], visualize.SLOT_COLORS[0])
  np.testing.assert_array_equal(colors[0, 2], visualize.SLOT_COLORS[1])
  np.testing.assert_array_equal(colors[0, 3], visualize.SLOT_COLORS[0])  # Wraps after 20.
  assert len({tuple(c) for c in visualize.SLOT_COLORS}) == len(visualize.SLOT_COLORS)


def test_video_grid_layout_and_colours():
  video, masks, pred_ids, true_ids = example()
  grid = visualize.video_grid(video, masks, pred_ids, true_ids)
  assert grid.dtype == np.uint8 and grid.shape == ((K + 4) * H, T * W, 3)
  frames = grid.reshape(K + 4, H, T, W, 3).transpose(0, 2, 1, 3, 4)  # [row, t, h, w, 3]
  np.testing.assert_array_equal(frames[0], video)
  expected_slot = np.round(masks[:, 1, :, :, None] * video).astype(np.uint8)
  np.testing.assert_allclose(frames[2].astype(int), expected_slot.astype(int), atol=1)
  segmentation = frames[K + 1].astype(int)
  target = (video.astype(int) + visualize.colorize(pred_ids).astype(int)) / 2
  np.testing.assert_allclose(segmentation, target, atol=1)
  grey = (pred_ids == 0) | (true_ids == 0)
  assert (frames[K + 2][grey] == visualize.GREY_LEVEL).all()
  np.testing.assert_array_equal(frames[K + 2][~grey], frames[K + 1][~grey])
  target_true = (video.astype(int) + visualize.colorize(true_ids).astype(int)) / 2
  np.testing.assert_allclose(frames[K + 3].astype(int), target_true, atol=1)


def test_video_grid_without_ground_truth_and_float_video():
  video, masks, pred_ids, _ = example(1)
  grid = visualize.video_grid(video / 255.0, masks, pred_ids)
  assert grid.shape == ((K + 3) * H, T * W, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[:H, :W], video[0])


def test_video_grid_rejects_mismatched_masks():
  video, masks, pred_ids, _ = example()
  with pytest.raises(UserError):
    visualize.video_grid(video, masks[..., ::2, ::2], pred_ids)


def test_reconstruction_grid():
  video, _, _, _ = example()
  grid = visualize.reconstruction_grid(video, video / 255.0, np.zeros((T, H, W, 3)))
  assert grid.shape == (3 * H, T * W, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[:H], grid[H:2 * H])
  assert (grid[2 * H:] == 0).all()
  with pytest.raises(UserError):
    visualize.reconstruction_grid(video, video[:2], video)


def test_kl_plot_draws_slot_colours():
  kl = np.stack([np.linspace(0, 1, 24), np.linspace(1, 0, 24)], axis=1) * [1.0, 2.0]
  image = visualize.kl_plot(kl, title="KL", size=(4, 3), dpi=50)
  assert image.shape == (150, 200, 3) and image.dtype == np.uint8
  pixels = image.reshape(-1, 3)
  for slot in range(2):
    assert (pixels == visualize.SLOT_COLORS[slot]).all(axis=1).any()


def test_save_png_roundtrip(tmp_path):
  video, masks, pred_ids, _ = example()
  grid = visualize.video_grid(video, masks, pred_ids)
  path = visualize.save_png(tmp_path / "sub" / "grid.png", grid)
  np.testing.assert_array_equal(np.asarray(PIL.Image.open(path).convert("RGB")), grid)


def test_save_video_gif_fallback(tmp_path, monkeypatch):
  monkeypatch.setattr(visualize, "ffmpeg_available", lambda: False)
  video, _, _, _ = example()
  path = visualize.save_video(tmp_path / "clip.mp4", video, fps=4)
  assert path.suffix == ".gif" and path.stat().st_size > 0
  with PIL.Image.open(path) as gif:
    assert gif.n_frames == T and gif.size == (W, H)


@pytest.mark.skipif(not visualize.ffmpeg_available(), reason="ffmpeg not on PATH")
def test_save_video_mp4(tmp_path):
  video, _, _, _ = example()
  path = visualize.save_video(tmp_path / "clip.mp4", np.repeat(video, 2, axis=0), fps=4)
  assert path.suffix == ".mp4" and path.stat().st_size > 0
