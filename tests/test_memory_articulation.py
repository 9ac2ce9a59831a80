"""Drawers seen open or closed in depth frames (memory/articulation.py), in the real simulator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("pybullet")

from mnemobot.agent.episode import _static_labels  # noqa: E402
from mnemobot.memory.articulation import perceive_openings  # noqa: E402
from mnemobot.memory.graph import SceneGraph, SceneGraphConfig  # noqa: E402
from mnemobot.memory.memory import Memory, MemoryConfig  # noqa: E402
from mnemobot.perception.sensor import sensor_model  # noqa: E402
from mnemobot.perception.types import Observation, Pose  # noqa: E402
from mnemobot.sim.env import EnvConfig, HouseholdEnv  # noqa: E402
from mnemobot.sim.sensors import SensorSimulator  # noqa: E402

EYE = (3.3, 2.65, 1.3)  # the head camera's height, standing in front of the middle drawer
TARGET = (3.3, 3.45, 0.5)


class _Camera:
    """Frames of the workcell's drawers from the head camera's height, through a sensor profile."""

    def __init__(self, profile: str, seed: int = 0) -> None:
        self.env = HouseholdEnv(EnvConfig(task="reopen_drawer", sensor_profile=profile))
        self.env.reset(seed=seed)
        u = self.env.unwrapped
        self.backend, self.site = u.backend, u.site_map
        self.places = list(u.site_map.places.values())
        self.static = _static_labels(self.env)
        self.model = sensor_model(profile)
        self.noise = SensorSimulator(self.model, sorted(self.static), seed=seed)
        self.t = 0.0

    def frame(self) -> Observation:
        pose = Pose.look_at(EYE, TARGET)
        rgb, depth, instances, labels = self.backend.render(pose)
        self.t += 0.1
        obs = Observation(self.t, rgb, depth, self.backend.intrinsics, pose, instances, labels)
        if self.model.is_ideal:
            return obs
        rng = np.random.default_rng(int(self.t * 10))
        depth = self.noise.depth.apply(depth, rng)
        inst, labels, scores = self.noise.detector.apply(instances, labels, depth, obs.intrinsics.fx, rng)
        return dataclasses.replace(obs, depth=depth, instances=inst, labels=labels, scores=scores)

    def set_drawer(self, name: str, opening: float) -> None:
        self.backend.set_drawer(opening, name)
        for _ in range(5):
            self.backend.step()


@pytest.mark.parametrize("profile", ["ideal", "kinect"])
@pytest.mark.parametrize("opening", [0.3, 0.15])
def test_drawers_in_view_are_seen_open_or_closed(profile: str, opening: float) -> None:
    cam = _Camera(profile)
    try:
        graph = SceneGraph(SceneGraphConfig(sensor=cam.model))
        for name in cam.backend.drawer_places():
            cam.set_drawer(name, 0.0)
        cam.set_drawer("middle_drawer", opening)
        seen = perceive_openings(cam.frame(), cam.places, cam.static, graph.margin)
        assert set(seen) == {"left_drawer", "middle_drawer", "right_drawer"}
        margin = float(graph.margin(1.2, cam.backend.intrinsics.fx))  # 3 sigma of the points at that range
        assert seen["middle_drawer"].opening == pytest.approx(cam.backend.drawer_opening("middle_drawer"),
                                                              abs=max(0.03, margin))
        assert seen["left_drawer"].opening == 0.0 and seen["right_drawer"].opening == 0.0
        cam.set_drawer("middle_drawer", 0.0)
        seen = perceive_openings(cam.frame(), cam.places, cam.static, graph.margin)
        assert seen["middle_drawer"].opening == 0.0
    finally:
        cam.env.close()


def test_maskless_frames_and_unlabelled_pixels_say_nothing() -> None:
    cam = _Camera("ideal")
    try:
        cam.set_drawer("middle_drawer", 0.3)
        obs = cam.frame()
        assert perceive_openings(dataclasses.replace(obs, instances=None), cam.places, cam.static,
                                 lambda z, fx: 0.02) == {}
        # every pixel unlabelled (as the robot's own arm, the floor): nothing is furniture, and the
        # open drawer's panel fills its box, so the box is not seen empty either
        blank = dataclasses.replace(obs, instances=np.zeros_like(obs.instances), labels={})
        assert "middle_drawer" not in perceive_openings(blank, cam.places, cam.static, lambda z, fx: 0.02)
    finally:
        cam.env.close()


def test_memory_remembers_a_drawer_it_saw_open_after_it_is_closed() -> None:
    cam = _Camera("ideal")
    try:
        mem = Memory(MemoryConfig(graph=SceneGraphConfig(static_labels=cam.static)), site=cam.site)
        for name in cam.backend.drawer_places():
            cam.set_drawer(name, 0.0)
        cam.set_drawer("right_drawer", 0.3)
        mem.update(cam.frame())
        node = mem.graph.node("place:right_drawer")
        assert node["state"] == "open" and node["max_opening"] > 0.25
        assert mem.graph.node("place:middle_drawer").get("max_opening", 0.0) == 0.0
        cam.set_drawer("right_drawer", 0.0)
        mem.update(cam.frame())
        node = mem.graph.node("place:right_drawer")
        assert node["state"] == "closed" and node["opening"] == 0.0
        assert node["max_opening"] > 0.25  # what the policy's tokens carry: it was open
        assert mem.changes["opened"] == 1 and mem.changes["closed"] == 1
        mem.update(cam.frame())  # seen closed again: no new change
        assert mem.changes["closed"] == 1
        # the policy's token for the drawer stands at its handle: closed now, and as far out as
        # memory saw it open (the map's closed handle moved along its opening direction)
        from mnemobot.policy.tokens import TOKEN_FIELDS, memory_tokens

        place = cam.site.places["right_drawer"]
        tokens, mask = memory_tokens(mem.graph, np.zeros(3), cam.t)  # the base at the map origin: map frame
        col = {f: i for i, f in enumerate(TOKEN_FIELDS)}
        row = next(t for t, m in zip(tokens, mask, strict=True) if m and t[col["max_opening"]] > 0.25)
        closed = np.asarray(place.handle.position)
        u = np.asarray(place.open_direction)
        assert np.allclose(row[col["x"] : col["z"] + 1], closed, atol=1e-4)
        assert np.allclose(row[col["x_first"] : col["z_first"] + 1], closed + u * node["max_opening"], atol=1e-4)
        assert abs(node["max_opening"] - 0.3) < 0.05
    finally:
        cam.env.close()
