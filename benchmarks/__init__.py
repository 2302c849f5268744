"""Benchmarks outside the wheel: the Lightning path against plain PyTorch loops, and peers."""
