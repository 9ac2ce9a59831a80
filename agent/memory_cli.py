"""``mnemobot memory DB [question] [argument]``: read-only questions to a persistent memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnemobot.agent.errors import UserError
from mnemobot.memory.graph import SceneGraph
from mnemobot.memory.retrieval import MemoryQuery

__all__ = ["QUESTIONS", "answer_question", "load_graph", "run_memory_query"]


def load_graph(path: Path) -> tuple[SceneGraph, list[dict[str, Any]]]:
    """The scene graph stored in ``path`` (snapshot + log tail) and its episodes; read-only."""
    from mnemobot.memory.store import EpisodicStore, StoreError

    try:
        with EpisodicStore(path, create=False, readonly=True) as store:
            state, ops = store.load()
            episodes = store.episodes()
    except StoreError as e:
        raise UserError(str(e)) from None
    graph = SceneGraph()
    if state is not None:
        graph.load_state(state)
    for op in ops:
        graph.apply(op)
    return graph, episodes


QUESTIONS = ("summary", "episodes", "objects", "where", "contents", "last-seen", "changed", "search")
"""The questions :func:`answer_question` knows (``last_seen`` is accepted for ``last-seen``)."""


def run_memory_query(path: Path, question: str, argument: str | None, k: int = 5, as_json: bool = False) -> str:
    """Answer one question; returns the text to print. Bad input raises :class:`UserError`."""
    graph, episodes = load_graph(path)
    embedder = None
    if question == "search":
        from mnemobot.memory.embedding import make_embedder

        embedder = make_embedder("auto")
    answer, text = answer_question(MemoryQuery(graph, embedder), episodes, question, argument, k, label=str(path))
    return json.dumps(answer, indent=2) if as_json else text


def answer_question(query: MemoryQuery, episodes: list[dict[str, Any]], question: str, argument: str | None,
                    k: int = 5, label: str = "memory") -> tuple[Any, str]:
    """``(JSON-able answer, text)`` of one question to a scene graph (``query.graph``); the CLI and
    the memory node's ``QueryMemory`` service both answer through here. Bad input raises
    :class:`UserError`."""
    graph = query.graph
    question = "last-seen" if question == "last_seen" else question
    if question not in QUESTIONS:
        raise UserError(f"unknown question {question!r}; ask one of {', '.join(QUESTIONS)}")
    needs = {"where": "an object label", "contents": "a place", "last-seen": "an object label",
             "search": "a description", "changed": "a time in seconds"}
    if question in needs and not argument:
        raise UserError(f"'{question}' needs {needs[question]}")
    answer: Any
    if question == "summary":
        objects = graph.by_layer("object")
        states: dict[str, int] = {}
        for key in objects:
            state = graph.node(key).get("state", "present")
            states[state] = states.get(state, 0) + 1
        answer = {"episodes": len(episodes), "objects": len(objects), "states": states, "ops": graph.seq}
        text = (f"{label}: {len(episodes)} episode(s), {len(objects)} objects "
                f"({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'none'}), {graph.seq} operations")
    elif question == "episodes":
        answer = episodes
        text = "\n".join(f"#{e['id']}: {e.get('meta', {}).get('task', '')} -> "
                         f"{'success' if (e.get('outcome') or {}).get('success') else 'no success'}"
                         for e in episodes) or "no episodes"
    elif question == "objects":
        hits = [query.hit(key) for key in sorted(graph.by_layer("object"), key=lambda n: int(n.split(":")[1]))]
        answer = [h.to_dict() for h in hits]
        text = "\n".join(h.describe() for h in hits) or "no objects remembered"
    elif question == "where":
        hits = query.where(argument)
        answer = [h.to_dict() for h in hits]
        text = "\n".join(h.describe() for h in hits) or f"no {argument} in memory"
    elif question == "contents":
        if query.place_key(argument) is None and not query.count(argument):
            raise UserError(f"memory knows no place or object called {argument!r}")
        hits = query.contents(argument)
        answer = [h.to_dict() for h in hits]
        state = query.state(argument)
        text = (f"{argument}" + (f" ({state})" if state else "") + ": " +
                (", ".join(h.label.replace("_", " ") for h in hits) or "nothing remembered"))
    elif question == "last-seen":
        t = query.last_seen(argument)
        answer = {"object": argument, "time": t}
        text = f"{argument}: " + ("never seen" if t is None else f"last seen at t={t:.1f} s")
    elif question == "changed":
        try:
            since = float(argument)
        except ValueError:
            raise UserError(f"'changed' needs a time in seconds, got {argument!r}") from None
        changes = query.changed_since(since)
        answer = [c.__dict__ for c in changes]
        text = "\n".join(f"t={c.time:.1f}s {c.label.replace('_', ' ')}: {c.cause}"
                         + (f" ({c.place.replace('_', ' ')})" if c.place else "") for c in changes) \
            or f"nothing changed since t={since:g} s"
    else:  # search
        hits = query.search(argument, k=k)
        answer = [h.to_dict() for h in hits]
        text = "\n".join(f"{h.score:.2f}  {h.describe()}" for h in hits) or "no objects remembered"
    return answer, text
