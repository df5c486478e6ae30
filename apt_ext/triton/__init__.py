"""Triton kernels: the GPU fallback when the CUDA build is absent (and ROCm/XPU paths).

Tested on the CPU with TRITON_INTERPRET=1 on tiny shapes.
"""
