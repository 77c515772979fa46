"""ferkit: facial expression recognition in PyTorch."""

__version__ = "0.1.0"
