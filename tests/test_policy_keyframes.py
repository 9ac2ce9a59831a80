"""Keyframes of demonstrations (``mnemobot.policy.keyframes``) and the keyframe training samples:
the corners of the whole-body path and the finger changes are found, the straight path between
keyframes stays within the tolerances of every recorded pose, and a sample's chunk is the next
keyframes seen from the robot at rest at one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnemobot.policy.features import ACTION_NAMES, STATE_NAMES
from mnemobot.policy.keyframes import (
    KEYFRAME_ACTION_NAMES,
    POKE_M,
    TOLERANCE,
    _signal,
    event_sites,
    keyframe_actions,
    keyframe_indices,
    same_place,
    trace_keep,
)

GRIP = ACTION_NAMES.index("gripper")
BASE = [STATE_NAMES.index(n) for n in ("base_x", "base_y", "base_yaw")]
JOINTS = [STATE_NAMES.index(f"q{i}") for i in range(1, 8)]


def _path(points: list[tuple[int, dict]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``0..n-1`` moving linearly between ``(frame, {q, hand, grip, base, head})`` anchors
    (joints in the state, hand and head commands in the action)."""
    state = np.zeros((n, len(STATE_NAMES)))
    action = np.zeros((n, len(ACTION_NAMES)))
    action[:, 3:9] = [1, 0, 0, 0, 1, 0]  # identity rotation
    frames = [f for f, _ in points]
    for key, cols, arr in (("hand", [0, 1, 2], action), ("head", [13, 14], action), ("q", JOINTS, state)):
        vals = np.array([p[key] for _, p in points], float)
        for c, col in enumerate(cols):
            arr[:, col] = np.interp(np.arange(n), frames, vals[:, c])
    base = np.array([p["base"] for _, p in points], float)
    for c in range(3):
        state[:, BASE[c]] = np.interp(np.arange(n), frames, base[:, c])
    # fingers: a step at each anchor that changes them
    grip = np.full(n, points[0][1]["grip"])
    for f, p in points:
        grip[f:] = p["grip"]
    action[:, GRIP] = grip
    return state, action


def _anchor(q, grip=0.08, base=(1.0, 2.0, 1.57), head=(0.0, 0.6)) -> dict:
    """A whole-body pose: joints ``q`` (the first three given; the hand command follows them)."""
    q7 = np.zeros(7)
    q7[: len(q)] = q
    return {"q": q7, "hand": (0.5 + 0.1 * q7[0], 0.1 * q7[1], 0.4 - 0.1 * q7[2]), "grip": grip, "base": base,
            "head": head}


def _max_deviation(state: np.ndarray, action: np.ndarray, keys: np.ndarray) -> float:
    pts = _signal(state, action)
    ks = [0, *keys.tolist()]
    worst = 0.0
    for a, b in zip(ks[:-1], ks[1:], strict=True):
        seg = pts[b] - pts[a]
        ll = float(seg @ seg)
        for i in range(a + 1, b):
            rel = pts[i] - pts[a]
            s = np.clip(rel @ seg / ll, 0, 1) if ll > 1e-12 else 0.0
            worst = max(worst, float(np.linalg.norm(rel - s * seg)))
    return worst


def test_corners_and_finger_changes_are_keyframes_and_the_path_between_them_is_kept() -> None:
    n = 100
    state, action = _path([
        (0, _anchor((0.0, 0.0, 0.0))),
        (20, _anchor((1.0, 1.0, 0.0))),              # a corner of the arm's path
        (40, _anchor((1.0, 1.0, 0.5))),              # the arm arrives over the block, and stops
        (45, _anchor((1.0, 1.0, 0.5), grip=0.03)),   # the fingers close here
        (60, _anchor((1.0, 1.0, 0.0), grip=0.03)),
        (80, _anchor((1.0, 1.0, 0.0), grip=0.03, base=(1.5, 2.0, 1.57))),  # the base drives, the arm holds
        (99, _anchor((1.0, 1.0, 0.0), grip=0.03, base=(1.5, 2.0, 1.57), head=(0.5, 0.6))),  # then the head turns
    ], n)
    keys = keyframe_indices(state, action)
    for want in (20, 44, 45, 60, 80, 99):  # 40: the hand stops at the end of a straight line, no corner
        assert np.min(np.abs(keys - want)) <= 1, (want, keys)
    assert len(keys) <= 10, keys  # straight stretches add none
    assert _max_deviation(state, action, keys) <= 1.0
    kf = keyframe_actions(state, action, keys)
    assert kf.shape == (len(keys), len(KEYFRAME_ACTION_NAMES))
    i44, i45 = list(keys).index(44), list(keys).index(45)
    assert kf[i44, GRIP] == pytest.approx(0.08) and kf[i45, GRIP] == pytest.approx(0.03)
    assert np.allclose(kf[i44, :3], kf[i45, :3])  # the fingers move where the hand already is
    assert np.allclose(kf[-1, 10:13], [1.5, 2.0, 1.57], atol=1e-6)  # the base's pose, not its twist


def test_sensor_sized_wobble_adds_no_keyframes_and_the_tolerance_holds_on_a_curve() -> None:
    n = 200
    rng = np.random.default_rng(0)
    state, action = _path([(0, _anchor((0.0, 0.0, 0.0))), (199, _anchor((1.0, 0.5, 0.3)))], n)
    state[:, JOINTS] += rng.normal(0, TOLERANCE["joint_rad"] / 10, size=(n, 7))  # tracking jitter
    assert len(keyframe_indices(state, action)) <= 3
    # two joints on a quarter circle of 0.5 rad need some keyframes, and within them the path is kept
    t = np.linspace(0, np.pi / 2, n)
    state[:, JOINTS[0]], state[:, JOINTS[1]] = 0.5 * np.cos(t), 0.5 * np.sin(t)
    keys = keyframe_indices(state, action)
    assert 3 <= len(keys) <= 12
    assert _max_deviation(state, action, keys) <= 1.0


def test_a_heading_across_pi_is_one_short_turn() -> None:
    n = 30
    state, action = _path([(0, _anchor((0.0,), base=(1, 1, 3.1))), (29, _anchor((0.0,), base=(1, 1, 3.2)))], n)
    state[:, BASE[2]] = (state[:, BASE[2]] + np.pi) % (2 * np.pi) - np.pi  # wrapped, as recorded
    keys = keyframe_indices(state, action)
    assert keys.tolist() == [29]  # one straight turn of 0.1 rad, not a spin
    assert keyframe_actions(state, action, keys)[0, 12] == pytest.approx(3.2, abs=1e-5)


def test_keyframe_samples_are_the_next_keyframes_from_the_robot_at_rest(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyarrow")
    from mnemobot.policy.dataset import DatasetWriter, Feature
    from mnemobot.policy.train import TrainData

    n = 100
    state, action = _path([
        (0, _anchor((0.0, 0.0, 0.0))), (20, _anchor((1.0, 1.0, 0.0))), (40, _anchor((1.0, 1.0, 0.5))),
        (45, _anchor((1.0, 1.0, 0.5), grip=0.03)), (60, _anchor((1.0, 1.0, 0.0), grip=0.03)),
        (99, _anchor((1.0, 1.0, 0.0), grip=0.03, base=(1.5, 2.0, 1.57)))], n)
    feats = {"observation.images.head": Feature("image", (8, 8, 3)),
             "observation.state": Feature("float32", (len(STATE_NAMES),)),
             "action": Feature("float32", (len(ACTION_NAMES),))}
    with DatasetWriter(tmp_path / "d", fps=10, features=feats) as w:
        for _ep in range(2):
            for i in range(n):
                img = np.full((8, 8, 3), i, np.uint8)  # the image tells the frame index
                w.add_frame({"observation.images.head": img, "observation.state": state[i], "action": action[i]})
            w.save_episode("put the block back")
    data = TrainData(tmp_path / "d", keyframes=True)
    keys = keyframe_indices(state, action)
    kf = keyframe_actions(state, action, keys)
    assert data.summary()["keyframes"] == 2 * len(keys)
    calls = [0, *keys.tolist()]
    b = data.batch(np.random.default_rng(0), 64, chunk=4, period=2, history=3)
    frames = (b["observation.images.head"][:, 0, 0, 0].numpy() * 255).round().astype(int)
    for k in range(64):
        f = frames[k]
        j = max(c for c in range(len(calls) - 1) if calls[c] <= f)  # the call this sample was drawn at
        assert f - calls[j] <= 2  # at rest at the keyframe, seen at most two frames on
        want = kf[np.minimum(np.arange(j, j + 4), len(kf) - 1)]
        assert np.allclose(b["action"][k].numpy(), want, atol=1e-5)
        assert not b["action_is_pad"][k].any()  # staying put past the end is a target too
        hist = (b["history.images.head"][k][b["history_mask"][k]][:, 0, 0, 0].numpy() * 255).round().astype(int)
        assert hist.tolist() == [calls[c] for c in range(j - 2, -1, -2)][::-1][-3:]
        assert float(b["step"][k]) == j  # keyframes executed at the call
    # jitter: the count a sample shows is off by at most 2, its history's by the same amount
    exact = data.batch(np.random.default_rng(5), 256, chunk=4, period=2, history=3)
    jit = data.batch(np.random.default_rng(5), 256, chunk=4, period=2, history=3, step_jitter=2)
    assert torch.equal(exact["action"], jit["action"])  # the same samples: only the count moves
    d = (jit["step"] - exact["step"]).numpy()
    assert np.all(np.abs(d) <= 2) and len(set(d.tolist())) >= 3
    assert np.all(jit["step"].numpy() >= 0)
    m = exact["history_mask"].numpy()
    hd = (jit["history.step"] - exact["history.step"]).numpy()
    for k in np.flatnonzero(exact["step"].numpy() >= 2)[:50]:  # unclipped: d is the shift itself
        want = np.maximum(0, exact["history.step"].numpy()[k][m[k]] + d[k]) - exact["history.step"].numpy()[k][m[k]]
        assert np.allclose(hd[k][m[k]], want)
    stats = data.stats()
    assert np.allclose(stats["action_mean"], kf.mean(0), atol=1e-5)  # keyframe actions, not frames
    # the hand's trace: at call j the last 3 of keyframes 1..j (a pause replacing the one before),
    # with the proprioception of the frame each was reached at; the same for each history call
    tb = data.batch(np.random.default_rng(9), 64, chunk=4, period=2, history=3, trace=3)
    assert torch.equal(tb["action"], data.batch(np.random.default_rng(9), 64, chunk=4, period=2, history=3)["action"])

    def want(j: int) -> tuple[np.ndarray, np.ndarray]:
        keep = trace_keep(kf[:j])[-3:]
        return kf[:j][keep], state[keys[keep]]

    seen = set()
    for k in range(64):
        j = int(tb["step"][k])
        mk = tb["trace_mask"][k].numpy()
        a, st = want(j)
        assert mk.tolist() == [True] * len(a) + [False] * (3 - len(a))
        assert np.allclose(tb["trace.action"][k].numpy()[mk], a, atol=1e-5)
        assert np.allclose(tb["trace.state"][k].numpy()[mk], st, atol=1e-5)
        for t in np.flatnonzero(tb["history_mask"][k].numpy()):
            hj = int(tb["history.step"][k, t])
            ha, _ = want(hj)
            hm = tb["history.trace_mask"][k, t].numpy()
            assert hm.sum() == len(ha) and np.allclose(tb["history.trace.action"][k, t].numpy()[hm], ha, atol=1e-5)
        seen.add(min(j, 3))
    assert seen == {0, 1, 2, 3}  # empty, growing and full traces were all drawn


def test_the_hands_trace_keeps_each_keyframe_but_a_pause_replaces_the_one_before() -> None:
    a = np.zeros((6, 15))
    a[:, 0] = [0.0, 0.10, 0.105, 0.20, 0.20, 0.20]  # 5 mm: the same place
    a[4:, 9] = 0.04  # the fingers open at 4: an event, not a pause; 5 pauses there
    assert trace_keep(a).tolist() == [0, 2, 3, 5]
    assert same_place(a[1], a[2]) and not same_place(a[3], a[4]) and not same_place(a[0], a[1])
    b = a[1].copy()
    b[12] += 2 * np.pi + 0.01  # a heading a turn away is the same heading
    assert same_place(a[1], b)
    b[10] += 0.05  # 5 cm of base is a move
    assert not same_place(a[1], b)
    assert trace_keep(np.zeros((0, 15))).tolist() == []


def test_a_finger_ramp_is_two_keyframes_its_start_and_its_end() -> None:
    n = 40
    state, action = _path([(0, _anchor((0.0,))), (10, _anchor((0.5,))), (39, _anchor((0.5,)))], n)
    action[:, GRIP] = np.concatenate([np.full(15, 0.08), np.linspace(0.08, 0.0, 6)[1:], np.zeros(20)])  # 15..19
    keys = keyframe_indices(state, action).tolist()
    assert keys == [14, 19, 39], keys  # arrived (still there when the fingers start), fingers closed, end


def test_event_sites_give_each_keyframe_the_grasp_or_release_it_works_towards() -> None:
    """Drive to a block, reach, grasp, lift, drive on, reach, release: the drive and the reach
    belong to the grasp (its site: the hand at the block), the lift to the grasp before it, the
    second drive to the release."""
    def kf(base_x: float, hand: tuple[float, float, float], grip: float) -> list[float]:
        return [*hand, 1, 0, 0, 0, 1, 0, grip, base_x, 2.0, np.pi / 2, 0.0, 0.6]

    up, down = (0.3, 0.0, 0.4), (0.5, 0.0, 0.1)
    frames = np.array([kf(1.0, up, 0.08), kf(1.5, up, 0.08), kf(1.5, down, 0.08), kf(1.5, down, 0.0),
                       kf(1.5, up, 0.0), kf(2.5, up, 0.0), kf(2.5, down, 0.0), kf(2.5, down, 0.08)])
    sites = event_sites(frames, arm_mount_xy=(0.1, 0.0))
    at_block, at_drop = [1.5, 2.6], [2.5, 2.6]  # the hand 0.6 m ahead of a base facing +y
    want = [at_block] * 5 + [at_drop] * 3
    assert np.allclose(sites, want, atol=1e-9), sites
    assert np.isnan(event_sites(frames[:3])).all()  # no finger change: no events


def test_a_press_is_a_poke_event_at_the_button_and_the_carry_posture_keeps_its_finger_events() -> None:
    """At the button: close the fingers in the carry posture, go above the cap, down onto it, back
    up, carry posture, open the fingers. The hand's way down and up belongs to the press (its site:
    the hand at the cap), the carry posture to the finger events there; a grasp's way down and
    its closing at the bottom stay one event (a plateau, not a poke)."""
    def kf(hand: tuple[float, float, float], grip: float) -> list[float]:
        return [*hand, 1, 0, 0, 0, 1, 0, grip, 2.0, 2.8, np.pi / 2, 0.0, 0.6]

    carry, above, on = (-0.42, 0.15, 0.33), (0.55, 0.0, 0.43), (0.55, 0.0, 0.35)
    frames = np.array([kf(carry, 0.08), kf(carry, 0.0), kf(above, 0.0), kf(on, 0.0), kf(above, 0.0),
                       kf(carry, 0.0), kf(carry, 0.08)])
    sites = event_sites(frames, arm_mount_xy=(0.1, 0.0))
    cap, back = [2.0, 2.8 + 0.65], [2.0 - 0.15, 2.8 - 0.32]  # base facing +y: hand x is map y
    assert np.allclose(sites, [back, back, cap, cap, cap, back, back], atol=1e-9), sites
    # a grasp: above, down, close, up - the bottom is a plateau of two keyframes, no poke
    grasp = np.array([kf(above, 0.08), kf(on, 0.08), kf(on, 0.0), kf(above, 0.0)])
    assert np.allclose(event_sites(grasp, arm_mount_xy=(0.1, 0.0)), [cap] * 4, atol=1e-9)
    # a dip shallower than POKE_M is the scatter of a keyframe, not a poke
    shallow = (0.55, 0.0, 0.43 - 0.5 * POKE_M)
    assert np.isnan(event_sites(np.array([kf(above, 0.0), kf(shallow, 0.0), kf(above, 0.0)]))).all()
