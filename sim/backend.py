"""pybullet backend of the household world: scene building, stepping, rendering, ground truth.

Usage::

    from mnemobot.sim.backend import BackendConfig, PyBulletBackend

    with PyBulletBackend(config=BackendConfig(width=320, height=240)) as world:
        world.restore_initial()
        world.spawn_objects(np.random.default_rng(0))
        rgb, depth, instances, labels = world.render(camera_pose)

Frames: world frame z up, metres; camera poses are optical frames (z forward, x right, y down;
see :mod:`mnemobot.perception.types`). Instance ids are deterministic: graspable objects are
``1..N`` in layout order, furniture ``100, 101, ...`` in layout order, and everything else
(floor, walls, the robot) is ``0`` = background. An object is labelled with its detector class
(:attr:`~mnemobot.sim.layout.ObjectSpec.detected_as`), which look-alike objects share.

Drawers: every place with relation ``"in"`` on a ``drawer_cabinet`` is a drawer, named by its
place; the house has one (``drawer``), the workcell three. The drawer methods take the place name
and default to the layout's first drawer, so one-drawer code need not name it. A layout may have
a button (furniture kind ``"button"``): a cap on a prismatic joint held up by a weak motor.

**Ground truth.** ``object_pose``, ``object_aabb``, ``object_labels``, ``drawer_opening``,
``place_of``, ``is_held``, ``teleport_object``, ``set_drawer``, ``button_depth``,
``button_pressed`` and ``button_presses`` read or change the simulator's true state. They exist
for task scoring, scripted world events and scripted experts only: memory and perception must
never call them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnemobot.sim.native import quiet_native_output

try:
    with quiet_native_output():
        import pybullet as p
        import pybullet_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the simulated household world needs pybullet; install the extra: pip install 'mnemobot[sim]'"
    ) from exc

from mnemobot.perception.types import CameraIntrinsics, Pose
from mnemobot.sim.layout import (
    ASSET_DIR,
    DEFAULT_LAYOUT,
    TRAY_SIZE,
    FurnitureSpec,
    HouseLayout,
    ObjectSpec,
    PlaceSpec,
    furniture_boxes,
)
from mnemobot.sim.workcell import BUTTON_PRESS_DEPTH

if TYPE_CHECKING:
    from mnemobot.sim.robot import SimRobot

__all__ = [
    "BACKENDS",
    "BackendConfig",
    "BulletClient",
    "PyBulletBackend",
    "StepHook",
    "fast_panda_urdf",
    "make_backend",
    "pybullet_data_path",
    "projection_matrix",
    "view_matrix",
]

StepHook = Callable[[float], None]
"""Called after every physics step with the simulated time in seconds."""

FURNITURE_ID_BASE = 100
PARK_Z = -5.0  # objects wait below the floor before the first spawn
DRAWER_JOINT = 0  # the drawer's prismatic joint in drawer_cabinet.urdf
BUTTON_JOINT = 0  # the cap's prismatic joint in button.urdf
BUTTON_SPRING_N = 8.0  # force (N) of the motor that holds the button's cap up


@dataclass(frozen=True)
class BackendConfig:
    """Simulator settings.

    ``physics_hz``: physics steps per simulated second; ``width``/``height``: rendered image size
    (pixels); ``fov_deg``: camera vertical field of view (degrees); ``near``/``far``: clipping
    planes (m); ``settle_s``: simulated seconds objects settle after a spawn; ``cache_dir``:
    where generated assets go (default ``$XDG_CACHE_HOME/mnemobot`` or a temp folder).
    """

    type: str = "pybullet"
    gui: bool = False
    physics_hz: float = 240.0
    width: int = 320
    height: int = 240
    fov_deg: float = 60.0
    near: float = 0.05
    far: float = 20.0
    settle_s: float = 0.3
    solver_iterations: int = 50
    cache_dir: str | None = None

    @property
    def dt(self) -> float:
        """Physics time step, seconds."""
        return 1.0 / self.physics_hz

    def intrinsics(self) -> CameraIntrinsics:
        return CameraIntrinsics.from_fov(self.width, self.height, self.fov_deg)


# -- camera matrices -----------------------------------------------------------------------------
_OPTICAL_TO_GL = np.diag([1.0, -1.0, -1.0])


def view_matrix(camera_pose: Pose) -> list[float]:
    """pybullet (OpenGL, column-major) view matrix of an optical-frame camera pose in the world."""
    r_gl = camera_pose.rotation @ _OPTICAL_TO_GL
    m = np.eye(4)
    m[:3, :3] = r_gl.T
    m[:3, 3] = -r_gl.T @ camera_pose.position
    return m.flatten(order="F").tolist()


def projection_matrix(k: CameraIntrinsics, near: float, far: float) -> list[float]:
    """OpenGL projection (column-major) reproducing pinhole intrinsics ``k``; row 0 = image top."""
    w, h = k.width, k.height
    m = np.zeros((4, 4))
    m[0, 0] = 2.0 * k.fx / w
    m[0, 2] = 1.0 - (2.0 * k.cx + 1.0) / w
    m[1, 1] = 2.0 * k.fy / h
    m[1, 2] = (2.0 * k.cy + 1.0) / h - 1.0
    m[2, 2] = -(far + near) / (far - near)
    m[2, 3] = -2.0 * far * near / (far - near)
    m[3, 2] = -1.0
    return m.flatten(order="F").tolist()


def zbuffer_to_depth(zbuf: np.ndarray, near: float, far: float) -> np.ndarray:
    """Metric depth along the optical axis (m, float32) from an OpenGL z-buffer in [0, 1]."""
    z = np.asarray(zbuf, dtype=np.float64)
    depth = far * near / (far - (far - near) * z)
    depth[z >= 1.0] = 0.0
    return depth.astype(np.float32)


# -- assets --------------------------------------------------------------------------------------
def _cache_dir(configured: str | None) -> Path:
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "mnemobot"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(tempfile.gettempdir()) / "mnemobot"


def pybullet_data_path() -> str:
    """Folder of the ``pybullet_data`` assets."""
    return pybullet_data.getDataPath()


def fast_panda_urdf(cache_dir: str | Path | None = None) -> Path:
    """A copy of pybullet_data's Panda URDF whose visual meshes are the (coarse) collision meshes.

    TinyRenderer draws the detailed visual meshes slowly; the kinematics and collision geometry
    are unchanged. The file is written once per pybullet_data version into ``cache_dir``.
    """
    src_dir = Path(pybullet_data.getDataPath()) / "franka_panda"
    text = (src_dir / "panda.urdf").read_text()
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", (src_dir / "meshes").as_posix() + "/")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    folder = _cache_dir(str(cache_dir) if cache_dir else None)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"panda_fast_{digest}.urdf"
    if not target.is_file():
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
    return target


class BulletClient:
    """pybullet functions bound to one physics server (``physicsClientId`` filled in)."""

    def __init__(self, gui: bool = False) -> None:
        self.id = p.connect(p.GUI if gui else p.DIRECT)
        if self.id < 0:
            raise RuntimeError("could not start a pybullet physics server")

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(p, name)
        if inspect.isbuiltin(attribute):
            return functools.partial(attribute, physicsClientId=self.id)
        return attribute

    def disconnect(self) -> None:
        if self.id >= 0:
            p.disconnect(physicsClientId=self.id)
            self.id = -1


def _box_inertia(mass: float, extent: np.ndarray) -> list[float]:
    """Diagonal inertia (kg m^2) of a solid box of ``extent`` (m)."""
    x, y, z = (float(v) for v in extent)
    return [mass / 12 * (y * y + z * z), mass / 12 * (x * x + z * z), mass / 12 * (x * x + y * y)]


class PyBulletBackend:
    """The household world in pybullet. A context manager; :meth:`close` is idempotent.

    Lifecycle for an episode (what :class:`~mnemobot.sim.env.HouseholdEnv` does)::

        world.restore_initial()          # first call snapshots the scene, later calls restore it
        robot.reset()                    # robot back to its start state
        world.spawn_objects(rng)         # objects on surfaces, settled; clock back to 0
    """

    def __init__(self, layout: HouseLayout = DEFAULT_LAYOUT, config: BackendConfig | None = None) -> None:
        self.layout = layout
        self.config = config or BackendConfig()
        with quiet_native_output():
            self._pb: BulletClient | None = BulletClient(self.config.gui)
        self._steps = 0
        self._hooks: dict[int, StepHook] = {}
        self._next_hook = 0
        self._snapshot: int | None = None
        self._snapshot_bodies = 0
        self.robot: SimRobot | None = None
        self._instance_of_body: dict[int, int] = {}
        self._labels: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._drawers: dict[str, tuple[int, FurnitureSpec]] = {}
        self._button: int | None = None
        self._button_down = False
        self._presses = 0
        self._objects: dict[str, int] = {}
        self._furniture: dict[str, int] = {}
        self._extents: dict[str, np.ndarray] = {}
        self._rooms = layout.room_rects()
        with quiet_native_output():
            self._setup_physics()
            self._build_static()
            self._load_objects()
        self._lut = self._build_lut()

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def client(self) -> BulletClient:
        """The pybullet client (for the simulated robot); raises once closed."""
        if self._pb is None:
            raise RuntimeError("the pybullet backend is closed")
        return self._pb

    def close(self) -> None:
        if self._pb is not None:
            try:
                self._pb.disconnect()
            finally:
                self._pb = None

    def __enter__(self) -> PyBulletBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: free the physics server
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown
            pass

    @property
    def dt(self) -> float:
        return self.config.dt

    @property
    def time(self) -> float:
        """Simulated seconds since the episode started (physics steps x ``dt``)."""
        return self._steps / self.config.physics_hz

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self.config.intrinsics()

    # -- building ----------------------------------------------------------------------------------
    def _setup_physics(self) -> None:
        pb = self.client
        pb.resetSimulation()
        pb.setGravity(0.0, 0.0, -9.81)
        pb.setTimeStep(self.config.dt)
        pb.setPhysicsEngineParameter(
            numSolverIterations=self.config.solver_iterations, deterministicOverlappingPairs=1
        )
        if self.config.gui:
            pb.configureDebugVisualizer(p.COV_ENABLE_GUI, 0)

    def _static_box(self, center: tuple[float, float, float], half: tuple[float, float, float],
                    rgba: tuple[float, ...], yaw: float = 0.0) -> int:
        pb = self.client
        col = pb.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        vis = pb.createVisualShape(p.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
        return pb.createMultiBody(0.0, col, vis, basePosition=center,
                                  baseOrientation=Pose.from_xyz_yaw(0, 0, 0, yaw).quaternion.tolist())

    def _build_static(self) -> None:
        lay = self.layout
        for room, rgba in zip(lay.room_rects().values(), lay.floor_rgba, strict=False):
            half = (room.size[0] / 2, room.size[1] / 2, 0.01)
            self._static_box((room.center[0], room.center[1], -0.01), half, rgba)
        for wall in lay.walls():
            half = (wall.size[0] / 2, wall.size[1] / 2, lay.wall_height / 2)
            self._static_box((wall.center[0], wall.center[1], lay.wall_height / 2), half, lay.wall_rgba)
        for index, furn in enumerate(lay.furniture):
            uid = self._build_furniture(furn)
            self._register(uid, FURNITURE_ID_BASE + index, furn.name)
            self._furniture[furn.name] = uid
        for spec in lay.places:
            furn = lay.furniture_by_name(spec.furniture)
            if furn.kind == "drawer_cabinet" and spec.relation == "in":
                self._drawers[spec.name] = (self._furniture[furn.name], furn)
        for uid in {uid for uid, _ in self._drawers.values()}:
            self.client.setJointMotorControl2(uid, DRAWER_JOINT, p.VELOCITY_CONTROL, targetVelocity=0.0, force=3.0)
        button = next((f for f in lay.furniture if f.kind == "button"), None)
        if button is not None:
            self._button = self._furniture[button.name]
            self.client.setJointMotorControl2(self._button, BUTTON_JOINT, p.POSITION_CONTROL, targetPosition=0.0,
                                              force=BUTTON_SPRING_N)

    def _build_furniture(self, furn: FurnitureSpec) -> int:
        builders: dict[str, Callable[[FurnitureSpec], int]] = {
            "drawer_cabinet": self._load_cabinet,
            "tray": self._load_tray,
            "button": self._load_button,
        }
        return builders.get(furn.kind, self._build_primitive_furniture)(furn)

    def _build_primitive_furniture(self, furn: FurnitureSpec) -> int:
        pb = self.client
        boxes = furniture_boxes(furn)
        halves = [list(b.half_extents) for b in boxes]
        centers = [list(b.center) for b in boxes]
        col = pb.createCollisionShapeArray([p.GEOM_BOX] * len(boxes), halfExtents=halves,
                                           collisionFramePositions=centers)
        vis = pb.createVisualShapeArray([p.GEOM_BOX] * len(boxes), halfExtents=halves,
                                        visualFramePositions=centers)
        pose = furn.pose()
        uid = pb.createMultiBody(0.0, col, vis, basePosition=pose.position.tolist(),
                                 baseOrientation=pose.quaternion.tolist())
        pb.changeVisualShape(uid, -1, rgbaColor=furn.rgba)
        return uid

    def _load_cabinet(self, furn: FurnitureSpec) -> int:
        pose = furn.pose()
        return self.client.loadURDF(str(ASSET_DIR / "drawer_cabinet.urdf"), pose.position.tolist(),
                                    pose.quaternion.tolist(), useFixedBase=True)

    def _load_button(self, furn: FurnitureSpec) -> int:
        pose = furn.pose()
        uid = self.client.loadURDF(str(ASSET_DIR / "button.urdf"), pose.position.tolist(), pose.quaternion.tolist(),
                                   useFixedBase=True)
        self.client.changeVisualShape(uid, BUTTON_JOINT, rgbaColor=furn.rgba)
        return uid

    def _load_tray(self, furn: FurnitureSpec) -> int:
        pose = furn.pose()
        path = os.path.join(pybullet_data.getDataPath(), "tray", "traybox.urdf")
        uid = self.client.loadURDF(path, pose.position.tolist(), pose.quaternion.tolist(),
                                   useFixedBase=True, globalScaling=furn.size[0] / TRAY_SIZE)
        self.client.changeVisualShape(uid, -1, rgbaColor=furn.rgba, textureUniqueId=-1)
        return uid

    def _load_objects(self) -> None:
        for index, spec in enumerate(self.layout.objects):
            uid = self._load_object(spec, index)
            self._objects[spec.label] = uid
            self._register(uid, index + 1, spec.detected_as, name=spec.label)

    def _load_object(self, spec: ObjectSpec, index: int) -> int:
        pb = self.client
        path = os.path.join(pybullet_data.getDataPath(), spec.urdf)
        park = [-2.0 - 0.3 * index, -2.0, PARK_Z]
        uid = pb.loadURDF(path, park, globalScaling=spec.scale)
        if spec.rgba is not None:
            for shape in pb.getVisualShapeData(uid):
                pb.changeVisualShape(uid, shape[1], rgbaColor=spec.rgba)
        lo, hi = pb.getAABB(uid)
        extent = np.subtract(hi, lo)
        self._extents[spec.label] = extent
        pb.changeDynamics(uid, -1, mass=spec.mass, lateralFriction=spec.friction, spinningFriction=0.002,
                          rollingFriction=0.001, localInertiaDiagonal=_box_inertia(spec.mass, extent))
        return uid

    def _register(self, uid: int, instance_id: int, label: str, name: str | None = None) -> None:
        """Instance ``instance_id`` of body ``uid``, rendered as ``label``; ``name`` (default the
        label) is its unique name (an object label or furniture name)."""
        self._instance_of_body[uid] = instance_id
        self._labels[instance_id] = label
        self._names[instance_id] = name or label

    def _build_lut(self) -> np.ndarray:
        """Lookup table body uid + 1 -> instance id (index 0 is pybullet's background -1)."""
        n = max(self._instance_of_body, default=0) + 64
        lut = np.zeros(n + 2, dtype=np.int32)
        for uid, iid in self._instance_of_body.items():
            lut[uid + 1] = iid
        return lut

    # -- stepping ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Advance physics by one step (``config.dt`` s) and call the step hooks with the new time."""
        self.client.stepSimulation()
        self._steps += 1
        if self._button is not None:
            down = self.button_pressed()
            self._presses += int(down and not self._button_down)
            self._button_down = down
        now = self.time
        for hook in list(self._hooks.values()):
            hook(now)

    def add_step_hook(self, fn: StepHook) -> int:
        """Call ``fn(time)`` after every physics step; returns a handle for :meth:`remove_step_hook`."""
        handle = self._next_hook
        self._next_hook += 1
        self._hooks[handle] = fn
        return handle

    def remove_step_hook(self, handle: int) -> None:
        self._hooks.pop(handle, None)

    def clear_step_hooks(self) -> None:
        self._hooks.clear()

    def attach_robot(self, robot: SimRobot) -> None:
        """Called by the simulated robot it creates itself in this world (for room triggers)."""
        self.robot = robot

    def robot_base_pose(self) -> np.ndarray | None:
        """Ground truth base pose ``(x, y, yaw)`` of the robot, or None without a robot."""
        return None if self.robot is None else self.robot.base_pose.copy()

    def robot_room(self) -> str | None:
        """Ground truth: the room the robot's base centre is in (None in a doorway or no robot)."""
        pose = self.robot_base_pose()
        if pose is None:
            return None
        return next((room.name for room in self._rooms.values() if room.contains(pose[:2])), None)

    # -- episodes ----------------------------------------------------------------------------------
    def restore_initial(self) -> None:
        """Snapshot the world on the first call; afterwards restore that snapshot exactly.

        Removes every user constraint first (grasps). Restoring the full in-memory state, contact
        caches included, makes an episode bit-for-bit reproducible from its seed.
        """
        pb = self.client
        for uid in [pb.getConstraintUniqueId(i) for i in range(pb.getNumConstraints())]:
            pb.removeConstraint(uid)
        if self._snapshot is None:
            self._snapshot = pb.saveState()
            self._snapshot_bodies = pb.getNumBodies()
        elif pb.getNumBodies() != self._snapshot_bodies:
            raise RuntimeError("bodies were added after the first restore_initial(); create the robot first")
        else:
            pb.restoreState(stateId=self._snapshot)
        self._steps = 0
        self._presses, self._button_down = 0, False

    def spawn_objects(self, rng: np.random.Generator) -> dict[str, str]:
        """Put every object on a random spawnable surface (seeded), let them settle, zero the clock.

        Returns ``{object label: place name}``. Objects land on the near, reachable part of a
        surface (see :class:`~mnemobot.sim.layout.HouseLayout`), never inside the drawer; the
        objects of a pair in the layout's ``apart`` in different rooms.
        """
        places = [spec for spec in self.layout.places if spec.spawn]
        taken: list[np.ndarray] = []
        placements: dict[str, str] = {}
        lay = self.layout
        for label in lay.object_labels:
            avoid = {lay.room_of_place(placements[other]) for pair in lay.apart if label in pair
                     for other in pair if other != label and other in placements}
            for index in rng.permutation(len(places)):
                if avoid and lay.room_of_place(places[index].name) in avoid:
                    continue
                xy = self._sample_spot(places[index], taken, rng)
                if xy is not None:
                    break
            else:
                raise RuntimeError(f"no free spot to spawn {label!r}: too many objects for the surfaces")
            taken.append(xy)
            z_surface = float(self.layout.surface_pose(places[index]).position[2])
            self._drop(label, xy, z_surface, float(rng.uniform(-math.pi, math.pi)))
            placements[label] = places[index].name
        self.settle(self.config.settle_s)
        self._steps = 0
        return placements

    def _sample_spot(self, place: PlaceSpec, taken: list[np.ndarray], rng: np.random.Generator,
                     tries: int = 40) -> np.ndarray | None:
        """A world ``(x, y)`` on the near half of ``place``, reachable and clear of ``taken``."""
        local = self._sample_local(place, taken, rng, tries)
        return None if local is None else self.place_surface(place.name).apply(np.append(local, 0.0))[:2]

    def _sample_local(self, place: PlaceSpec, taken: list[np.ndarray], rng: np.random.Generator,
                      tries: int, near_only: bool = True) -> np.ndarray | None:
        """A spot ``(u, v)`` in the surface frame, ``spawn_gap`` from ``taken``; with ``near_only``
        on the near half and within ``spawn_reach`` of the arm at the stand pose."""
        lay = self.layout
        surface = self.place_surface(place.name)
        stand = lay.stand_pose(place)
        arm = np.array(stand[:2]) + 0.10 * np.array([math.cos(stand[2]), math.sin(stand[2])])
        hx = place.surface_size[0] / 2 - lay.spawn_margin
        hy = place.surface_size[1] / 2 - lay.spawn_margin
        for _ in range(tries):
            local = np.array([rng.uniform(0.0 if near_only else -hx, hx), rng.uniform(-hy, hy)])
            xy = surface.apply(np.append(local, 0.0))[:2]
            reach = float(np.linalg.norm(xy - arm))
            if near_only and not lay.spawn_reach[0] <= reach <= lay.spawn_reach[1]:
                continue
            if all(np.linalg.norm(xy - other) >= lay.spawn_gap for other in taken):
                return local
        return None

    def free_spot(self, place: str, rng: np.random.Generator, tries: int = 60,
                  near_only: bool = True) -> tuple[float, float] | None:
        """Ground truth: a free spot ``(u, v)`` (surface frame, m) on a place, or None.

        ``near_only``: restrict to the near, reachable half used for spawning.
        """
        taken = [(lo[:2] + hi[:2]) / 2 for lo, hi in (self.object_aabb(label) for label in self.object_labels())]
        local = self._sample_local(self.layout.place_spec(place), taken, rng, tries, near_only)
        return None if local is None else (float(local[0]), float(local[1]))

    def _drop(self, label: str, xy: np.ndarray, z_surface: float, yaw: float) -> None:
        """Rest object ``label`` with its box centred at ``xy`` on height ``z_surface``, rotated by ``yaw``."""
        pb = self.client
        uid = self._objects[label]
        quat = Pose.from_xyz_yaw(0, 0, 0, yaw).quaternion
        pb.resetBasePositionAndOrientation(uid, [xy[0], xy[1], z_surface + 0.5], quat.tolist())
        lo, hi = pb.getAABB(uid)
        shift = np.array([xy[0] - (lo[0] + hi[0]) / 2, xy[1] - (lo[1] + hi[1]) / 2, z_surface + 0.002 - lo[2]])
        pos = np.array([xy[0], xy[1], z_surface + 0.5]) + shift
        pb.resetBasePositionAndOrientation(uid, pos.tolist(), quat.tolist())
        pb.resetBaseVelocity(uid, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def settle(self, seconds: float) -> None:
        """Run physics for ``seconds`` without advancing the clock or calling hooks."""
        for _ in range(int(round(seconds * self.config.physics_hz))):
            self.client.stepSimulation()

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, camera_pose: Pose, intrinsics: CameraIntrinsics | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
        """Render an RGB-D frame with instance ids from an optical-frame ``camera_pose`` (world).

        Returns ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32 metres along the optical axis
        (0 = no return), ``instances`` (H, W) int32 and ``{instance id: label}`` for the ids
        present (0 = background is never listed).
        """
        k = intrinsics or self.intrinsics
        near, far = self.config.near, self.config.far
        _, _, rgba, zbuf, seg = self.client.getCameraImage(
            k.width, k.height, view_matrix(camera_pose), projection_matrix(k, near, far),
            shadow=0, renderer=p.ER_TINY_RENDERER,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(k.height, k.width, 4)[..., :3].copy()
        depth = zbuffer_to_depth(np.asarray(zbuf).reshape(k.height, k.width), near, far)
        seg = np.asarray(seg, dtype=np.int64).reshape(k.height, k.width)
        instances = self._lut[np.clip(seg + 1, 0, len(self._lut) - 1)]
        present = np.unique(instances)
        labels = {int(i): self._labels[int(i)] for i in present if i != 0}
        return rgb, depth, instances, labels

    # -- instance ids ------------------------------------------------------------------------------
    def instance_labels(self) -> dict[int, str]:
        """Every instance id the renderer can report, with its label (objects and furniture)."""
        return dict(self._labels)

    def instance_id(self, name: str) -> int:
        """Instance id of an object label or a furniture name."""
        for iid, own in self._names.items():
            if own == name:
                return iid
        raise KeyError(f"no instance named {name!r}")

    def object_body(self, label: str) -> int:
        """pybullet body id of object ``label`` (for the simulated robot and experts)."""
        if label not in self._objects:
            raise KeyError(f"unknown object {label!r}; known: {', '.join(self._objects)}")
        return self._objects[label]

    def is_graspable(self, body: int, link: int) -> bool:
        """Whether the grasp assist may attach to ``(body, link)``: an object or a drawer."""
        if body in self._objects.values():
            return True
        return link == DRAWER_JOINT and any(body == uid for uid, _ in self._drawers.values())

    def label_of_body(self, body: int) -> str | None:
        """The unique name (object label or furniture name) of a body, None for the background."""
        iid = self._instance_of_body.get(body)
        return None if iid is None else self._names[iid]

    # -- ground truth (task scoring, world events, scripted experts only) --------------------------
    def object_labels(self) -> tuple[str, ...]:
        """Ground truth: labels of the graspable objects, in instance-id order."""
        return self.layout.object_labels

    def object_categories(self) -> tuple[str, ...]:
        """The labels the renderer reports for objects (a detector's vocabulary), without repeats."""
        return tuple(dict.fromkeys(o.detected_as for o in self.layout.objects))

    def object_pose(self, label: str) -> Pose:
        """Ground truth: pose of the object's base (centre-of-mass frame) in the world."""
        pos, quat = self.client.getBasePositionAndOrientation(self.object_body(label))
        return Pose(np.asarray(pos), np.asarray(quat))

    def object_aabb(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth: world axis-aligned bounding box ``(min xyz, max xyz)`` of the object."""
        lo, hi = self.client.getAABB(self.object_body(label))
        return np.asarray(lo), np.asarray(hi)

    def object_extent(self, label: str) -> np.ndarray:
        """Ground truth: size (m) of the object's bounding box along its own x, y, z axes.

        With :meth:`object_pose` (whose yaw is the body x axis) this tells which way the object
        is narrow, e.g. to choose a grasp across it.
        """
        self.object_body(label)
        return self._extents[label].copy()

    def object_speed(self, label: str) -> float:
        """Ground truth: linear speed of the object, m/s."""
        lin, _ = self.client.getBaseVelocity(self.object_body(label))
        return float(np.linalg.norm(lin))

    def drawer_place(self) -> str | None:
        """Name of the (first) drawer's place, or None if the layout has no drawer."""
        return next(iter(self._drawers), None)

    def drawer_places(self) -> tuple[str, ...]:
        """Names of every drawer's place, in layout order."""
        return tuple(self._drawers)

    def _drawer(self, name: str | None) -> tuple[int, FurnitureSpec] | None:
        """``(cabinet body, cabinet spec)`` of drawer ``name`` (None: the first), None without drawers."""
        if name is None:
            return next(iter(self._drawers.values()), None)
        if name not in self._drawers:
            known = ", ".join(self._drawers) or "none"
            raise KeyError(f"{name!r} is not a drawer; drawers: {known}")
        return self._drawers[name]

    def drawer_opening(self, name: str | None = None) -> float:
        """Ground truth: how far drawer ``name`` (default: the first) is pulled out, metres (0 = closed)."""
        drawer = self._drawer(name)
        if drawer is None:
            return 0.0
        return float(self.client.getJointState(drawer[0], DRAWER_JOINT)[0])

    def button_depth(self) -> float:
        """Ground truth: how far the button's cap is pushed down, metres (0 released; 0 without a button)."""
        if self._button is None:
            return 0.0
        return max(0.0, -float(self.client.getJointState(self._button, BUTTON_JOINT)[0]))

    def button_pressed(self) -> bool:
        """Ground truth: whether the button is pushed down now (deeper than ``BUTTON_PRESS_DEPTH``)."""
        return self.button_depth() > BUTTON_PRESS_DEPTH

    def button_presses(self) -> int:
        """Ground truth: how many times the button went down since the episode started."""
        return self._presses

    def place_surface(self, name: str) -> Pose:
        """Ground truth: current pose of a place's surface (the drawer's moves with its opening)."""
        spec = self.layout.place_spec(name)
        surface = self.layout.surface_pose(spec)
        direction = self.layout.open_direction(spec)
        if direction is None or spec.relation != "in":
            return surface
        return Pose(surface.position + direction * self.drawer_opening(name), surface.quaternion)

    def place_of(self, label: str) -> tuple[str, str] | None:
        """Ground truth: ``(place name, relation)`` the object rests on or in, or None.

        "on": the centre of its bounding box lies over the surface and its bottom within 3 cm of
        it; "in" (drawer): the box centre lies inside the drawer and its bottom within 10 cm of
        the drawer's inner bottom.
        """
        lo, hi = self.object_aabb(label)
        centre = (lo + hi) / 2
        best: tuple[float, str, str] | None = None
        for spec in self.layout.places:
            gap = self._rest_gap(spec, centre, float(lo[2]))
            if gap is not None and (best is None or gap < best[0]):
                best = (gap, spec.name, spec.relation)
        return None if best is None else (best[1], best[2])

    def _rest_gap(self, spec: PlaceSpec, centre: np.ndarray, bottom: float, tol: float = 0.01) -> float | None:
        """Height of ``bottom`` above the place's surface if the object rests there, else None."""
        surface = self.place_surface(spec.name)
        local = surface.inverse().apply(np.array([centre[0], centre[1], bottom]))
        if abs(local[0]) > spec.surface_size[0] / 2 + tol or abs(local[1]) > spec.surface_size[1] / 2 + tol:
            return None
        upper = 0.10 if spec.relation == "in" else 0.03
        return abs(float(local[2])) if -0.02 <= local[2] <= upper else None

    def is_held(self, label: str) -> bool:
        """Ground truth: whether a constraint (the robot's grasp) attaches the object."""
        pb = self.client
        body = self.object_body(label)
        for i in range(pb.getNumConstraints()):
            info = pb.getConstraintInfo(pb.getConstraintUniqueId(i))
            if body in (info[0], info[2]):
                return True
        return False

    def teleport_object(self, label: str, pose: Pose) -> None:
        """Ground truth: move an object to ``pose`` (centre-of-mass frame) at rest (world events)."""
        pb = self.client
        uid = self.object_body(label)
        pb.resetBasePositionAndOrientation(uid, pose.position.tolist(), pose.quaternion.tolist())
        pb.resetBaseVelocity(uid, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def put_object(self, label: str, place: str, xy_offset: tuple[float, float] = (0.0, 0.0),
                   yaw: float = 0.0) -> None:
        """Ground truth: rest an object on/in a place, ``xy_offset`` (m) from the surface centre."""
        surface = self.place_surface(place)
        xy = surface.apply(np.array([xy_offset[0], xy_offset[1], 0.0]))[:2]
        self._drop(label, xy, float(surface.position[2]), yaw)

    def set_drawer(self, opening: float, name: str | None = None) -> None:
        """Ground truth: set the opening (m, clipped to its travel) of drawer ``name`` (default:
        the first); its contents move along."""
        drawer = self._drawer(name)
        if drawer is None:
            raise RuntimeError("this layout has no drawer")
        uid, furn = drawer
        place = name if name is not None else self.drawer_place()
        pb = self.client
        lo, hi = pb.getJointInfo(uid, DRAWER_JOINT)[8:10]
        target = float(np.clip(opening, lo, hi))
        inside = [label for label in self.object_labels() if self.place_of(label) == (place, "in")]
        delta = target - self.drawer_opening(place)
        shift = np.array([math.cos(furn.yaw), math.sin(furn.yaw), 0.0]) * delta
        pb.resetJointState(uid, DRAWER_JOINT, target, 0.0)
        for label in inside:
            pose = self.object_pose(label)
            self.teleport_object(label, Pose(pose.position + shift, pose.quaternion))


BACKENDS: dict[str, type[PyBulletBackend]] = {"pybullet": PyBulletBackend}
"""Simulator backends by ``BackendConfig.type``."""


def make_backend(layout: HouseLayout = DEFAULT_LAYOUT, config: BackendConfig | None = None) -> PyBulletBackend:
    """Build the backend named by ``config.type``."""
    config = config or BackendConfig()
    if config.type not in BACKENDS:
        raise ValueError(f"unknown sim backend {config.type!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[config.type](layout, config)
