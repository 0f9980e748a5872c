"""``python -m genvae.results``: regenerate the results tables (see :mod:`genvae.results.cli`)."""

from genvae.results.cli import main

main()
