"""theory.derive: every step of every topic is a true equation with a one-line reason; text, LaTeX and the CLI."""
import re
import shutil
import subprocess

import numpy as np
import pytest
import sympy as sp

import minigpt.cli as cli
from minigpt.tasks.data import AffineRecurrence
from theory import bayes, derive
from theory.recurrence import term_poly
from theory.steps import Step, check

TOPICS = list(derive.TOPICS)
PAPER = AffineRecurrence()  # a, b, x0 ~ U(-1, 1)


@pytest.fixture(scope="module")
def all_steps():
    return {name: derive.steps(name) for name in TOPICS}


@pytest.mark.parametrize("topic", TOPICS)
def test_every_step_is_a_true_equation_with_a_reason(topic, all_steps):
    steps = all_steps[topic]
    assert len(steps) >= 3
    for step in steps:
        assert isinstance(step, Step) and isinstance(step.eq, sp.Equality), step
        assert step.why.strip() and "\n" not in step.why, step
        check(step)  # raises with the step's reason when lhs != rhs at a sample point


def _perturbed(step):
    rhs = step.eq.rhs
    bump = sp.Rational(1, 1000)
    rhs = rhs + bump * sp.ones(*rhs.shape) if hasattr(rhs, "shape") and not isinstance(rhs, sp.MatrixSymbol) else rhs + bump
    return step._replace(eq=sp.Eq(step.eq.lhs, rhs, evaluate=False))


@pytest.mark.parametrize("topic", TOPICS)
def test_a_wrong_step_is_caught(topic, all_steps):
    """The check could fail: the first and the last step with 1/1000 added to the right-hand side."""
    steps = all_steps[topic]
    for step in (steps[0], steps[-1]):
        with pytest.raises(AssertionError, match="false"):
            check(_perturbed(step))


def test_position1_floor_of_the_paper_prior_is_2_15(all_steps):
    final = [s for s in all_steps["bayes_floor_paper"] if s.eq.lhs == sp.Symbol("MSE_1") and s.eq.rhs.is_Rational]
    assert final and final[0].eq.rhs == sp.Rational(2, 15)
    assert check(final[0], exact=True) == "exact"
    assert abs(bayes.bayes_mse(1, PAPER) - 2 / 15) < 1e-12  # the quadrature in theory.bayes agrees
    assert abs(bayes.bayes_mse(0, PAPER) - 4 / 9) < 1e-15


def test_copy_coefficient_by_position():
    """c_t = E[x_{t+1} x_t] / E[x_t^2]: exact moments, the float machinery and a least-squares fit agree."""
    exact = [bayes.expect_uniform(term_poly(t + 1) * term_poly(t)) / bayes.expect_uniform(term_poly(t) ** 2)
             for t in range(6)]
    assert exact[:4] == [0, sp.Rational(3, 4), sp.Rational(25, 23), sp.Rational(42, 41)]
    assert all(1.02 < float(c) < 1.09 for c in exact[2:])
    floats = [bayes.copy_coefficient(t, PAPER) for t in range(6)]
    assert np.allclose(floats, [float(c) for c in exact], rtol=1e-13, atol=1e-15)
    x = PAPER.sample(200_000, np.random.default_rng(0)).x
    fit = [(x[:, t + 1] @ x[:, t]) / (x[:, t] @ x[:, t]) for t in range(6)]
    assert np.allclose(fit, floats, atol=0.02)


@pytest.mark.parametrize("topic", TOPICS)
def test_text_is_readable(topic):
    """No wrapped dumps: every equation fits in 110 columns and 12 lines; every step has a reason line."""
    text = derive.render(topic)
    assert text.startswith(f"# {topic}: ") and "\n1. " in text
    for step in derive.steps(topic):
        lines = sp.pretty(step.eq, use_unicode=False, wrap_line=False).splitlines()
        assert len(lines) <= 12 and max(map(len, lines)) <= 110, (topic, step.why)


def _tex_balanced(doc):
    body = re.sub(r"\\[{}%&$#_]", "", doc)  # escaped characters
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    envs = re.findall(r"\\(begin|end)\{(\w+\*?)\}", doc)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    assert len(re.findall(r"\\left\b", doc)) == len(re.findall(r"\\right\b", doc))


def test_latex_document_structure_and_compiles(tmp_path):
    doc = derive.render(latex=True)
    assert doc.startswith(r"\documentclass{article}") and doc.rstrip().endswith(r"\end{document}")
    _tex_balanced(doc)
    for name in TOPICS:
        assert rf"\section*{{{derive.tex_escape(name)}}}" in doc
    text = re.sub(r"\\\[.*?\\\]", "", doc, flags=re.S)  # text mode only
    for line in text.splitlines():
        assert len(re.findall(r"(?<!\\)\$", line)) % 2 == 0, line  # inline math opens and closes on its line
        outside = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", "", line)
        assert not re.search(r"(?<!\\)[_^%&#$]", outside.replace(r"\textasciicircum{}", "")), line
    assert "$x_{t+1}$" in derive.tex_text("x_(t+1)") and derive.tex_text("50% & #1") == r"50\% \& \#1"
    with pytest.raises(AssertionError):
        _tex_balanced(doc.replace(r"\end{enumerate}", "", 1))  # the structure check can fail
    engine = shutil.which("pdflatex") or shutil.which("lualatex") or shutil.which("tectonic")
    if engine:  # compile only where a TeX engine exists (none on the CI image at the time of writing)
        (tmp_path / "d.tex").write_text(doc)
        args = [engine, "d.tex"] if engine.endswith("tectonic") else [engine, "-interaction=nonstopmode", "-halt-on-error", "d.tex"]
        assert subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=120).returncode == 0


def test_unknown_topic():
    with pytest.raises(ValueError, match="known"):
        derive.render("nope")


def test_cli_derive_prints_steps(capsys):
    assert cli.main(["derive", "next_from_three"]) == 0
    out = capsys.readouterr().out
    assert "x_{t+1}" in out and "7. " in out


def test_cli_derive_help_lists_every_topic(capsys):
    assert cli.main(["derive", "--help"]) == 0
    out = capsys.readouterr().out
    for name in TOPICS:
        assert re.search(rf"^  {name} +{re.escape(derive.describe(name))}$", out, flags=re.M), name


def test_cli_derive_latex_and_errors(capsys):
    assert cli.main(["derive", "errors", "--latex"]) == 0
    assert capsys.readouterr().out.startswith(r"\documentclass")
    assert cli.main(["derive", "nope"]) == 2
    assert "unknown topic 'nope'" in capsys.readouterr().err
