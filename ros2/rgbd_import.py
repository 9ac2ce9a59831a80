"""Import a public RGB-D data set folder (TUM RGB-D or 7-Scenes layout) as a rosbag2 MCAP bag.

The bag has what ``mnemobot replay`` reads with no topic map (the defaults of
:class:`~mnemobot.ros2.topics.TopicMap`): ``rgb8`` colour on ``/camera/color/image_raw``, ``16UC1``
millimetre depth on ``/camera/aligned_depth_to_color/image_raw``, ``/camera/color/camera_info``,
``/tf`` with the camera's optical frame in ``map`` at every frame, and the sensor rig the data came
from, latched on ``/mnemobot/sensor_profile`` (``SensorModel.to_dict()`` as JSON).

Layouts:

* **TUM RGB-D**: ``rgb.txt`` and ``depth.txt`` (``timestamp filename`` lines, ``#`` comments),
  ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``: the colour camera's optical frame in
  the motion-capture frame, metres), depth PNGs 16-bit with 5000 units per metre (0 = no return).
  Colour and depth are paired by nearest timestamp (at most 0.02 s apart, each depth used once);
  the pose at the colour image's time is interpolated (lerp + slerp) between ground-truth samples
  at most 0.1 s apart. Intrinsics: the published values of the sequence's camera (``freiburg1``,
  ``freiburg2``, ``freiburg3`` or ``fr1``... in the folder name), else the ROS default.
* **7-Scenes**: ``frame-XXXXXX.color.png``, ``frame-XXXXXX.depth.png`` (16-bit millimetres,
  65535 = invalid) and ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world matrix); 30 Hz, so frame
  ``i`` is at ``i / fps`` seconds.

World frame: these data sets' world frames are not gravity-aligned (7-Scenes: the first camera's
frame, y down; TUM: the motion-capture frame). The bag's ``map`` frame is z-up (REP 103): every
pose is rotated so that the chosen up direction becomes +z. ``up="auto"`` **assumes the camera is
held roughly level** (hand-held or on a robot, no roll, not looking straight up or down): the mean
of the cameras' up directions (-y of the optical frame, in world coordinates) is the world's up,
snapped to the nearest world axis when within 20 degrees of it.

Bad frames (unpaired, missing or unreadable images, wrong bit depth, NaN or non-unit poses, a
non-rigid matrix) are skipped and counted by reason, each with a message naming the frame and
the problem. Problems that stop the whole import raise :class:`RgbdImportError`. The bag is
written under a temporary name next to ``out`` and renamed when complete: ``out`` is never
overwritten, and an interrupted or failed import leaves nothing there.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.perception.types import CameraIntrinsics, Pose, quat_from_matrix, slerp
from mnemobot.ros2.convert import camera_info_msg, image_msg, transform_msg
from mnemobot.ros2.record import BagWriter, RecordError
from mnemobot.ros2.topics import FRAMES, MNEMOBOT_TOPICS, TopicMap

__all__ = [
    "FORMATS",
    "TUM_INTRINSICS",
    "UP_CHOICES",
    "ImportResult",
    "RgbdImportError",
    "import_rgbd",
    "tum_intrinsics",
    "up_rotation",
]

FORMATS = ("tum", "7scenes")
UP_CHOICES = ("auto", "x", "y", "z", "-x", "-y", "-z")

TUM_INTRINSICS: dict[str, tuple[float, float, float, float]] = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}
"""Published pinhole intrinsics (fx, fy, cx, cy; pixels) of the TUM RGB-D cameras; ``default``: ROS's."""

SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
TUM_DEPTH_SCALE = 5000.0
"""TUM depth PNG units per metre."""
MAX_PAIR_DT = 0.02
"""Largest rgb/depth timestamp difference (s) of a TUM pair."""
MAX_GT_GAP = 0.1
"""Largest ground-truth gap (s) a TUM pose is interpolated across."""
QUAT_TOL = 1e-3
"""A quaternion whose norm is within this of 1 is normalised; farther, the frame is rejected."""
RIGID_TOL = 1e-3
"""Largest deviation of a 7-Scenes pose's rotation block from orthonormal (and its last row from 0 0 0 1)."""
SNAP_DEG = 20.0
"""``--up auto`` snaps the estimated up to a world axis within this angle (degrees)."""
MIN_UP_AGREEMENT = 0.5
"""Length of the mean camera-up vector below which the cameras disagree too much to estimate up."""
SEVEN_SCENES_INVALID = 65535
_MAX_REPORTED = 20
_PROGRESS_EVERY = 200

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


class RgbdImportError(ValueError):
    """A problem that stops the whole import (missing folder or index file, no usable frame, bad option)."""


class FrameProblem(ValueError):
    """A problem with one frame: it is skipped and counted under :attr:`reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class _Frame:
    """One candidate frame: ``t`` seconds (data set clock), ``name`` for messages (the colour image's
    file and time, or the 7-Scenes frame name), image files,
    the camera's optical frame in the data set's world (``pose``), or why it cannot be used."""

    t: float
    name: str
    rgb: Path | None
    depth: Path | None
    pose: Pose | None
    problem: FrameProblem | None = None


@dataclass
class ImportResult:
    """What an import wrote: ``written`` frames, ``skipped`` counts by reason, the up direction
    chosen (``up``: a world axis like ``-y`` or a vector), ``up_rotation`` (3x3, data set world ->
    ``map``), the intrinsics, the sensor profile name and the messages printed."""

    out: Path
    fmt: str
    written: int
    skipped: Counter = field(default_factory=Counter)
    up: str = "z"
    up_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    intrinsics: CameraIntrinsics | None = None
    sensor: str = ""
    duration_s: float = 0.0

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        return (f"{self.written} frames written to {self.out} ({self.duration_s:.2f} s), {skipped} skipped"
                + (f" ({why})" if why else ""))


# -- entry point ---------------------------------------------------------------------------------------
def import_rgbd(src: str | Path, out: str | Path, fmt: str, *, intrinsics: Sequence[float] | None = None,
                depth_scale: float | None = None, fps: float = 30.0, up: str = "auto",
                sensor: str | Path = "kinect", say: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> ImportResult:
    """Convert the data set folder ``src`` (``fmt``: ``tum`` or ``7scenes``) into the bag ``out``.

    ``intrinsics``: ``(fx, fy, cx, cy)`` pixels overriding the layout's; ``depth_scale``: TUM depth
    units per metre (default 5000); ``fps``: 7-Scenes frame rate (Hz); ``up``: see the module
    docstring; ``sensor``: a profile name or YAML file (:func:`~mnemobot.perception.sensor.sensor_model`).
    ``say`` gets progress and the summary, ``warn`` one line per skipped frame (the first 20)."""
    say = say or (lambda _m: None)
    warn = warn or (lambda _m: None)
    root, out = Path(src), Path(out)
    _check_options(fmt, intrinsics, depth_scale, fps, up)
    if out.exists():
        raise RgbdImportError(f"{out} already exists; import into a new path (nothing was overwritten)")
    if not root.is_dir():
        raise RgbdImportError(f"no such data set folder: {root}")
    model = _sensor(sensor)
    if fmt == "tum":
        frames = _tum_frames(root)
        fx_fy_cx_cy, cam_name = (tuple(intrinsics), "--intrinsics") if intrinsics else tum_intrinsics(root)
        scale = float(depth_scale) if depth_scale is not None else TUM_DEPTH_SCALE
    else:
        frames = _seven_scenes_frames(root, fps)
        fx_fy_cx_cy = tuple(intrinsics) if intrinsics else SEVEN_SCENES_INTRINSICS
        cam_name = "--intrinsics" if intrinsics else "7-Scenes Kinect"
        scale = 1000.0
    if not frames:
        raise RgbdImportError(f"{root} has no frames in the {fmt} layout")
    result = ImportResult(out=out, fmt=fmt, written=0, sensor=model.name)
    good = _screen(frames, result.skipped, warn)
    if not good:
        raise RgbdImportError(f"{root}: none of its {len(frames)} frames is usable ({_reasons(result.skipped)})")
    rot, up_text = up_rotation([f.pose for f in good], up)
    result.up, result.up_rotation = up_text, rot
    say(f"{fmt}: {len(frames)} frames in {root}; intrinsics fx {fx_fy_cx_cy[0]} fy {fx_fy_cx_cy[1]} "
        f"cx {fx_fy_cx_cy[2]} cy {fx_fy_cx_cy[3]} ({cam_name}); depth {scale:g} units/m; sensor {model.name}")
    say(f"up: {up_text}; poses rotated so that it is +z of {FRAMES['world']}")
    _write_bag(good, out, scale, fmt, fx_fy_cx_cy, rot, model.to_dict(), result, say, warn)
    say(result.summary())
    return result


def _check_options(fmt: str, intrinsics: Sequence[float] | None, depth_scale: float | None, fps: float,
                   up: str) -> None:
    if fmt not in FORMATS:
        raise RgbdImportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if intrinsics is not None:
        vals = [float(v) for v in intrinsics]
        if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or vals[0] <= 0 or vals[1] <= 0:
            raise RgbdImportError(f"intrinsics must be fx,fy,cx,cy with fx, fy > 0 (pixels), got {list(intrinsics)}")
    if depth_scale is not None and not (math.isfinite(depth_scale) and depth_scale > 0):
        raise RgbdImportError(f"--depth-scale must be a number > 0 (units per metre), got {depth_scale}")
    if not (math.isfinite(fps) and fps > 0):
        raise RgbdImportError(f"--fps must be a number > 0, got {fps}")
    if up not in UP_CHOICES:
        raise RgbdImportError(f"--up must be one of {', '.join(UP_CHOICES)}, got {up!r}")


def _sensor(name: str | Path) -> Any:
    from mnemobot.perception.sensor import SensorError, sensor_model

    try:
        return sensor_model(str(name))
    except SensorError as e:
        raise RgbdImportError(str(e)) from None


def tum_intrinsics(root: Path) -> tuple[tuple[float, float, float, float], str]:
    """The TUM camera of a sequence folder, from its name (``freiburg1`` / ``fr1`` ...): ``(fx, fy,
    cx, cy)`` in pixels and the camera's name (``default``: ROS's default, for unknown sequences)."""
    name = root.resolve().name.lower()
    m = re.search(r"(?:freiburg|fr)([123])(?![0-9])", name)
    key = f"freiburg{m.group(1)}" if m else "default"
    return TUM_INTRINSICS[key], key


# -- TUM RGB-D -----------------------------------------------------------------------------------------
def _index_lines(path: Path, fields_min: int) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of a TUM text file, comments and blank lines left out."""
    if not path.is_file():
        raise RgbdImportError(f"missing index file {path}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise RgbdImportError(f"cannot read {path}: {e.strerror or e}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) < fields_min:
            raise RgbdImportError(f"{path}:{i}: expected {fields_min} fields, got {s!r}")
        out.append((i, parts))
    if not out:
        raise RgbdImportError(f"{path} lists nothing")
    return out


def _stamp(text: str, where: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise RgbdImportError(f"{where}: timestamp {text!r} is not a number") from None
    if not math.isfinite(t):
        raise RgbdImportError(f"{where}: timestamp {text!r} is not finite")
    return t


def _file_index(path: Path) -> list[tuple[float, str]]:
    """``rgb.txt`` / ``depth.txt``: ``(timestamp s, file name relative to the folder)`` in time order."""
    rows = [(_stamp(p[0], f"{path}:{i}"), p[1]) for i, p in _index_lines(path, 2)]
    return sorted(rows)


def _associate(rgb: list[tuple[float, str]], depth: list[tuple[float, str]],
               max_dt: float = MAX_PAIR_DT) -> tuple[list[tuple[float, str, str]], list[tuple[float, str]]]:
    """Pair colour and depth images by nearest timestamp (greedy, closest pairs first, each image
    used once, at most ``max_dt`` s apart): ``(rgb time, rgb file, depth file)`` pairs in time order,
    and the colour images left without depth."""
    dt = np.array([d[0] for d in depth])
    cands: list[tuple[float, int, int]] = []
    for i, (t, _f) in enumerate(rgb):
        lo, hi = np.searchsorted(dt, t - max_dt), np.searchsorted(dt, t + max_dt, side="right")
        cands += [(abs(float(dt[j]) - t), i, int(j)) for j in range(lo, hi)]
    used_r: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for _d, i, j in sorted(cands):
        if i in used_r or j in used_d:
            continue
        used_r.add(i)
        used_d.add(j)
        pairs.append((rgb[i][0], rgb[i][1], depth[j][1]))
    unpaired = [r for i, r in enumerate(rgb) if i not in used_r]
    return sorted(pairs), unpaired


@dataclass
class _GroundTruth:
    """TUM ground truth: times (s), positions (m), unit quaternions (x, y, z, w); ``bad[i]``: why
    sample ``i`` cannot be used (None if it can)."""

    t: np.ndarray
    p: np.ndarray
    q: np.ndarray
    bad: list[FrameProblem | None]


def _read_groundtruth(path: Path) -> _GroundTruth:
    rows = _index_lines(path, 8)
    data = []
    for i, parts in rows:
        try:
            data.append([float(x) for x in parts[:8]])
        except ValueError:
            raise RgbdImportError(f"{path}:{i}: expected 'timestamp tx ty tz qx qy qz qw', got {' '.join(parts)!r}")\
                from None
    a = np.array(data)
    order = np.argsort(a[:, 0], kind="stable")
    a = a[order]
    lines = [rows[k][0] for k in order]
    if not np.all(np.isfinite(a[:, 0])):
        raise RgbdImportError(f"{path}: a timestamp is not finite")
    q = a[:, 4:8].copy()
    bad: list[FrameProblem | None] = []
    for k in range(len(a)):
        try:
            q[k] = _unit_quaternion(a[k, 4:8], a[k, 1:4])
            bad.append(None)
        except FrameProblem as e:
            bad.append(FrameProblem(e.reason, f"ground truth {e} ({path.name} line {lines[k]})"))
    return _GroundTruth(a[:, 0], a[:, 1:4], q, bad)


def _unit_quaternion(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``q`` normalised when its norm is within :data:`QUAT_TOL` of 1; :class:`FrameProblem` otherwise
    or when ``q`` or the position ``p`` is not finite."""
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(p))):
        raise FrameProblem("NaN pose", f"pose is not finite: t {p.tolist()} q {q.tolist()}")
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > QUAT_TOL:
        raise FrameProblem("non-unit quaternion", f"quaternion {q.tolist()} has norm {n:.6f}, not 1")
    return q / n


def _interpolate(gt: _GroundTruth, t: float, max_gap: float = MAX_GT_GAP) -> Pose:
    """The camera pose at ``t`` (s): lerp of the position and slerp of the orientation between the
    ground-truth samples around ``t``; :class:`FrameProblem` outside their range or across a gap."""
    if t < gt.t[0] or t > gt.t[-1]:
        raise FrameProblem("outside ground truth", f"time {t:.6f} is outside the ground truth "
                                                   f"({gt.t[0]:.6f} .. {gt.t[-1]:.6f})")
    j = int(np.searchsorted(gt.t, t, side="left"))
    if gt.t[j] == t:
        i = j
    else:
        i = j - 1
        if gt.t[j] - gt.t[i] > max_gap:
            raise FrameProblem("ground-truth gap", f"ground truth has a {gt.t[j] - gt.t[i]:.3f} s gap around "
                                                   f"time {t:.6f} (at most {max_gap} s)")
    for k in (i, j):
        problem = gt.bad[k]
        if problem is not None:
            raise problem
    if i == j:
        return Pose(gt.p[i], gt.q[i])
    a = (t - gt.t[i]) / (gt.t[j] - gt.t[i])
    return Pose(gt.p[i] + a * (gt.p[j] - gt.p[i]), slerp(gt.q[i], gt.q[j], a))


def _tum_frames(root: Path) -> list[_Frame]:
    """Candidate frames of a TUM RGB-D sequence folder (time = the colour image's stamp, s)."""
    rgb = _file_index(root / "rgb.txt")
    depth = _file_index(root / "depth.txt")
    gt = _read_groundtruth(root / "groundtruth.txt")
    pairs, unpaired = _associate(rgb, depth)
    frames = [_Frame(t, f"frame {f} (t {t:.6f})", None, None, None, FrameProblem(
        "unpaired", f"no depth image within {MAX_PAIR_DT} s of it")) for t, f in unpaired]
    for t, rgb_name, depth_name in pairs:
        try:
            pose, problem = _interpolate(gt, t), None
        except FrameProblem as e:
            pose, problem = None, e
        frames.append(_Frame(t, f"frame {rgb_name} (t {t:.6f})", root / rgb_name, root / depth_name, pose, problem))
    return sorted(frames, key=lambda f: f.t)


# -- 7-Scenes ------------------------------------------------------------------------------------------
_SEVEN = re.compile(r"^frame-(\d+)\.(color\.png|depth\.png|pose\.txt)$")


def _seven_scenes_frames(root: Path, fps: float) -> list[_Frame]:
    """Candidate frames of a 7-Scenes sequence folder (time = index / ``fps``, s)."""
    parts: dict[int, dict[str, Path]] = {}
    try:
        names = sorted(root.iterdir())
    except OSError as e:
        raise RgbdImportError(f"cannot list {root}: {e.strerror or e}") from None
    for p in names:
        m = _SEVEN.match(p.name)
        if m:
            parts.setdefault(int(m.group(1)), {})[m.group(2).split(".")[0]] = p
    frames = []
    for idx in sorted(parts):
        have = parts[idx]
        name = f"frame-{idx:06d}"
        missing = [k for k in ("color", "depth", "pose") if k not in have]
        if missing:
            frames.append(_Frame(idx / fps, name, None, None, None, FrameProblem(
                "unpaired", f"has no {' and no '.join(missing)} file")))
            continue
        try:
            pose, problem = _pose_matrix(have["pose"]), None
        except FrameProblem as e:
            pose, problem = None, e
        frames.append(_Frame(idx / fps, name, have["color"], have["depth"], pose, problem))
    return frames


def _pose_matrix(path: Path) -> Pose:
    """A 7-Scenes ``pose.txt``: the 4x4 camera-to-world matrix (metres) as a :class:`Pose`;
    :class:`FrameProblem` when unreadable, not finite or not a rigid transform."""
    try:
        m = np.array([[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()])
    except (OSError, ValueError) as e:
        raise FrameProblem("bad pose file", f"cannot read the 4x4 matrix in {path.name}: {e}") from None
    if m.shape != (4, 4):
        raise FrameProblem("bad pose file", f"{path.name} holds a {'x'.join(map(str, m.shape))} array, not 4x4")
    if not np.all(np.isfinite(m)):
        raise FrameProblem("NaN pose", f"{path.name} has non-finite values")
    r = m[:3, :3]
    err = max(float(np.abs(r.T @ r - np.eye(3)).max()), float(np.abs(m[3] - [0, 0, 0, 1]).max()))
    if err > RIGID_TOL or np.linalg.det(r) < 0:
        raise FrameProblem("non-rigid pose", f"{path.name} is not a rigid transform (rotation block off "
                                             f"orthonormal by {err:.2g}, det {np.linalg.det(r):.3f})")
    u, _s, vt = np.linalg.svd(r)  # re-orthonormalise the few 1e-4 of text rounding
    return Pose(m[:3, 3], quat_from_matrix(u @ vt))


# -- screening and images ------------------------------------------------------------------------------
def _screen(frames: list[_Frame], skipped: Counter, warn: Callable[[str], None]) -> list[_Frame]:
    """The frames with a pose and both image files; the others counted in ``skipped`` and reported."""
    good = []
    for f in frames:
        problem = f.problem
        if problem is None:
            missing = [str(p) for p in (f.rgb, f.depth) if p is not None and not p.is_file()]
            if missing:
                problem = FrameProblem("missing image", f"missing {' and '.join(missing)}")
        if problem is None:
            good.append(f)
        else:
            _skip(skipped, warn, f.name, problem)
    return good


def _skip(skipped: Counter, warn: Callable[[str], None], name: str, problem: FrameProblem) -> None:
    skipped[problem.reason] += 1
    n = sum(skipped.values())
    if n <= _MAX_REPORTED:
        warn(f"{name} skipped: {problem}")
    elif n == _MAX_REPORTED + 1:
        warn("(further skipped frames are only counted)")


_MODES = {"L": "an 8-bit grey image", "RGB": "an 8-bit RGB image", "RGBA": "an 8-bit RGBA image",
          "P": "an 8-bit palette image", "I;16": "a 16-bit grey image", "1": "a 1-bit image",
          "LA": "an 8-bit grey+alpha image", "F": "a 32-bit float image", "I": "a 32-bit integer image"}


_COLOUR_MODES = ("RGB", "RGBA", "P", "L")


def _read_png(path: Path, kind: str) -> np.ndarray:
    """A colour image (``(H, W, 3)`` uint8 RGB; 8-bit RGB, RGBA, palette or grey) or a depth image
    (``(H, W)`` uint16, single channel 16-bit); :class:`FrameProblem` when unreadable or of the wrong kind."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise RgbdImportError("import-rgbd reads PNG with Pillow: pip install 'mnemobot[ros]'") from None
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            a = np.asarray(img.convert("RGB") if kind == "color" and mode in _COLOUR_MODES else img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise FrameProblem("unreadable image", f"cannot read {path.name}: {reason}") from None
    if kind == "color":
        if mode not in _COLOUR_MODES:
            raise FrameProblem("wrong bit depth", f"{path.name} is {_MODES.get(mode, mode)}; colour must be 8-bit RGB")
        return a.astype(np.uint8, copy=False)
    if mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise FrameProblem("wrong bit depth", f"{path.name} is {_MODES.get(mode, mode)}; depth must be 16-bit "
                                              "single channel")
    if a.ndim != 2 or a.min(initial=0) < 0 or a.max(initial=0) > 0xFFFF:
        raise FrameProblem("wrong bit depth", f"{path.name} is not a 16-bit single-channel depth image")
    return a.astype(np.uint16)


def _depth_mm(raw: np.ndarray, fmt: str, scale: float) -> np.ndarray:
    """Depth as 16UC1 millimetres (0 = no return) from the data set's units: TUM ``scale`` units per
    metre, 7-Scenes millimetres with 65535 invalid."""
    if fmt == "7scenes":
        return np.where(raw == SEVEN_SCENES_INVALID, 0, raw).astype(np.uint16)
    mm = np.rint(raw.astype(np.float64) * (1000.0 / scale))
    return np.where(mm > 0xFFFE, 0, mm).astype(np.uint16)


# -- world up ------------------------------------------------------------------------------------------
def up_rotation(poses: Iterable[Pose], up: str = "auto") -> tuple[np.ndarray, str]:
    """The rotation (3x3, data set world -> z-up ``map``) that takes the world's up direction to +z,
    and a description of the up chosen. ``up``: a world axis (``x`` ... ``-z``) or ``auto``: the mean
    camera up (-y of the optical frame; the cameras are assumed level), snapped to the nearest world
    axis within :data:`SNAP_DEG` degrees."""
    if up != "auto":
        sign = -1.0 if up.startswith("-") else 1.0
        return _rotation_to_z(sign * np.array(_AXES[up.lstrip("-")])), f"world {up} (given)"
    ups = np.array([-p.rotation[:, 1] for p in poses])
    mean = ups.mean(axis=0)
    agreement = float(np.linalg.norm(mean))
    if agreement < MIN_UP_AGREEMENT:
        raise RgbdImportError(f"cannot estimate the up direction: the cameras' up directions disagree (mean "
                              f"length {agreement:.2f}); the camera is not held level. Give --up x|y|z|-x|-y|-z")
    u = mean / agreement
    k = int(np.argmax(np.abs(u)))
    axis = np.zeros(3)
    axis[k] = math.copysign(1.0, u[k])
    angle = math.degrees(math.acos(min(1.0, abs(float(u[k])))))
    name = ("-" if u[k] < 0 else "") + "xyz"[k]
    if angle <= SNAP_DEG:
        return _rotation_to_z(axis), f"world {name} (auto: the mean camera up is {angle:.1f} deg from it)"
    return _rotation_to_z(u), (f"({u[0]:.3f}, {u[1]:.3f}, {u[2]:.3f}) in the data set's world (auto: "
                               f"{angle:.1f} deg from the nearest axis {name}, not snapped)")


def _rotation_to_z(u: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the unit vector ``u`` to +z (180 deg about x for ``u = -z``)."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(u, z)
    c = float(np.dot(u, z))
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


# -- writing -------------------------------------------------------------------------------------------
def _write_bag(frames: list[_Frame], out: Path, scale: float, fmt: str, k4: tuple[float, ...], rot: np.ndarray,
               sensor: dict[str, Any], result: ImportResult, say: Callable[[str], None],
               warn: Callable[[str], None]) -> None:
    """Write the frames under a temporary folder next to ``out``, then rename it to ``out``."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    except OSError as e:
        raise RgbdImportError(f"cannot write next to {out}: {e.strerror or e}") from None
    try:
        staged = tmp / out.name  # the MCAP file is named after the bag folder: stage under the final name
        bag = _RgbdBag(staged)
        try:
            bag.open()
            _write_frames(bag, frames, scale, fmt, k4, Pose(np.zeros(3), quat_from_matrix(rot)), sensor, result,
                          say, warn)
        finally:
            bag.close()
        if result.written == 0:
            raise RgbdImportError(f"none of the frames could be imported ({_reasons(result.skipped)})")
        if out.exists():
            raise RgbdImportError(f"{out} appeared while importing; nothing was overwritten")
        staged.rename(out)
    except RecordError as e:
        raise RgbdImportError(str(e)) from None
    except OSError as e:  # disk full, permissions: nothing is left behind
        raise RgbdImportError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_frames(bag: _RgbdBag, frames: list[_Frame], scale: float, fmt: str, k4: tuple[float, ...],
                  world: Pose, sensor: dict[str, Any], result: ImportResult, say: Callable[[str], None],
                  warn: Callable[[str], None]) -> None:
    """Read, check and write each frame; ``world``: the data set world in ``map`` (the up rotation)."""
    size: tuple[int, int] | None = None
    t0 = frames[0].t
    for n, f in enumerate(frames, 1):
        if n % _PROGRESS_EVERY == 0:
            say(f"{n}/{len(frames)} frames read")
        try:
            rgb = _read_png(f.rgb, "color")
            depth = _depth_mm(_read_png(f.depth, "depth"), fmt, scale)
            if rgb.shape[:2] != depth.shape:
                raise FrameProblem("size mismatch", f"colour is {rgb.shape[1]}x{rgb.shape[0]}, depth "
                                                    f"{depth.shape[1]}x{depth.shape[0]}")
            if size is not None and depth.shape != size:
                raise FrameProblem("size mismatch", f"images are {depth.shape[1]}x{depth.shape[0]}, the "
                                                    f"first frame's {size[1]}x{size[0]}")
        except FrameProblem as e:
            _skip(result.skipped, warn, f.name, e)
            continue
        if size is None:
            size = depth.shape
            result.intrinsics = CameraIntrinsics(size[1], size[0], *k4)
            bag.latched(f.t, sensor)
        bag.frame(f.t, rgb, depth, result.intrinsics, world @ f.pose)
        result.written += 1
        result.duration_s = f.t - t0


class _RgbdBag(BagWriter):
    """The imported bag: camera topics at :class:`TopicMap`'s defaults, ``/tf``, the sensor profile."""

    def open(self) -> _RgbdBag:
        self._open_writer()
        T = TopicMap()
        for topic, msgtype, profile in ((T.rgb, "sensor_msgs/msg/Image", "sensor"),
                                        (T.depth, "sensor_msgs/msg/Image", "sensor"),
                                        (T.camera_info, "sensor_msgs/msg/CameraInfo", "sensor"),
                                        (T.tf, "tf2_msgs/msg/TFMessage", "tf"),
                                        (MNEMOBOT_TOPICS["sensor_profile"], "std_msgs/msg/String", "latched")):
            self._add(topic, msgtype, profile)
        self.topics = T
        return self

    def latched(self, t: float, sensor: dict[str, Any]) -> None:
        self._sensor(t, sensor)

    def frame(self, t: float, rgb: np.ndarray, depth_mm: np.ndarray, k: CameraIntrinsics, cam: Pose) -> None:
        """One frame at ``t`` (s): the camera pose first (``map`` -> optical frame), then the images."""
        T, cam_frame = self.topics, FRAMES["camera_optical"]
        tf = transform_msg(cam, FRAMES["world"], cam_frame, t, self.ts)
        self._write(T.tf, t, self.ts.types["tf2_msgs/msg/TFMessage"](transforms=[tf]))
        self._write(T.camera_info, t, camera_info_msg(k, t, cam_frame, self.ts))
        self._write(T.rgb, t, image_msg(rgb, "rgb8", t, cam_frame, self.ts))
        self._write(T.depth, t, image_msg(depth_mm, "16UC1", t, cam_frame, self.ts))


def _reasons(skipped: Counter) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "no frames"
