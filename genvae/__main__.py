"""Allow ``python -m genvae`` (used by DDP re-launches and subprocess tests)."""

from genvae.cli import main

if __name__ == "__main__":
    main()
