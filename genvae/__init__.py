"""genvae: Lightning experiment framework for generative autoencoders on MNIST-family images."""

__version__ = "0.1.0"
