"""card_render: a model card's facts in Markdown and escaped HTML."""

from __future__ import annotations

from mlops import card, card_render
from tests.unit.test_card import _card


def test_card_renders_the_same_facts_in_markdown_and_escaped_html() -> None:
    c = _card()
    c["limitations"] = card.limitations(c)
    bs = card_render.blocks(c)
    md, page = card_render.to_markdown(bs), card_render.to_html(bs, "Model card: m v3")
    for section in (
        "Intended use",
        "Training data",
        "Features",
        "Holdout metrics",
        "By carrier",
        "Promotion gate",
        "Approval",
        "Known limitations",
    ):
        assert f"## {section}" in md or f"### {section}" in md
        assert f">{section}</h" in page
    assert "| AA | 600 | 60.0% |" in md
    assert "Score &lt;flights&gt; &amp; more" in page and "<flights>" not in page
    assert "a" * 32 in md and "a" * 32 in page
