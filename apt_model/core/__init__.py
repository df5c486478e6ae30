"""``apt_model.core``: the design document's device helpers (see :mod:`apt_model.core.system`)."""
