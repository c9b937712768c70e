"""Spectra of kernels, and how far an approximation's (repeated O times) is from the eNTK's."""

from nt_pntk._src.kernels.spectra import (
    SpectralErrors,
    Spectrum,
    repeated_eigenvalue_errors,
    spectral_errors,
    spectrum,
)

__all__ = ["SpectralErrors", "Spectrum", "repeated_eigenvalue_errors", "spectral_errors", "spectrum"]
