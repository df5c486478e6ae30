"""``python -m apt_ext.train`` (also under ``torchrun --nproc-per-node N -m apt_ext.train``)."""
import sys

from apt_ext.train.cli import main

sys.exit(main())
