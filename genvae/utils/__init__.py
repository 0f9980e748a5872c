"""Low-level helpers shared by every layer (data, models, metrics, callbacks, CLI): atomic writes, images."""
