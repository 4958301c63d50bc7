"""The diagrams in the docs are generated from the charts and kept current."""

from __future__ import annotations

from pathlib import Path

from statecharts.docs import main, refresh

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_generated_diagrams_in_the_docs_are_current() -> None:
    """Every generated block in docs/ matches its chart (refresh: python -m statecharts.docs)."""
    files = sorted(str(p) for p in DOCS.glob("*.md") if "BEGIN GENERATED" in p.read_text())
    assert {"mapper.md", "charts.md"} <= {Path(f).name for f in files}
    assert main(["--check", *files]) == 0


def test_a_stale_block_is_detected_and_refreshed(tmp_path: Path) -> None:
    """A block edited by hand is reported by --check and rewritten without it."""
    doc = tmp_path / "doc.md"
    doc.write_text("x\n<!-- BEGIN GENERATED lifecycle md -->\nhand-drawn\n<!-- END GENERATED -->\n")
    assert main(["--check", str(doc)]) == 1
    assert main([str(doc)]) == 0
    assert main(["--check", str(doc)]) == 0
    assert "| `start` |" in doc.read_text() and refresh(doc.read_text()) == doc.read_text()
