"""Pictures of what the model does: segmentation grids, reconstructions, per-slot KL curves.

Everything returns uint8 RGB images [H, W, 3]; add a leading axis (`image[None]`) to log one with
`clu.metric_writers` `write_images`, which takes [N, H, W, 3]. Colours are fixed: slot k (id k + 1
in a segmentation, line k in `kl_plot`) is always `SLOT_COLORS[k % len(SLOT_COLORS)]`; id 0 (the
null slot of a prediction, the background of a ground truth) is `NULL_COLOR`.
"""
import pathlib
import shutil

import matplotlib.backends.backend_agg
import matplotlib.figure
import numpy as np
import PIL.Image

from vonet_jax.errors import UserError

# Slot colours, RGB: slot k (segmentation id k + 1) gets row k % 20.
SLOT_COLORS = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [255, 255, 255],
], np.uint8)
# Colour of id 0: predicted null slot / ground-truth background.
NULL_COLOR = np.array([64, 64, 64], np.uint8)
# Grey level that `video_grid`'s foreground row paints over pixels it leaves out.
GREY_LEVEL = 128


def to_uint8(images):
  """uint8 images unchanged; float images in [0, 1] clipped, scaled to 0..255 and rounded.

  Args:
    images: uint8 or float array [..., H, W, C].

  Returns:
    uint8 array of the same shape.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise UserError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}; "
                    "cast them to one of those")
  return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def colorize(ids):
  """Paints integer ids with the slot palette.

  Args:
    ids: non-negative integer array [...]; 0 -> `NULL_COLOR`, k >= 1 -> SLOT_COLORS[k - 1].

  Returns:
    uint8 array [..., 3].
  """
  ids = np.asarray(ids)
  if not np.issubdtype(ids.dtype, np.integer) or (ids.size and ids.min() < 0):
    raise UserError("ids must be non-negative integers; build them with "
                    "metrics.segmentation_from_masks")
  table = np.concatenate([NULL_COLOR[None], SLOT_COLORS], axis=0)
  slot = np.where(ids > 0, (ids - 1) % len(SLOT_COLORS) + 1, 0)
  return table[slot]


def overlay(frames, ids, alpha=0.5):
  """Alpha-blends the colours of `ids` over `frames`.

  Args:
    frames: uint8 or float [..., H, W, 3].
    ids: integer [..., H, W].
    alpha: weight of the id colour (1 = colours only).

  Returns:
    uint8 [..., H, W, 3].
  """
  frames = to_uint8(frames).astype(np.float32)
  blended = (1.0 - alpha) * frames + alpha * colorize(ids).astype(np.float32)
  return np.round(blended).astype(np.uint8)


def _tile(rows):
  """Rows of frames [R][T, H, W, 3] -> one image [R*H, T*W, 3] (time left to right)."""
  return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)


def _check_frames(name, array, shape):
  """Raises UserError unless array.shape == shape."""
  if tuple(array.shape) != tuple(shape):
    raise UserError(f"{name} has shape {tuple(array.shape)}, expected {tuple(shape)}; "
                    "resize it to the video's [T, H, W] (masks: upsample 2x nearest)")


def video_grid(video, masks, pred_ids, true_ids=None):
  """One picture of a video's segmentation, frames left to right.

  Rows, top to bottom: the input; one row per slot k with the frame weighted by its soft mask
  (mask * frame, black where the slot is absent); the hard segmentation `pred_ids` blended over the
  frame in slot colours; the same restricted to foreground (pixels with predicted null id 0 and,
  when `true_ids` is given, ground-truth background pixels are painted grey: what FG-ARI sees);
  the ground truth blended over the frame (only when `true_ids` is given).

  Args:
    video: uint8 [T, H, W, 3] (or float in [0, 1]).
    masks: float [T, K, H, W] soft slot masks at the frame resolution.
    pred_ids: int [T, H, W], 0 = null, k + 1 = slot k.
    true_ids: optional int [T, H, W], 0 = background.

  Returns:
    uint8 [R*H, T*W, 3] with R = K + 3, or K + 4 with `true_ids`.
  """
  video = to_uint8(video)
  if video.ndim != 4 or video.shape[-1] != 3:
    raise UserError(f"video must be [T, H, W, 3], got shape {video.shape}; "
                    "pass one video, not a batch")
  num_frames, height, width, _ = video.shape
  masks = np.asarray(masks, np.float32)
  if masks.ndim != 4:
    raise UserError(f"masks must be [T, K, H, W], got shape {masks.shape}; "
                    "put the slot axis after time")
  _check_frames("masks", masks[:, 0], (num_frames, height, width))
  pred_ids = np.asarray(pred_ids)
  _check_frames("pred_ids", pred_ids, (num_frames, height, width))
  rows = [video]
  for slot in range(masks.shape[1]):
    weighted = masks[:, slot, :, :, None] * video.astype(np.float32)
    rows.append(np.round(np.clip(weighted, 0, 255)).astype(np.uint8))
  rows.append(overlay(video, pred_ids))
  left_out = pred_ids == 0
  if true_ids is not None:
    true_ids = np.asarray(true_ids)
    _check_frames("true_ids", true_ids, (num_frames, height, width))
    left_out = left_out | (true_ids == 0)
  rows.append(np.where(left_out[..., None], np.uint8(GREY_LEVEL), rows[-1]))
  if true_ids is not None:
    rows.append(overlay(video, true_ids))
  return _tile(rows)


def reconstruction_grid(video, recon_posterior, recon_prior):
  """Input, reconstruction from posterior slots, reconstruction from prior slots (Figure 8, left).

  Args:
    video, recon_posterior, recon_prior: [T, H, W, 3] each, uint8 or float in [0, 1].

  Returns:
    uint8 [3*H, T*W, 3]: the three rows in that order, frames left to right.
  """
  rows = [to_uint8(video), to_uint8(recon_posterior), to_uint8(recon_prior)]
  if rows[0].ndim != 4 or rows[0].shape[-1] != 3:
    raise UserError(f"video must be [T, H, W, 3], got shape {rows[0].shape}; pass one video")
  for name, row in zip(("recon_posterior", "recon_prior"), rows[1:]):
    _check_frames(name, row, rows[0].shape)
  return _tile(rows)


def kl_plot(kl, slots=None, title=None, size=(4.0, 3.0), dpi=100):
  """Line plot of per-slot KL over the frames (Figure 8, right), drawn off-screen (Agg).

  Args:
    kl: float [T, K], KL of each slot at each frame.
    slots: which slots to draw (default all); slot k is drawn in SLOT_COLORS[k].
    title: optional plot title.
    size: figure size in inches (width, height).
    dpi: dots per inch; the image is round(size * dpi) pixels.

  Returns:
    uint8 [round(size[1]*dpi), round(size[0]*dpi), 3].
  """
  kl = np.asarray(kl, np.float64)
  if kl.ndim != 2:
    raise UserError(f"kl must be [T, K] (frames, slots), got shape {kl.shape}; "
                    "pass one video's per-slot KL")
  slots = list(range(kl.shape[1]) if slots is None else slots)
  figure = matplotlib.figure.Figure(figsize=size, dpi=dpi)
  canvas = matplotlib.backends.backend_agg.FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  for slot in slots:
    color = SLOT_COLORS[slot % len(SLOT_COLORS)] / 255.0
    axes.plot(np.arange(kl.shape[0]), kl[:, slot], color=color, label=f"slot {slot}")
  axes.set_xlabel("frame")
  axes.set_ylabel("KL")
  if title:
    axes.set_title(title)
  if len(slots) <= 8:
    axes.legend(fontsize="small")
  figure.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(path, image):
  """Writes a uint8 (or float [0, 1]) image [H, W, 3] as PNG, creating parent folders."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  PIL.Image.fromarray(to_uint8(image)).save(path, format="PNG")
  return path


def ffmpeg_available():
  """Whether an `ffmpeg` executable is on PATH (what mediapy needs to write mp4)."""
  return shutil.which("ffmpeg") is not None


def save_video(path, frames, fps=8):
  """Writes frames as a video: mp4 (H.264 via mediapy) if ffmpeg is on PATH, else an animated GIF.

  Without ffmpeg the file gets the suffix .gif (written with PIL, looping forever) whatever
  `path` says. For mp4, odd heights/widths are padded by one edge row/column (yuv420p needs even
  sizes).

  Args:
    path: output path; its suffix is replaced by .mp4 or .gif.
    frames: uint8 [T, H, W, 3] (or float in [0, 1]).
    fps: frames per second.

  Returns:
    pathlib.Path of the file written.
  """
  frames = to_uint8(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise UserError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}; "
                    "pass one video")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if ffmpeg_available():
    import mediapy  # Imported here: only this branch needs it.
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    path = path.with_suffix(".mp4")
    mediapy.write_video(path, np.pad(frames, pad, mode="edge"), fps=fps)
    return path
  path = path.with_suffix(".gif")
  images = [PIL.Image.fromarray(frame) for frame in frames]
  images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                 duration=max(1, round(1000 / fps)), loop=0)
  return path
