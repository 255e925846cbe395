"""Camera and headless rendering of a PyBullet world with TinyRenderer (MOVi-A-like look).

The camera is Kubric's MOVi-A "clevr" camera: a 35 mm lens on a 32 mm sensor (49.1 degree field
of view), placed at (7.48113, -6.50764, 5.34367) plus a uniform [0, 1)^3 jitter per video, looking
at the origin with +z up. One directional light shines from the camera's right and a little
beyond the objects, fairly high, so shadows fall towards the camera's lower left as in MOVi-A.

The floor is not drawn by TinyRenderer in every frame. Under a directional light TinyRenderer
shades a plane with one constant colour (its shader has no view-dependent term), so
`plane_color` asks TinyRenderer for the floor's colour once per video, and `floor_image`
paints it, with shadows, behind the bodies TinyRenderer draws. Why: a full-screen floor costs
TinyRenderer 3-4 ms per 128x128 frame, several times all the objects together, and its own
shadow map is unusable here (it casts no object shadows and puts bands across a large floor).
Shadows are analytic soft shadows of each object's bounding sphere cast by the directional light
onto the floor plane (exact for spheres, rounded for cubes and cylinders), computed per floor
pixel with numpy.

TinyRenderer ignores per-object specular colours: all objects share the light's ambient, diffuse
and specular coefficients below, so metal and rubber differ in physics only.
"""
import dataclasses

import numpy as np
import pybullet

FOCAL_LENGTH_MM = 35.0
SENSOR_WIDTH_MM = 32.0
CAMERA_BASE_POSITION = np.array([7.48113, -6.50764, 5.34367])
NEAR, FAR = 1.0, 400.0  # clip planes (scene units); the floor reaches beyond the horizon

# Light direction in camera-aligned horizontal axes plus height (unnormalised).
_LIGHT_RIGHT, _LIGHT_BEYOND, _LIGHT_UP = 0.8, 0.35, 1.6
LIGHT_AMBIENT = 0.55
LIGHT_DIFFUSE = 0.5
LIGHT_SPECULAR = 0.08
SHADOW_DARKNESS = 0.45   # a fully shadowed floor pixel keeps 55% of its colour
SHADOW_SOFTNESS = 0.35   # penumbra width, as a fraction of the occluder's radius


def field_of_view(zoom: float = 1.0) -> float:
  """Horizontal (= vertical) field of view in radians of the MOVi-A lens with its focal length
  multiplied by `zoom` (zoom 2 shows the middle half of the picture at twice the size)."""
  return float(2.0 * np.arctan(SENSOR_WIDTH_MM / (2.0 * FOCAL_LENGTH_MM * zoom)))


@dataclasses.dataclass(frozen=True)
class Camera:
  """A pinhole camera looking at the origin.

  Attributes:
    position: float64[3], world position.
    light_direction: float64[3], unit vector from the scene towards the light.
    zoom: focal length as a multiple of MOVi-A's 35 mm (1: MOVi-A).
  """
  position: np.ndarray
  light_direction: np.ndarray
  zoom: float = 1.0

  @property
  def field_of_view(self) -> float:
    return field_of_view(self.zoom)

  @property
  def quaternion(self) -> np.ndarray:
    """float32[4] (w, x, y, z), Blender convention: the camera looks along its local -z."""
    forward = -self.position / np.linalg.norm(self.position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rotation = np.stack([right, up, -forward], axis=1)  # columns: camera x, y, z in world
    return _matrix_to_quaternion(rotation).astype(np.float32)

  def floor_coordinates(self, resolution: int) -> np.ndarray:
    """float32[H, W, 2]: world (x, y) where each pixel centre's ray meets the floor z = 0.

    Pixels whose ray does not go down (none, for the MOVi-A camera) get NaN.
    """
    forward = -self.position / np.linalg.norm(self.position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    ndc = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    half_width = np.tan(self.field_of_view / 2.0)
    rays = (forward[None, None, :] + half_width * ndc[None, :, None] * right
            - half_width * ndc[:, None, None] * up)  # rows go down the image
    with np.errstate(divide="ignore", invalid="ignore"):
      distance = np.where(rays[..., 2] < 0, -self.position[2] / rays[..., 2], np.nan)
    return (self.position[:2] + distance[..., None] * rays[..., :2]).astype(np.float32)


def sample_camera(rng: np.random.Generator, zoom: float = 1.0) -> Camera:
  """The MOVi-A camera: base position plus uniform [0, 1)^3 jitter, and its light; `zoom`
  multiplies the focal length (the draws from `rng` do not depend on it)."""
  position = CAMERA_BASE_POSITION + rng.random(3)
  forward = -position[:2] / np.linalg.norm(position[:2])  # horizontal viewing direction
  right = np.array([forward[1], -forward[0]])
  horizontal = _LIGHT_RIGHT * right + _LIGHT_BEYOND * forward
  light = np.array([horizontal[0], horizontal[1], _LIGHT_UP])
  return Camera(position=position, light_direction=light / np.linalg.norm(light), zoom=zoom)


def plane_color(client: int, camera: Camera, rgba) -> np.ndarray:
  """uint8[3]: the colour TinyRenderer gives an upward-facing plane of colour `rgba`.

  Renders a large horizontal quad alone (call it before adding other bodies) at 4x4 pixels and
  removes it again. The camera must look down onto the plane z = 0.
  """
  half = 200.0
  visual = pybullet.createVisualShape(
      pybullet.GEOM_MESH, vertices=[[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0],
                                    [-half, half, 0.0]],
      indices=[0, 1, 2, 0, 2, 3], normals=[[0.0, 0.0, 1.0]] * 4,
      uvs=[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], rgbaColor=list(rgba),
      physicsClientId=client)
  body = pybullet.createMultiBody(0.0, -1, visual, physicsClientId=client)
  rgb, body_ids = render_frame(client, camera, 4, background=np.zeros(3, np.uint8))
  pybullet.removeBody(body, physicsClientId=client)
  if not (body_ids == body).all():
    raise RuntimeError("the floor plane does not fill the view of the camera")
  return rgb[0, 0].copy()


def floor_image(floor_xy: np.ndarray, floor_rgb: np.ndarray, centres: np.ndarray,
                radii: np.ndarray, light_direction: np.ndarray) -> np.ndarray:
  """The floor with the soft shadows of spheres, as seen by the camera.

  Args:
    floor_xy: float32[H, W, 2], `Camera.floor_coordinates`.
    floor_rgb: uint8[3], the lit floor colour (`plane_color`).
    centres: float[N, 3], occluder centres; radii: float[N], their radii.
    light_direction: float[3], unit vector towards the light.

  Returns:
    uint8[H, W, 3].
  """
  light = np.asarray(light_direction, np.float32)
  shade = np.zeros(floor_xy.shape[:2], np.float32)
  for centre, radius in zip(np.asarray(centres, np.float32), np.asarray(radii, np.float32)):
    dx = centre[0] - floor_xy[..., 0]
    dy = centre[1] - floor_xy[..., 1]
    along = dx * light[0] + dy * light[1] + centre[2] * light[2]  # towards the light
    across_sq = dx * dx + dy * dy + centre[2] * centre[2] - along * along
    across = np.sqrt(np.maximum(across_sq, 0.0))
    penumbra = SHADOW_SOFTNESS * radius
    inside = np.clip((radius + 0.5 * penumbra - across) / penumbra, 0.0, 1.0)
    np.maximum(shade, np.where(along > 0, inside, 0.0), out=shade)
  factor = 1.0 - SHADOW_DARKNESS * np.nan_to_num(shade)
  rgb = np.asarray(floor_rgb, np.float32) * factor[..., None]
  return np.round(rgb).astype(np.uint8)


def render_frame(client: int, camera: Camera, resolution: int, background: np.ndarray):
  """Renders the current state of a PyBullet world with TinyRenderer.

  Args:
    client: PyBullet physics client id (DIRECT mode is enough).
    camera: where to look from.
    resolution: output height = width in pixels.
    background: uint8[3] or uint8[H, W, 3], what pixels hit by no body show (the floor).

  Returns:
    rgb: uint8[H, W, 3].
    body_ids: int32[H, W], the PyBullet body unique id seen at each pixel (-1: nothing).
  """
  view = pybullet.computeViewMatrix(
      cameraEyePosition=camera.position.tolist(), cameraTargetPosition=[0.0, 0.0, 0.0],
      cameraUpVector=[0.0, 0.0, 1.0], physicsClientId=client)
  projection = pybullet.computeProjectionMatrixFOV(
      fov=float(np.degrees(camera.field_of_view)), aspect=1.0, nearVal=NEAR, farVal=FAR,
      physicsClientId=client)
  _, _, rgba, _, segmentation = pybullet.getCameraImage(
      resolution, resolution, viewMatrix=view, projectionMatrix=projection,
      lightDirection=camera.light_direction.tolist(), lightColor=[1.0, 1.0, 1.0],
      lightAmbientCoeff=LIGHT_AMBIENT, lightDiffuseCoeff=LIGHT_DIFFUSE,
      lightSpecularCoeff=LIGHT_SPECULAR, shadow=0, renderer=pybullet.ER_TINY_RENDERER,
      physicsClientId=client)
  rgb = np.asarray(rgba, np.uint8).reshape(resolution, resolution, 4)[..., :3]
  # Bodies without links: the mask holds the body id itself (-1 where no body is hit).
  segmentation = np.asarray(segmentation, np.int32).reshape(resolution, resolution)
  rgb = np.where((segmentation < 0)[..., None], background, rgb)
  return rgb, segmentation


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
