"""``apt_model``: the module paths of the original APT-Transformer design document, kept so that
its examples run as written. A thin compatibility layer over :mod:`apt_ext` — re-exports and
small adapters, no second implementation. New code should import ``apt_ext``.

    seed path                                          apt_ext object
    apt_model.optimization.FusedFP4Linear              apt_ext.nn.FP4Linear
    apt_model.optimization.VGPUStack                   apt_ext.vgpu.VGPUStack
    apt_model.optimization.vb, .vb_global              the module apt_ext.vb
    apt_model.optimization.get_device_manager          apt_ext.devices.get_device_manager
    apt_model.optimization.CloudNPULinear              apt_ext.cloud.CloudNPULinear + cloud_backend=/fallback_local=
    apt_model.optimization.enable_cloud_npu,
      get_cloud_npu_manager                            adapters over apt_ext.cloud (apt_model.optimization.cloud)
    apt_model.core.system.get_device                   apt_ext.devices.get_device
    apt_model.modeling.apt_model.APTModel,
      APTModelConfiguration                            apt_ext.model
    apt_model.modeling.apt_transformer.APTTransformer  apt_ext.model.APTModel (the same class)
    apt_model.memory.aim_memory.*                      apt_ext.memory

Importing it says once, on stderr, that apt_ext is the maintained name. docs/seed_examples.md
lists every example of the design document and how it runs here.
"""
from __future__ import annotations

import sys

NOTICE = ("apt_model is the original design's name, kept as a compatibility layer; the maintained "
          "package is apt_ext (see docs/seed_examples.md)")
print(NOTICE, file=sys.stderr)
