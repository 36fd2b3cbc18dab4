"""``python -m synthex``: the same command line as ``synthex``."""

from synthex.cli import main

main()
