"""The learned action expert end to end, as a user runs it: ``mnemobot record-demos`` on a
workcell family, the dataset read back with pyarrow, ``mnemobot train`` (a tiny model), and
``mnemobot run --policy learned`` through the brainstem; bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")
pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mnemobot.agent.cli import main  # noqa: E402
from mnemobot.policy.features import ACTION_NAMES, STATE_NAMES  # noqa: E402
from mnemobot.policy.tokens import TOKEN_DIM  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demos") / "pbb"
    assert main(["record-demos", "--task", "put_block_back", "--episodes", "1", "--seed", "3", "--out", str(out),
                 "-q"]) == 0
    return out


@pytest.mark.slow
def test_recorded_demos_are_a_lerobot_dataset(recorded: Path) -> None:
    info = json.loads((recorded / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 1 and info["fps"] == 10.0
    feats = info["features"]
    assert feats["observation.images.head"]["shape"] == [96, 128, 3]
    assert feats["observation.state"]["names"] == STATE_NAMES and feats["action"]["names"] == ACTION_NAMES
    assert feats["observation.memory"]["shape"] == [16 * TOKEN_DIM]
    table = pq.read_table(recorded / "data" / "chunk-000" / "file-000.parquet")
    n = info["total_frames"]
    assert table.num_rows == n and 500 < n < 800  # about 63 s of robot time at 10 Hz
    assert table.column("frame_index").to_pylist() == list(range(n))
    ts = np.asarray(table.column("timestamp").to_pylist())
    assert np.all(np.diff(ts) > 0)  # robot time, strictly increasing
    ep = pq.read_table(recorded / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()[0]
    assert (ep["dataset_from_index"], ep["dataset_to_index"], ep["length"]) == (0, n, n)
    assert ep["tasks"][0].startswith("move the block to the centre patch")
    actions = np.asarray(table.column("action").to_pylist())
    stats = json.loads((recorded / "meta" / "stats.json").read_text())
    assert np.allclose(stats["action"]["mean"], actions.mean(0), atol=1e-5)
    assert np.allclose(stats["action"]["max"], actions.max(0), atol=1e-6)
    # the gripper closes on the block and opens again; the hand travels; the base drives along the
    # bench and the head turns (the whole body is in the action)
    grip = actions[:, ACTION_NAMES.index("gripper")]
    assert grip.min() < 0.06 and grip.max() > 0.07
    assert np.ptp(actions[:, 1]) > 0.2
    vx, vy = actions[:, ACTION_NAMES.index("base_vx")], actions[:, ACTION_NAMES.index("base_vy")]
    assert np.hypot(vx, vy).max() > 0.2
    assert np.ptp(actions[:, ACTION_NAMES.index("head_tilt")]) > 0.05
    # rotation columns are unit vectors
    assert np.allclose(np.linalg.norm(actions[:, 3:6], axis=1), 1.0, atol=1e-4)
    # the memory watching the camera held the block from the first frames on
    mask = np.asarray(table.column("observation.memory_mask").to_pylist())
    assert mask[:, 0].mean() > 0.9


@pytest.mark.slow
def test_train_then_run_the_learned_policy_through_the_brainstem(recorded: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "ckpt"
    assert main(["train", "--task", "put_block_back", "--data", str(recorded), "--out", str(ckpt), "--steps", "3",
                 "--size", "tiny", "--batch-size", "2", "--history", "4"]) == 0
    assert "step 3" in capsys.readouterr().out
    summary = tmp_path / "s.json"
    code = main(["run", "--task-id", "put_block_back", "--seed", "0", "--policy", "learned", "--checkpoint",
                 str(ckpt), "--steps-limit", "60", "-q", "--summary-json", str(summary)])
    assert code == 1  # three training steps do not make a policy
    s = json.loads(summary.read_text())
    assert s["steps"] > 0 and s["memory"] == "on", s
    # it drives the robot until the budget ends, or until it asks for a hand pose out of reach or
    # the brainstem refuses a command: refused, reported, never executed
    if s["steps"] < 60:
        (act,) = s["skills"]
        assert act["skill"] == "act" and (act["reason"] == "out_of_reach" or act["reason"].startswith("safety:")), act
    else:
        assert "steps limit" in s["stop_reason"], s
    # the checkpoint is refused for another family, and for free text
    capsys.readouterr()
    assert main(["run", "--task-id", "reopen_drawer", "--policy", "learned", "--checkpoint", str(ckpt)]) == 2
    assert "trained on put_block_back, not reopen_drawer" in capsys.readouterr().err


@pytest.mark.slow
def test_the_memory_holds_the_fixed_places_and_a_press_and_a_put_down_anchor_on_them(recorded: Path) -> None:
    """Every recorded frame's memory holds the map's fixed places (the bench, five patches, the
    button) as tokens; the demonstration's press is one poke, whose keyframes anchor on the button
    token, and the first put-down (the block onto the centre patch) anchors on the centre patch."""
    import torch

    from mnemobot.policy.dataset import Dataset
    from mnemobot.policy.keyframes import event_sites, keyframe_actions, keyframe_indices
    from mnemobot.policy.model import anchor_points, anchor_targets
    from mnemobot.policy.tokens import _hash

    ep = Dataset(recorded).episode(0, ["observation.state", "action", "observation.memory", "observation.memory_mask"])
    state, action = ep["observation.state"], ep["action"]
    n = len(action)
    mem = ep["observation.memory"].reshape(n, -1, TOKEN_DIM)
    mask = ep["observation.memory_mask"].reshape(n, -1).astype(bool)
    fixed = (mem[..., 24] > 0.5) & mask
    assert (fixed.sum(1) == 7).all()
    idx = keyframe_indices(state, action)
    kf = keyframe_actions(state, action, idx)
    sites = event_sites(kf)

    def anchored_on(j: int) -> set[float]:
        """The label hashes of the tokens keyframe ``j``'s site fits."""
        f = idx[j]
        pts = anchor_points(torch.from_numpy(state[f][None]).float(), torch.from_numpy(mem[f][None]),
                            torch.from_numpy(mask[f][None]), max_tokens=mem.shape[1])
        good = anchor_targets(torch.from_numpy(sites[j][None, None]).float(), *pts)[0, 0].numpy()
        return {float(mem[f][(k - 1) % mem.shape[1], 0]) for k in np.flatnonzero(good) if k > 0}

    z, grip = kf[:, 2], kf[:, 9]
    dips = [j for j in range(1, len(kf) - 1) if z[j] < z[j - 1] - 0.02 and z[j] < z[j + 1] - 0.02]
    assert len(dips) == 1, dips  # one press
    press = dips[0]
    for j in (press - 1, press, press + 1):  # the way down, the press, the way up
        assert anchored_on(j) == {_hash("button", 4096)}, j
    release = next(j for j in range(1, len(kf)) if grip[j] > grip[j - 1] + 0.01 and kf[j, 0] > 0.3)
    assert _hash("centre_patch", 4096) in anchored_on(release)


@pytest.mark.slow
@pytest.mark.parametrize("limit", [False, True])
def test_a_demonstrations_keyframes_through_the_skill_solve_its_task(recorded: Path, limit: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What a keyframe policy must learn is enough: the recorded episode's own keyframes, given
    to the skill as a policy's chunks would be (16 at a time, 8 executed), solve the same seed
    through IK, the brainstem's limits and the simulator's contacts. The skill ends when the
    chunks stay put, or (``limit``) after the longest demonstration's keyframe count. At each call
    the policy is shown the hand's trace: the keyframes executed so far (a pause replacing the one
    before it) with the proprioception measured once there."""
    import torch

    from mnemobot.agent import episode
    from mnemobot.policy.features import STATE_NAMES
    from mnemobot.policy.keyframes import trace_keep
    from mnemobot.policy.model import MemoryPolicyConfig
    from mnemobot.policy.skill import learned_skill
    from mnemobot.policy.train import TrainData

    keys = TrainData(recorded, keyframes=True).kf_action[0][1:]
    assert 20 <= len(keys) <= 80, len(keys)  # a few per skill, not one per frame

    class Replay:
        config = MemoryPolicyConfig(action_mode="keyframes", max_keyframes=len(keys) if limit else 0, trace_length=16)
        calls = 0
        traced = entries = 0

        def reset(self) -> None:
            self.at = 0

        def predict_action_chunk(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
            assert batch["observation.memory_mask"].any()  # the agent's memory is read at every call
            sent = keys[np.minimum(np.arange(self.at), len(keys) - 1)]  # the keyframes executed so far
            want = sent[trace_keep(sent)][-16:] if len(sent) else sent
            mask = batch["trace_mask"][0].numpy()
            assert mask.sum() == len(want) and not mask[len(want):].any()
            assert np.allclose(batch["trace.action"][0].numpy()[mask], want, atol=1e-6)
            ee = [STATE_NAMES.index(n) for n in ("ee_x", "ee_y", "ee_z")]  # the hand got there (or near: clipped)
            err = np.linalg.norm(batch["trace.state"][0].numpy()[mask][:, ee] - want[:, :3], axis=1)
            assert np.all(err < 0.15), err
            Replay.traced += int(np.sum(err < 0.02))
            Replay.entries += len(want)
            Replay.calls += 1
            at = np.minimum(np.arange(self.at, self.at + 16), len(keys) - 1)
            self.at += 8
            return torch.from_numpy(keys[at][None])

    monkeypatch.setattr(episode, "_learned_skill", lambda cfg: learned_skill(Replay(), fps=10, max_s=150))
    s = episode.run_episode(episode.RunConfig(task_id="put_block_back", seed=3))
    assert s.success, s.stop_reason
    (act,) = s.skills
    assert act["skill"] == "act" and act["success"]
    assert Replay.entries > 16 and Replay.traced >= 0.8 * Replay.entries  # most keyframes reached within 2 cm
    if limit:
        assert f"executed {len(keys)} keyframes" in act["message"]
        assert Replay.calls == -(-len(keys) // 8)  # every 8 keyframes, none after the last
    else:
        assert "came to rest" in act["message"]
        assert Replay.calls == -(-len(keys) // 8) + 1  # every 8 keyframes, and once more to see it is done


@pytest.mark.slow
def test_a_keyframe_policy_trains_and_runs_through_the_brainstem(recorded: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "kf"
    assert main(["train", "--task", "put_block_back", "--data", str(recorded), "--out", str(ckpt), "--steps", "3",
                 "--size", "tiny", "--batch-size", "2", "--keyframes"]) == 0
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["policy"]["trace_length"] == 16 and not cfg["policy"]["step_token"]  # the trace, not a count
    assert cfg["policy"]["trace_state_columns"] == [7, 8, 9, 10] and cfg["policy"]["loss_units"] == "std"
    body = tmp_path / "body"
    assert main(["train", "--task", "put_block_back", "--data", str(recorded), "--out", str(body), "--steps", "1",
                 "--size", "tiny", "--batch-size", "2", "--keyframes", "--trace-body", "--loss-floor"]) == 0
    got = json.loads((body / "config.json").read_text())["policy"]
    assert got["trace_state_columns"] == [] and got["trace_action_columns"] == [] and got["loss_units"] == "floor"
    assert cfg["policy"]["action_mode"] == "keyframes" and 20 <= cfg["dataset"]["keyframes"] <= 80
    assert cfg["policy"]["anchors"] and cfg["policy"]["max_keyframes"] == cfg["dataset"]["keyframes"]  # one episode
    assert len(cfg["stats"]["anchor_mean"]) == 12 and all(v >= 0.01 - 1e-6 for v in cfg["stats"]["anchor_std"])  # floored (float32)
    # by default the hand is anchored wherever the base is: no keyframe of the base-only kind
    assert not cfg["policy"]["contact_anchors"] and cfg["stats"]["anchor_std"][4:8] == [1.0] * 4
    touch = tmp_path / "touch"
    assert main(["train", "--task", "put_block_back", "--data", str(recorded), "--out", str(touch), "--steps", "1",
                 "--size", "tiny", "--batch-size", "2", "--keyframes", "--contact-anchors"]) == 0
    got = json.loads((touch / "config.json").read_text())
    assert got["policy"]["contact_anchors"]
    std = got["stats"]["anchor_std"]
    assert std[4:8] != [1.0] * 4 and std[8] < 0.1  # a contact's hand offset spreads by centimetres
    summary = tmp_path / "s.json"
    assert main(["run", "--task-id", "put_block_back", "--seed", "0", "--policy", "learned", "--checkpoint",
                 str(ckpt), "--steps-limit", "200", "-q", "--summary-json", str(summary)]) == 1
    s = json.loads(summary.read_text())
    assert s["steps"] > 0, s
    # an untrained policy's keyframes are refused before the controller when out of reach, or
    # executed within the limits until the budget ends
    if s["steps"] < 200:
        (act,) = s["skills"]
        assert act["reason"] in ("out_of_reach", "bad_action") or act["reason"].startswith("safety:"), act


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (["record-demos", "--task", "juggle", "--out", str(tmp_path / "x")], "unknown task family"),
        (["train", "--task", "put_block_back", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c")],
         "not found"),
        (["train", "--task", "juggle", "--data", str(tmp_path), "--out", str(tmp_path / "c")], "unknown task family"),
        (["train", "--task", "put_block_back", "--data", str(tmp_path), "--out", str(tmp_path / "c"), "--keyframes",
          "--trace", "-1"], "--trace must be >= 0"),
        (["run", "--task-id", "put_block_back", "--policy", "learned"], "needs --checkpoint"),
        (["run", "--task-id", "put_block_back", "--policy", "learned", "--checkpoint", str(tmp_path / "none")],
         "not found"),
        (["run", "--task-id", "fetch", "--checkpoint", str(tmp_path)], "--policy learned"),
        (["run", "--task-id", "put_block_back", "--policy", "learned", "--checkpoint", str(tmp_path),
          "--policy-temperature", "5"], "must be in 0..2"),
        (["run", "--task-id", "put_block_back", "--policy", "learned", "--checkpoint", str(tmp_path),
          "--policy-replan", "0"], "must be >= 1"),
    ]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    cases.append((["record-demos", "--task", "put_block_back", "--episodes", "1", "--out", str(tmp_path / "busy")],
                  "not empty"))
    for argv, text in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "x"
