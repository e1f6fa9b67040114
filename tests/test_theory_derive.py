"""theory.derive: every topic renders as text and LaTeX; the CLI prints it."""
import pytest

from theory import derive


@pytest.mark.parametrize("topic", list(derive.TOPICS))
def test_every_topic_renders(topic):
    text = derive.render(topic)
    assert text.startswith(f"# {topic}") and "1. " in text
    latex = derive.render(topic, latex=True)
    assert "$$" in latex


def test_unknown_topic():
    with pytest.raises(ValueError, match="known"):
        derive.render("nope")


def test_cli_derive_prints_steps(capsys):
    cli = pytest.importorskip("minigpt.cli")
    assert cli.main(["derive", "next_from_three"]) == 0
    assert "x_{t+1}" in capsys.readouterr().out
