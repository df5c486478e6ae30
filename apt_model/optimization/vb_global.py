"""``import apt_model.optimization.vb_global as vb``: the design document's path of
:mod:`apt_ext.vb`. This module IS ``apt_ext.vb`` (one state: ``vb.enable()`` here enables it there)."""
import sys

import apt_ext.vb

sys.modules[__name__] = apt_ext.vb
