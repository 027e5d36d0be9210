"""docs/<sim>.md result tables are generated from the committed summary.json files, never typed."""
from __future__ import annotations

import os

from fa_jax import docs
from fa_jax.summary import Check


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, not the installed package


def test_committed_pages_equal_what_their_summaries_render():
    # every page's summary must be there: a test that finds nothing to compare (a non-editable install looks for
    # figures/ next to the installed package) must fail, not pass
    missing = [s for s in docs.PAGES.values() if not os.path.exists(os.path.join(ROOT, s))]
    assert not missing, f"committed summaries missing: {missing}"
    changed = docs.update(ROOT, check=True)
    assert not changed, f"stale docs pages (run `fa-jax docs`): {changed}"


def test_render_keeps_prose_and_lists_results():
    doc = {"sim": "t", "command": "fa-jax run t", "device": {"platform": "cpu"}, "versions": {"jax": "x"},
           "checks": [Check("a.b", 0.5, 1.0, 0.1, "rel", "derived").to_json(),
                      Check("c|d", 1.0, 1.0, 0.1, "rel", "paper claim (Fig. 2, unverified)").to_json()],
           "not_evaluated": [{"name": "e", "reason": "needs 3 widths"}]}
    page = "# t\n\nprose before\n\n" + docs.BEGIN + "\nold\n" + docs.END + "\n\nprose after\n"
    out = docs.render_page(page, doc)
    assert out.startswith("# t\n\nprose before\n\n") and out.endswith("\n\nprose after\n") and "old" not in out
    assert "**1/2 checks pass.**" in out and "| `a.b` | 0.5 | 1 | 0.1 | rel | derived | **FAIL** |" in out
    assert "c\\|d" in out and "- `e`: needs 3 widths" in out and "predates" not in out
    assert docs.render_page(out, doc) == out  # idempotent
