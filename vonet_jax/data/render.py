"""Camera and headless rendering of a PyBullet world with TinyRenderer (MOVi-A-like look).

The camera is Kubric's MOVi-A "clevr" camera: a 35 mm lens on a 32 mm sensor (49.1 degree field
of view), placed at (7.48113, -6.50764, 5.34367) plus a uniform [0, 1)^3 jitter per video, looking
at the origin with +z up. One directional light comes from behind the camera's right shoulder
(shadows of the MOVi-A key light fall towards the camera's lower left). TinyRenderer's own shadow
map is unusable here (no cast shadows, and bands across a large floor), so `simulate.py` draws
contact shadows as flat dark discs instead.

TinyRenderer ignores per-object specular colours: all objects share the light's ambient, diffuse
and specular coefficients below, so metal and rubber differ in physics only.
"""
import dataclasses

import numpy as np
import pybullet

FOCAL_LENGTH_MM = 35.0
SENSOR_WIDTH_MM = 32.0
FIELD_OF_VIEW = 2.0 * np.arctan(SENSOR_WIDTH_MM / (2.0 * FOCAL_LENGTH_MM))  # radians
CAMERA_BASE_POSITION = np.array([7.48113, -6.50764, 5.34367])
NEAR, FAR = 1.0, 400.0  # clip planes (scene units); the floor reaches beyond the horizon

# Light from the camera's right, slightly behind the objects, fairly high (unnormalised, world).
_LIGHT_RIGHT, _LIGHT_BACK, _LIGHT_UP = 0.8, 0.35, 1.6
LIGHT_AMBIENT = 0.55
LIGHT_DIFFUSE = 0.5
LIGHT_SPECULAR = 0.08


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera looking at the origin.

  Attributes:
    position: float64[3], world position.
    light_direction: float64[3], unit vector from the scene towards the light.
  """
  position: np.ndarray
  light_direction: np.ndarray

  @property
  def quaternion(self) -> np.ndarray:
    """float32[4] (w, x, y, z), Blender convention: the camera looks along its local -z."""
    forward = -self.position / np.linalg.norm(self.position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rotation = np.stack([right, up, -forward], axis=1)  # columns: camera x, y, z in world
    return _matrix_to_quaternion(rotation).astype(np.float32)


def sample_camera(rng: np.random.Generator) -> Camera:
  """The MOVi-A camera: base position plus uniform [0, 1)^3 jitter, and its light."""
  position = CAMERA_BASE_POSITION + rng.random(3)
  forward = -position[:2] / np.linalg.norm(position[:2])  # horizontal viewing direction
  right = np.array([forward[1], -forward[0]])
  horizontal = _LIGHT_RIGHT * right + _LIGHT_BACK * forward
  light = np.array([horizontal[0], horizontal[1], _LIGHT_UP])
  return Camera(position=position, light_direction=light / np.linalg.norm(light))


def render_frame(client: int, camera: Camera, resolution: int):
  """Renders the current state of a PyBullet world with TinyRenderer.

  Args:
    client: PyBullet physics client id (DIRECT mode is enough).
    camera: where to look from.
    resolution: output height = width in pixels.

  Returns:
    rgb: uint8[H, W, 3].
    body_ids: int32[H, W], the PyBullet body unique id seen at each pixel (-1: nothing).
  """
  view = pybullet.computeViewMatrix(
      cameraEyePosition=camera.position.tolist(), cameraTargetPosition=[0.0, 0.0, 0.0],
      cameraUpVector=[0.0, 0.0, 1.0], physicsClientId=client)
  projection = pybullet.computeProjectionMatrixFOV(
      fov=float(np.degrees(FIELD_OF_VIEW)), aspect=1.0, nearVal=NEAR, farVal=FAR,
      physicsClientId=client)
  _, _, rgba, _, segmentation = pybullet.getCameraImage(
      resolution, resolution, viewMatrix=view, projectionMatrix=projection,
      lightDirection=camera.light_direction.tolist(), lightColor=[1.0, 1.0, 1.0],
      lightAmbientCoeff=LIGHT_AMBIENT, lightDiffuseCoeff=LIGHT_DIFFUSE,
      lightSpecularCoeff=LIGHT_SPECULAR, shadow=0, renderer=pybullet.ER_TINY_RENDERER,
      physicsClientId=client)
  rgb = np.asarray(rgba, np.uint8).reshape(resolution, resolution, 4)[..., :3]
  segmentation = np.asarray(segmentation, np.int32).reshape(resolution, resolution)
  # Bodies without links: the mask holds the body id itself (-1 where no body is hit).
  return np.ascontiguousarray(rgb), segmentation


def _matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
  """float64[3, 3] rotation matrix -> float64[4] unit quaternion (w, x, y, z)."""
  m = rotation
  trace = np.trace(m)
  if trace > 0:
    s = 2.0 * np.sqrt(1.0 + trace)
    q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
  elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
    s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
    q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
  elif m[1, 1] > m[2, 2]:
    s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
    q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
  else:
    s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
    q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
  q = np.array(q)
  return q / np.linalg.norm(q)
