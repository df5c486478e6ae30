"""``from apt_model.modeling.apt_transformer import APTTransformer`` (the design document's path):
the same class as :class:`apt_ext.model.APTModel`, built from an ``APTModelConfiguration``."""
from apt_model.modeling import APTModelConfiguration, APTTransformer

__all__ = ["APTTransformer", "APTModelConfiguration"]
