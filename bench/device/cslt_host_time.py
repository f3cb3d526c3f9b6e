"""Host (wall) time of one eager torch._cslt_sparse_mm call, fp16 vs bf16, vs the GPU time of the same
call replayed in a CUDA graph. Checks whether eager fp16 cuSPARSELt calls are slow on the host."""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from llmsparse.kernels.dispatch import random_24  # noqa: E402

out = {}
for dtype in (torch.float16, torch.bfloat16):
    for (n, k, m) in [(4096, 4096, 4096), (11008, 4096, 4096), (4096, 4096, 16)]:
        w = random_24(n, k, dtype, "cuda")
        c = torch._cslt_compress(w)
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        for alg, tr in ((0, False), (1, True)):
            f = lambda: torch._cslt_sparse_mm(c, x.t(), transpose_result=tr, alg_id=alg)  # noqa: E731
            f()
            torch.cuda.synchronize()
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                f()
                torch.cuda.synchronize()
                ts.append((time.perf_counter() - t) * 1e3)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                f()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            g.replay()
            a.record()
            for _ in range(20):
                g.replay()
            b.record()
            torch.cuda.synchronize()
            key = f"{str(dtype)[6:]} {n}x{k} M={m} alg={alg} tr={int(tr)}"
            out[key] = {"eager_wall_ms_median": statistics.median(ts), "graph_gpu_ms": a.elapsed_time(b) / 20}
            print(key, {kk: round(v, 3) for kk, v in out[key].items()}, flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "cslt_host_time.json"), "w"), indent=1)
