"""The APT model (docs/contract.md §7): configuration, model, generation, DBC-DAC gradient conditioning."""
from apt_ext.model.config import APTModelConfiguration
from apt_ext.model.dbc_dac import DBCDAC
from apt_ext.model.kv_cache import KVCache
from apt_ext.model.model import APTModel

__all__ = ["APTModelConfiguration", "APTModel", "KVCache", "DBCDAC"]
