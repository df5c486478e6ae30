"""``from apt_model.modeling.apt_model import APTModel, APTModelConfiguration`` (the design
document's path): :class:`apt_ext.model.APTModel` and its configuration."""
from apt_ext.model import APTModel, APTModelConfiguration

__all__ = ["APTModel", "APTModelConfiguration"]
