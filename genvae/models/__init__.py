"""Model families, one LightningModule each, sharing :class:`GenerativeModel`."""

from genvae.models.ae import AE
from genvae.models.arvae import ARVAE
from genvae.models.base import GenerativeModel, VectorLatentModel
from genvae.models.vae import VAE

__all__ = ["AE", "ARVAE", "VAE", "GenerativeModel", "VectorLatentModel"]
