"""Data: IDX reading, the in-memory batch loader and the MNIST-family datamodule."""

from genvae.data.datamodule import MNISTDataModule
from genvae.data.loader import TensorBatchLoader

__all__ = ["MNISTDataModule", "TensorBatchLoader"]
