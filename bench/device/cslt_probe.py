"""Where does the time of cuSPARSELt fp16 go? Stock to_sparse_semi_structured + F.linear vs direct
torch._cslt_sparse_mm calls (result layouts, copy or not), CUDA-graph replays. H100 probe."""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.getcwd())
from llmsparse.kernels.dispatch import random_24  # noqa: E402
from llmsparse.kernels.timing import time_call  # noqa: E402

out = {}
for dtype in (torch.float16, torch.bfloat16):
    for (n, k) in [(4096, 4096), (11008, 4096), (8192, 28672)]:
        for m in (1024, 4096, 16384):
            sets = []
            for _ in range(2):
                w = random_24(n, k, dtype, "cuda")
                sets.append(dict(w=w, c=torch._cslt_compress(w), st=torch.sparse.to_sparse_semi_structured(w),
                                 x=torch.randn(m, k, device="cuda", dtype=dtype)))
            st0 = sets[0]["st"]
            r = {"stock_attrs": {a: str(getattr(st0, a, None)) for a in ("fuse_transpose_cusparselt", "alg_id_cusparselt")}}

            def T(f):
                return time_call(lambda s: f(s), [(s,) for s in sets]) * 1e3

            r["dense"] = T(lambda s: F.linear(s["x"], s["w"]))
            r["stock"] = T(lambda s: F.linear(s["x"], s["st"]))
            r["stock_contig"] = T(lambda s: F.linear(s["x"], s["st"]).contiguous())
            for a in (0, 1, 2):
                try:
                    r[f"nt_a{a}"] = T(lambda s, a=a: torch._cslt_sparse_mm(s["c"], s["x"].t(), alg_id=a).t())
                    r[f"nt_copy_a{a}"] = T(lambda s, a=a: torch._cslt_sparse_mm(s["c"], s["x"].t(), alg_id=a).t().contiguous())
                    r[f"tr_a{a}"] = T(lambda s, a=a: torch._cslt_sparse_mm(s["c"], s["x"].t(), transpose_result=True, alg_id=a))
                except Exception as e:
                    r[f"a{a}_error"] = str(e)[:100]
            try:
                xt = [s["x"].t().contiguous() for s in sets]  # x^T row-major [K, M]
                r["nt_xrow_a0"] = time_call(lambda s, xx: torch._cslt_sparse_mm(s["c"], xx).t(),
                                            [(s, xx) for s, xx in zip(sets, xt)]) * 1e3
                r["tr_xrow_a0"] = time_call(lambda s, xx: torch._cslt_sparse_mm(s["c"], xx, transpose_result=True),
                                            [(s, xx) for s, xx in zip(sets, xt)]) * 1e3
            except Exception as e:
                r["xrow_error"] = str(e)[:100]
            key = f"{str(dtype)[6:]} {n}x{k} M={m}"
            out[key] = r
            print(key, " ".join(f"{kk}={v:.1f}" if isinstance(v, float) else f"{kk}={v}" for kk, v in r.items()), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "cslt_probe.json"), "w"), indent=1)
