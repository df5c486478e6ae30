"""Training APT models: ``apt-ext train`` / ``python -m apt_ext.train`` / ``apt_ext.train.train``.

``TrainConfig`` and ``ConfigError`` import without torch; ``Trainer``, ``TrainResult`` and
``train`` load the training loop (and torch) on first use."""
from apt_ext.train.config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig", "Trainer", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("Trainer", "TrainResult", "train"):
        from apt_ext.train import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module 'apt_ext.train' has no attribute {name!r}")
