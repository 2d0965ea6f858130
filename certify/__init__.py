"""certify: certified explanations for PyTorch classifiers.

Two layers, kept apart: the solver layer (`certify.explain`) computes explanations; the verification layer
(`certify.bounds`, `certify.certificates`) proves what is guaranteed about them.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("certify")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
