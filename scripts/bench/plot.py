#!/usr/bin/env python3
"""Draws the latency distributions of the fixed-rate runs: python3 plot.py OUT_DIR PNG.

One panel per protocol, rate and connection layout; in each, every request's latency
(oha's CSV, with its latency correction) as a percentile curve for blastguard (one line
per review kind), the two baselines and nginx. The x axis stretches the tail: 50%, 90%, 99%, 99.9%.
"""
import csv
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    ("blastguard", "person"): ("a person's change", "#1f77b4", "-"),
    ("blastguard", "ai-allow"): ("AI change, allowed", "#2ca02c", "-"),
    ("blastguard", "ai-deny"): ("AI change, denied with payload", "#d62728", "-"),
    ("blastguard", "ai-approved"): ("AI change, 2-signature approval", "#9467bd", "-"),
    ("baseline", "baseline"): ("baseline: hyper + rustls + tokio, blastguard's settings", "#000000", "--"),
    ("hyper-defaults", "baseline"): ("hyper-defaults: hyper + rustls + tokio, defaults", "#ff7f0e", "--"),
    ("nginx", "baseline"): ("nginx, fixed answer", "#7f7f7f", ":"),
}


def main():
    out, png = sys.argv[1], sys.argv[2]
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    runs = results["fixed"]
    panels = sorted({(r["protocol"], r["rate"], bool(r.get("wide"))) for r in runs},
                    key=lambda k: (k[0] != "h2", k[1]))
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 4.2 * rows), sharey=True, squeeze=False)
    top = 3.0  # up to 99.9%
    for ax, (proto, rate, wide) in zip(axes.flat, panels):
        for run in runs:
            if run["protocol"] != proto or run["rate"] != rate or bool(run.get("wide")) != wide:
                continue
            label, color, dash = STYLE.get((run["server"], run["kind"]), (run["server"], None, "-"))
            with open(os.path.join(out, run["csv"])) as f:
                reader = csv.reader(f)
                next(reader)
                lat = sorted(float(row[4]) * 1e3 for row in reader)
            n = len(lat)
            xs, ys = [], []
            for i, v in enumerate(lat):
                p = (i + 1) / n
                if p >= 1.0:
                    break
                x = -math.log10(1 - p)
                if x > top:
                    break
                xs.append(x)
                ys.append(v)
            ax.plot(xs, ys, dash, color=color, label=label, linewidth=1.4)
        layout = "4 conn. × 4 streams" if wide else "2 conn. × 8 streams" if proto == "h2" else "16 conn."
        ax.set_title(f"{'HTTP/2' if proto == 'h2' else 'HTTP/1.1'}, {rate} requests/s, {layout} (TLS, 12 KB)")
        ax.set_xticks([0, math.log10(2), 1, 2, 3])
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%"])
        ax.set_xlim(0, top)
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("latency, ms (log scale)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    seen = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    handles, labels = list(seen.values()), list(seen.keys())
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    m = results["machine"]
    fig.suptitle(f"blastguard vs two baselines: latency at fixed rates ({m['commit']}, {m['nproc']} cores shared "
                 "with the load generator, oha with latency correction)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
