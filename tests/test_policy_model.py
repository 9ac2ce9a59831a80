"""The memory-conditioned policy (``mnemobot.policy.model``) and its training (``policy.train``):
banks, ablation switches, determinism, checkpoints, resuming, and bad checkpoints named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("pyarrow")

from mnemobot.policy.dataset import DatasetWriter, Feature  # noqa: E402
from mnemobot.policy.model import MemoryBank, MemoryPolicy, MemoryPolicyConfig, PolicyConfigError  # noqa: E402
from mnemobot.policy.tokens import TOKEN_DIM  # noqa: E402
from mnemobot.policy.train import CheckpointError, TrainConfig, load_policy, train  # noqa: E402

TINY = {"d_model": 32, "n_heads": 4, "cognition_layers": 1, "decoder_layers": 1, "perceptual_tokens": 2,
        "encoder_channels": (8, 16), "vocab_buckets": 64, "id_buckets": 32, "bank_capacity": 4, "chunk_size": 4,
        "n_action_steps": 2, "flow_steps": 3, "head_width": 32, "head_queries": 2}
H, W, M = 16, 20, 3


def tiny(**kw) -> MemoryPolicyConfig:
    return MemoryPolicyConfig(**{**TINY, "image_size": (H, W), "state_dim": 4, "action_dim": 3,
                                 "max_memory_tokens": M, **kw})


def live_batch(seed: int = 0, b: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    mem = torch.cat([torch.randint(1, 30, (b, M, 2), generator=g).float(), torch.randn(b, M, TOKEN_DIM - 2, generator=g)], -1)
    return {"observation.images.head": torch.rand(b, 3, H, W, generator=g), "observation.state": torch.randn(b, 4, generator=g),
            "observation.memory": mem, "observation.memory_mask": torch.ones(b, M, dtype=torch.bool),
            "task": ["put the block back"] * b}


def test_default_size_and_config_checks() -> None:
    n = MemoryPolicy().num_parameters()
    assert 15e6 <= n <= 30e6, n
    with pytest.raises(PolicyConfigError, match="bank_merge"):
        MemoryPolicyConfig(bank_merge="lru").check()
    with pytest.raises(PolicyConfigError, match="n_action_steps"):
        MemoryPolicyConfig(n_action_steps=17).check()
    with pytest.raises(PolicyConfigError, match="unknown"):
        MemoryPolicyConfig.from_dict({"width": 3})
    assert MemoryPolicyConfig.from_dict(tiny().to_dict()) == tiny()


def test_bank_merges_the_most_similar_adjacent_pair_or_drops_the_oldest() -> None:
    e = [torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[0.1, 1.0]]]),
         torch.tensor([[[-1.0, 0.0]]])]
    bank = MemoryBank(3, "similar")
    for i, x in enumerate(e):
        bank.add(x, torch.tensor([float(i)]))
    entries, times = bank.tensors()
    assert len(bank) == 3 and times.tolist() == [[0.0, 1.5, 3.0]]  # entries 1 and 2 merged, time averaged
    assert torch.allclose(entries[0, 1, 0], torch.tensor([0.05, 1.0]))
    fifo = MemoryBank(3, "fifo")
    for i, x in enumerate(e):
        fifo.add(x, torch.tensor([float(i)]))
    assert fifo.tensors()[1].tolist() == [[1.0, 2.0, 3.0]]


def test_chunks_are_deterministic_and_the_banks_and_tokens_matter() -> None:
    torch.manual_seed(0)
    model = MemoryPolicy(tiny()).eval()
    b = live_batch()
    model.reset()
    a1 = model.predict_action_chunk(b, generator=torch.Generator().manual_seed(1))
    model.reset()
    a2 = model.predict_action_chunk(b, generator=torch.Generator().manual_seed(1))
    assert a1.shape == (1, 4, 3) and torch.equal(a1, a2)
    # with something in the banks, the same frame gives another chunk
    model.reset()
    model.predict_action_chunk(live_batch(5), generator=torch.Generator().manual_seed(1))
    a3 = model.predict_action_chunk({**b, "time": 5.0}, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a1, a3)
    assert len(model._banks[0]) == 2
    # symbolic tokens change the chunk; masked-out tokens do not count
    model.reset()
    other = {**b, "observation.memory": b["observation.memory"] + 1.0}
    a4 = model.predict_action_chunk(other, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a1, a4)
    # ablations: bank off ignores history; symbolic off ignores the tokens
    off = MemoryPolicy(tiny(latent_memory=False, symbolic_memory=False)).eval()
    off.load_state_dict(model.state_dict())
    off.reset()
    x1 = off.predict_action_chunk(b, generator=torch.Generator().manual_seed(1))
    off.predict_action_chunk(live_batch(5), generator=torch.Generator().manual_seed(1))
    x2 = off.predict_action_chunk({**other, "time": 5.0}, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(x1, x2) and len(off._banks[0]) == 0
    # select_action predicts every n_action_steps calls
    model.reset()
    acts = [model.select_action(b, generator=torch.Generator().manual_seed(1)) for _ in range(4)]
    assert len(model._banks[0]) == 2 and acts[0].shape == (1, 3)


def test_keyframe_policy_reads_its_step_and_predicts_samples_that_it_learns_fast() -> None:
    torch.manual_seed(0)
    cfg = tiny(action_mode="keyframes", step_token=True, direct_state=True, flow_target="sample")
    model = MemoryPolicy(cfg).eval()
    b = live_batch()
    with pytest.raises(PolicyConfigError, match="'step'"):
        model.predict_action_chunk(b)
    chunks = []
    for step in (0.0, 0.0, 8.0):
        model.reset()
        chunks.append(model.predict_action_chunk({**b, "step": step}, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(chunks[0], chunks[1]) and not torch.allclose(chunks[0], chunks[2])
    # at temperature 0 the flow starts from the noise's mean: the seed no longer matters
    cold = []
    for seed in (1, 2):
        model.reset()
        cold.append(model.predict_action_chunk({**b, "step": 0.0, "temperature": 0.0},
                                               generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(cold[0], cold[1]) and not torch.allclose(cold[0], chunks[0])
    with pytest.raises(PolicyConfigError, match="flow_target"):
        tiny(flow_target="noise").check()
    # two states, two chunks: the sample head fits them in a few dozen steps, noise or not
    model.train()
    states = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    targets = torch.stack([torch.full((4, 3), 0.5), torch.full((4, 3), -0.5)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {**live_batch(b=2), "observation.state": states, "action": targets, "step": torch.zeros(2)}
    for _ in range(150):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.reset()
    got = model.predict_action_chunk({**batch, "step": 0.0}, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, targets, atol=0.05), got


def test_a_trace_reading_policy_needs_the_trace_and_acts_on_it() -> None:
    torch.manual_seed(0)
    cfg = tiny(action_mode="keyframes", direct_state=True, flow_target="sample", trace_length=4)
    model = MemoryPolicy(cfg).eval()
    b = {**live_batch(), "temperature": 0.0}
    with pytest.raises(PolicyConfigError, match="trace"):
        model.predict_action_chunk(b)
    g = torch.Generator().manual_seed(2)

    def trace(n: int, scale: float = 1.0, length: int = 4) -> dict:
        st = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(5))[:, :length] * scale
        ac = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(6))[:, :length] * scale
        mask = torch.arange(length)[None] < n
        return {"trace.state": st, "trace.action": ac, "trace_mask": mask}

    def chunk(extra: dict) -> torch.Tensor:
        model.reset()
        return model.predict_action_chunk({**b, **extra}, generator=g)

    empty = chunk(trace(0))
    assert torch.equal(empty, chunk(trace(0, scale=3.0)))  # padding is not read
    two = chunk(trace(2))
    assert not torch.allclose(empty, two)  # what the hand did changes the chunk
    assert torch.equal(two, chunk(trace(2)))
    assert torch.allclose(chunk(trace(2, length=2)), two, atol=1e-5)  # a short trace is padded to the length
    # the trace is part of the latent memory: without it, none is read
    off = MemoryPolicy(tiny(action_mode="keyframes", trace_length=4, latent_memory=False)).eval()
    assert not off.uses_trace and off.predict_action_chunk(b).shape == (1, 4, 3)
    with pytest.raises(PolicyConfigError, match="trace_length"):
        tiny(trace_length=4).check()  # frames mode has no keyframes to trace
    # a trace of some columns only (as --keyframes trains it: the hand and the fingers) reads only those
    hand = MemoryPolicy(tiny(action_mode="keyframes", trace_length=4, trace_state_columns=(1, 2),
                             trace_action_columns=(0,))).eval()
    assert hand.trace_mlp[0].in_features == 3
    t2 = trace(2)
    other = {**t2, "trace.state": t2["trace.state"].clone(), "trace.action": t2["trace.action"].clone()}
    other["trace.state"][..., [0, 3]] += 5.0  # columns it does not show
    other["trace.action"][..., 1:] -= 5.0
    hand.reset()
    x = hand.predict_action_chunk({**b, **t2}, generator=torch.Generator().manual_seed(0))
    hand.reset()
    assert torch.equal(x, hand.predict_action_chunk({**b, **other}, generator=torch.Generator().manual_seed(0)))
    other["trace.state"][..., 1] += 1.0  # one it shows
    hand.reset()
    assert not torch.allclose(x, hand.predict_action_chunk({**b, **other}, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(PolicyConfigError, match="trace_state_columns"):
        tiny(action_mode="keyframes", trace_length=4, trace_state_columns=(4,)).check()
    from mnemobot.policy.cli import TRACE_HAND
    from mnemobot.policy.features import STATE_NAMES
    from mnemobot.policy.keyframes import KEYFRAME_ACTION_NAMES

    assert [STATE_NAMES[i] for i in TRACE_HAND["trace_state_columns"]] == ["gripper", "ee_x", "ee_y", "ee_z"]
    assert [KEYFRAME_ACTION_NAMES[i] for i in TRACE_HAND["trace_action_columns"]] == ["ee_x", "ee_y", "ee_z", "gripper"]
    # in training, the call's trace and each history step's
    model.train()
    batch = {**live_batch(b=2), "action": torch.zeros(2, 4, 3), **{k: v.expand(2, *v.shape[1:]) for k, v in trace(3).items()}}
    loss, _ = model(batch)
    loss.backward()
    assert model.trace_mlp[0].weight.grad is not None and model.trace_mlp[0].weight.grad.abs().sum() > 0


def test_loss_in_units_of_the_error_that_matters() -> None:
    """``loss_units="floor"``: each element's squared error weighs ``(std / floor)^2`` (normalised
    to a mean of 1 over the columns), so a column that spreads ten times its floor counts a
    hundred times one that does not; with every spread at its floor it is the plain loss."""
    from mnemobot.policy.keyframes import ACTION_FLOOR

    floor = torch.as_tensor(ACTION_FLOOR)
    stats = {"action_mean": [0.0] * 15, "action_std": floor.tolist(), "state_mean": [0.0] * 22, "state_std": [1.0] * 22}
    kw = dict(TINY, image_size=(H, W), max_memory_tokens=M, action_mode="keyframes", flow_target="sample")
    c = MemoryPolicyConfig(**kw).chunk_size
    batch = {**live_batch(b=2), "observation.state": torch.randn(2, 22), "action": torch.randn(2, c, 15) * floor,
             "task": ["put the block back"] * 2}
    losses = []
    for units in ("std", "floor"):
        torch.manual_seed(0)
        model = MemoryPolicy(MemoryPolicyConfig(**kw, loss_units=units), stats)
        torch.manual_seed(1)
        losses.append(model(batch)[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # spread == floor: the same loss
    wide = dict(stats, action_std=(floor * torch.tensor([10.0] + [1.0] * 14)).tolist())
    model = MemoryPolicy(MemoryPolicyConfig(**kw, loss_units="floor"), wide)
    w = model._floor_weight(None, torch.Size((1, c, 15)))
    assert w[0, 0, 0] / w[0, 0, 1] == pytest.approx(100.0) and w[0, 0].mean() == pytest.approx(1.0)
    wl = []
    for units in ("std", "floor"):  # and the training loss applies it
        torch.manual_seed(0)
        m = MemoryPolicy(MemoryPolicyConfig(**kw, loss_units=units), wide)
        torch.manual_seed(1)
        wl.append(m(batch)[0].item())
    assert wl[0] != pytest.approx(wl[1], rel=1e-3)
    with pytest.raises(PolicyConfigError, match="loss_units"):
        tiny(loss_units="floor").check()  # frames have no floor


def _dataset(root: Path, episodes: int = 4, n: int = 14, token_dim: int = TOKEN_DIM,
             names: tuple[str, ...] | None = None) -> None:
    from mnemobot.policy.tokens import token_names

    rng = np.random.default_rng(0)
    names = names if names is not None else token_names(M) if token_dim == TOKEN_DIM else None
    feats = {"observation.images.head": Feature("image", (H, W, 3)), "observation.state": Feature("float32", (4,)),
             "observation.memory": Feature("float32", (M * token_dim,), names),
             "observation.memory_mask": Feature("bool", (M,)),
             "action": Feature("float32", (3,))}
    with DatasetWriter(root, fps=10, features=feats) as w:
        for ep in range(episodes):
            colour = np.array([200, 40, 40] if ep % 2 else [40, 40, 200], np.uint8)
            for i in range(n):
                img = np.full((H, W, 3), colour if i < 3 else 128, np.uint8)  # the cue shows only at the start
                w.add_frame({"observation.images.head": img, "observation.state": rng.normal(size=4),
                             "observation.memory": rng.normal(size=M * token_dim), "observation.memory_mask": [1, 1, 0],
                             "action": [i / n, (ep % 2) * (i > 8), 0.5]})
            w.save_episode("put the block back")


def test_a_dataset_with_tokens_of_another_width_is_refused_by_name(tmp_path: Path) -> None:
    from mnemobot.policy.dataset import DatasetError
    from mnemobot.policy.train import TrainData

    _dataset(tmp_path / "old", episodes=1, n=3, token_dim=TOKEN_DIM - 1)  # before the fixed places' column
    with pytest.raises(DatasetError, match=f"have {TOKEN_DIM - 1} features each, this version's have {TOKEN_DIM}"):
        TrainData(tmp_path / "old")
    # as wide, but its features meant something else (a drawer at its centre, not its handle)
    from mnemobot.policy.tokens import TOKEN_LAYOUT, token_names

    older = tuple(n.replace(f"v{TOKEN_LAYOUT}:", "v2:") for n in token_names(M))
    _dataset(tmp_path / "v2", episodes=1, n=3, names=older)
    with pytest.raises(DatasetError, match=f"recorded with layout v2, this version's are layout v{TOKEN_LAYOUT}"):
        TrainData(tmp_path / "v2")
    _dataset(tmp_path / "unnamed", episodes=1, n=3, names=())
    with pytest.raises(DatasetError, match="recorded with no layout"):
        TrainData(tmp_path / "unnamed")
    _dataset(tmp_path / "ok", episodes=1, n=3)
    assert len(TrainData(tmp_path / "ok")) == 3  # this version's layout is read


def test_a_strided_chunk_spans_frames_stride_apart_and_pads_past_the_episode(tmp_path: Path) -> None:
    from mnemobot.policy.train import TrainData

    _dataset(tmp_path / "demos", episodes=2, n=14)
    data = TrainData(tmp_path / "demos")
    b = data.batch(np.random.default_rng(0), 64, chunk=4, period=6, history=3, stride=3)
    first = b["action"][:, 0, 0].numpy() * 14  # the frame index i of each sample (action[0] = i / n)
    for k in range(64):
        want = first[k] + 3 * np.arange(4)
        pad = b["action_is_pad"][k].numpy()
        assert (pad == (want >= 14 - 1e-4)).all(), (first[k], pad)
        got = b["action"][k, :, 0].numpy() * 14
        assert np.allclose(got[~pad], want[~pad], atol=1e-4)
        assert np.allclose(got[pad], 13, atol=1e-4)  # padded with the episode's last action
        ages = b["history.age"][k][b["history_mask"][k]].numpy()
        assert np.allclose(np.diff(-ages), 0.6, atol=1e-5) if len(ages) > 1 else True  # one call per 6 frames
    with pytest.raises(PolicyConfigError, match="action_stride"):
        tiny(action_stride=0).check()


def test_training_writes_a_checkpoint_resumes_and_loads(tmp_path: Path) -> None:
    data = tmp_path / "demos"
    _dataset(data)
    out = tmp_path / "ckpt"
    cfg = TrainConfig(steps=6, batch_size=4, save_every=3, log_every=3, history=4, seed=3, warmup=2)
    meta = train(data, out, TINY, cfg, families=["put_block_back"], progress=lambda m: None)
    assert meta["step"] == 6 and (out / "model.safetensors").is_file()
    assert (out / "training_state" / "optimizer.safetensors").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6] and all(np.isfinite(r["loss"]) for r in log)
    model, conf = load_policy(out, task="put_block_back")
    assert conf["families"] == ["put_block_back"] and model.config.image_size == (H, W)
    assert torch.allclose(model.action_mean, torch.tensor(conf["stats"]["action_mean"]))
    with pytest.raises(CheckpointError, match="trained on put_block_back, not reopen_drawer"):
        load_policy(out, task="reopen_drawer")

    # the same command again: nothing to do
    assert train(data, out, TINY, cfg, progress=lambda m: None)["step"] == 6

    # interrupted (Ctrl-C at step 6 of 9), then the same command: resumes, and ends with the
    # weights of an uninterrupted run
    longer = TrainConfig(**{**cfg.__dict__, "steps": 9})
    cut = tmp_path / "cut"

    def interrupt(message: str) -> None:
        if message.startswith("step 6/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, cut, TINY, longer, progress=interrupt)
    assert json.loads((cut / "config.json").read_text())["step"] == 6
    said: list[str] = []
    assert train(data, cut, TINY, longer, progress=said.append)["step"] == 9
    assert any("resuming" in s and "step 6" in s for s in said)
    straight = tmp_path / "straight"
    train(data, straight, TINY, longer, progress=lambda m: None)
    a, _ = load_policy(cut)
    b, _ = load_policy(straight)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.allclose(va, vb, atol=1e-6), ka


def test_training_never_writes_into_someone_elses_folder_and_bad_checkpoints_are_named(tmp_path: Path) -> None:
    data = tmp_path / "demos"
    _dataset(data, episodes=2, n=6)
    cfg = TrainConfig(steps=2, batch_size=2, save_every=2, log_every=1, history=2)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a mnemobot policy checkpoint"):
        train(data, mine, TINY, cfg, progress=lambda m: None)
    assert (mine / "todo.txt").read_text() == "keep me"
    out = tmp_path / "ckpt"
    train(data, out, TINY, cfg, progress=lambda m: None)
    with pytest.raises(CheckpointError, match="another policy"):
        train(data, out, {**TINY, "d_model": 64}, cfg, progress=lambda m: None)

    def broken(name: str) -> Path:
        p = tmp_path / name
        shutil.copytree(out, p)
        return p

    p = broken("trunc")
    w = p / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_policy(p)
    p = broken("config")
    conf = json.loads((p / "config.json").read_text())
    conf["policy"]["d_model"] = 64
    (p / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_policy(p)
    p = broken("version")
    (p / "config.json").write_text(json.dumps({**conf, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        load_policy(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nothing")
    p = broken("tokens")  # trained before the memory tokens had the fixed places' column
    conf = json.loads((p / "config.json").read_text())
    conf["policy"]["token_dim"] = TOKEN_DIM - 1
    (p / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match=f"memory tokens of {TOKEN_DIM - 1} features, this version's have"):
        load_policy(p)
    p = broken("layout")  # trained on tokens whose drawers stood at their centre
    conf = json.loads((p / "config.json").read_text())
    assert conf["token_layout"] == 3
    del conf["token_layout"]
    (p / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match="layout v2, this version's are v3"):
        load_policy(p)


GOLDEN = Path(__file__).parent / "golden" / "policy_first_chunk.json"
"""Regenerate (only after a deliberate change to the model, the training or the sampler):
``python tests/test_policy_model.py --regenerate``."""


def _golden_chunk(tmp: Path) -> list:
    data = tmp / "demos"
    _dataset(data)
    out = tmp / "ckpt"
    train(data, out, TINY, TrainConfig(steps=4, batch_size=4, save_every=4, log_every=4, history=4, seed=11,
                                       warmup=1, threads=1), progress=lambda m: None)
    model, _ = load_policy(out)
    model.reset()
    chunk = model.predict_action_chunk(live_batch(7), generator=torch.Generator().manual_seed(0))
    return chunk[0].tolist()


def test_a_tiny_checkpoint_gives_the_golden_first_chunk(tmp_path: Path) -> None:
    want = json.loads(GOLDEN.read_text())
    got = _golden_chunk(tmp_path)
    assert np.allclose(got, want["chunk"], atol=1e-4), (got, want["chunk"])


if __name__ == "__main__":
    import sys
    import tempfile

    if "--regenerate" not in sys.argv:
        sys.exit("usage: python tests/test_policy_model.py --regenerate")
    with tempfile.TemporaryDirectory() as d:
        chunk = _golden_chunk(Path(d))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"regenerate": "python tests/test_policy_model.py --regenerate",
                                  "chunk": chunk}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


# -- anchors: keyframe base positions relative to the memory's points -----------------------------------
def _kf_state(b: int, base=(1.0, 2.0, np.pi / 2)) -> torch.Tensor:
    s = torch.zeros(b, 22)
    s[:, 17:20] = torch.tensor(base, dtype=torch.float32)
    return s


def _token(now, first=None, place=False, max_opening=0.0, fixed=False) -> list[float]:
    """A memory token (policy.tokens layout) at base-frame ``now`` (and ``first``) positions:
    an object, an articulated ``place`` or a ``fixed`` place."""
    t = [0.0] * TOKEN_DIM
    t[0], t[1] = 5.0, 7.0
    t[2], t[3] = (0.0, 1.0) if place else (0.0, 0.0) if fixed else (1.0, 0.0)
    t[24] = float(fixed)
    t[4:7] = [*now, 0.5]
    t[7:10] = [*(first if first is not None else now), 0.5]
    t[20] = max_opening
    return t


def test_anchor_points_targets_and_frames() -> None:
    from mnemobot.policy.model import (
        OBJECT_REACH_M,
        PLACE_REACH_M,
        anchor_points,
        anchor_targets,
        contact_targets,
        from_anchor_frame,
        hand_in_map,
        pick_targets,
        to_anchor_frame,
    )

    state = _kf_state(1)  # the base at (1, 2) facing +y
    mem = torch.tensor([[_token((0.5, 0.0), (0.5, 0.22)), _token((0.6, 0.3), place=True), _token((0.0, 0.0))]])
    mask = torch.tensor([[True, True, False]])
    pts, valid, reach = anchor_points(state, mem, mask, max_tokens=3)
    assert pts.shape == (1, 7, 2) and valid.tolist() == [[True, True, True, False, True, True, False]]
    assert pts[0, 1].tolist() == pytest.approx([1.0, 2.5], abs=1e-6)  # 0.5 m ahead of the base
    assert pts[0, 4].tolist() == pytest.approx([0.78, 2.5], abs=1e-6)  # first seen 0.22 m to its left
    assert reach[0, 1] == pytest.approx(OBJECT_REACH_M) and reach[0, 2] == pytest.approx(PLACE_REACH_M)
    off = anchor_points(state, mem, mask, max_tokens=3, use_tokens=False)[1]
    assert off.tolist() == [[True] + [False] * 6]  # without symbolic memory: only the map origin
    sites = torch.tensor([[[0.79, 2.51], [1.0, 2.53], [5.0, 5.0], [float("nan"), float("nan")], [0.9, 2.3]]])
    good = anchor_targets(sites, pts, valid, reach)
    assert good[0].nonzero().tolist() == [[0, 4], [1, 1], [2, 0], [3, 0], [4, 2], [4, 5]]  # a place: now and first
    # an object that has not moved is at its first-seen point too: both fit
    still = anchor_points(state, torch.tensor([[_token((0.5, 0.0))]]), torch.tensor([[True]]), max_tokens=1)
    assert anchor_targets(torch.tensor([[[1.0, 2.5]]]), *still)[0, 0].tolist() == [False, True, True]
    # a fixed place (a button, a patch) is a point of its own, reached like an object: a press
    # 2 cm off the button's centre belongs to it, one 10 cm off does not
    fixed = anchor_points(state, torch.tensor([[_token((0.55, 0.0), fixed=True)]]), torch.tensor([[True]]),
                          max_tokens=1)
    assert fixed[2][0, 1] == pytest.approx(OBJECT_REACH_M)
    press = anchor_targets(torch.tensor([[[1.02, 2.55], [1.0, 2.65]]]), *fixed)[0]
    assert press.nonzero().tolist() == [[0, 1], [0, 2], [1, 0]]
    # in an anchor's frame a grasp right at the anchor is (0, 0), wherever the base stands
    point = torch.tensor([[2.0, 3.0]])
    act = torch.zeros(1, 15)
    act[0, 10:13] = torch.tensor([2.03, 2.4, np.pi / 2])  # base 3 cm right, 0.6 m in front, facing it
    act[0, 0:2] = torch.tensor([0.5, 0.03])  # hand 0.5 m ahead of the arm base (mounted 0.1 m ahead)
    rel = to_anchor_frame(act, point, torch.tensor([True]), (0.1, 0.0))
    assert rel[0, :2].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    assert rel[0, 10:12].tolist() == pytest.approx([0.03, -0.6], abs=1e-5)
    back = from_anchor_frame(rel, point, torch.tensor([True]), (0.1, 0.0))
    assert torch.allclose(back, act, atol=1e-5)
    absolute = to_anchor_frame(act, torch.zeros(1, 2), torch.tensor([False]), (0.1, 0.0))
    assert torch.equal(absolute, act)
    # away from its event (the carry posture) only the base is anchored: the hand stays in the
    # arm-base frame, the same pose whatever point is picked
    away = to_anchor_frame(act, point, torch.tensor([True]), (0.1, 0.0), hand=torch.tensor([False]))
    assert away[0, :2].tolist() == pytest.approx([0.5, 0.03]) and away[0, 10:12].tolist() == pytest.approx([0.03, -0.6])
    assert torch.allclose(from_anchor_frame(away, point, torch.tensor([True]), (0.1, 0.0), torch.tensor([False])), act,
                          atol=1e-5)
    # the hand is at its event within contact_m: in the map it is at (2.03 - 0.6 sin.., ...) = (2.0, 3.0)
    assert hand_in_map(act, (0.1, 0.0))[0].tolist() == pytest.approx([2.0, 3.0], abs=1e-5)
    sites = torch.tensor([[2.0, 3.1], [2.0, 3.2], [float("nan"), float("nan")]])
    assert contact_targets(act.expand(3, 15), sites, (0.1, 0.0), near_m=0.15).tolist() == [True, False, False]
    # the pointer's targets: a contact's fitting points in the second half, the origin only in the first
    fits = torch.tensor([[[False, True, True], [False, True, False], [True, False, False]]])
    doubled = pick_targets(fits, torch.tensor([[True, False, True]]))
    assert doubled[0].int().tolist() == [[0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]


def test_an_anchored_policy_points_at_the_remembered_token_and_carries_over_to_new_positions() -> None:
    """Two drawers; the one memory says was open (largest opening seen) is where to go. Trained on
    one layout, the anchored policy sends the base to the right drawer when the drawers stand
    elsewhere too: its output is an offset from the point it picks, not a position it regressed."""
    torch.manual_seed(0)
    cfg = MemoryPolicyConfig(**{**TINY, "image_size": (H, W), "state_dim": 22, "action_dim": 15, "max_memory_tokens": 2,
                                "action_mode": "keyframes", "step_token": True, "direct_state": True,
                                "flow_target": "sample", "anchors": True, "decoder_layers": 2, "head_width": 64})
    stats = {"anchor_mean": [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, -0.6, 0.0, 0.0, 0.0, -0.6], "anchor_std": [1.0] * 12}
    model = MemoryPolicy(cfg, stats)

    def case(which: int, shift: float) -> dict:
        left, right = (0.6, 0.5 + shift), (0.6, -0.5 + shift)  # base frame; the base at (1, 2) facing +y
        mem = torch.tensor([[_token(left, place=True, max_opening=0.3 * (which == 0)),
                             _token(right, place=True, max_opening=0.3 * (which == 1))]])
        target_map = torch.tensor([1.0 - (left if which == 0 else right)[1], 2.6])  # the drawer's map position
        act = torch.zeros(1, 4, 15)
        act[..., 3], act[..., 7] = 1.0, 1.0  # identity rotation
        act[..., 10:12] = target_map + torch.tensor([0.0, -0.6])  # stand 0.6 m in front of it
        act[..., 12] = np.pi / 2
        act[..., 0] = 0.5  # the hand at the handle: 0.6 m ahead of the base
        return {"observation.images.head": torch.full((1, 3, H, W), 0.5), "observation.state": _kf_state(1),
                "observation.memory": mem, "observation.memory_mask": torch.ones(1, 2, dtype=torch.bool),
                "task": ["open the drawer you closed"], "step": torch.zeros(1), "action": act,
                "action.site": target_map.expand(1, 4, 2).clone(), "want": act[0, :, 10:12]}

    train_cases = [case(0, 0.0), case(1, 0.0)]
    batch = {k: (torch.cat([c[k] for c in train_cases]) if torch.is_tensor(train_cases[0][k])
                 else sum((c[k] for c in train_cases), [])) for k in train_cases[0]}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss, info = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["pointer_loss"] < 0.05, info
    # without contact anchors the pointer offers each point only with the hand anchored too
    with torch.no_grad():
        ctx = model.head.context(*model._condition_train(batch))
        pts, valid, _ = model._points(batch)
        logits = model._anchor_logits(ctx, model._condition_train(batch), batch, valid)
    k = pts.shape[1]
    assert torch.isinf(logits[..., 1:k]).all() and torch.isfinite(logits[..., k + 1 :]).all()
    model.eval()
    for which in (0, 1):
        for shift in (0.0, 0.3):  # 0.3 m: a layout it never saw
            c = case(which, shift)
            model.reset()
            got = model.predict_action_chunk({**c, "temperature": 0.0, "step": 0.0})
            assert torch.allclose(got[0, :, 10:12], c["want"], atol=0.03), (which, shift, got[0, :, 10:12], c["want"])
    # with the symbolic memory off there is nothing to point at: every keyframe is absolute
    blind = MemoryPolicy(MemoryPolicyConfig.from_dict({**cfg.to_dict(), "symbolic_memory": False}), stats)
    loss, info = blind(batch)
    assert info["pointer_loss"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(PolicyConfigError, match="anchors"):
        tiny(anchors=True).check()


def test_the_symbolic_memory_ablation_sees_only_the_present() -> None:
    from mnemobot.policy.model import present_only

    mem = torch.tensor([[_token((0.9, 0.2), (0.5, 0.0)), _token((0.3, -0.4), place=True, max_opening=0.3),
                         _token((0.0, 0.0))]])
    mem[0, :, 21:23] = torch.tensor([0.5, 2.0])
    mask = torch.tensor([[True, True, False]])
    t, m = present_only(mem, mask)
    assert m.tolist() == [[True, True, False]]
    assert t[0, 0, 4:6].tolist() == pytest.approx([0.3, -0.4]) and t[0, 1, 4:6].tolist() == pytest.approx([0.9, 0.2])
    assert torch.equal(t[..., 7:10], t[..., 4:7]) and torch.equal(t[..., 20], t[..., 19])
    assert (t[..., 1] == 0).all() and (t[..., 21:23] == 0).all()
    # a policy with the ablation gives the same chunk whatever memory says about the past
    torch.manual_seed(0)
    cfg = MemoryPolicyConfig(**{**TINY, "image_size": (H, W), "state_dim": 22, "action_dim": 15, "max_memory_tokens": 3,
                                "action_mode": "keyframes", "step_token": True, "anchors": True,
                                "symbolic_history": False})
    model = MemoryPolicy(cfg).eval()
    base = {"observation.images.head": torch.full((1, 3, H, W), 0.5), "observation.state": _kf_state(1),
            "observation.memory_mask": mask, "task": ["put it back"], "step": 0.0, "temperature": 0.0}
    other = mem.clone()
    other[0, 0, 7:9] = torch.tensor([0.1, 0.6])  # first seen elsewhere
    other[0, 1, 20] = 0.0  # never seen open
    other[0, :, 1] = torch.tensor([9.0, 3.0, 1.0])  # other node ids
    other[0, :2] = other[0, [1, 0]]  # listed in another order
    chunks = []
    for m_ in (mem, other):
        model.reset()
        chunks.append(model.predict_action_chunk({**base, "observation.memory": m_,
                                                  "observation.memory_mask": mask if m_ is mem else mask[:, [1, 0, 2]]}))
    assert torch.allclose(chunks[0], chunks[1], atol=1e-5)
