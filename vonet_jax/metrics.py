"""Video segmentation metrics of the paper (SPEC section 5): FG-ARI and mIoU, host side, numpy.

Both metrics score one video at a time over all its T*H*W pixels jointly, so a slot that switches
objects between frames is penalised. Both are computed from one contingency table per video
(ground-truth id x predicted id pixel counts), built with `np.bincount` on a flattened pair index;
nothing of size pixels x ids is ever materialised.

Id conventions:
  * Ground truth: 0 is background; ids >= `MAX_TRUE_ID` (25) are set to 0 first (one MOVi-E video
    has an outlier id 64). Negative ids raise `UserError`.
  * Prediction: 0 is the null slot (see `segmentation_from_masks`), 1..K the slots. The null id is
    an ordinary cluster for both metrics. Ids must lie in [0, max_pred_id]; anything else raises
    `UserError` instead of silently vanishing from the table.

Edge-case conventions (FG-ARI; see `fg_ari`):
  * A video with no ground-truth foreground pixel has no FG-ARI: NaN. `summarize` drops NaNs and
    reports how many it dropped.
  * Otherwise the value equals `sklearn.metrics.adjusted_rand_score` on the video's foreground
    pixels, including its degenerate cases: 1.0 when the two partitions agree trivially (a single
    foreground pixel; one true object and one predicted cluster; every pixel its own cluster in
    both), and 0.0 for one true object split over several predicted ids.
mIoU is always defined (every video has at least one pixel, hence one ground-truth id).
"""
import numpy as np
import scipy.optimize

from vonet_jax.errors import UserError

# Ground-truth ids at or above this are background (SPEC section 5).
MAX_TRUE_ID = 25
# Default largest predicted id accepted when the caller does not give one (K <= 255 slots).
DEFAULT_MAX_PRED_ID = 255
# Upper bound on max_pred_id (keeps the tables small; slot counts are far below it).
LARGEST_MAX_PRED_ID = 4095


def upsample_nearest(x, size: int):
  """[..., h, w] -> [..., size, size] by pixel repetition (masks 64x64 -> 128x128 frames)."""
  f = size // x.shape[-1]
  return np.repeat(np.repeat(x, f, axis=-2), f, axis=-1)


def segmentation_from_masks(masks, threshold=0.3):
  """Hard segmentation from soft slot masks.

  Args:
    masks: float array [..., K, H, W], per-pixel slot probabilities.
    threshold: a pixel whose largest mask value is below this gets the null id 0.

  Returns:
    int32 array [..., H, W]: 0 where max_k masks < threshold, else argmax_k + 1 (in 1..K).
  """
  masks = np.asarray(masks)
  if masks.ndim < 3:
    raise UserError(f"masks must be [..., K, H, W] (at least 3 axes), got shape {masks.shape}; "
                    "add the slot axis before the two spatial axes")
  if masks.shape[-3] == 0:
    raise UserError("masks have zero slots (K = 0 on axis -3); pass at least one slot mask")
  best = masks.argmax(axis=-3).astype(np.int32) + 1
  confident = masks.max(axis=-3) >= threshold
  return np.where(confident, best, 0).astype(np.int32)


def _check_ids(true_ids, pred_ids, max_pred_id):
  """Validates id arrays; returns them flattened per video plus the predicted id count P.

  Args:
    true_ids: integer array [B, ...] (ground truth, 0 = background).
    pred_ids: integer array [B, ...] of the same shape (0 = null slot).
    max_pred_id: largest allowed predicted id, or None for `DEFAULT_MAX_PRED_ID`.

  Returns:
    (true [B, N], pred [B, N], P): the arrays reshaped (dtype kept), N the pixels per video and
    P = max_pred_id + 1.
  """
  true_ids = np.asarray(true_ids)
  pred_ids = np.asarray(pred_ids)
  for name, ids in (("true_ids", true_ids), ("pred_ids", pred_ids)):
    if not np.issubdtype(ids.dtype, np.integer):
      raise UserError(f"{name} must be an integer array, got dtype {ids.dtype}; "
                      "convert masks to ids with segmentation_from_masks first")
  if true_ids.shape != pred_ids.shape:
    raise UserError(f"true_ids shape {true_ids.shape} != pred_ids shape {pred_ids.shape}; "
                    "pass both as [B, T, H, W] at the same resolution")
  if true_ids.ndim < 2 or true_ids.size == 0:
    raise UserError(f"ids must be non-empty [B, T, H, W] (batch axis first), got shape "
                    f"{true_ids.shape}; add a batch axis of videos")
  if max_pred_id is None:
    max_pred_id = DEFAULT_MAX_PRED_ID
  if not 0 <= max_pred_id <= LARGEST_MAX_PRED_ID:
    raise UserError(f"max_pred_id={max_pred_id} outside [0, {LARGEST_MAX_PRED_ID}]; "
                    "pass the slot count K (predicted ids are 0..K)")
  if true_ids.min() < 0:
    raise UserError(f"true_ids contain negative id {true_ids.min()}; "
                    "ground-truth ids must be >= 0 (0 = background)")
  low, high = pred_ids.min(), pred_ids.max()
  if low < 0 or high > max_pred_id:
    raise UserError(f"pred_ids span [{low}, {high}], outside [0, {max_pred_id}]; "
                    "use 0 for null and 1..K for slots, or pass max_pred_id")
  batch = true_ids.shape[0]
  return true_ids.reshape(batch, -1), pred_ids.reshape(batch, -1), int(max_pred_id) + 1


def contingency_tables(true_ids, pred_ids, max_pred_id=None):
  """Pixel counts of every (ground-truth id, predicted id) pair, one table per video.

  Ground-truth ids >= `MAX_TRUE_ID` count as background 0.

  Args:
    true_ids: integer array [B, T, H, W] (any [B, ...] works: axes after the first are pixels).
    pred_ids: integer array of the same shape, ids in [0, max_pred_id].
    max_pred_id: largest allowed predicted id (e.g. K); None means `DEFAULT_MAX_PRED_ID`.

  Returns:
    int64 array [B, MAX_TRUE_ID, max_pred_id + 1]; entry [b, i, j] counts pixels of video b
    with ground truth i and prediction j.
  """
  true_flat, pred_flat, num_pred = _check_ids(true_ids, pred_ids, max_pred_id)
  num_cells = MAX_TRUE_ID * num_pred  # < 2**31 thanks to LARGEST_MAX_PRED_ID.
  tables = np.empty((true_flat.shape[0], MAX_TRUE_ID, num_pred), np.int64)
  for b in range(true_flat.shape[0]):  # One video at a time bounds memory to one video's pixels.
    # Clip before the cast so that huge ids cannot wrap around into the valid range.
    true_b = np.minimum(true_flat[b], MAX_TRUE_ID).astype(np.int32)  # [N]
    true_b[true_b == MAX_TRUE_ID] = 0
    pair = true_b * np.int32(num_pred) + pred_flat[b].astype(np.int32)  # [N]
    tables[b] = np.bincount(pair, minlength=num_cells).reshape(MAX_TRUE_ID, num_pred)
  return tables


def _pairs(counts):
  """n choose 2, elementwise, as float64 (exact below 2**53)."""
  counts = counts.astype(np.float64)
  return counts * (counts - 1.0) / 2.0


def ari_from_tables(tables):
  """Adjusted Rand index of each contingency table (all rows and columns count).

  Args:
    tables: int array [B, I, J] of pixel counts (true cluster i, predicted cluster j).

  Returns:
    float64 [B]: ARI per table; NaN for an empty table; 1.0 where the index is 0/0, which only
    happens when the two partitions agree trivially (same convention as sklearn).
  """
  tables = np.asarray(tables, np.int64)
  num_points = tables.sum(axis=(1, 2))
  index = _pairs(tables).sum(axis=(1, 2))
  true_pairs = _pairs(tables.sum(axis=2)).sum(axis=1)
  pred_pairs = _pairs(tables.sum(axis=1)).sum(axis=1)
  all_pairs = _pairs(num_points)
  # 0/0 exactly when both partitions are a single cluster (true_pairs == pred_pairs == all_pairs)
  # or both are all singletons (true_pairs == pred_pairs == 0); this covers num_points == 1.
  trivial = (true_pairs == pred_pairs) & ((true_pairs == all_pairs) | (true_pairs == 0))
  safe_all = np.where(all_pairs > 0, all_pairs, 1.0)
  expected = true_pairs * pred_pairs / safe_all
  maximum = (true_pairs + pred_pairs) / 2.0
  denominator = np.where(trivial, 1.0, maximum - expected)
  ari = np.where(trivial, 1.0, (index - expected) / denominator)
  return np.where(num_points == 0, np.nan, ari)


def fg_ari(true_ids, pred_ids, max_pred_id=None):
  """Foreground adjusted Rand index per video, over all its frames jointly.

  Ground-truth background pixels (id 0, or any id >= `MAX_TRUE_ID`) are left out; the predicted
  null id 0 is an ordinary cluster. Equal to `sklearn.metrics.adjusted_rand_score` on the flattened
  foreground pixels of the video.

  Args:
    true_ids: integer array [B, T, H, W], 0 = background.
    pred_ids: integer array [B, T, H, W], ids in [0, max_pred_id].
    max_pred_id: largest allowed predicted id (e.g. K); None means `DEFAULT_MAX_PRED_ID` (255).

  Returns:
    float64 [B]: FG-ARI per video in [-1, 1] (1 = perfect); NaN for a video without foreground.
  """
  return ari_from_tables(contingency_tables(true_ids, pred_ids, max_pred_id)[:, 1:, :])


def miou_from_table(table):
  """Hungarian-matched mean IoU of one contingency table.

  Args:
    table: int array [I, J] of pixel counts; all-zero rows (absent true ids) and columns (absent
      predicted ids) are dropped first.

  Returns:
    float: sum of the IoUs of the optimal one-to-one matching divided by the number of present
    true ids (a true id left unmatched contributes 0).
  """
  table = np.asarray(table, np.float64)
  table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
  if table.shape[0] == 0:
    return float("nan")
  union = table.sum(axis=1, keepdims=True) + table.sum(axis=0, keepdims=True) - table
  iou = table / union
  rows, cols = scipy.optimize.linear_sum_assignment(iou, maximize=True)
  return float(iou[rows, cols].sum() / table.shape[0])


def miou(true_ids, pred_ids, max_pred_id=None):
  """Mean IoU per video after Hungarian matching over the whole T*H*W volume.

  Ground-truth ids (background 0 included, ids >= `MAX_TRUE_ID` merged into it) and predicted ids
  (null 0 included) are compressed to those present in the video.

  Args:
    true_ids: integer array [B, T, H, W], 0 = background.
    pred_ids: integer array [B, T, H, W], ids in [0, max_pred_id].
    max_pred_id: largest allowed predicted id (e.g. K); None means `DEFAULT_MAX_PRED_ID` (255).

  Returns:
    float64 [B]: mIoU per video in [0, 1].
  """
  return miou_from_tables(contingency_tables(true_ids, pred_ids, max_pred_id))


def miou_from_tables(tables):
  """`miou_from_table` of each table: int [B, I, J] -> float64 [B]."""
  return np.array([miou_from_table(table) for table in tables], np.float64)


def fg_ari_and_miou(true_ids, pred_ids, max_pred_id=None):
  """Both metrics from a single pass over the pixels (what evaluation should call).

  Args and conventions as `fg_ari` and `miou`.

  Returns:
    (fg_ari float64 [B], miou float64 [B]).
  """
  tables = contingency_tables(true_ids, pred_ids, max_pred_id)
  return ari_from_tables(tables[:, 1:, :]), miou_from_tables(tables)


def summarize(per_video_values):
  """Mean and std over videos, skipping NaN (e.g. FG-ARI of a video without foreground).

  Args:
    per_video_values: float array [B].

  Returns:
    dict(mean, std, n, n_excluded): mean and population std of the finite values (NaN when there
    are none), n = how many were averaged, n_excluded = how many NaNs were skipped.
  """
  values = np.asarray(per_video_values, np.float64).reshape(-1)
  finite = values[~np.isnan(values)]
  if finite.size == 0:
    return dict(mean=float("nan"), std=float("nan"), n=0, n_excluded=int(values.size))
  return dict(mean=float(finite.mean()), std=float(finite.std()), n=int(finite.size),
              n_excluded=int(values.size - finite.size))
