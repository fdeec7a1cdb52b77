"""ElasticModel.at_ratio on 1,000,000 random Gaussians (SH degree 3), one thread, median of 3,
for each transform; writes JSON to argv[1]."""
import json, statistics, sys, time
import torch
from splatfield.render import Gaussians
from splatfield.scenes.elastic import ElasticModel

torch.set_num_threads(1)
N = 1_000_000
g = torch.Generator().manual_seed(0)
gs = Gaussians(torch.randn(N, 3, generator=g), torch.rand(N, 3, generator=g) * -3 - 2, torch.randn(N, 4, generator=g),
               torch.randn(N, generator=g), torch.randn(N, 1, 3, generator=g), torch.randn(N, 15, 3, generator=g) * 0.1)
out = {"threads": 1, "gaussians": N, "sh_degree": 3, "transforms": {}}
for kind in ("table", "mlp"):
    m = ElasticModel(N, transform=kind)
    m.fit_normalisation(gs)
    m.importance.copy_(torch.rand(N, generator=g, dtype=torch.float64))
    m.views_seen.fill_(10)
    with torch.no_grad():  # trained-size values, not zeros
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    rows = []
    for r in (1.0, 0.5, 0.25, 0.1, 0.05, 0.01):
        ts = []
        for _ in range(3):
            t = time.perf_counter(); res = m.at_ratio(gs, r); ts.append(time.perf_counter() - t)
        rows.append({"ratio": r, "kept": len(res), "seconds_median": statistics.median(ts)})
        print(kind, r, len(res), round(statistics.median(ts), 3), flush=True)
    out["transforms"][kind] = rows
json.dump(out, open(sys.argv[1], "w"), indent=1)
