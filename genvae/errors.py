"""Errors raised for bad user input; the CLI prints them as one line and exits with status 2."""


class ConfigError(ValueError):
    """A configuration value or input file is wrong; the message names the key or file."""
