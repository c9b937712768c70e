"""The package's version (read by ``nt-pntk --version`` without importing JAX)."""

__version__ = "0.2.0"
