"""The APT model (SPEC 7): configuration, model, generation, DBC-DAC gradient conditioning."""
from apt_ext.model.config import APTModelConfiguration
from apt_ext.model.dbc_dac import DBCDAC
from apt_ext.model.model import APTModel, KVCache

__all__ = ["APTModelConfiguration", "APTModel", "KVCache", "DBCDAC"]
