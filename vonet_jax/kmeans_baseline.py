"""Non-learned reference segmentation: k-means on pixel colour and position, one video at a time.

Every pixel of a video [T, H, W, 3] becomes a feature vector

    [COLOR_WEIGHT * r, COLOR_WEIGHT * g, COLOR_WEIGHT * b,
     POSITION_WEIGHT * y, POSITION_WEIGHT * x, TIME_WEIGHT * t]

with r, g, b in [0, 1], y = row / (H - 1), x = column / (W - 1) and t = frame / (T - 1), all in
[0, 1] (0 along an axis of length 1). Colour dominates (objects are told apart by colour first);
position at weight 0.2 keeps segments compact and separates equally coloured objects far apart;
time at weight 0.05 lets a cluster follow a moving object across frames without splitting the
video into time slabs. All frames are clustered jointly, so a segment keeps its id over time, as
FG-ARI and mIoU require.

The weights were picked on the 12 MOVi-A sample videos in ../shared/data (128x128, K = 11, mean
of seeds 0-2): FG-ARI 0.53 / mIoU 0.35; position 0.5 and time 0.1 give 0.51 / 0.27; colour alone
0.46 / 0.37 (better background, worse objects). About 0.3 s per 24x128x128 video on the 2-core
development machine while it was shared (load average 5).

k-means itself is plain numpy (greedy k-means++ seeding, Lloyd iterations, best of
`NUM_RESTARTS` by inertia), fitted on a random subsample of at most `MAX_FIT_PIXELS` pixels; then
every pixel is assigned to its nearest centre. Deterministic for a given seed.
"""
import numpy as np

from vonet_jax.errors import UserError

COLOR_WEIGHT = 1.0
POSITION_WEIGHT = 0.2
TIME_WEIGHT = 0.05
MAX_FIT_PIXELS = 10_000
NUM_RESTARTS = 5
MAX_ITERATIONS = 50
# Lloyd stops once the centres move (summed squared shift) less than this times the mean variance.
TOLERANCE = 1e-4
# Pixels per block when assigning a whole video to the centres (bounds memory).
ASSIGN_BLOCK = 1 << 16


def pixel_features(video):
  """Weighted colour-position-time features of every pixel.

  Args:
    video: uint8 [T, H, W, 3].

  Returns:
    float32 [T*H*W, 6], rows in C order of (t, y, x).
  """
  num_frames, height, width, _ = video.shape
  color = video.reshape(-1, 3).astype(np.float32) / 255.0
  t, y, x = np.meshgrid(np.linspace(0.0, 1.0, num_frames), np.linspace(0.0, 1.0, height),
                        np.linspace(0.0, 1.0, width), indexing="ij")  # [T, H, W] each
  position = np.stack([POSITION_WEIGHT * y, POSITION_WEIGHT * x, TIME_WEIGHT * t], axis=-1)
  return np.concatenate([COLOR_WEIGHT * color, position.reshape(-1, 3)], axis=1).astype(np.float32)


def _squared_distances(points, centers, point_norms=None):
  """[N, D], [K, D] (float32) -> [N, K] squared Euclidean distances (clipped at 0).

  point_norms: optional precomputed squared norms of the points [N].
  """
  if point_norms is None:
    point_norms = np.einsum("nd,nd->n", points, points)
  # einsum rather than BLAS matmul: with D = 6 the product is cheap, and a multi-threaded BLAS on
  # a busy 2-core machine can be 10x slower than this single-threaded einsum.
  squared = np.einsum("nd,kd->nk", points, -2.0 * centers)  # [N, K]
  squared += point_norms[:, None]
  squared += np.einsum("kd,kd->k", centers, centers)[None]
  return np.maximum(squared, 0.0, out=squared)


def _seed_centers(points, num_centers, rng):
  """Greedy k-means++ seeding: [N, D] -> [num_centers, D].

  Each new centre is the best (lowest total squared distance to the nearest centre) of
  2 + floor(log K) candidates drawn with probability proportional to that squared distance.
  """
  num_trials = 2 + int(np.log(num_centers))
  point_norms = np.einsum("nd,nd->n", points, points)  # [N]
  first = points[rng.integers(len(points))][None]
  centers = [first[0]]
  closest = _squared_distances(points, first, point_norms)[:, 0].astype(np.float64)  # [N]
  for _ in range(1, num_centers):
    total = closest.sum()
    if total > 0:
      candidates = rng.choice(len(points), num_trials, p=closest / total)
    else:
      candidates = rng.integers(len(points), size=num_trials)
    distances = _squared_distances(points, points[candidates], point_norms).T  # [L, N]
    trial = np.minimum(closest[None], distances)
    best = trial.sum(1).argmin()
    centers.append(points[candidates[best]])
    closest = trial[best]
  return np.stack(centers)


def _lloyd(points, centers):
  """Lloyd iterations from `centers` [K, D]; returns (centers [K, D], inertia).

  Stops when assignments no longer change or the centres move less (summed squared shift) than
  `TOLERANCE` times the mean per-feature variance, or after `MAX_ITERATIONS`. An emptied cluster is
  re-seeded at the point farthest from its centre.
  """
  threshold = TOLERANCE * points.var(axis=0).mean()
  point_norms = np.einsum("nd,nd->n", points, points)  # [N]
  labels = None
  for _ in range(MAX_ITERATIONS):
    distances = _squared_distances(points, centers, point_norms)  # [N, K]
    new_labels = distances.argmin(1)
    if labels is not None and np.array_equal(new_labels, labels):
      break
    labels = new_labels
    counts = np.bincount(labels, minlength=len(centers))
    sums = np.stack([np.bincount(labels, points[:, d], len(centers))
                     for d in range(points.shape[1])], axis=1)  # [K, D]
    nonempty = counts > 0
    new_centers = centers.copy()
    new_centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
    if not nonempty.all():
      far = distances[np.arange(len(points)), labels].argsort()[::-1]
      new_centers[~nonempty] = points[far[:(~nonempty).sum()]]
    shift = np.square(new_centers - centers).sum()
    centers = new_centers
    if shift <= threshold:
      break
  inertia = _squared_distances(points, centers, point_norms).min(1).sum(dtype=np.float64)
  return centers, float(inertia)


def fit_centers(points, num_centers, seed=0):
  """k-means on points [N, D] -> centres float32 [num_centers, D] (best of NUM_RESTARTS)."""
  rng = np.random.default_rng(seed)
  best_centers, best_inertia = None, np.inf
  for _ in range(NUM_RESTARTS):
    centers, inertia = _lloyd(points, _seed_centers(points, num_centers, rng))
    if inertia < best_inertia:
      best_centers, best_inertia = centers, inertia
  return best_centers


def kmeans_segmentation(video, num_segments, seed=0):
  """Segments one video into `num_segments` colour-position clusters, consistent over time.

  Args:
    video: uint8 [T, H, W, 3].
    num_segments: K, number of clusters (e.g. the dataset's slot count).
    seed: seed of the pixel subsample and the k-means++ seeding.

  Returns:
    int32 [T, H, W] segment ids in 1..K (no null id 0); a cluster may end up unused.
  """
  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
    raise UserError(f"video must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}; "
                    "pass one video with pixel values 0..255")
  if not 1 <= num_segments <= video.shape[0] * video.shape[1] * video.shape[2]:
    raise UserError(f"num_segments={num_segments} must be between 1 and the number of pixels; "
                    "use the dataset's slot count, e.g. 11")
  features = pixel_features(video)  # [N, 6]
  rng = np.random.default_rng(seed)
  if len(features) > MAX_FIT_PIXELS:
    fit = features[rng.choice(len(features), MAX_FIT_PIXELS, replace=False)]
  else:
    fit = features
  centers = fit_centers(fit, num_segments, seed=int(rng.integers(2**31)))
  labels = np.empty(len(features), np.int32)
  for start in range(0, len(features), ASSIGN_BLOCK):
    block = features[start:start + ASSIGN_BLOCK]
    labels[start:start + ASSIGN_BLOCK] = _squared_distances(block, centers).argmin(1)
  return (labels + 1).reshape(video.shape[:3])
