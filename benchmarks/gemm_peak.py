"""The machine's measured fp32 matrix-multiply peak: the bound every training step is compared with.

``torch.mm`` of two n×n float32 matrices costs 2·n³ FLOPs; the best of a few repetitions (after a
warm-up) at a large n is the GEMM peak of this process with its thread settings.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.harness import timed


def gemm_peak(n: int = 4096, repeats: int = 5, device: str = "cpu") -> dict:
    """Best and median GFLOP/s of ``torch.mm`` at n×n×n, fp32."""
    import torch

    from medlora.device import configure_threads

    threads = configure_threads(None)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    out = torch.empty(n, n, device=dev)
    timed(lambda: torch.mm(a, b, out=out), sync)  # warm-up (MKL/oneDNN kernels, page faults)
    times = sorted(timed(lambda: torch.mm(a, b, out=out), sync) for _ in range(repeats))
    flops = 2.0 * n**3
    return {"n": n, "threads": threads, "gflops_best": flops / times[0] / 1e9,
            "gflops_median": flops / times[len(times) // 2] / 1e9}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(json.dumps(gemm_peak(args.n, args.repeats), indent=2))


if __name__ == "__main__":
    main()
