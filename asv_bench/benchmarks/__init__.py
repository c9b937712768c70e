"""The asv benchmark suite of nt-pntk (see asv_bench/README.md)."""
