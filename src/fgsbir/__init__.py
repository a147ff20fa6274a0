"""fgsbir: fine-grained sketch-based image retrieval, with photo-to-sketch generation."""

__version__ = "0.1.0"
