"""opentune training worker: Llama-family LoRA / full fine-tuning driven by a job spec.

See docs/trainer-protocol.md for the interface and trainer/README.md for usage.
"""

import os

# Set before torch loads its OpenMP runtime. PyTorch's OpenMP threads spin while they wait, and
# OpenBLAS (pthreads) runs the matmuls on threads of its own: on a 2-core machine the two fight
# for the cores. Measured with torch 2.14 (Debian sid, libopenblas0-pthread), one LoRA step of the
# tiny model: 0.80 s spinning, 0.035 s passive; a 4-layer 512-wide full step: 2.98 s → 1.51 s.
# Passive waiting costs GPU jobs nothing (the CPU side only launches kernels).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
