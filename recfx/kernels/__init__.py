"""Triton kernels: each module holds a kernel, its launcher and its reference."""
