"""What a large fp32 matrix product reaches on this machine: the practical ceiling for conv/fc layers.

    python -m bench.gemm openblas     # cblas_sgemm of the system OpenBLAS, the one Caffe links
    python -m bench.gemm torch        # torch.mm (oneMKL in the CPU wheel)

Best of 5 products of two 2048x2048 matrices, in GFLOP/s (2 n^3 flops each); one JSON line.
"""

import ctypes
import json
import sys
import time

import numpy as np

from bench.common import threads

N = 2048


def best(fn, repeats=5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 2 * N**3 / min(times) / 1e9


def openblas() -> float:
    lib = ctypes.CDLL("libopenblas.so.0")
    ptr = ctypes.c_void_p
    lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ptr, ctypes.c_int, ptr, ctypes.c_int,
                                                     ctypes.c_float, ptr, ctypes.c_int]
    rng = np.random.RandomState(0)
    a, b = rng.rand(N, N).astype(np.float32), rng.rand(N, N).astype(np.float32)
    c = np.zeros((N, N), np.float32)
    row_major, no_trans = 101, 111
    return best(lambda: lib.cblas_sgemm(row_major, no_trans, no_trans, N, N, N, 1.0, a.ctypes.data, N,
                                        b.ctypes.data, N, 0.0, c.ctypes.data, N))


def torch_mm() -> float:
    import torch

    torch.set_num_threads(threads())
    a, b = torch.rand(N, N), torch.rand(N, N)
    return best(lambda: a @ b)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "openblas"
    print(json.dumps({"gflops": openblas() if which == "openblas" else torch_mm(), "n": N}))
