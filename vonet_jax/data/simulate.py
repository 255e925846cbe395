"""One MOVi-A-style video: sample a scene, simulate it with PyBullet, render it with TinyRenderer.

Scene (Kubric's `movi_ab_worker.py` with `--objects_set=clevr`, re-implemented):
  * 3-10 objects (configurable), each uniformly one of cube / cylinder / sphere, small (scale
    0.7) or large (1.4), metal (friction 0.4, restitution 0.3, density 2.7) or rubber (0.8, 0.7,
    1.1), and one of the eight CLEVR colours. Kubric's CLEVR assets are unit-sized, so `scale` is
    the cube's side, the sphere's diameter and the cylinder's diameter and height.
  * Each object gets a uniformly random orientation and a position in the spawn region
    [-5, 5] x [-5, 5] x [1, 5] (its rotated bounding box inside the region), re-drawn up to 100
    times until it overlaps no earlier object (an object that still overlaps is left out), and an
    initial velocity U([-4, -4, 0], [4, 4, 0]) - (x, y, 0): towards the scene centre.
  * A large grey floor (friction 0.3, restitution 0.5), drawn as in `render.py`. Gravity 10 m/s^2
    along -z.
  * 24 frames at 12 fps: frame k shows the world at t = k / 12 s; physics steps at 240 Hz.
  * Camera, light, floor and shadows: `render.py`. Shadows (of each object's bounding sphere)
    are part of the background in the segmentation, as in MOVi.

Ground truth like Kubric: only objects visible in at least one frame are instances; they are
numbered 1..n by decreasing total visible pixels (0 = floor / shadows / background) and
`num_instances` = n. Segmentation comes from TinyRenderer's per-pixel body-id buffer, so it is
exact for the rendered frame. Everything depends only on the `entropy` given (the seed sequence
of the video), not on what the process simulated before.
"""
import dataclasses
from typing import Sequence

import numpy as np
import pybullet

from vonet_jax.data import render

SHAPES = ("cube", "cylinder", "sphere")
SIZES = ("small", "large")
SIZE_SCALES = {"small": 0.7, "large": 1.4}
MATERIALS = ("metal", "rubber")
MATERIAL_PHYSICS = {  # friction, restitution, density
    "metal": (0.4, 0.3, 2.7),
    "rubber": (0.8, 0.7, 1.1),
}
# The CLEVR palette (CLEVR's properties.json, the "clevr" colours Kubric samples for MOVi-A),
# label order as in MOVi's ClassLabel (alphabetical).
COLORS = ("blue", "brown", "cyan", "gray", "green", "purple", "red", "yellow")
COLOR_RGB = {
    "blue": (42, 75, 215), "brown": (129, 74, 25), "cyan": (41, 208, 208),
    "gray": (87, 87, 87), "green": (29, 105, 20), "purple": (129, 38, 192),
    "red": (173, 35, 35), "yellow": (255, 238, 51),
}
FLOOR_RGB = (0.44, 0.44, 0.44)  # renders as about (115, 115, 115), the MOVi-A floor's mean
FLOOR_FRICTION, FLOOR_RESTITUTION = 0.3, 0.5
SPAWN_REGION = np.array([[-5.0, -5.0, 1.0], [5.0, 5.0, 5.0]])
VELOCITY_RANGE = np.array([[-4.0, -4.0, 0.0], [4.0, 4.0, 0.0]])
GRAVITY = 10.0
FRAME_RATE = 12
STEP_RATE = 240
PLACEMENT_TRIALS = 100


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """What one object is (sampled before placement)."""
  shape: str
  size: str
  material: str
  color: str

  @property
  def scale(self) -> float:
    return SIZE_SCALES[self.size]

  @property
  def mass(self) -> float:
    half = self.scale / 2.0
    volume = {"cube": 8.0 * half**3, "sphere": 4.0 / 3.0 * np.pi * half**3,
              "cylinder": np.pi * half**2 * self.scale}[self.shape]
    return float(MATERIAL_PHYSICS[self.material][2] * volume)

  @property
  def bounding_radius(self) -> float:
    """Radius of the sphere around the object's centre that holds it (casts its shadow)."""
    half = self.scale / 2.0
    return float(half * {"cube": np.sqrt(3.0), "cylinder": np.sqrt(2.0), "sphere": 1.0}[
        self.shape])


def sample_objects(rng: np.random.Generator, min_objects: int, max_objects: int):
  """list[ObjectSpec] of length uniform in [min_objects, max_objects]."""
  count = int(rng.integers(min_objects, max_objects + 1))
  return [ObjectSpec(shape=SHAPES[rng.integers(len(SHAPES))],
                     size=SIZES[rng.integers(len(SIZES))],
                     material=MATERIALS[rng.integers(len(MATERIALS))],
                     color=COLORS[rng.integers(len(COLORS))]) for _ in range(count)]


def simulate_video(entropy: Sequence[int], resolution: int, min_objects: int, max_objects: int,
                   num_frames: int = 24, zoom: float = 1.0) -> dict:
  """Samples, simulates and renders one video.

  Args:
    entropy: integers seeding this video's numpy SeedSequence, e.g. (seed, split, index).
    resolution: frame height = width.
    min_objects, max_objects: range of the number of objects placed.
    num_frames: frames rendered at 12 fps.
    zoom: the camera's focal length as a multiple of MOVi-A's (1); the same scene and motion
      whatever the zoom, only the picture's field of view changes.

  Returns:
    A dict in the layout of the TFDS features of `synthetic.py`:
      video: uint8[T, H, W, 3]; segmentations: uint8[T, H, W, 1] (0 = background);
      metadata: {num_instances, num_frames, height, width};
      camera: {positions float32[T, 3], quaternions float32[T, 4], focal_length, sensor_width,
               field_of_view};
      instances: list (one per visible object, in id order) of {shape_label, size_label,
        material_label, color_label: str; color float32[3]; mass, friction, restitution:
        float32; positions float32[T, 3]; quaternions float32[T, 4] (w, x, y, z);
        velocities float32[T, 3]; visibility uint16[T] (pixels)}.
  """
  rng = np.random.default_rng(list(entropy))
  client = _client()
  pybullet.resetSimulation(physicsClientId=client)
  pybullet.setPhysicsEngineParameter(
      fixedTimeStep=1.0 / STEP_RATE, deterministicOverlappingPairs=1, physicsClientId=client)
  pybullet.setGravity(0.0, 0.0, -GRAVITY, physicsClientId=client)
  camera = render.sample_camera(rng, zoom)
  floor_rgb = render.plane_color(client, camera, [*FLOOR_RGB, 1.0])
  _add_floor(client)
  specs = sample_objects(rng, min_objects, max_objects)
  bodies, specs = _place_objects(client, rng, specs)
  floor_xy = camera.floor_coordinates(resolution)
  shadow_radii = np.array([spec.bounding_radius for spec in specs], np.float32)

  steps_per_frame = STEP_RATE // FRAME_RATE
  frames, body_maps = [], []
  positions = np.zeros((num_frames, len(bodies), 3), np.float32)
  quaternions = np.zeros((num_frames, len(bodies), 4), np.float32)
  velocities = np.zeros((num_frames, len(bodies), 3), np.float32)
  for t in range(num_frames):
    if t:
      for _ in range(steps_per_frame):
        pybullet.stepSimulation(physicsClientId=client)
    for i, body in enumerate(bodies):
      position, xyzw = pybullet.getBasePositionAndOrientation(body, physicsClientId=client)
      positions[t, i] = position
      quaternions[t, i] = (xyzw[3], xyzw[0], xyzw[1], xyzw[2])
      velocities[t, i] = pybullet.getBaseVelocity(body, physicsClientId=client)[0]
    floor = render.floor_image(floor_xy, floor_rgb, positions[t], shadow_radii,
                               camera.light_direction)
    rgb, body_map = render.render_frame(client, camera, resolution, floor)
    frames.append(rgb)
    body_maps.append(body_map)
  segmentations, visible, visibility = _instance_ids(np.stack(body_maps), bodies)

  instances = []
  for i in visible:
    spec = specs[i]
    friction, restitution, _ = MATERIAL_PHYSICS[spec.material]
    instances.append({
        "shape_label": spec.shape, "size_label": spec.size,
        "material_label": spec.material, "color_label": spec.color,
        "color": np.asarray(COLOR_RGB[spec.color], np.float32) / 255.0,
        "mass": np.float32(spec.mass), "friction": np.float32(friction),
        "restitution": np.float32(restitution),
        "positions": positions[:, i], "quaternions": quaternions[:, i],
        "velocities": velocities[:, i],
        "visibility": visibility[:, i].astype(np.uint16),
    })
  return {
      "video": np.stack(frames),
      "segmentations": segmentations,
      "metadata": {"num_instances": len(visible), "num_frames": num_frames,
                   "height": resolution, "width": resolution},
      "camera": {
          "positions": np.tile(camera.position.astype(np.float32), (num_frames, 1)),
          "quaternions": np.tile(camera.quaternion, (num_frames, 1)),
          "focal_length": np.float32(render.FOCAL_LENGTH_MM * zoom),
          "sensor_width": np.float32(render.SENSOR_WIDTH_MM),
          "field_of_view": np.float32(camera.field_of_view),
      },
      "instances": instances,
  }


def _instance_ids(body_maps: np.ndarray, bodies):
  """Kubric's ground truth from per-pixel body ids.

  Args:
    body_maps: int32[T, H, W], PyBullet body id per pixel (-1: none).
    bodies: the object bodies' ids (others, e.g. the floor, are background).

  Returns:
    segmentations: uint8[T, H, W, 1], 0 = background, visible objects 1..n by decreasing
      total visible pixels.
    visible: indices into `bodies` of the visible objects, in id order.
    visibility: int64[T, len(bodies)], visible pixels per frame and object.
  """
  index_of_body = np.full(max([int(body_maps.max()), *bodies]) + 2, -1, np.int64)
  index_of_body[np.asarray(bodies, np.int64)] = np.arange(len(bodies))
  object_map = index_of_body[body_maps]  # body id -1 (nothing hit) reads the last entry, -1
  visibility = np.stack([np.bincount(frame[frame >= 0], minlength=len(bodies))
                         for frame in object_map])
  totals = visibility.sum(axis=0)
  visible = [int(i) for i in np.argsort(-totals, kind="stable") if totals[i] > 0]
  new_id = np.zeros(len(bodies) + 1, np.uint8)  # last entry: object_map == -1 -> 0
  new_id[np.asarray(visible, np.int64)] = np.arange(1, len(visible) + 1)
  return new_id[object_map][..., None], visible, visibility


_CLIENT = None


def _client() -> int:
  """This process's PyBullet DIRECT client (created once, reset for every video)."""
  global _CLIENT
  if _CLIENT is None or not pybullet.isConnected(_CLIENT):
    _CLIENT = pybullet.connect(pybullet.DIRECT)
  return _CLIENT


def _add_floor(client: int) -> int:
  """Static floor for the physics: a 400 x 400 box whose top face is z = 0.

  Invisible to TinyRenderer (alpha 0: skipped; a body without a visual shape would be drawn from
  its collision shape): `render.floor_image` paints the floor behind everything instead.
  """
  collision = pybullet.createCollisionShape(
      pybullet.GEOM_BOX, halfExtents=[200.0, 200.0, 0.5], physicsClientId=client)
  floor = pybullet.createMultiBody(0.0, collision, -1, basePosition=[0.0, 0.0, -0.5],
                                   physicsClientId=client)
  pybullet.changeVisualShape(floor, -1, rgbaColor=[1.0, 1.0, 1.0, 0.0], physicsClientId=client)
  pybullet.changeDynamics(floor, -1, lateralFriction=FLOOR_FRICTION,
                          restitution=FLOOR_RESTITUTION, physicsClientId=client)
  return floor


def _create_object(client: int, spec: ObjectSpec) -> int:
  """A dynamic body for `spec` at the origin (placed later)."""
  half = spec.scale / 2.0
  rgba = [c / 255.0 for c in COLOR_RGB[spec.color]] + [1.0]
  if spec.shape == "cube":
    geometry = dict(shapeType=pybullet.GEOM_BOX, halfExtents=[half] * 3)
    collision = pybullet.createCollisionShape(physicsClientId=client, **geometry)
    visual = pybullet.createVisualShape(rgbaColor=rgba, physicsClientId=client, **geometry)
  elif spec.shape == "sphere":
    collision = pybullet.createCollisionShape(
        pybullet.GEOM_SPHERE, radius=half, physicsClientId=client)
    visual = pybullet.createVisualShape(
        pybullet.GEOM_SPHERE, radius=half, rgbaColor=rgba, physicsClientId=client)
  else:
    collision = pybullet.createCollisionShape(
        pybullet.GEOM_CYLINDER, radius=half, height=spec.scale, physicsClientId=client)
    visual = pybullet.createVisualShape(
        pybullet.GEOM_CYLINDER, radius=half, length=spec.scale, rgbaColor=rgba,
        physicsClientId=client)
  body = pybullet.createMultiBody(spec.mass, collision, visual, physicsClientId=client)
  friction, restitution, _ = MATERIAL_PHYSICS[spec.material]
  pybullet.changeDynamics(body, -1, lateralFriction=friction, restitution=restitution,
                          physicsClientId=client)
  return body


def _place_objects(client: int, rng: np.random.Generator, specs):
  """Creates, orients and places the objects without overlap; returns (bodies, their specs)."""
  bodies, placed = [], []
  for spec in specs:
    body = _create_object(client, spec)
    for _ in range(PLACEMENT_TRIALS):
      xyzw = _random_quaternion_xyzw(rng)
      pybullet.resetBasePositionAndOrientation(body, [0.0, 0.0, 0.0], xyzw,
                                               physicsClientId=client)
      low, high = (np.asarray(corner) for corner in
                   pybullet.getAABB(body, physicsClientId=client))
      position = rng.uniform(SPAWN_REGION[0] - low, SPAWN_REGION[1] - high)
      pybullet.resetBasePositionAndOrientation(body, position.tolist(), xyzw,
                                               physicsClientId=client)
      if not any(pybullet.getClosestPoints(body, other, 0.0, physicsClientId=client)
                 for other in bodies):
        break
    else:
      pybullet.removeBody(body, physicsClientId=client)
      continue
    velocity = rng.uniform(VELOCITY_RANGE[0], VELOCITY_RANGE[1]) - [position[0], position[1], 0]
    pybullet.resetBaseVelocity(body, velocity.tolist(), [0.0, 0.0, 0.0], physicsClientId=client)
    bodies.append(body)
    placed.append(spec)
  return bodies, placed


def _random_quaternion_xyzw(rng: np.random.Generator):
  """Uniformly random orientation (PyBullet order x, y, z, w)."""
  q = rng.normal(size=4)
  q /= np.linalg.norm(q)
  return q.tolist()
