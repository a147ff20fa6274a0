"""fgsbir: fine-grained sketch-based image retrieval, with photo-to-sketch generation."""

import os

# OpenMP threads that spin while waiting make torch 15-75x slower whenever another process shares
# the cores (measured on 2-core machines); passive waiting costs nothing when the cores are free.
# It must be set before torch starts OpenMP, hence here; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
