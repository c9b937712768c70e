"""Adapters: networks of flax (linen, NNX) and equinox as NT's ``(apply_fn, params)``.

A layer beside `kernels`: the adapters import JAX and the model library (on first
use) but nothing of nt_pntk's kernels, and the kernels never import them.
"""
