"""A small memory-conditioned policy (MemoryVLA-style) that also reads the symbolic memory.

One call sees the current camera image, the proprioception, the task text and tokens of the
scene-graph memory, and emits a chunk of ``chunk_size`` end-effector actions (executed
``n_action_steps`` at a time). Inside:

* **encoders**: a small convolutional image encoder (a ``H x W`` image to a grid of tokens,
  pooled by learned queries to ``perceptual_tokens`` perceptual tokens), a hashed bag-of-words
  task encoder, a proprioception MLP, and a **symbolic memory encoder**: one token per object
  or place the scene graph holds (its id, label, pose now and when first seen, size, state;
  :mod:`mnemobot.policy.tokens`). Those are the ids the planner sees.
* **cognition**: a transformer over ``[cognitive query, task, proprio, perceptual, symbolic]``
  whose first output is the step's cognitive token.
* **latent memory banks** (per episode): a perceptual bank (the perceptual tokens of each call)
  and a cognitive bank (each call's cognitive token), ``bank_capacity`` entries each. When a
  bank is full, the most similar pair of adjacent entries (cosine) is merged into their mean
  (time included), as MemoryVLA consolidates; ``bank_merge="fifo"`` drops the oldest instead.
* **the hand's trace** (keyframes, ``trace_length``): one token per keyframe the skill has
  executed (the last ``trace_length``; the proprioception once there, the keyframe it was sent
  to, or only their ``trace_*_columns``, and how many keyframes ago), in the cognition
  transformer's input. It is the latent memory's
  record of what the body did: a press is down-and-up between two identical poses, and the
  perceptual and cognitive banks, written once per call, miss it when it falls inside a chunk.
  Part of the latent memory: off with ``latent_memory``. It takes the place of a keyframe count
  (``step_token``), which a run that adds or merges one keyframe reads one phase off.
* **retrieval and gated fusion**: the current tokens cross-attend to the bank entries plus a
  sinusoidal encoding of how long ago each was written; a sigmoid gate mixes what was retrieved
  into the current tokens.
* **action head**: flow matching. The fused tokens are pooled once per chunk into the scale and
  shift of residual MLP blocks over the whole flattened chunk (:class:`FlowHead`); sampling
  integrates the velocity field from Gaussian noise in ``flow_steps`` Euler steps (a seeded
  generator: the same inputs and seed give the same chunk). The head predicts the velocity
  (``flow_target="velocity"``) or the clean chunk itself (``"sample"``, whose straight path from
  the current point gives the velocity), the parameterisation diffusion policies call sample
  prediction: with a few dozen demonstrations it learns precise chunks many times faster (a
  head alone fit 41 keyframe chunks to 1 cm in 300 steps, against 24 cm with velocity).

* **anchors** (keyframes, ``anchors=True``): the contact poses of manipulation are offsets from
  things the memory holds (a block now, the patch it was first seen on, the drawer seen open, the
  button and the patches of the map). So
  each keyframe's base position is given relative to an anchor point the policy points at: the
  map origin (absolute), or a symbolic token's position now or when first seen
  (:func:`anchor_points`). A query per keyframe (the head's pooled condition plus a learned
  per-position vector) scores keys built from each token's output of the cognition transformer;
  the flow head predicts the chunk in the picked anchors' frames (:func:`to_anchor_frame`: the
  base's offset, and for *contact* keyframes, whose hand is within ``contact_m`` of its event,
  the hand's offset from the point too; elsewhere the hand stays in the arm-base frame, so the
  carry posture is one pose whatever point is picked), told each keyframe's kind
  (:data:`N_KINDS`). The pointer picks a point and the kind together (each point twice).
  Training labels (:func:`anchor_targets`) are the memory point nearest
  the hand at the finger event or poke (a press) each keyframe leads to or follows
  (:func:`mnemobot.policy.keyframes.event_sites`); the pointer is trained by the likelihood of
  any fitting point. Without symbolic memory only the origin is there: everything is absolute.

Actions and proprioception are normalised with the dataset's mean and std, kept in the model's
buffers (they travel with the checkpoint); anchored columns per kind (absolute, base anchored,
contact).

The interface mirrors lerobot's policies (``reset``, ``select_action``, ``predict_action_chunk``,
``forward`` returning ``(loss, info)``, a config dataclass), so a ``lerobot_policy_*`` plugin can
wrap it thinly. Batches use lerobot's key names where they exist:

* ``observation.images.head``: ``(B, 3, H, W)`` float in [0, 1];
* ``observation.state``: ``(B, state_dim)``;
* ``observation.memory``: ``(B, M, token_dim)`` symbolic tokens, ``observation.memory_mask``
  ``(B, M)`` (True: a real object);
* ``task``: ``B`` strings;
* training only: ``action`` ``(B, chunk_size, action_dim)``, ``action_is_pad`` ``(B, chunk)``,
  with anchors ``action.site`` ``(B, chunk, 2)`` (where each keyframe's finger event is, NaN: none),
  and the history the banks were built from: ``history.images.head`` ``(B, T, 3, H, W)``,
  ``history.state``, ``history.memory``, ``history.memory_mask``, ``history.age`` ``(B, T)``
  (seconds before now), ``history_mask`` ``(B, T)``;
* with ``step_token``: ``step`` ``(B,)``, the actions the skill has executed so far (keyframes:
  where in the demonstration the robot is, which one posture visited several times does not
  tell), and ``history.step`` ``(B, T)`` in training;
* with ``trace_length`` (keyframes): what the hand has done, the last keyframes the skill executed,
  oldest first: ``trace.state`` ``(B, N, state_dim)`` (the proprioception once there),
  ``trace.action`` ``(B, N, action_dim)`` (the keyframe it was sent to), ``trace_mask`` ``(B, N)``
  (True: an executed keyframe; real entries first); in training the same for each history step
  (``history.trace.state`` ``(B, T, N, state_dim)`` and so on);
* optional at run time: ``temperature`` (default 1), the scale of the noise the flow starts from.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual name

from mnemobot.policy.tokens import TOKEN_DIM

__all__ = ["MemoryBank", "MemoryPolicy", "MemoryPolicyConfig", "PolicyConfigError"]


class PolicyConfigError(ValueError):
    """A configuration (or a checkpoint's) that the policy cannot be built from."""


@dataclass(frozen=True)
class MemoryPolicyConfig:
    """Sizes and switches of :class:`MemoryPolicy` (defaults: about 15M parameters)."""

    image_size: tuple[int, int] = (96, 128)  # (height, width)
    state_dim: int = 22
    action_dim: int = 15
    token_dim: int = TOKEN_DIM  # features of one symbolic memory token (mnemobot.policy.tokens)
    max_memory_tokens: int = 16
    chunk_size: int = 16
    n_action_steps: int = 8
    action_stride: int = 1  # recorded frames per chunk step: a chunk spans chunk_size * stride frames
    action_mode: str = "frames"  # "frames" (one action per recorded frame) or "keyframes" (mnemobot.policy.keyframes)
    step_token: bool = False  # a token encoding how many actions the skill has executed (``step`` in the batch)
    direct_state: bool = False  # the action head also reads proprioception (and the step) directly, not only tokens
    flow_target: str = "velocity"  # what the head predicts: "velocity" (x1 - x0) or "sample" (x1; see FlowHead)
    anchors: bool = False  # keyframes: each base position is an offset from a point the memory holds (see anchor_points)
    trace_length: int = 0  # keyframes: tokens of the last N executed keyframes (the hand's trace; with latent_memory)
    trace_state_columns: tuple[int, ...] = ()  # the proprioception columns a trace token shows (empty: all)
    trace_action_columns: tuple[int, ...] = ()  # the keyframe columns a trace token shows (empty: all)
    loss_units: str = "std"  # "std": errors in normalised units; "floor" (keyframes): in units of the error that matters
    max_keyframes: int = 0  # keyframes: the skill ends after this many (0: only when at rest); from the demonstrations
    arm_mount_xy: tuple[float, float] = (0.10, 0.0)  # where the arm base sits on the mobile base (anchors)
    contact_anchors: bool = False  # anchors: the hand anchored only at contacts (within contact_m of its event)
    contact_sigma: float = 4.0  # contact anchors, at run time: a contact's base at most this many stds off (0: no check)
    contact_m: float = 0.15  # anchors: the hand's offset is taken from the point only within this of its event (HAND_AT_EVENT_M)
    d_model: int = 256
    n_heads: int = 8
    cognition_layers: int = 6
    decoder_layers: int = 4  # residual blocks of the flow head
    head_width: int = 512
    head_queries: int = 4
    perceptual_tokens: int = 8
    encoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    vocab_buckets: int = 4096
    id_buckets: int = 1024
    max_task_words: int = 24
    bank_capacity: int = 16
    bank_merge: str = "similar"  # "similar" (MemoryVLA) or "fifo"
    latent_memory: bool = True
    symbolic_memory: bool = True  # the scene-graph tokens at all (off: no tokens, so nothing to anchor on)
    symbolic_history: bool = True  # off (the ablation): tokens show only the present (see present_only)
    flow_steps: int = 10
    dropout: float = 0.0

    def check(self) -> None:
        if self.bank_merge not in ("similar", "fifo"):
            raise PolicyConfigError(f"bank_merge must be 'similar' or 'fifo', got {self.bank_merge!r}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise PolicyConfigError(f"n_action_steps must be in 1..chunk_size ({self.chunk_size}), "
                                    f"got {self.n_action_steps}")
        if self.d_model % self.n_heads:
            raise PolicyConfigError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.action_stride < 1:
            raise PolicyConfigError(f"action_stride must be >= 1, got {self.action_stride}")
        if self.flow_target not in ("velocity", "sample"):
            raise PolicyConfigError(f"flow_target must be 'velocity' or 'sample', got {self.flow_target!r}")
        if self.action_mode not in ("frames", "keyframes"):
            raise PolicyConfigError(f"action_mode must be 'frames' or 'keyframes', got {self.action_mode!r}")
        if self.action_mode == "keyframes" and self.action_stride != 1:
            raise PolicyConfigError("keyframe actions take no stride (each action is the next keyframe)")
        if self.anchors and self.action_mode != "keyframes":
            raise PolicyConfigError("anchors need action_mode='keyframes' (a base pose to anchor)")
        if self.trace_length < 0 or (self.trace_length and self.action_mode != "keyframes"):
            raise PolicyConfigError(f"trace_length must be >= 0, and > 0 only with action_mode='keyframes' "
                                    f"(got {self.trace_length}, {self.action_mode!r})")
        for name, cols, dim in (("trace_state_columns", self.trace_state_columns, self.state_dim),
                                ("trace_action_columns", self.trace_action_columns, self.action_dim)):
            if any(not 0 <= c < dim for c in cols) or len(set(cols)) != len(cols):
                raise PolicyConfigError(f"{name} must be distinct indices in 0..{dim - 1}, got {list(cols)}")
        if self.loss_units not in ("std", "floor") or (self.loss_units == "floor" and self.action_mode != "keyframes"):
            raise PolicyConfigError(f"loss_units must be 'std', or 'floor' with keyframes; got {self.loss_units!r}")
        if self.max_keyframes < 0:
            raise PolicyConfigError(f"max_keyframes must be >= 0, got {self.max_keyframes}")
        if self.contact_m < 0:
            raise PolicyConfigError(f"contact_m must be >= 0, got {self.contact_m}")
        if self.flow_steps < 1 or self.bank_capacity < 2:
            raise PolicyConfigError("flow_steps must be >= 1 and bank_capacity >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MemoryPolicyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise PolicyConfigError(f"unknown policy config key(s) {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        cfg = cls(**values)
        cfg.check()
        return cfg


# -- building blocks -----------------------------------------------------------------------------------
def sinusoid(x: Tensor, dim: int, scale: float = 1.0) -> Tensor:
    """Sinusoidal encoding of ``x`` (any shape) to ``(*x.shape, dim)``; ``scale`` stretches the
    longest period (seconds for ages, 1 for flow time)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    arg = x.float()[..., None] * freqs * (2 * math.pi / scale)
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def hash_words(texts: list[str], buckets: int, max_words: int) -> tuple[Tensor, Tensor]:
    """Word ids (crc32 buckets, 0 = padding) ``(B, max_words)`` and their mask for task texts."""
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    for i, t in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", str(t).lower())[:max_words]
        for j, w in enumerate(words):
            ids[i, j] = 1 + zlib.crc32(w.encode()) % (buckets - 1)
    return ids, ids > 0


class ImageEncoder(nn.Module):
    """Conv stages (stride 2 each, GroupNorm, SiLU) to a grid of ``d_model`` tokens with 2D
    sinusoidal positions."""

    def __init__(self, channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, d_model)
        self.d_model = d_model

    def forward(self, img: Tensor) -> Tensor:
        x = self.net(img * 2.0 - 1.0)  # (B, C, h, w)
        b, _, h, w = x.shape
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (B, h*w, d)
        ys, xs = torch.meshgrid(torch.arange(h, device=img.device), torch.arange(w, device=img.device), indexing="ij")
        half = self.d_model // 2
        pos = torch.cat([sinusoid(ys.flatten() / max(h, 1), half), sinusoid(xs.flatten() / max(w, 1), half)], -1)
        return tokens + pos[None]


class AttentionPool(nn.Module):
    """``n`` learned queries attend to a token set."""

    def __init__(self, n: int, d: int, heads: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: Tensor) -> Tensor:
        q = self.queries[None].expand(tokens.shape[0], -1, -1)
        out, _ = self.attn(q, tokens, tokens, need_weights=False)
        return self.norm(out + q)


class SymbolicEncoder(nn.Module):
    """Tokens of the scene-graph memory: numeric features, a hashed label and a hashed id.

    Token layout (``token_dim`` floats, see :mod:`mnemobot.policy.tokens`): the first two are the
    label and id hashes (as floats of integers), the rest numeric features."""

    def __init__(self, cfg: MemoryPolicyConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.label = nn.Embedding(cfg.vocab_buckets, d)
        self.ident = nn.Embedding(cfg.id_buckets, d)
        self.mlp = nn.Sequential(nn.Linear(cfg.token_dim - 2, d), nn.SiLU(), nn.Linear(d, d))
        self.vocab, self.ids = cfg.vocab_buckets, cfg.id_buckets

    def forward(self, tokens: Tensor) -> Tensor:
        label = tokens[..., 0].long().clamp(0, self.vocab - 1)
        ident = tokens[..., 1].long().clamp(0, self.ids - 1)
        return self.mlp(tokens[..., 2:]) + self.label(label) + self.ident(ident)


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True,
                                       activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class FlowHead(nn.Module):
    """The velocity field of the action chunk: residual MLP blocks over the whole flattened chunk,
    each modulated (scale and shift) by the condition.

    The condition tokens are pooled by ``head_queries`` learned queries once per chunk
    (:meth:`condition`); every flow step then costs only the blocks, which keeps 10 sampling steps
    cheap on a CPU."""

    def __init__(self, cfg: MemoryPolicyConfig) -> None:
        super().__init__()
        d, w = cfg.d_model, cfg.head_width
        self.pool = AttentionPool(cfg.head_queries, d, cfg.n_heads)
        self.cond = nn.Sequential(nn.Linear(cfg.head_queries * d, w), nn.SiLU())
        self.film = nn.ModuleList(nn.Linear(w, 2 * w) for _ in range(cfg.decoder_layers))
        self.inp = nn.Linear(cfg.chunk_size * cfg.action_dim, w)
        self.time = nn.Sequential(nn.Linear(d, w), nn.SiLU(), nn.Linear(w, w))
        self.norms = nn.ModuleList(nn.LayerNorm(w, elementwise_affine=False) for _ in range(cfg.decoder_layers))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, w))
                                    for _ in range(cfg.decoder_layers))
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.chunk_size * cfg.action_dim))
        self.kind = nn.Linear(cfg.chunk_size * N_KINDS, w) if cfg.anchors else None  # per action: its anchor kind
        self.d, self.shape = d, (cfg.chunk_size, cfg.action_dim)

    def context(self, tokens: Tensor, pad: Tensor, direct: Tensor | None = None) -> Tensor:
        """The chunk's condition ``(B, head_width)`` from the condition tokens (padding ignored);
        ``direct`` ``(B, head_width)``: added past the pooling (proprioception's short path)."""
        q = self.pool.queries[None].expand(tokens.shape[0], -1, -1)
        pooled, _ = self.pool.attn(q, tokens, tokens, key_padding_mask=pad, need_weights=False)
        c = self.cond(self.pool.norm(pooled + q).flatten(1))
        return c if direct is None else c + direct

    def condition(self, tokens: Tensor, pad: Tensor, direct: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Per block ``(scale, shift)`` (see :meth:`context`)."""
        return self.film_of(self.context(tokens, pad, direct))

    def film_of(self, c: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [tuple(f(c).chunk(2, dim=-1)) for f in self.film]  # type: ignore[misc]

    def forward(self, x: Tensor, tau: Tensor, film: list[tuple[Tensor, Tensor]], kind: Tensor | None = None) -> Tensor:
        """``kind`` ``(B, chunk, N_KINDS)``: per action, one-hot absolute / base anchored / contact
        (with anchors; :data:`N_KINDS`)."""
        h = self.inp(x.flatten(1)) + self.time(sinusoid(tau, self.d))
        if self.kind is not None:
            h = h + self.kind(kind.flatten(1).float())
        for norm, block, (scale, shift) in zip(self.norms, self.blocks, film, strict=True):
            h = h + block(norm(h) * (1 + scale) + shift)
        return self.out(h).view(x.shape[0], *self.shape)


# -- latent memory bank ---------------------------------------------------------------------------------
class MemoryBank:
    """One episode's bank of entries (each ``(n_tokens, d)``) with the time each was written.

    ``add`` appends; past ``capacity`` the most similar adjacent pair (mean cosine similarity of
    their tokens) is merged into their average, time included (``merge="similar"``), or the
    oldest entry is dropped (``merge="fifo"``). Works on batches: entries are ``(B, n, d)``.
    """

    def __init__(self, capacity: int, merge: str = "similar") -> None:
        self.capacity, self.merge = capacity, merge
        self.entries: list[Tensor] = []
        self.times: list[Tensor] = []  # (B,) each

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Tensor, t: Tensor) -> None:
        self.entries.append(entry)
        self.times.append(t.float())
        if len(self.entries) > self.capacity:
            self._consolidate()

    def _consolidate(self) -> None:
        if self.merge == "fifo":
            self.entries.pop(0)
            self.times.pop(0)
            return
        stack = torch.stack(self.entries, 1)  # (B, N, n, d)
        flat = F.normalize(stack.flatten(2), dim=-1)
        sim = (flat[:, :-1] * flat[:, 1:]).sum(-1).mean(0)  # (N-1,) adjacent pairs, averaged over the batch
        i = int(torch.argmax(sim))
        self.entries[i] = (self.entries[i] + self.entries[i + 1]) / 2
        self.times[i] = (self.times[i] + self.times[i + 1]) / 2
        del self.entries[i + 1], self.times[i + 1]

    def tensors(self) -> tuple[Tensor, Tensor] | None:
        """``(entries (B, N, n, d), times (B, N))`` or None when empty."""
        if not self.entries:
            return None
        return torch.stack(self.entries, 1), torch.stack(self.times, 1)


class Retrieval(nn.Module):
    """Cross-attention from current tokens to bank entries (with their age), then a gate."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.age = nn.Linear(d, d)
        self.gate = nn.Sequential(nn.Linear(2 * d, d), nn.Sigmoid())
        self.norm = nn.LayerNorm(d)
        self.d = d

    def forward(self, current: Tensor, entries: Tensor | None, ages: Tensor | None,
                mask: Tensor | None = None) -> Tensor:
        """``current`` ``(B, n, d)``; ``entries`` ``(B, N, n_e, d)``; ``ages`` ``(B, N)`` seconds;
        ``mask`` ``(B, N)`` True where an entry exists."""
        if entries is None:
            return current
        b, n_entries, n_tok, d = entries.shape
        keys = entries + self.age(sinusoid(ages, d, scale=60.0))[:, :, None, :]
        keys = keys.reshape(b, n_entries * n_tok, d)
        pad = None
        if mask is not None:
            pad = ~mask[:, :, None].expand(b, n_entries, n_tok).reshape(b, n_entries * n_tok)
            empty = pad.all(dim=1)
            if empty.any():  # rows with nothing to retrieve attend to one zero entry
                pad = pad.clone()
                pad[empty, 0] = False
                keys = keys.clone()
                keys[empty, 0] = 0.0
        retrieved, _ = self.attn(current, keys, keys, key_padding_mask=pad, need_weights=False)
        g = self.gate(torch.cat([current, retrieved], -1))
        return self.norm(g * retrieved + (1 - g) * current)


# -- anchors: keyframe base positions relative to what the memory holds --------------------------------
BASE_XY = slice(10, 12)
"""The base position ``(x, y)`` in a keyframe action (``KEYFRAME_ACTION_NAMES``)."""
ANCHORED = [0, 1, 10, 11]
"""The columns of a keyframe action that anchoring rewrites: hand ``(x, y)``, base ``(x, y)``."""
STATE_BASE = slice(17, 20)
"""The believed base pose ``(x, y, yaw)`` in the state (``STATE_NAMES``)."""
OBJECT_REACH_M = 0.08
"""A hand event (fingers closing or opening, a poke) belongs to an object or a fixed place (a
patch, the button) within this distance: a 5 cm block is grasped at its centre, a 5 cm button
cap pressed at its centre, and neighbouring patches are 22 cm apart."""
PLACE_REACH_M = 0.6
"""... and to an articulated place (a drawer) within this one. Its token stands at its handle (now,
and at the largest opening seen: :mod:`mnemobot.policy.tokens`), where a grasp or release is, but
the handle's place now comes from an opening memory estimates by looking, and a place without a
handle in the map stands at its centre, up to half a 0.6 m deep cabinet plus its opening away.
The nearest point fits first, so the wide reach only matters where nothing else is near."""
HAND_AT_EVENT_M = 0.15
"""A keyframe whose hand is within this horizontal distance of where its event happens is a
*contact* keyframe: its hand is given as an offset from the anchor point, so the few centimetres
a grasp or a press may be off are what the policy regresses. Farther (the carry posture, 0.5-1 m
from the point), only the base is anchored and the hand stays in the arm-base frame: one fixed
pose, whatever point the pointer picks. Half a drawer's 0.3 m travel (a pull's midway keyframe),
and under the 22 cm between neighbouring patches plus a block's half-width."""
N_KINDS = 3
"""Anchor kinds of a keyframe: 0 absolute (the map origin), 1 base anchored on a memory point
(the hand in the arm-base frame), 2 contact (base and hand anchored on the point)."""


def anchor_points(state: Tensor, memory: Tensor | None, mask: Tensor | None, max_tokens: int,
                  use_tokens: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The points a keyframe's base position may be given relative to, in the map frame:
    ``(points (B, K, 2), valid (B, K), reach (B, K))`` with ``K = 1 + 2 * max_tokens``.

    Point 0 is the map origin (an absolute position: the carry posture). Then, per symbolic
    memory token (:mod:`mnemobot.policy.tokens`: positions in the base frame), its position now
    (``1 .. max_tokens``) and where it was first seen (``max_tokens + 1 ..``), turned into the map
    frame with the believed base pose of ``state``. ``reach``: how far from the point a hand
    event may be to belong to it (:data:`OBJECT_REACH_M`, :data:`PLACE_REACH_M`)."""
    b = state.shape[0]
    pts = state.new_zeros(b, 1 + 2 * max_tokens, 2)
    valid = torch.zeros(b, 1 + 2 * max_tokens, dtype=torch.bool, device=state.device)
    reach = state.new_zeros(b, 1 + 2 * max_tokens)
    valid[:, 0] = True
    if not use_tokens or memory is None or memory.shape[1] == 0:
        return pts, valid, reach
    m = memory[:, :max_tokens].float()
    n = m.shape[1]
    mm = mask[:, :max_tokens].bool() if mask is not None else torch.ones(b, n, dtype=torch.bool, device=m.device)
    x, y, yaw = state[:, STATE_BASE].float().unbind(-1)
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    for k, col in enumerate((4, 7)):  # now, first seen
        px, py = m[..., col], m[..., col + 1]
        lo = 1 + k * max_tokens
        pts[:, lo : lo + n, 0] = x[:, None] + c * px - s * py
        pts[:, lo : lo + n, 1] = y[:, None] + s * px + c * py
        valid[:, lo : lo + n] = mm
        reach[:, lo : lo + n] = torch.where(m[..., 3] > 0.5, PLACE_REACH_M, OBJECT_REACH_M)
    return pts, valid, reach


def present_only(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Scene-graph tokens reduced to what one look at the scene gives, without memory: where each
    thing is now and its state now, but not where it was first seen (set to now), the largest
    opening seen (set to the opening now), how long ago it was seen or changed (0), its confidence
    (1), nor its identity across time (the node id, 0); ordered by position (x, then y, in the base
    frame) instead of by what changed last. ``tokens`` ``(..., M, TOKEN_DIM)``, ``mask``
    ``(..., M)``: the symbolic-memory ablation's view."""
    t = tokens.clone()
    t[..., 1] = 0.0
    t[..., 7:10] = t[..., 4:7]
    t[..., 20] = t[..., 19]
    t[..., 21:23] = 0.0
    t[..., 23] = 1.0
    m = mask.bool()
    key = t[..., 4] + 1e-3 * t[..., 5] + (~m).float() * 1e6
    order = torch.argsort(key, dim=-1)
    t = torch.gather(t, -2, order[..., None].expand(*order.shape, t.shape[-1]))
    return t, torch.gather(m, -1, order)


def to_anchor_frame(action: Tensor, point: Tensor, anchored: Tensor, mount_xy: tuple[float, float],
                    hand: Tensor | None = None) -> Tensor:
    """Keyframe actions ``(..., 15)`` relative to their anchor points ``(..., 2)``: the base
    position becomes its offset from the point; where ``hand`` (default: wherever ``anchored``; it
    counts only where ``anchored``), the hand's ``(x, y)`` (arm-base frame) becomes the hand's
    offset from the point in the keyframe base's heading frame (a grasp right at the anchor is
    ``(0, 0)`` whatever the base's offset). Elsewhere the hand stays in the arm-base frame (the
    carry posture is the same pose wherever the base stands). The map origin leaves everything as
    it is. :func:`from_anchor_frame` inverts it."""
    hand = anchored if hand is None else hand & anchored
    out = action.clone()
    yaw = action[..., 12]
    c, s = torch.cos(yaw), torch.sin(yaw)
    off = action[..., BASE_XY] - point
    out[..., BASE_XY] = off
    ox, oy = off.unbind(-1)
    hx = action[..., 0] + mount_xy[0] + (c * ox + s * oy)
    hy = action[..., 1] + mount_xy[1] + (-s * ox + c * oy)
    out[..., 0] = torch.where(hand, hx, action[..., 0])
    out[..., 1] = torch.where(hand, hy, action[..., 1])
    return out


def from_anchor_frame(rel: Tensor, point: Tensor, anchored: Tensor, mount_xy: tuple[float, float],
                      hand: Tensor | None = None) -> Tensor:
    """The inverse of :func:`to_anchor_frame`: keyframe actions in the map and arm-base frames."""
    hand = anchored if hand is None else hand & anchored
    out = rel.clone()
    yaw = rel[..., 12]
    c, s = torch.cos(yaw), torch.sin(yaw)
    ox, oy = rel[..., BASE_XY].unbind(-1)
    out[..., BASE_XY] = rel[..., BASE_XY] + point
    hx = rel[..., 0] - mount_xy[0] - (c * ox + s * oy)
    hy = rel[..., 1] - mount_xy[1] - (-s * ox + c * oy)
    out[..., 0] = torch.where(hand, hx, rel[..., 0])
    out[..., 1] = torch.where(hand, hy, rel[..., 1])
    return out


def hand_in_map(action: Tensor, mount_xy: tuple[float, float]) -> Tensor:
    """``(..., 2)``: where keyframe actions ``(..., 15)`` put the hand in the map frame
    (horizontally): the base pose composed with the hand's position in the arm-base frame."""
    yaw = action[..., 12]
    c, s = torch.cos(yaw), torch.sin(yaw)
    hx, hy = action[..., 0] + mount_xy[0], action[..., 1] + mount_xy[1]
    return torch.stack([action[..., 10] + c * hx - s * hy, action[..., 11] + s * hx + c * hy], -1)


def contact_targets(action: Tensor, site: Tensor, mount_xy: tuple[float, float],
                    near_m: float = HAND_AT_EVENT_M) -> Tensor:
    """Whether each keyframe's hand is at its event (``(...,)`` bool): within ``near_m``
    horizontally of where the event happens (``site`` ``(..., 2)``, NaN: no event, so not).
    Reaching down to a block, lifting it, pressing the button and pushing a handle are; the carry
    posture a metre away from the block is not (see :data:`HAND_AT_EVENT_M`)."""
    d = torch.linalg.vector_norm(hand_in_map(action, mount_xy) - site, dim=-1)
    return torch.isfinite(d) & (d <= near_m)


def anchor_targets(site: Tensor, points: Tensor, valid: Tensor, reach: Tensor, tie_m: float = 0.01) -> Tensor:
    """Which anchor points fit each keyframe: ``(B, C, K)`` bool. ``site`` ``(B, C, 2)``: where the
    hand event the keyframe leads to (or follows) happens, NaN for none. The nearest valid point
    within its reach fits (and any other within ``tie_m`` as near: an object that has not moved
    is at its first-seen point too); with none, the map origin."""
    d = torch.linalg.vector_norm(site[:, :, None, :] - points[:, None, :, :], dim=-1)  # (B, C, K)
    ok = valid[:, None, :] & (d <= reach[:, None, :]) & torch.isfinite(d)
    ok[..., 0] = False
    d = torch.where(ok, d, torch.full_like(d, float("inf")))
    best = d.min(dim=-1, keepdim=True).values
    good = ok & (d <= best + tie_m)
    none = ~good.any(dim=-1)
    good[..., 0] = none
    return good


def pick_targets(good: Tensor, contact: Tensor) -> Tensor:
    """The fitting picks over the doubled points of the pointer (``(B, C, 2K)`` bool): a fitting
    memory point (:func:`anchor_targets`, ``good`` ``(B, C, K)``) in the first half for a keyframe
    whose hand is away from its event, in the second for a contact (``contact`` ``(B, C)``,
    :func:`contact_targets`); the map origin (nothing fits) only in the first."""
    base, touch = good.clone(), good.clone()
    base[..., 1:] &= ~contact[..., None]
    touch &= contact[..., None]
    touch[..., 0] = False
    return torch.cat([base, touch], -1)


# -- the policy -----------------------------------------------------------------------------------------
class MemoryPolicy(nn.Module):
    """See the module docstring. ``stats``: normalisation (``state_mean``, ``state_std``,
    ``action_mean``, ``action_std``; tensors or lists), taken from the dataset."""

    name = "mnemobot_memory"

    def __init__(self, config: MemoryPolicyConfig | None = None, stats: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = config or MemoryPolicyConfig()
        cfg.check()
        self.config = cfg
        d = cfg.d_model
        self.image = ImageEncoder(cfg.encoder_channels, d)
        self.pool = AttentionPool(cfg.perceptual_tokens, d, cfg.n_heads)
        self.words = nn.Embedding(cfg.vocab_buckets, d, padding_idx=0)
        self.word_pos = nn.Parameter(torch.randn(cfg.max_task_words, d) * 0.02)
        self.state = nn.Sequential(nn.Linear(cfg.state_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.symbolic = SymbolicEncoder(cfg)
        self.type_embed = nn.Parameter(torch.randn(5, d) * 0.02)  # cognitive, task, state, perceptual, symbolic
        self.cog_query = nn.Parameter(torch.randn(1, d) * 0.02)
        self.cognition = _encoder(d, cfg.n_heads, cfg.cognition_layers, cfg.dropout)
        self.retrieve_p = Retrieval(d, cfg.n_heads)
        self.retrieve_c = Retrieval(d, cfg.n_heads)
        self.head = FlowHead(cfg)
        if cfg.step_token:
            self.step_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
            self.step_type = nn.Parameter(torch.randn(d) * 0.02)
        if self.uses_trace:
            self._trace_cols = (list(cfg.trace_state_columns) or list(range(cfg.state_dim)),
                                list(cfg.trace_action_columns) or list(range(cfg.action_dim)))
            width = len(self._trace_cols[0]) + len(self._trace_cols[1])
            self.trace_mlp = nn.Sequential(nn.Linear(width, d), nn.SiLU(), nn.Linear(d, d))
            self.trace_age = nn.Linear(d, d)
            self.trace_type = nn.Parameter(torch.randn(d) * 0.02)
        if cfg.direct_state:
            extra = d if cfg.step_token else 0
            self.direct = nn.Sequential(nn.Linear(cfg.state_dim + extra, cfg.head_width), nn.SiLU(),
                                        nn.Linear(cfg.head_width, cfg.head_width))
        if cfg.anchors:  # which point each keyframe's base position is relative to: a pointer over the memory
            self.anchor_q = nn.Linear(cfg.head_width, d)
            self.anchor_k = nn.Linear(d, d)
            self.anchor_step = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
            self.anchor_kind = nn.Parameter(torch.randn(3, d) * 0.02)  # the map origin, a token now, first seen
            self.anchor_contact = nn.Parameter(torch.randn(d) * 0.02)  # a point picked for a contact (hand anchored too)
        s = stats or {}

        def buf(key: str, size: int, default: float) -> Tensor:
            v = s.get(key)
            t = torch.full((size,), default) if v is None else torch.as_tensor(v, dtype=torch.float32).reshape(size)
            return t.clone()

        if cfg.anchors:  # normalisation of the ANCHORED columns per anchor kind (absolute, base anchored, contact)
            self.register_buffer("anchor_mean", buf("anchor_mean", 4 * N_KINDS, 0.0).reshape(N_KINDS, 4))
            self.register_buffer("anchor_std", buf("anchor_std", 4 * N_KINDS, 1.0).clamp_min(1e-3).reshape(N_KINDS, 4))

        self.register_buffer("state_mean", buf("state_mean", cfg.state_dim, 0.0))
        self.register_buffer("state_std", buf("state_std", cfg.state_dim, 1.0).clamp_min(1e-3))
        self.register_buffer("action_mean", buf("action_mean", cfg.action_dim, 0.0))
        self.register_buffer("action_std", buf("action_std", cfg.action_dim, 1.0).clamp_min(1e-3))
        self.reset()

    @property
    def uses_trace(self) -> bool:
        """Whether the policy reads the hand's trace (``trace.*`` in the batch)."""
        return self.config.trace_length > 0 and self.config.latent_memory

    # -- lerobot-style interface -------------------------------------------------------------------------
    def reset(self) -> None:
        """Start an episode: empty banks, no queued actions."""
        cfg = self.config
        self._banks = (MemoryBank(cfg.bank_capacity, cfg.bank_merge), MemoryBank(cfg.bank_capacity, cfg.bank_merge))
        self._queue: deque[Tensor] = deque()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The next action ``(B, action_dim)``: a new chunk is predicted every ``n_action_steps``
        calls (its first ``n_action_steps`` actions are queued)."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, generator=generator)
            for i in range(self.config.n_action_steps):
                self._queue.append(chunk[:, i])
        return self._queue.popleft()

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """A chunk ``(B, chunk_size, action_dim)`` of actions (in the dataset's units) for the
        current observation; the step's tokens are written into the episode's banks (time:
        ``batch["time"]`` seconds, default the number of calls so far)."""
        batch = self._view(batch)
        cond, p, c = self._condition_live(batch)
        return self._chunk(cond, batch, generator)

    def _view(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as this policy sees it: with ``symbolic_history`` off, memory tokens (now and
        in the history) reduced to the present (:func:`present_only`)."""
        if self.config.symbolic_history:
            return batch
        out = dict(batch)
        for key in ("observation.memory", "history.memory"):
            if batch.get(key) is not None:
                mk = batch.get(f"{key}_mask")
                mk = torch.ones(batch[key].shape[:-1], dtype=torch.bool) if mk is None else mk
                out[key], out[f"{key}_mask"] = present_only(batch[key].float(), mk)
        return out

    def _chunk(self, cond: tuple[Tensor, ...], batch: dict[str, Any], generator: torch.Generator | None) -> Tensor:
        """The chunk in the dataset's units from the condition (anchored positions made absolute)."""
        temperature = float(batch.get("temperature", 1.0))
        if not self.config.anchors:
            return self._sample(cond, generator, temperature) * self.action_std + self.action_mean
        ctx = self.head.context(*cond)
        points, valid, _ = self._points(batch)
        logits = self._anchor_logits(ctx, cond, batch, valid)
        point, kind = self._split_pick(logits.argmax(-1), points.shape[1])  # (B, C) each
        start = generator.get_state() if generator is not None else None
        z = self._sample(cond, generator, temperature, kind=kind, ctx=ctx)
        # a contact stands where the demonstrations' contacts stood relative to their point: a
        # keyframe picked as one whose base the head puts farther off (the base still driving
        # there) is base anchored only, and the chunk is sampled again from the same noise
        far = (kind == 2) & (z[..., BASE_XY].abs().amax(-1) > self.config.contact_sigma)
        if self.config.contact_anchors and self.config.contact_sigma > 0 and bool(far.any()):
            kind = torch.where(far, 1, kind)
            if start is not None:
                generator.set_state(start)
            z = self._sample(cond, generator, temperature, kind=kind, ctx=ctx)
        self.last_anchors = {"point": point, "kind": kind, "points": points}  # for inspection (a trace)
        return from_anchor_frame(self._denormalise(z, kind), self._point(points, point), kind > 0,
                                 self.config.arm_mount_xy, kind == 2)

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss on a training batch (see the module docstring for its keys)."""
        batch = self._view(batch)
        cond = self._condition_train(batch)
        action = batch["action"].float()
        pad = batch.get("action_is_pad")
        keep = (~pad.bool()).float() if pad is not None else torch.ones_like(action[..., 0])
        kind, pointer_loss = None, None
        if self.config.anchors:
            ctx = self.head.context(*cond)
            film = self.head.film_of(ctx)
            points, valid, reach = self._points(batch)
            site = batch["action.site"].float()
            good = anchor_targets(site, points, valid, reach)  # (B, C, K)
            touch = (contact_targets(action, site, self.config.arm_mount_xy, self.config.contact_m)
                     if self.config.contact_anchors else torch.ones_like(good[..., 0]))
            good = pick_targets(good, touch)
            logits = self._anchor_logits(ctx, cond, batch, valid)
            # the likelihood of picking any fitting point (several fit when they coincide)
            ll = torch.logsumexp(logits.masked_fill(~good, float("-inf")), -1) - torch.logsumexp(logits, -1)
            pointer_loss = -(ll * keep).sum() / keep.sum().clamp_min(1.0)
            point, kind = self._split_pick(good.float().argmax(-1), points.shape[1])
            rel = to_anchor_frame(action, self._point(points, point), kind > 0, self.config.arm_mount_xy, kind == 2)
            target = self._normalise(rel, kind)
        else:
            film = self._cross(cond)
            target = (action - self.action_mean) / self.action_std  # (B, T, A)
        b = target.shape[0]
        noise = torch.randn_like(target)
        tau = torch.rand(b, device=target.device)
        x_tau = (1 - tau)[:, None, None] * noise + tau[:, None, None] * target
        out = self._velocity(x_tau, tau, film, None if kind is None else F.one_hot(kind, N_KINDS))
        err = (out - (target if self.config.flow_target == "sample" else target - noise)) ** 2
        if self.config.loss_units == "floor":  # each error in units of the error that matters, not of the spread
            err = err * self._floor_weight(kind, err.shape)
        loss = (err * keep[..., None]).sum() / (keep.sum() * err.shape[-1]).clamp_min(1.0)
        info = {"flow_loss": float(loss.detach())}
        if pointer_loss is not None:
            loss = loss + pointer_loss
            info["pointer_loss"] = float(pointer_loss.detach())
        info["loss"] = float(loss.detach())
        return loss, info

    # -- internals -----------------------------------------------------------------------------------
    def _step_tokens(self, img: Tensor, state: Tensor, memory: Tensor | None, memory_mask: Tensor | None,
                     words: Tensor, word_mask: Tensor, step: Tensor | None = None,
                     trace: tuple[Tensor | None, Tensor | None, Tensor | None] | None = None
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step's ``(perceptual (B, P, d), cognitive (B, 1, d), context tokens, their padding)``."""
        cfg = self.config
        te = self.type_embed
        p = self.pool(self.image(img))
        s = self.state((state.float() - self.state_mean) / self.state_std)[:, None]
        w = self.words(words) + self.word_pos[None, : words.shape[1]]
        parts = [self.cog_query[None].expand(img.shape[0], -1, -1) + te[0], w + te[1], s + te[2], p + te[3]]
        pads = [torch.zeros(img.shape[0], 1, dtype=torch.bool, device=img.device), ~word_mask,
                torch.zeros(img.shape[0], 1, dtype=torch.bool, device=img.device),
                torch.zeros(img.shape[0], p.shape[1], dtype=torch.bool, device=img.device)]
        if cfg.step_token:
            if step is None:
                raise PolicyConfigError("this policy reads the skill's step count: the batch needs 'step'")
            st = torch.as_tensor(step, dtype=torch.float32, device=img.device).reshape(-1).expand(img.shape[0])
            parts.append((self.step_mlp(sinusoid(st, cfg.d_model, scale=256.0)) + self.step_type)[:, None])
            pads.append(torch.zeros(img.shape[0], 1, dtype=torch.bool, device=img.device))
        if self.uses_trace:
            tokens, tpad = self._trace_tokens(trace, img.shape[0], img.device)
            parts.append(tokens)
            pads.append(tpad)
        if cfg.symbolic_memory and memory is not None and memory.shape[1] > 0:
            m = memory[:, : cfg.max_memory_tokens]
            mm = memory_mask[:, : cfg.max_memory_tokens].bool() if memory_mask is not None else \
                torch.ones(m.shape[:2], dtype=torch.bool, device=m.device)
            parts.append(self.symbolic(m) + te[4])
            pads.append(~mm)
        x = torch.cat(parts, 1)
        pad = torch.cat(pads, 1)
        out = self.cognition(x, src_key_padding_mask=pad)
        return p, out[:, :1], out, pad

    def _trace_tokens(self, trace: tuple[Tensor | None, Tensor | None, Tensor | None] | None, b: int,
                      device: torch.device) -> tuple[Tensor, Tensor]:
        """Tokens ``(B, N, d)`` of the hand's trace (the last ``trace_length`` entries) and their padding."""
        cfg = self.config
        n = cfg.trace_length
        states, actions, mask = trace if trace is not None else (None, None, None)
        if states is None or actions is None:
            raise PolicyConfigError("this policy reads the hand's trace: the batch needs 'trace.state', "
                                    "'trace.action' and 'trace_mask' (empty at the start)")
        states, actions = states.float()[:, -n:], actions.float()[:, -n:]
        mask = (torch.ones(states.shape[:2], dtype=torch.bool, device=device) if mask is None
                else mask.bool()[:, -n:])
        if states.shape[1] < n:  # pad to the full length: one token layout for every call
            extra = n - states.shape[1]
            states, actions = F.pad(states, (0, 0, 0, extra)), F.pad(actions, (0, 0, 0, extra))
            mask = F.pad(mask, (0, extra), value=False)
        sc, ac = self._trace_cols
        feats = torch.cat([((states - self.state_mean) / self.state_std)[..., sc],
                           ((actions - self.action_mean) / self.action_std)[..., ac]], -1)
        feats = torch.where(mask[..., None], feats, torch.zeros_like(feats))
        # how many keyframes ago (1: the last one); real entries are first
        ago = mask.sum(1, keepdim=True) - torch.arange(n, device=device)[None]
        tokens = self.trace_mlp(feats) + self.trace_age(sinusoid(ago.clamp_min(0), cfg.d_model, scale=64.0)) \
            + self.trace_type
        if tokens.shape[0] != b:
            tokens, mask = tokens.expand(b, -1, -1), mask.expand(b, -1)
        return tokens, ~mask

    def _fuse(self, p: Tensor, c: Tensor, context: Tensor, pad: Tensor,
              banks: tuple[tuple[Tensor, Tensor, Tensor] | None, tuple[Tensor, Tensor, Tensor] | None]
              ) -> tuple[Tensor, Tensor]:
        """Condition tokens for the action head (and their padding) after retrieval."""
        if self.config.latent_memory:
            bp, bc = banks
            p = self.retrieve_p(p, *(bp if bp is not None else (None, None, None)))
            c = self.retrieve_c(c, *(bc if bc is not None else (None, None, None)))
        cond = torch.cat([c, p, context[:, 1:]], 1)
        cpad = torch.cat([torch.zeros(p.shape[0], 1 + p.shape[1], dtype=torch.bool, device=p.device), pad[:, 1:]], 1)
        return cond, cpad

    def _condition_live(self, batch: dict[str, Any]) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        cfg = self.config
        img = batch["observation.images.head"].float()
        words, wmask = hash_words(list(batch["task"]), cfg.vocab_buckets, cfg.max_task_words)
        p, c, context, pad = self._step_tokens(img, batch["observation.state"], batch.get("observation.memory"),
                                               batch.get("observation.memory_mask"), words, wmask, batch.get("step"),
                                               self._trace_of(batch, ""))
        bank_p, bank_c = self._banks
        b = img.shape[0]
        now = torch.as_tensor(batch.get("time", float(len(bank_c))), dtype=torch.float32).expand(b)
        banks: list[tuple[Tensor, Tensor, Tensor] | None] = []
        for bank in (bank_p, bank_c):
            got = bank.tensors()
            banks.append(None if got is None else (got[0], now[:, None] - got[1], None))
        cond = (*self._fuse(p, c, context, pad, (banks[0], banks[1])), self._direct(batch))
        if cfg.latent_memory:
            bank_p.add(p.detach(), now)
            bank_c.add(c.detach(), now)
        return cond, p, c

    def _condition_train(self, batch: dict[str, Any]) -> tuple[Tensor, ...]:
        """Condition tokens for a training batch: the banks are rebuilt from ``history.*`` (no
        gradient through them, as at run time they hold stored values), consolidated the same way."""
        cfg = self.config
        img = batch["observation.images.head"].float()
        b = img.shape[0]
        words, wmask = hash_words(list(batch["task"]), cfg.vocab_buckets, cfg.max_task_words)
        p, c, context, pad = self._step_tokens(img, batch["observation.state"], batch.get("observation.memory"),
                                               batch.get("observation.memory_mask"), words, wmask, batch.get("step"),
                                               self._trace_of(batch, ""))
        banks: tuple[Any, Any] = (None, None)
        hist = batch.get("history.images.head")
        if cfg.latent_memory and hist is not None and hist.shape[1] > 0:
            t_hist = hist.shape[1]
            hmask = batch["history_mask"].bool()
            with torch.no_grad():
                hw = words.repeat_interleave(t_hist, 0)
                hwm = wmask.repeat_interleave(t_hist, 0)
                mem = batch.get("history.memory")
                mmask = batch.get("history.memory_mask")
                hstep = batch.get("history.step")
                htrace = tuple(None if v is None else v.flatten(0, 1) for v in self._trace_of(batch, "history."))
                hp, hc, _, _ = self._step_tokens(
                    hist.flatten(0, 1).float(), batch["history.state"].flatten(0, 1),
                    None if mem is None else mem.flatten(0, 1), None if mmask is None else mmask.flatten(0, 1),
                    hw, hwm, None if hstep is None else hstep.flatten(0, 1), htrace)
            hp = hp.reshape(b, t_hist, *hp.shape[1:])
            hc = hc.reshape(b, t_hist, *hc.shape[1:])
            ages = batch["history.age"].float()
            banks = (self._train_bank(hp, ages, hmask), self._train_bank(hc, ages, hmask))
        return (*self._fuse(p, c, context, pad, banks), self._direct(batch))

    @staticmethod
    def _trace_of(batch: dict[str, Any], prefix: str) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        return (batch.get(f"{prefix}trace.state"), batch.get(f"{prefix}trace.action"), batch.get(f"{prefix}trace_mask"))

    def _train_bank(self, entries: Tensor, ages: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Consolidate each sample's history to at most ``bank_capacity`` entries, as the live
        bank would have (oldest first); returns ``(entries, ages, mask)``."""
        cap = self.config.bank_capacity
        if entries.shape[1] <= cap:
            return entries, ages, mask
        out_e, out_a, out_m = [], [], []
        for i in range(entries.shape[0]):
            bank = MemoryBank(cap, self.config.bank_merge)
            for j in torch.flatten(torch.nonzero(mask[i])).tolist():
                bank.add(entries[i : i + 1, j], -ages[i : i + 1, j])
            e, t = bank.tensors() if len(bank) else (entries[i : i + 1, :0], ages[i : i + 1, :0])
            n = e.shape[1]
            out_e.append(F.pad(e[0], (0, 0, 0, 0, 0, cap - n)))
            out_a.append(F.pad(-t[0], (0, cap - n)))
            out_m.append(torch.arange(cap) < n)
        return torch.stack(out_e), torch.stack(out_a), torch.stack(out_m)

    def _cross(self, cond: tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
        return self.head.condition(*cond)

    def _direct(self, batch: dict[str, Any]) -> Tensor | None:
        """The head's short path: normalised proprioception (and the step's encoding)."""
        cfg = self.config
        if not cfg.direct_state:
            return None
        state = batch["observation.state"].float()
        parts = [(state - self.state_mean) / self.state_std]
        if cfg.step_token:
            st = torch.as_tensor(batch["step"], dtype=torch.float32, device=state.device).reshape(-1)
            parts.append(sinusoid(st.expand(state.shape[0]), cfg.d_model, scale=256.0))
        return self.direct(torch.cat(parts, -1))

    def _velocity(self, x: Tensor, tau: Tensor, film: list[tuple[Tensor, Tensor]], kind: Tensor | None = None) -> Tensor:
        return self.head(x, tau, film, kind)

    # -- anchors ---------------------------------------------------------------------------------------
    def _points(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.config
        return anchor_points(batch["observation.state"].float(), batch.get("observation.memory"),
                             batch.get("observation.memory_mask"), cfg.max_memory_tokens, cfg.symbolic_memory)

    def _anchor_logits(self, ctx: Tensor, cond: tuple[Tensor, ...], batch: dict[str, Any], valid: Tensor) -> Tensor:
        """``(B, chunk, 2K)``: per keyframe, a query from the chunk's condition and its index against
        keys of the map origin and of each symbolic token (its output of the cognition
        transformer, now or first seen), each token's point twice: for a base-anchored keyframe
        (``0 .. K-1``) and for a contact (``K ..``, the origin excluded; :func:`pick_targets`);
        invalid points masked."""
        cfg = self.config
        b, m, d = ctx.shape[0], cfg.max_memory_tokens, cfg.d_model
        mem = batch.get("observation.memory")
        n = min(mem.shape[1], m) if cfg.symbolic_memory and mem is not None else 0
        sym = self.anchor_k(cond[0][:, cond[0].shape[1] - n :]) if n else ctx.new_zeros(b, 0, d)
        sym = F.pad(sym, (0, 0, 0, m - n))
        keys = torch.cat([self.anchor_kind[0].expand(b, 1, d), sym + self.anchor_kind[1], sym + self.anchor_kind[2]], 1)
        keys = torch.cat([keys, keys + self.anchor_contact], 1)
        q = self.anchor_q(ctx)[:, None] + self.anchor_step[None]
        logits = q @ keys.transpose(1, 2) / math.sqrt(d)
        # without contact anchors every anchored keyframe is a contact: only the origin in the first half
        first, second = valid.clone(), valid.clone()
        if not self.config.contact_anchors:
            first[:, 1:] = False
        second[:, 0] = False
        both = torch.cat([first, second], 1)
        return logits.masked_fill(~both[:, None, :], float("-inf"))

    @staticmethod
    def _split_pick(pick: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """A pick over the doubled points (:meth:`_anchor_logits`) as ``(point index, kind)``."""
        point = pick % k
        return point, torch.where(point == 0, 0, torch.where(pick >= k, 2, 1))

    @staticmethod
    def _point(points: Tensor, pick: Tensor) -> Tensor:
        """``(B, C, 2)``: the picked point of each action."""
        return torch.gather(points, 1, pick[..., None].expand(*pick.shape, 2))

    def _floor_weight(self, kind: Tensor | None, shape: torch.Size) -> Tensor:
        """``(std / floor)^2`` per action element (``loss_units="floor"``), averaging 1 over the
        columns: a 2 cm error in the hand's reach costs as much as a 2 cm error in its height,
        however widely the reach varies between the carry posture and the bench."""
        from mnemobot.policy.keyframes import ACTION_FLOOR

        floor = torch.as_tensor(ACTION_FLOOR, dtype=torch.float32, device=self.action_std.device)
        std = self.action_std.expand(shape).clone()
        if kind is not None:
            std[..., ANCHORED] = self.anchor_std[kind.long()]
        w = (std / floor) ** 2
        return w / ((self.action_std / floor) ** 2).mean()

    def _normalise(self, a: Tensor, kind: Tensor) -> Tensor:
        z = (a - self.action_mean) / self.action_std
        k = kind.long()
        z[..., ANCHORED] = (a[..., ANCHORED] - self.anchor_mean[k]) / self.anchor_std[k]
        return z

    def _denormalise(self, z: Tensor, kind: Tensor) -> Tensor:
        a = z * self.action_std + self.action_mean
        k = kind.long()
        a[..., ANCHORED] = z[..., ANCHORED] * self.anchor_std[k] + self.anchor_mean[k]
        return a

    def _sample(self, cond: tuple[Tensor, ...], generator: torch.Generator | None, temperature: float = 1.0,
                kind: Tensor | None = None, ctx: Tensor | None = None) -> Tensor:
        """Integrate the flow from noise scaled by ``temperature`` (1: the trained distribution; 0:
        from its mean, one deterministic chunk). With anchors: ``kind`` ``(B, chunk)`` the anchor
        kind of each action (:data:`N_KINDS`), ``ctx`` the head's condition."""
        cfg = self.config
        b = cond[0].shape[0]
        cross = self._cross(cond) if ctx is None else self.head.film_of(ctx)
        onehot = None if kind is None else F.one_hot(kind.long(), N_KINDS)
        x = temperature * torch.randn(b, cfg.chunk_size, cfg.action_dim, generator=generator, device=cond[0].device)
        dt = 1.0 / cfg.flow_steps
        for k in range(cfg.flow_steps):
            tau = torch.full((b,), k * dt, device=x.device)
            out = self._velocity(x, tau, cross, onehot)
            # a predicted sample gives the velocity of the straight path from here to it
            x = x + dt * ((out - x) / (1.0 - k * dt) if cfg.flow_target == "sample" else out)
        return x

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
