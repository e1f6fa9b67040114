"""Step-by-step derivations for ``minigpt derive [TOPIC] [--latex]``.

``TOPICS`` maps a topic name to a function returning a list of ``theory.steps.Step``: an equation
(sympy ``Eq``), a one-line reason, and the meaning of its named pieces, so that ``theory.steps.check``
can verify each step (tests/theory/test_derive.py checks every one). The function's docstring is the
topic's one-line description.

``render(topic)`` prints numbered steps as plain text (sympy's ASCII pretty printer, unwrapped);
``render(topic, latex=True)`` a complete LaTeX document (article class, amsmath) with one section per topic.
"""
from __future__ import annotations

import re
from functools import lru_cache

import sympy as sp

from theory import backprop, bayes, heads, polynomial, recurrence, vector
from theory.steps import Step

TOPICS = {**recurrence.TOPICS, **vector.TOPICS, **polynomial.TOPICS, **bayes.TOPICS, **heads.TOPICS, **backprop.TOPICS}


def describe(topic: str) -> str:
    """The one-line description of a topic (its function's docstring)."""
    _known(topic)
    return TOPICS[topic].__doc__.strip().splitlines()[0]


def steps(topic: str) -> list[Step]:
    """The steps of one topic; unknown topics raise ValueError listing the known ones."""
    _known(topic)
    return list(_steps(topic))


@lru_cache(maxsize=None)
def _steps(topic):
    return tuple(TOPICS[topic]())


def _known(topic):
    if topic not in TOPICS:
        raise ValueError(f"unknown derivation topic {topic!r}; known: {', '.join(TOPICS)}")


def topic_list(indent: str = "  ") -> str:
    """One line per topic: name and description (for ``minigpt derive --help``)."""
    width = max(map(len, TOPICS))
    return "\n".join(f"{indent}{name:<{width}}  {describe(name)}" for name in TOPICS)


def render(topic: str | None = None, latex: bool = False) -> str:
    """Numbered steps of ``topic`` (every topic when None) as plain text, or as a LaTeX document."""
    topics = list(TOPICS) if topic is None else [topic]
    return latex_document(topics) if latex else "\n".join(text(name) for name in topics)


_DISPLAY = {recurrence.x0: sp.Symbol("x_0", real=True)}  # print x0 as x_0, as the reasons write it (LaTeX does already)


def text(topic: str) -> str:
    """One topic as plain text: a header, then "k. reason" and the equation indented below it."""
    out = [f"# {topic}: {describe(topic)}"]
    for i, step in enumerate(steps(topic), 1):
        out.append(f"{i}. {step.why}")
        body = sp.pretty(step.eq.xreplace(_DISPLAY), use_unicode=False, wrap_line=False)
        out.extend("    " + line.rstrip() for line in body.splitlines())
    out.append("")
    return "\n".join(out)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    """Plain text made safe for LaTeX text mode."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)


# a token with subscripts/superscripts in the reasons' plain notation: x_t, x_(t+1), a^n, x_0^2, Delta^(m+1)
_SCRIPT = r"(?:[_^](?:\([^()\s]*\)|[A-Za-z0-9]+|-1))"
_MATH_TOKEN = re.compile(rf"\b[A-Za-z]+{_SCRIPT}+")
_GREEK = {"alpha", "beta", "gamma", "delta", "Delta", "epsilon", "kappa", "lambda", "mu", "pi", "phi", "Phi", "rho", "sigma"}


def tex_text(s: str) -> str:
    """A reason line for LaTeX: tokens like x_(t+1) or a^n become inline math ($x_{t+1}$, $a^{n}$), the rest
    is escaped text."""
    out, pos = [], 0
    for m in _MATH_TOKEN.finditer(s):
        out.append(tex_escape(s[pos:m.start()]))
        token = re.sub(r"([_^])\(([^()]*)\)", r"\1{\2}", m.group())  # x_(t+1) -> x_{t+1}
        token = re.sub(r"([_^])([A-Za-z0-9]+|-1)", r"\1{\2}", token)  # a^n -> a^{n}
        token = re.sub(r"^[A-Za-z]+", lambda w: "\\" + w.group() if w.group() in _GREEK else w.group(), token)
        out.append(f"${token}$")
        pos = m.end()
    out.append(tex_escape(s[pos:]))
    return "".join(out)


def latex_document(topics) -> str:
    """A complete LaTeX document: one section per topic, an enumerated list of reasons and display equations."""
    out = [r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{amsmath,amssymb}",
           r"\usepackage[margin=2cm]{geometry}", r"\begin{document}"]
    for name in topics:
        out.append(rf"\section*{{{tex_escape(name)}}}")
        out.append(tex_text(describe(name)))
        out.append(r"\begin{enumerate}")
        for step in steps(name):
            out.append(rf"\item {tex_text(step.why)}")
            out.append(rf"\[ {sp.latex(step.eq)} \]")
        out.append(r"\end{enumerate}")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
