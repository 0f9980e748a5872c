"""Subcommands of the ``genvae`` console script beyond LightningCLI's fit / validate / test / predict."""
