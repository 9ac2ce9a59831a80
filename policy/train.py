"""Training :class:`~mnemobot.policy.model.MemoryPolicy` on recorded demonstrations, and checkpoints.

A checkpoint is a folder::

    CKPT/
      config.json          format, policy config, training config, dataset summary, tasks, step
      model.safetensors    weights and normalisation buffers
      training_state/      optimizer.safetensors, state.json (step, random generators): resuming
      train_log.jsonl      one line per logged step (step, loss, seconds)

Training is deterministic for a seed (single process, seeded generators; the same thread count).
Running the same command again resumes from the last saved step; a folder that holds anything
but a checkpoint of the same policy and dataset is never written to.

Batches (see :mod:`mnemobot.policy.model`): a frame drawn at random, the next ``chunk_size``
actions (padded at the episode's end), and the history the latent banks would hold at that frame
at run time - the frames of the earlier calls, one every ``n_action_steps`` frames, at most
``history`` of them (evenly spaced from the episode's start when there were more).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from mnemobot.policy.dataset import Dataset, DatasetError
from mnemobot.policy.tokens import TOKEN_DIM, TOKEN_LAYOUT, token_names

__all__ = ["CheckpointError", "TrainConfig", "TrainData", "load_policy", "train"]

FORMAT = "mnemobot-policy"
FORMAT_VERSION = 1
IMAGE_KEY = "observation.images.head"
REQUIRED = (IMAGE_KEY, "observation.state", "action")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read, or written without losing someone's files."""


@dataclass(frozen=True)
class TrainConfig:
    """``steps`` optimizer steps of ``batch_size``; ``history``: most frames the banks are rebuilt
    from per sample; ``save_every``/``log_every`` in steps; ``threads``: torch CPU threads (0:
    torch's default); ``step_jitter``: keyframe mode, the step count a sample shows is off by up
    to this many keyframes (its history's by the same): a run whose count drifts from the
    demonstrations' (a keyframe merged or added) must read its phase from what it sees and
    remembers, not from counting."""

    steps: int = 3000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    history: int = 16
    save_every: int = 500
    log_every: int = 25
    threads: int = 0
    step_jitter: int = 0

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.history < 0 or self.save_every < 1:
            raise ValueError("steps, batch_size and save_every must be >= 1 and history >= 0")
        if self.step_jitter < 0:
            raise ValueError(f"step_jitter must be >= 0, got {self.step_jitter}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def _check_token_width(root: Path | str, features: dict[str, Any]) -> None:
    """A dataset's memory tokens must have this version's width (:data:`TOKEN_DIM` features) and layout
    (:data:`~mnemobot.policy.tokens.TOKEN_LAYOUT`, in the element names of the column)."""
    shape = list(features["observation.memory"].shape)
    mask = features.get("observation.memory_mask")
    n = int(mask.shape[0]) if mask is not None else 0
    if n <= 0 or shape[0] != n * TOKEN_DIM:
        width = f"{shape[0] / n:g}" if n > 0 else "an unknown number of"
        raise DatasetError(f"{root}: its memory tokens have {width} features each, this version's have {TOKEN_DIM} "
                           "(recorded by an older version?); record it again with 'mnemobot record-demos'")
    names = features["observation.memory"].names
    want = token_names(n)
    if names is None or tuple(names) != want:
        got = "no layout" if not names else f"layout {str(names[0]).split(':')[0]}"
        raise DatasetError(f"{root}: its memory tokens were recorded with {got}, this version's are layout "
                           f"v{TOKEN_LAYOUT} (recorded by an older version?); record it again with 'mnemobot record-demos'")


# -- data ---------------------------------------------------------------------------------------------
class TrainData:
    """All frames of a dataset in memory, with episode boundaries, ready to sample batches from.
    ``keyframes``: the actions are the episodes' keyframes (:mod:`mnemobot.policy.keyframes`),
    and samples are drawn at the frames the policy is called at in that mode (the start and each
    keyframe)."""

    def __init__(self, root: str | Path | Sequence[str | Path], keyframes: bool = False) -> None:
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        if not roots:
            raise DatasetError("no dataset folder given")
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("img", "state", "action", "memory", "mask")}
        self.starts, self.ends, self.tasks = [], [], []
        at = 0
        for k, one in enumerate(roots):
            ds = Dataset(one)
            missing = [f for f in REQUIRED if f not in ds.features]
            if missing:
                raise DatasetError(f"{one}: the dataset lacks {missing}; record it with 'mnemobot record-demos'")
            if k == 0:
                self.fps, self.features = ds.fps, ds.features
                self.has_memory = "observation.memory" in ds.features
                if self.has_memory:
                    _check_token_width(one, ds.features)
            elif ds.fps != self.fps or ds.features != self.features:
                raise DatasetError(f"{one}: its fps or features differ from {roots[0]}'s; "
                                   "datasets trained together must be recorded alike")
            for i in range(ds.num_episodes):
                keys = list(REQUIRED) + (["observation.memory", "observation.memory_mask"] if self.has_memory else [])
                ep = ds.episode(i, keys)
                n = len(ep["action"])
                cols["img"].append(ep[IMAGE_KEY])
                cols["state"].append(ep["observation.state"].reshape(n, -1))
                cols["action"].append(ep["action"].reshape(n, -1))
                if self.has_memory:
                    cols["memory"].append(ep["observation.memory"].reshape(n, -1, TOKEN_DIM))
                    cols["mask"].append(ep["observation.memory_mask"].reshape(n, -1).astype(bool))
                self.starts.append(at)
                self.ends.append(at + n)
                self.tasks.append(ds.task_of(i))
                at += n
        self.roots = roots
        self.root = roots[0]
        if at == 0:
            raise DatasetError(f"{', '.join(map(str, roots))}: no frames")
        self.img = np.concatenate(cols["img"])
        self.state = np.concatenate(cols["state"]).astype(np.float32)
        self.action = np.concatenate(cols["action"]).astype(np.float32)
        self.memory = np.concatenate(cols["memory"]).astype(np.float32) if self.has_memory else None
        self.mask = np.concatenate(cols["mask"]) if self.has_memory else None
        self.episode_of = np.repeat(np.arange(len(self.starts)), np.diff([0, *self.ends]))
        self.image_size = tuple(self.img.shape[1:3])
        self.keyframes = keyframes
        self.kf_frames: list[np.ndarray] = []  # per episode: the frames of its calls (start, then each keyframe)
        self.kf_action: list[np.ndarray] = []  # per episode: the keyframe actions of those frames
        self.kf_site: list[np.ndarray] = []  # per episode: where the hand event of each keyframe is (anchors)
        self.kf_trace: list[list[np.ndarray]] = []  # per episode and call: the keyframes of the hand's trace
        if keyframes:
            from mnemobot.policy.keyframes import event_sites, keyframe_actions, keyframe_indices, trace_keep

            for s, e in zip(self.starts, self.ends, strict=True):
                local = np.concatenate([[0], keyframe_indices(self.state[s:e], self.action[s:e])]).astype(int)
                self.kf_frames.append(s + local)
                self.kf_action.append(keyframe_actions(self.state[s:e], self.action[s:e], local))
                self.kf_site.append(event_sites(self.kf_action[-1]))
                # per call j: the keyframes (1..j) the hand's trace holds then
                kf = self.kf_action[-1]
                self.kf_trace.append([1 + trace_keep(kf[1 : j + 1]) for j in range(len(kf))])
            self.kf_calls = np.array([(k, j) for k, f in enumerate(self.kf_frames) for j in range(len(f) - 1)], int)
            if len(self.kf_calls) == 0:
                raise DatasetError(f"{root}: no episode has a keyframe (every episode stands still)")

    def __len__(self) -> int:
        return len(self.action)

    def max_keyframes(self) -> int:
        """The most keyframes of one demonstration (the skill's end when it never comes to rest)."""
        return max((len(f) - 1 for f in self.kf_frames), default=0)

    def stats(self, contact_m: float | None = None) -> dict[str, list[float]]:
        """Normalisation. Keyframe actions are scaled by their spread, but never by less than the
        error that does not matter (:data:`~mnemobot.policy.keyframes.ACTION_FLOOR`): a quantity
        that hardly varies (the hand's tilt, the heading) stays near constant for the model
        instead of becoming unit-variance noise it must learn."""
        if self.keyframes:
            from mnemobot.policy.keyframes import ACTION_FLOOR

            act = np.concatenate([a[1:] for a in self.kf_action])
            std = np.maximum(act.std(0), ACTION_FLOOR)
        else:
            act = self.action
            std = act.std(0)
        out = {"state_mean": self.state.mean(0).tolist(), "state_std": self.state.std(0).tolist(),
               "action_mean": act.mean(0).tolist(), "action_std": std.tolist()}
        if self.keyframes:
            out.update(self._anchor_stats(contact_m))
        return out

    def anchored_targets(self, chunk: int = 16, max_tokens: int = 16, use_tokens: bool = True,
                         mount_xy: tuple[float, float] = (0.10, 0.0),
                         contact_m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """At every call (no jitter): the next ``chunk`` keyframes relative to the anchor point they
        fit (:func:`~mnemobot.policy.model.anchor_targets`, :func:`~mnemobot.policy.model.to_anchor_frame`),
        and their anchor kind (:data:`~mnemobot.policy.model.N_KINDS`: 0 the map origin, 1 the
        base on a memory token's point, 2 a contact: the hand within ``contact_m`` of its event,
        anchored too; ``None``: every anchored keyframe is one, as the policy without
        ``contact_anchors`` has it). ``((N, 15), (N,) int)``."""
        import torch

        from mnemobot.policy.model import (
            anchor_points,
            anchor_targets,
            contact_targets,
            to_anchor_frame,
        )

        frames, sites, acts = [], [], []
        for e, j in self.kf_calls:
            at = np.minimum(j + 1 + np.arange(chunk), len(self.kf_action[e]) - 1)
            frames.append(self.kf_frames[e][j])
            sites.append(self.kf_site[e][at])
            acts.append(self.kf_action[e][at])
        idx = np.asarray(frames)
        mem = torch.from_numpy(self.memory[idx]) if self.memory is not None else None
        mask = torch.from_numpy(self.mask[idx]) if self.mask is not None else None
        pts, valid, reach = anchor_points(torch.from_numpy(self.state[idx]), mem, mask, max_tokens, use_tokens)
        site, act = torch.from_numpy(np.stack(sites)), torch.from_numpy(np.stack(acts))
        good = anchor_targets(site, pts, valid, reach)
        pick = good.float().argmax(-1)
        touch = (contact_targets(act, site, mount_xy, contact_m) if contact_m is not None else torch.ones_like(pick > 0)) \
            & (pick > 0)
        chosen = torch.gather(pts, 1, pick[..., None].expand(*pick.shape, 2))
        rel = to_anchor_frame(act, chosen, pick > 0, mount_xy, touch).numpy()
        kind = (pick > 0).long() + touch.long()
        return rel.reshape(-1, rel.shape[-1]), kind.numpy().reshape(-1)

    def _anchor_stats(self, contact_m: float | None = None) -> dict[str, list[float]]:
        """Normalisation of the anchored columns per anchor kind (absolute keyframes, base
        anchored, contacts); a kind no keyframe has keeps mean 0, std 1."""
        from mnemobot.policy.keyframes import ACTION_FLOOR
        from mnemobot.policy.model import ANCHORED, N_KINDS

        mean, std = np.zeros((N_KINDS, 4)), np.ones((N_KINDS, 4))
        if self.memory is not None:
            rel, kind = self.anchored_targets(max_tokens=self.memory.shape[1], contact_m=contact_m)
        else:
            rel = np.concatenate([a[1:] for a in self.kf_action])
            kind = np.zeros(len(rel), int)
        for k in range(N_KINDS):
            pick = rel[kind == k][:, ANCHORED]
            if len(pick):
                mean[k], std[k] = pick.mean(0), np.maximum(pick.std(0), ACTION_FLOOR[ANCHORED])
        return {"anchor_mean": mean.reshape(-1).tolist(), "anchor_std": std.reshape(-1).tolist()}

    def summary(self) -> dict[str, Any]:
        paths = [str(r.resolve()) for r in self.roots]
        return {"path": paths[0] if len(paths) == 1 else paths, "frames": len(self), "episodes": len(self.starts), "fps": self.fps,
                "tasks": sorted(set(self.tasks)), "state_dim": int(self.state.shape[1]),
                "action_dim": int(self.action.shape[1]), "image_size": list(self.image_size),
                "memory_tokens": int(self.memory.shape[1]) if self.memory is not None else 0,
                **({"keyframes": int(sum(len(f) - 1 for f in self.kf_frames))} if self.keyframes else {})}

    def _frame_samples(self, rng: np.random.Generator, size: int, chunk: int, period: int, history: int,
                       stride: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        idx = rng.integers(0, len(self), size=size)
        acts, pads, hist = [], [], []
        for i in idx:
            e = self.episode_of[i]
            s, end = self.starts[e], self.ends[e]
            at = i + stride * np.arange(chunk)
            j = np.minimum(at, end - 1)
            acts.append(self.action[j])
            pads.append(at >= end)
            calls = np.arange(i - period, s - 1, -period)[::-1] if history > 0 else np.zeros(0, int)
            if len(calls) > history:
                calls = calls[np.round(np.linspace(0, len(calls) - 1, history)).astype(int)]
            hist.append(calls)
        return idx, acts, pads, hist

    def _keyframe_samples(self, rng: np.random.Generator, size: int, chunk: int, period: int, history: int
                          ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray],
                                     list[tuple[int, np.ndarray, np.ndarray]]]:
        """Samples at the calls of keyframe mode: the robot at the start or at rest at keyframe
        ``j`` (seen up to two frames later: it settles there at run time), the next ``chunk``
        keyframes (past the episode's end the last one again, a target like the others: the
        policy learns to stay put when done), and the calls ``period`` keyframes apart before."""
        picks = self.kf_calls[rng.integers(0, len(self.kf_calls), size=size)]
        idx = np.zeros(size, int)
        acts, pads, hist, steps = [], [], [], []
        for k, (e, j) in enumerate(picks):
            frames, kf = self.kf_frames[e], self.kf_action[e]
            nxt = int(frames[j + 1])
            idx[k] = min(int(frames[j]) + int(rng.integers(0, 3)), max(int(frames[j]), nxt - 1))
            at = j + 1 + np.arange(chunk)
            acts.append(kf[np.minimum(at, len(kf) - 1)])
            site = self.kf_site[e][np.minimum(at, len(kf) - 1)]
            pads.append(np.zeros(chunk, bool))  # past the end the robot stays put: that is learned too
            calls = np.arange(j - period, -1, -period)[::-1] if history > 0 else np.zeros(0, int)
            if len(calls) > history:
                calls = calls[np.round(np.linspace(0, len(calls) - 1, history)).astype(int)]
            hist.append(frames[calls].astype(int))
            steps.append((j, calls, site))  # keyframes executed at the call and its history's; the chunk's event sites
        return idx, acts, pads, hist, steps

    def _traces(self, episodes: np.ndarray, calls: np.ndarray, length: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The hand's trace at keyframe calls ``calls`` (any shape, with ``episodes`` alike): the
        last ``length`` kept keyframes, oldest first; ``(state, action, mask)`` with the shape
        of ``calls`` plus ``(length, dim)``."""
        shape = calls.shape
        st = np.zeros((*shape, length, self.state.shape[1]), np.float32)
        ac = np.zeros((*shape, length, self.kf_action[0].shape[1]), np.float32)
        mk = np.zeros((*shape, length), bool)
        for pos in np.ndindex(*shape):
            e, j = int(episodes[pos]), int(calls[pos])
            keep = self.kf_trace[e][j][-length:]
            n = len(keep)
            st[pos][:n] = self.state[self.kf_frames[e][keep]]
            ac[pos][:n] = self.kf_action[e][keep]
            mk[pos][:n] = True
        return st, ac, mk

    def batch(self, rng: np.random.Generator, size: int, chunk: int, period: int, history: int,
              stride: int = 1, step_jitter: int = 0, trace: int = 0) -> dict[str, Any]:
        """A training batch: ``chunk`` actions ``stride`` frames apart from a random frame; the
        history of the calls before it, one every ``period`` frames. ``step_jitter``: see
        :class:`TrainConfig`; ``trace``: keyframes, the length of the hand's trace
        (``trace.*``, for the call and each history step)."""
        import torch

        steps: list[tuple[int, np.ndarray, np.ndarray]] | None = None
        if self.keyframes:
            idx, acts, pads, hist, steps = self._keyframe_samples(rng, size, chunk, period, history)
        else:
            idx, acts, pads, hist = self._frame_samples(rng, size, chunk, period, history, stride)
        t_max = max((len(h) for h in hist), default=0)
        b: dict[str, Any] = {
            IMAGE_KEY: torch.from_numpy(self.img[idx]).permute(0, 3, 1, 2).float() / 255.0,
            "observation.state": torch.from_numpy(self.state[idx]),
            "action": torch.from_numpy(np.stack(acts)),
            "action_is_pad": torch.from_numpy(np.stack(pads)),
            "task": [self.tasks[self.episode_of[i]] for i in idx],
        }
        if self.memory is not None:
            b["observation.memory"] = torch.from_numpy(self.memory[idx])
            b["observation.memory_mask"] = torch.from_numpy(self.mask[idx])
        if steps is not None:
            b["action.site"] = torch.from_numpy(np.stack([site for _, _, site in steps])).float()
            shift = (rng.integers(-step_jitter, step_jitter + 1, size=size) if step_jitter > 0
                     else np.zeros(size, int))
            b["step"] = torch.from_numpy(np.maximum(0, np.array([j for j, _, _ in steps]) + shift).astype(np.float32))
            h_step = np.zeros((size, max(t_max, 0)), np.float32)
            for k, (_, calls, _) in enumerate(steps):
                h_step[k, : len(calls)] = np.maximum(0, calls + shift[k])
            if t_max > 0:
                b["history.step"] = torch.from_numpy(h_step)
            if trace > 0:
                eps = self.episode_of[idx]
                st, ac, mk = self._traces(eps, np.array([j for j, _, _ in steps]), trace)
                b["trace.state"], b["trace.action"], b["trace_mask"] = (torch.from_numpy(v) for v in (st, ac, mk))
                if t_max > 0:
                    h_calls = np.zeros((size, t_max), int)
                    for k, (_, calls, _) in enumerate(steps):
                        h_calls[k, : len(calls)] = calls
                    st, ac, mk = self._traces(np.repeat(eps[:, None], t_max, 1), h_calls, trace)
                    b["history.trace.state"], b["history.trace.action"], b["history.trace_mask"] = (
                        torch.from_numpy(v) for v in (st, ac, mk))
        if t_max > 0:
            h_idx = np.zeros((size, t_max), dtype=int)
            h_mask = np.zeros((size, t_max), dtype=bool)
            for k, h in enumerate(hist):
                h_idx[k, : len(h)] = h
                h_mask[k, : len(h)] = True
                h_idx[k, len(h):] = idx[k]
            b["history.images.head"] = torch.from_numpy(self.img[h_idx]).permute(0, 1, 4, 2, 3).float() / 255.0
            b["history.state"] = torch.from_numpy(self.state[h_idx])
            b["history.age"] = torch.from_numpy((idx[:, None] - h_idx) / self.fps).float()
            b["history_mask"] = torch.from_numpy(h_mask)
            if self.memory is not None:
                b["history.memory"] = torch.from_numpy(self.memory[h_idx])
                b["history.memory_mask"] = torch.from_numpy(self.mask[h_idx])
        return b


# -- checkpoints ----------------------------------------------------------------------------------------
def _read_config(path: Path) -> dict[str, Any]:
    f = path / "config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.json (not a mnemobot policy checkpoint)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: config.json cannot be read: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}: config.json is not a mnemobot policy checkpoint")
    if cfg.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {cfg.get('version')}; this build reads "
                              f"{FORMAT_VERSION}")
    return cfg


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load_policy(path: str | Path, task: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The policy of checkpoint ``path`` in eval mode, and its config.json. ``task``: a task family
    the caller will run; a checkpoint trained on others is refused. Raises
    :class:`CheckpointError` with the problem named."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mnemobot.policy.model import MemoryPolicy, MemoryPolicyConfig, PolicyConfigError

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint folder {p} not found")
    cfg = _read_config(p)
    families = cfg.get("families") or []
    if task is not None and families and task not in families:
        raise CheckpointError(f"{p} was trained on {', '.join(families)}, not {task}")
    try:
        pcfg = MemoryPolicyConfig.from_dict(cfg["policy"])
    except (KeyError, TypeError, PolicyConfigError) as e:
        raise CheckpointError(f"{p}: its policy config is not valid: {e}") from None
    if pcfg.token_dim != TOKEN_DIM:
        raise CheckpointError(f"{p} was trained on memory tokens of {pcfg.token_dim} features, this version's have "
                              f"{TOKEN_DIM} (trained by an older version?); record and train it again")
    if pcfg.symbolic_memory and cfg.get("token_layout", 2) != TOKEN_LAYOUT:
        raise CheckpointError(f"{p} was trained on memory tokens of layout v{cfg.get('token_layout', 2)}, this version's "
                              f"are v{TOKEN_LAYOUT} (trained by an older version?); record and train it again")
    weights = p / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{p}: model.safetensors is missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: model.safetensors cannot be read (truncated or corrupt?): {e}") from None
    model = MemoryPolicy(pcfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if pcfg.anchors and "anchor_contact" in missing:
        raise CheckpointError(f"{p} anchors the hand wherever it anchors the base (trained by an older version); "
                              "train it again")
    if missing or extra or wrong:
        raise CheckpointError(f"{p}: weights do not fit its config (missing {missing[:3]}, unexpected {extra[:3]}, "
                              f"wrong shape {wrong[:3]})")
    for k, v in state.items():
        if v.is_floating_point() and not bool(v.isfinite().all()):
            raise CheckpointError(f"{p}: weight {k} holds NaN or inf")
    model.load_state_dict(state)
    model.eval()
    return model, cfg


def _save(out: Path, model: Any, opt: Any, step: int, meta: dict[str, Any], rng: np.random.Generator) -> None:
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = out / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    ts = out / "training_state"
    ts.mkdir(exist_ok=True)
    flat: dict[str, Any] = {}
    for pid, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            flat[f"{pid}.{name}"] = value.detach().contiguous() if torch.is_tensor(value) else torch.tensor(value)
    save_file(flat, str(ts / "optimizer.safetensors.tmp"))
    os.replace(ts / "optimizer.safetensors.tmp", ts / "optimizer.safetensors")
    _write_json(ts / "state.json", {"step": step, "numpy_rng": rng.bit_generator.state,
                                    "torch_rng": torch.get_rng_state().tolist()})
    _write_json(out / "config.json", {**meta, "step": step})


def _resume(out: Path, model: Any, opt: Any, rng: np.random.Generator) -> int:
    import torch
    from safetensors.torch import load_file

    ts = out / "training_state"
    state = json.loads((ts / "state.json").read_text(encoding="utf-8"))
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    flat = load_file(str(ts / "optimizer.safetensors"))
    sd = opt.state_dict()
    per: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        pid, name = key.split(".", 1)
        per.setdefault(int(pid), {})[name] = value
    sd["state"] = per
    opt.load_state_dict(sd)
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return int(state["step"])


# -- training -----------------------------------------------------------------------------------------
def train(data_dir: str | Path | Sequence[str | Path], out: str | Path, policy_overrides: dict[str, Any] | None = None,
          config: TrainConfig | None = None, families: list[str] | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume) into ``out``; returns the final config.json content. ``policy_overrides``:
    fields of :class:`~mnemobot.policy.model.MemoryPolicyConfig` (ablations: ``latent_memory``,
    ``symbolic_memory``; sizes); the data's own dimensions are filled in."""
    import torch

    from mnemobot.policy.model import MemoryPolicyConfig, PolicyConfigError

    tc = config or TrainConfig()
    tc.check()
    say = progress or (lambda m: print(m, file=sys.stderr, flush=True))
    over0 = dict(policy_overrides or {})
    data = TrainData(data_dir, keyframes=over0.get("action_mode") == "keyframes")
    base = {f.name for f in fields(MemoryPolicyConfig)}
    over = dict(policy_overrides or {})
    unknown = sorted(set(over) - base)
    if unknown:
        raise ValueError(f"unknown policy setting(s) {unknown}")
    pcfg = MemoryPolicyConfig(**{**over, "image_size": data.image_size, "state_dim": data.state.shape[1],
                                 "action_dim": data.action.shape[1],
                                 "max_memory_tokens": data.memory.shape[1] if data.memory is not None else 16,
                                 "symbolic_memory": bool(over.get("symbolic_memory", True)) and data.memory is not None,
                                 **({"max_keyframes": over.get("max_keyframes", data.max_keyframes())}
                                    if data.keyframes else {})})
    contact = pcfg.contact_m if pcfg.contact_anchors else None
    meta = json.loads(json.dumps({  # as config.json will hold it (tuples as lists)
        "format": FORMAT, "version": FORMAT_VERSION, "policy": pcfg.to_dict(), "train": asdict(tc),
        "dataset": data.summary(), "families": sorted(set(families or [])), "stats": data.stats(contact),
        **({"token_layout": TOKEN_LAYOUT} if data.memory is not None else {})}))
    outp = Path(out)
    if outp.exists() and not outp.is_dir():
        raise CheckpointError(f"{outp} is a file, not a checkpoint folder")
    resuming = False
    if outp.is_dir() and any(outp.iterdir()):
        old = _read_config(outp)  # raises for a folder that is not a checkpoint
        try:  # settings added since it was written take their defaults, as when it is loaded
            old_policy = json.loads(json.dumps(MemoryPolicyConfig.from_dict(old.get("policy") or {}).to_dict()))
        except (PolicyConfigError, TypeError, ValueError):
            old_policy = old.get("policy")
        same = old_policy == meta["policy"] and old.get("dataset", {}).get("path") == meta["dataset"]["path"] \
            and old.get("dataset", {}).get("frames") == meta["dataset"]["frames"]
        if not same:
            raise CheckpointError(f"{outp} holds a checkpoint of another policy or dataset; choose a new folder")
        if not (outp / "training_state" / "state.json").is_file():
            raise CheckpointError(f"{outp} holds a checkpoint without its training state; it cannot be resumed")
        resuming = True
    outp.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    try:
        return _train_loop(outp, data, pcfg, tc, meta, resuming, say)
    finally:
        torch.set_num_threads(threads_before)


def _train_loop(outp: Path, data: TrainData, pcfg: Any, tc: TrainConfig, meta: dict[str, Any], resuming: bool,
                say: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from mnemobot.policy.model import MemoryPolicy

    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = MemoryPolicy(pcfg, stats=meta["stats"])
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step = _resume(outp, model, opt, rng) if resuming else 0
    if resuming:
        say(f"resuming {outp} at step {step}")
    if step >= tc.steps:
        say(f"{outp} is trained already ({step} steps)")
        return {**meta, "step": step}

    def lr_at(k: int) -> float:
        warm = min(1.0, (k + 1) / max(tc.warmup, 1))
        return tc.lr * warm * 0.5 * (1 + math.cos(math.pi * min(k / tc.steps, 1.0)))

    log = (outp / "train_log.jsonl").open("a", encoding="utf-8")
    model.train()
    t0, losses = time.perf_counter(), []
    try:
        while step < tc.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            batch = data.batch(rng, tc.batch_size, pcfg.chunk_size, pcfg.n_action_steps * pcfg.action_stride,
                               tc.history, pcfg.action_stride, tc.step_jitter,
                               pcfg.trace_length if pcfg.latent_memory else 0)
            loss, _ = model(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if step % tc.log_every == 0 or step == tc.steps:
                dt = time.perf_counter() - t0
                rec = {"step": step, "loss": float(np.mean(losses)), "lr": lr_at(step - 1), "s": round(dt, 2)}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                say(f"step {step}/{tc.steps}  loss {rec['loss']:.4f}  {dt / len(losses):.2f} s/step")
                losses, t0 = [], time.perf_counter()
            if step % tc.save_every == 0 or step == tc.steps:
                _save(outp, model, opt, step, meta, rng)
    except KeyboardInterrupt:  # Ctrl-C: keep what was trained; the same command resumes
        _save(outp, model, opt, step, meta, rng)
        say(f"interrupted: saved {outp} at step {step}")
        raise
    finally:
        log.close()
    return {**meta, "step": step}
