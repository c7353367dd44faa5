#!/usr/bin/env python
"""Run the PyTorch reference benchmark (written for the CPU) on CUDA.

    python bench/torch_on_gpu.py bench/torch_reference.py --batch 128

Its tensors and model go to the default device, here set to CUDA, and every
time.perf_counter() read first waits for the GPU, so each timed step is
complete when its clock stops (the reference's eval loop does not wait).
"""
import runpy
import sys
import time

import torch

_clock = time.perf_counter


def _synchronised_clock():
    torch.cuda.synchronize()
    return _clock()


if __name__ == '__main__':
    torch.set_default_device('cuda')
    time.perf_counter = _synchronised_clock
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
