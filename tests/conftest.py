"""Suite-wide settings: passive OpenMP waiting and one torch thread, the fastest choice on a
shared 2-core machine (see ``fgsbir/__init__.py``)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import torch

torch.set_num_threads(1)
