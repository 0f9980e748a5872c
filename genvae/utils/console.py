"""Keep the console to what a genvae user can act on: the one place where third-party notices are silenced.

Each filter is narrow (message pattern and category, or the exact logger) and says why. Notices with a cause
genvae controls are avoided at their source instead (explicit default logger in ``genvae.cli``, synced epoch
logs in ``genvae.models.base``, no ``ModelCheckpoint`` outside ``fit``, W&B logger set up before init).
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["silence_unactionable_notices"]

# Lightning's rank-zero info logger, which prints advertisements for its cloud products on every run.
_LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
_TIP_PREFIX = "💡 Tip:"


class _DropLightningTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ... litlogger / litmodels" lines: adverts, not about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIX)


def silence_unactionable_notices() -> None:
    """Install the filters (idempotent): Lightning's product tips, torch's ``LeafSpec`` deprecation,
    Lightning's note that a module overriding ``transfer_batch_to_device`` is used with a datamodule
    (genvae's models override it on purpose), and ModelCheckpoint's note that under manual optimization a
    step checkpoint holds the weights after the step (as under automatic optimization).

    The deprecation is raised by Lightning's own ``lightning/pytorch/utilities/_pytree.py`` building a
    ``torch.utils._pytree.LeafSpec`` under torch >= 2.10; only a Lightning release can change it.
    """
    logger = logging.getLogger(_LIGHTNING_INFO_LOGGER)
    if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
        logger.addFilter(_DropLightningTips())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # ModelCheckpoint(every_n_train_steps=...) under manual optimization (genvae's models step their optimizer
    # themselves) warns that it saves the weights after the step: what the automatic loop saves too
    warnings.filterwarnings(
        "ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps"
    )
    # genvae's models return batches already on the device as they are (BaseModel.transfer_batch_to_device)
    warnings.filterwarnings(
        "ignore",
        message=r"You have overridden `transfer_batch_to_device` in `LightningModule` but have passed",
    )
