"""Training APT models: ``apt-ext train`` / ``python -m apt_ext.train`` / ``apt_ext.train.train``."""
from apt_ext.train.trainer import TrainConfig, Trainer, TrainResult, train

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train"]
