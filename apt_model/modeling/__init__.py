"""``apt_model.modeling``: the design document's model names (re-exports of :mod:`apt_ext.model`)."""
from apt_ext.model import APTModel, APTModelConfiguration

APTTransformer = APTModel

__all__ = ["APTModel", "APTModelConfiguration", "APTTransformer"]
