"""Model families, one LightningModule each, sharing :class:`GenerativeModel`."""

from genvae.models.ae import AE
from genvae.models.arvae import ARVAE
from genvae.models.base import GenerativeModel, VectorLatentModel
from genvae.models.classifier import Classifier
from genvae.models.prior import VQPrior
from genvae.models.vae import VAE
from genvae.models.vqvae import VQVAE

__all__ = ["AE", "ARVAE", "Classifier", "VAE", "GenerativeModel", "VectorLatentModel", "VQPrior", "VQVAE"]
