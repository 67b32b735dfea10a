#!/usr/bin/env python
"""How many Triton kernels 300 random-key draws compile: the kernel as shipped against a plain ``triton.jit``.

Every draw has a new Philox key. Triton specializes an int argument on its value (int32 or int64, divisible by
16 or not), so with raw keys a run keeps compiling new kernels (about a second each on a fresh machine); the
shipped kernel takes the keys as int32 and does not specialize on them. Needs a CUDA GPU.

    PYTHONPATH=src python scripts/measure_triton_key_compiles.py
"""

import os
import random
import sys
import time

import torch


def run(tag: str, T) -> None:
    out = torch.empty(3072, 768, device="cuda")
    r = random.Random(0)
    times = []
    for _ in range(300):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        T.fill_normal(out, r.getrandbits(32), r.getrandbits(32), 0, 0)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    compiled = {str(k): len(v[0]) for k, v in T._kernel.device_caches.items()}
    times.sort()
    print(f"{tag} kernels compiled {compiled} draws over 50 ms {sum(t > 0.05 for t in times)} of 300; "
          f"median ms {times[150] * 1e3:.3f}; total s {sum(times):.2f}")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure here")
        return 0
    import triton

    from isogauss_hf import _noise_triton as T

    print("load average before:", os.getloadavg())
    run("new (int32 keys, not specialized)", T)
    T._kernel = triton.jit(T._kernel.fn)  # the kernel without do_not_specialize, keys passed as they come
    T._as_int32 = lambda key: key
    run("old (plain triton.jit, raw keys)", T)
    print("load average after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
