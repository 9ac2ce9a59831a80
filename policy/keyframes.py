"""Keyframes of a demonstration: the few poses whose straight interpolation redraws it.

A recorded demonstration holds one command every ``1 / fps`` seconds. Most of them lie on
straight lines between a few poses: where the hand stops above the block, where the fingers close,
where the base stops in front of the button. Keyframe policies (PerAct, RVT, SAM2Act) predict
only those poses and let a motion layer move between them; a chunk of 16 keyframes then spans a
whole sub-task instead of 1.6 s, and the decision that needs memory ("which patch was it?") is
one output instead of a hundred.

:func:`keyframe_indices` finds them without knowing the expert's script:

* around every change of the finger command: the frame before it (the hand arrives with the old
  opening) and the frame the command reaches its new value (the fingers moved there);
* the vertices of a Ramer-Douglas-Peucker simplification of the whole-body path between those
  frames, in the coordinates the skill interpolates in (arm joints, base pose, head), each scaled
  by how far off it may be (:data:`TOLERANCE`): the straight path between consecutive keyframes
  passes within those tolerances of every recorded pose. The expert swings its arm between the
  carry posture and the bench in straight joint-space moves (a wide arc of the hand, no keyframe
  in between); moving its base first and its arm after is a corner, and so a keyframe;
* the last frame.

A keyframe's action (:func:`keyframe_actions`, ``KEYFRAME_ACTION_NAMES``) is the frame's hand
command, finger opening and head command, with the base's *pose* (the believed ``x, y, yaw`` of
that frame's state) in place of the base twist. The skill solves the hand pose by IK from the
joints it holds, moves the joints, base and head together along straight lines to it, then
the fingers.
"""

from __future__ import annotations

import numpy as np

from mnemobot.policy.features import ACTION_NAMES, STATE_NAMES

__all__ = ["ACTION_FLOOR", "KEYFRAME_ACTION_NAMES", "POKE_M", "TOLERANCE", "event_sites", "keyframe_actions", "keyframe_indices",
           "same_place", "trace_keep"]

KEYFRAME_ACTION_NAMES = [*ACTION_NAMES[:10], "base_x", "base_y", "base_yaw", *ACTION_NAMES[13:]]
"""A keyframe action: hand pose (arm-base frame, position and 6D rotation), finger opening, base
pose ``(x, y, yaw)`` in the map frame, head pan and tilt."""

TOLERANCE = {"joint_rad": 0.03, "base_m": 0.02, "yaw_rad": 0.03, "head_rad": 0.05}
"""How far the straight path between keyframes may stray from a recorded pose: 0.03 rad of arm
joint (at the Panda's reach, about 1 cm of hand for one joint), 2 cm of base position, 1.7
degrees of heading, 3 degrees of head angle."""

ACTION_FLOOR = np.array([0.01] * 3 + [0.05] * 6 + [0.005] + [0.02] * 2 + [0.03] + [0.05] * 2, dtype=np.float32)
"""Per keyframe action: the error that does not matter (1 cm of hand, 3 degrees of hand rotation
per 6D component, 5 mm of finger opening, 2 cm and 1.7 degrees of base, 3 degrees of head); the
policy's normalisation never divides by less."""

POKE_M = 0.02
"""A poke (:func:`event_sites`): the hand goes down this far (m) to a keyframe and back up as far,
the fingers unchanged; about twice the hand's normalisation floor (:data:`ACTION_FLOOR`), so the
scatter of a keyframe the hand stays at is not one."""

_BASE = [STATE_NAMES.index(n) for n in ("base_x", "base_y", "base_yaw")]
_JOINTS = [STATE_NAMES.index(f"q{i}") for i in range(1, 8)]
_GRIP = ACTION_NAMES.index("gripper")


def _signal(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Per-frame whole-body pose (arm joints as measured, base, commanded head), each column
    divided by its tolerance."""
    tol = TOLERANCE
    base = state[:, _BASE].astype(float)
    yaw = np.unwrap(base[:, 2])
    return np.concatenate([
        state[:, _JOINTS] / tol["joint_rad"], base[:, :2] / tol["base_m"], yaw[:, None] / tol["yaw_rad"],
        action[:, 13:15] / tol["head_rad"],
    ], axis=1)


def _rdp(points: np.ndarray, lo: int, hi: int, out: set[int]) -> None:
    """Vertices of the Ramer-Douglas-Peucker simplification of ``points[lo..hi]`` (distance of a
    point from the segment between two kept ones, at most 1); iterative."""
    stack = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        seg = points[b] - points[a]
        rel = points[a + 1 : b] - points[a]
        ll = float(seg @ seg)
        s = np.clip(rel @ seg / ll, 0.0, 1.0) if ll > 1e-12 else np.zeros(len(rel))
        dev = np.linalg.norm(rel - s[:, None] * seg, axis=1)
        k = int(np.argmax(dev))
        if dev[k] > 1.0:
            m = a + 1 + k
            out.add(m)
            stack.extend([(a, m), (m, b)])


def keyframe_indices(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Frame indices of the keyframes of one episode (sorted, without frame 0 unless it is the
    only frame; see the module docstring). ``state``: ``(N, len(STATE_NAMES))``, ``action``:
    ``(N, len(ACTION_NAMES))``."""
    state, action = np.asarray(state, float), np.asarray(action, float)
    n = len(action)
    if n == 0:
        return np.zeros(0, int)
    if n == 1:
        return np.array([0])
    grip = action[:, _GRIP]
    change = np.flatnonzero(np.abs(np.diff(grip)) > 1e-4) + 1  # frames whose command differs from the last
    anchors = {0, n - 1}
    for k, i in enumerate(change):
        if k == 0 or change[k - 1] != i - 1:  # a ramp starts: the hand has arrived
            anchors.add(int(i) - 1)
        if k == len(change) - 1 or change[k + 1] != i + 1:  # the ramp ends: the new opening
            anchors.add(int(i))
    points = _signal(state, action)
    keys = set(anchors)
    order = sorted(anchors)
    for a, b in zip(order[:-1], order[1:], strict=True):
        _rdp(points, a, b, keys)
    keys.discard(0)
    return np.array(sorted(keys), dtype=int)


def keyframe_actions(state: np.ndarray, action: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``KEYFRAME_ACTION_NAMES`` at ``indices`` (float32 ``(K, 15)``); the yaw unwrapped along
    the episode, so that consecutive keyframes never differ by a turn."""
    state, action = np.asarray(state, float), np.asarray(action, float)
    yaw = np.unwrap(state[:, _BASE[2]])
    idx = np.asarray(indices, int)
    out = np.concatenate([action[idx, :10], state[idx][:, _BASE[:2]], yaw[idx, None], action[idx, 13:15]], axis=1)
    return out.astype(np.float32)


def event_sites(keyframes: np.ndarray, arm_mount_xy: tuple[float, float] | None = None) -> np.ndarray:
    """Where the hand event each keyframe belongs to happens: ``(K, 2)`` map-frame ``(x, y)``, NaN
    for a keyframe of an episode without events.

    An event is a keyframe where the finger command changes (the fingers close on a block or a
    handle, open to release it, close before a press), together with the keyframe before it (the
    hand arrived there with the old opening); or a poke: a keyframe the hand goes down to by at
    least :data:`POKE_M` and back up from by as much, the fingers unchanged (the press of a
    button). Every keyframe belongs to the event before it or the one after it, whichever its base
    stands nearer (``|dx, dy| + 0.3 m/rad * |dyaw|``); where the two are within 2 cm of that
    measure (the base stayed), whichever its hand is nearer, and on a tie of both the one after:
    driving to a patch and reaching down belong to the grasp there, lifting the block away to the
    grasp before, the hand's way down to a button and back up to the press. The event's site is
    the hand's position then: the base
    pose of the keyframe composed with the hand pose in the arm-base frame, mounted at
    ``arm_mount_xy`` on the base (default: the mobile Panda's mount,
    :data:`mnemobot.control.robots.ARM_MOUNT`). The policy's anchors
    (:func:`mnemobot.policy.model.anchor_targets`) take the memory point nearest that site."""
    kf = np.asarray(keyframes, dtype=float)
    n = len(kf)
    if arm_mount_xy is None:
        from mnemobot.control.robots import ARM_MOUNT

        arm_mount_xy = (float(ARM_MOUNT.position[0]), float(ARM_MOUNT.position[1]))
    mx, my = arm_mount_xy
    x, y, yaw = kf[:, 10], kf[:, 11], kf[:, 12]
    hx, hy = kf[:, 0] + mx, kf[:, 1] + my
    hand = np.stack([x + np.cos(yaw) * hx - np.sin(yaw) * hy, y + np.sin(yaw) * hx + np.cos(yaw) * hy], axis=1)
    grip, z = kf[:, 9], kf[:, 2]
    change = np.flatnonzero(np.abs(np.diff(grip)) > 1e-3) + 1
    pokes = [i for i in range(1, n - 1) if z[i] <= z[i - 1] - POKE_M and z[i] <= z[i + 1] - POKE_M
             and abs(grip[i] - grip[i - 1]) <= 1e-3 and abs(grip[i + 1] - grip[i]) <= 1e-3]
    events = np.unique(np.concatenate([change, change - 1, np.asarray(pokes, int)])).astype(int)
    out = np.full((n, 2), np.nan)
    if len(events) == 0:
        return out
    for i in range(n):
        before, after = events[events <= i], events[events >= i]
        cands = ([int(after[0])] if len(after) else []) + ([int(before[-1])] if len(before) else [])
        far = np.array([np.hypot(x[k] - x[i], y[k] - y[i]) + 0.3 * abs(yaw[k] - yaw[i]) for k in cands])
        near = [k for k, f in zip(cands, far, strict=True) if f <= far.min() + 0.02]
        gap = [float(np.hypot(*(hand[k] - hand[i]))) for k in near]
        out[i] = hand[near[int(np.argmin(gap))]]  # argmin keeps the first of a tie: the event after
    return out


def same_place(a: np.ndarray, b: np.ndarray, rest_m: float = 0.015) -> bool:
    """Whether keyframe action ``a`` asks for no move from ``b`` (``KEYFRAME_ACTION_NAMES``
    vectors): hand within ``max(rest_m, 1.5 cm)``, fingers within 1 cm, base within 3 cm and 3
    degrees, head within 6 degrees (about the normalisation floor of a keyframe policy's outputs:
    the scatter of its "stay here")."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    dyaw = (a[12] - b[12] + np.pi) % (2 * np.pi) - np.pi
    return bool(np.linalg.norm(a[:3] - b[:3]) < max(rest_m, 0.015) and abs(a[9] - b[9]) < 0.01
                and np.linalg.norm(a[10:12] - b[10:12]) < 0.03 and abs(dyaw) < 0.05
                and np.max(np.abs(a[13:15] - b[13:15])) < 0.1)


def trace_keep(actions: np.ndarray) -> np.ndarray:
    """Indices of the keyframes a trace of what the hand has done keeps: each one, except that a
    keyframe at the same place as the last one kept (:func:`same_place`) replaces it. A policy
    that adds a near-duplicate keyframe (a pause) then leaves the same trace as the demonstration
    it learned from."""
    keep: list[int] = []
    for i, a in enumerate(np.asarray(actions, float)):
        if keep and same_place(a, actions[keep[-1]]):
            keep[-1] = i
        else:
            keep.append(i)
    return np.asarray(keep, dtype=int)
