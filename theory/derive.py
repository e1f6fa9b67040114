"""Step-by-step derivations for ``minigpt derive [TOPIC] [--latex]``.

``TOPICS`` maps a topic name to a function returning ``[(caption, sympy expression), ...]``;
``render(topic, latex=False)`` formats one topic (or every topic when ``topic`` is None) as text.
"""
from __future__ import annotations

import sympy as sp

from . import backprop, bayes, heads, recurrence

TOPICS = {**recurrence.TOPICS, **bayes.TOPICS, **heads.TOPICS, **backprop.TOPICS}


def steps(topic: str) -> list[tuple[str, sp.Basic]]:
    """The (caption, expression) steps of one topic; unknown topics raise ValueError listing the known ones."""
    if topic not in TOPICS:
        raise ValueError(f"unknown derivation topic {topic!r}; known: {', '.join(TOPICS)}")
    return TOPICS[topic]()


def render(topic: str | None = None, latex: bool = False) -> str:
    """Numbered steps as plain text (sympy's pretty printer, ASCII) or LaTeX (``$$ ... $$`` lines)."""
    topics = list(TOPICS) if topic is None else [topic]
    out = []
    for name in topics:
        out.append(f"# {name}")
        for i, (caption, expr) in enumerate(steps(name), 1):
            out.append(f"{i}. {caption}")
            body = f"$$ {sp.latex(expr)} $$" if latex else sp.pretty(expr, use_unicode=False)
            out.append("\n".join("    " + line for line in body.splitlines()))
        out.append("")
    return "\n".join(out)
