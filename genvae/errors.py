"""Errors raised for bad user input; the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A configuration value or input file is wrong; the message names the key or file."""


def find_config_error(err: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``err``, also when jsonargparse wrapped it during instantiation."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def exit_on_config_error(err: BaseException) -> NoReturn:
    """Print ``genvae: error: <message>`` and exit 2 when a ConfigError is behind ``err``; else re-raise it."""
    config_error = find_config_error(err)
    if config_error is None:
        raise err
    print(f"genvae: error: {config_error}", file=sys.stderr)
    raise SystemExit(2) from None
