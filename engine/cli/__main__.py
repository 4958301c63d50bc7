"""``python -m engine.cli``: the same as the ``jobcharts`` command."""

from engine.cli import main

main()
