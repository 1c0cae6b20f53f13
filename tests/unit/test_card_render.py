"""card_render: a model card's facts in Markdown and escaped HTML."""

from __future__ import annotations

from mlops import card, card_render
from tests.unit.test_card import _card, realised_runs


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


def test_the_card_shows_fitted_and_held_out_partitions_apart() -> None:
    # given a card fitted on W02 and evaluated on W03
    c = _card()
    c["limitations"] = card.limitations(c)
    md = card_render.to_markdown(card_render.blocks(c))
    # then "Trained on" lists W02 alone, the holdout is its own line, and the table says which
    assert "| **Trained on** | 2013-W02 (2013-01-07T00:00:00+00:00 to 2013-01-14" in md
    assert "| **Held out** | 2013-W03 (2013-01-14T00:00:00+00:00 to 2013-01-21" in md
    assert f"| 2013-W02 | training | {'a' * 32} | 10 |" in md
    assert f"| 2013-W03 | holdout | {'b' * 32} | - |" in md
    assert "| carrier | category | 16 | 0.5000 |" in md


def test_realised_performance_per_partition_against_the_holdout_and_by_slice() -> None:
    # given a version measured on two labelled partitions, the second a breach
    c = _card(realised=realised_runs())
    c["limitations"] = card.limitations(c)

    # when rendered
    bs = card_render.blocks(c)
    md, page = card_render.to_markdown(bs), card_render.to_html(bs, "Model card: m v3")

    # then each partition shows its gate metric, the holdout, the change and the decision
    assert "## Realised performance" in md and ">Realised performance</h2>" in page
    assert "| 2013-07 | 5,000 | 0.6900 | 0.7000 | -0.0100 | - | - | 0.4100 | - | - | no |" in md
    assert "| 2013-08 | 4,000 | 0.6100 | 0.7000 | -0.0900 |" in md and "| yes |" in md
    assert "- 2013-08: realised roc_auc 0.610 is 0.090 below the holdout 0.700" in md
    # and by slice, one column per partition, with the rows each value had
    assert "### Realised roc_auc by carrier (rows)" in md
    assert "| AA | 0.7100 (500) | - (500) |" in md
    assert "| HA | - (12) | - (12) |" in md


def test_a_version_never_labelled_says_how_to_measure_it() -> None:
    md = card_render.to_markdown(card_render.blocks({**_card(), "limitations": []}))
    assert "## Realised performance" in md and "mlops label PARTITION" in md


def test_the_shap_section_shows_bars_overall_and_the_top_features_per_slice() -> None:
    c = _card()
    c["limitations"] = card.limitations(c)
    c["explanations"] = {
        "method": "TreeSHAP (XGBoost)",
        "output": "log-odds",
        "rows": 2000,
        "of_rows": 5925,
        "base": -1.0123,
        "overall": {"dep_hour": 0.4, "carrier": 0.2, "distance": 0.0},
        "slices": {
            "carrier": [
                {"value": "AA", "rows": 600, "top": {"dep_hour": 0.5, "carrier": 0.1}},
                {"value": "VX", "rows": 7},
            ]
        },
        "min_rows": 100,
    }
    bs = card_render.blocks(c)
    md, page = card_render.to_markdown(bs), card_render.to_html(bs, "Model card: m v3")
    assert "## Why it predicts what it does (SHAP)" in md
    assert "on 2,000 holdout rows (of 5,925), by TreeSHAP (XGBoost)" in md
    assert "| dep_hour | 0.4000 | " + "█" * 20 + " |" in md
    assert "| carrier | 0.2000 | " + "█" * 10 + " |" in md
    assert "| AA | 600 | dep_hour 0.5000, carrier 0.1000 |" in md
    assert "| VX | 7 | fewer than 100 rows |" in md
    assert "<div class='bar' style='width:100.0%'>" in page
    assert "<div class='bar' style='width:50.0%'>" in page


def test_a_card_without_explanations_says_why() -> None:
    c = _card()
    c["limitations"] = card.limitations(c)
    c["explanations"] = {"error": "explain: no exact method for a SVC model"}
    md = card_render.to_markdown(card_render.blocks(c))
    assert "Not explained: explain: no exact method for a SVC model" in md
