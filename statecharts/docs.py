"""Keep the diagrams in the docs current: ``python -m statecharts.docs [--check] FILE...``.

A docs file holds generated blocks between markers::

    <!-- BEGIN GENERATED lifecycle mermaid -->
    ...
    <!-- END GENERATED -->

The block names a built-in chart (or ``module:ATTRIBUTE``, a Chart or a function returning
one, such as ``docs.examples.payout:PAYOUT``) and a format (mermaid, md or dot). Without ``--check``
the blocks are rewritten from the charts; with it, the command fails when one is stale
(CI runs the check through the test suite).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from statecharts.chart import Chart
from statecharts.lifecycle import lifecycle
from statecharts.render import to_dot, to_markdown, to_mermaid

BUILT_IN: dict[str, Callable[[], Chart]] = {"lifecycle": lifecycle}
FENCES = {"mermaid": "mermaid", "dot": "dot", "md": None}
BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED (?P<chart>[\w.:]+) (?P<fmt>\w+) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED -->)",
    re.S,
)


def block(chart_name: str, fmt: str) -> str:
    """The body of a generated block."""
    chart = _chart(chart_name)
    text = {"mermaid": to_mermaid, "dot": to_dot, "md": to_markdown}[fmt](chart)
    fence = FENCES[fmt]
    return f"```{fence}\n{text}```\n" if fence else text


def _chart(name: str) -> Chart:
    if ":" not in name:
        return BUILT_IN[name]()
    module, _, attr = name.partition(":")
    found = getattr(importlib.import_module(module), attr)
    chart = found if isinstance(found, Chart) else found()
    if not isinstance(chart, Chart):
        raise TypeError(f"{name} is not a Chart")
    return chart


def refresh(text: str) -> str:
    """``text`` with every generated block rewritten."""
    return BLOCK.sub(
        lambda m: m.group(1) + block(m.group("chart"), m.group("fmt")) + m.group(5), text
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="refresh or check generated diagrams in docs")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text()
        fresh = refresh(text)
        if fresh != text:
            stale.append(str(path))
            if not args.check:
                path.write_text(fresh)
    if args.check and stale:
        print(f"stale diagrams in {', '.join(stale)}: run python -m statecharts.docs FILE")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
