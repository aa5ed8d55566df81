#!/usr/bin/env python3
"""Plots of `tstl report`: plot_report.py REPORT_DATA.json OUTPUT_DIR.

Reads the series tstl wrote (report_data.json: {"ppl": [...], "passkey": [...]}, each series
{"label", "variant", "method", "seeds", "train_len", "lengths", "values", "spread"}) and writes
OUTPUT_DIR/ppl.png (perplexity vs length, log-log, the training length marked) and
OUTPUT_DIR/passkey.png (accuracy vs length, log x). Series pooled over seeds ("seeds" > 1) are
drawn as the mean with error bars of one standard deviation ("spread"). With more than
MAX_SERIES_PER_PANEL series, one panel per method, each holding every variant evaluated with it.
Exit status 3 means matplotlib is missing (tstl then skips the plots with a warning).
"""
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except ImportError:
    print("plot_report.py: matplotlib is not installed", file=sys.stderr)
    sys.exit(3)


MAX_SERIES_PER_PANEL = 8


def mark_train_lengths(ax, series):
    for i, train_len in enumerate(sorted({s["train_len"] for s in series})):
        ax.axvline(train_len, color="grey", linestyle="--", linewidth=1,
                   label="training length" if i == 0 else None)


def draw_panel(ax, series, ylabel, title, log_y, ylim):
    for s in series:
        spread = s.get("spread") or [0] * len(s["values"])
        points = [(x, y, e) for x, y, e in zip(s["lengths"], s["values"], spread) if y is not None]
        if not points:
            continue
        xs, ys, es = zip(*points)
        label = s["label"] + (" (%d seeds)" % s["seeds"] if s.get("seeds", 1) > 1 else "")
        if s.get("seeds", 1) > 1:
            ax.errorbar(xs, ys, yerr=[e or 0 for e in es], marker="o", capsize=3, label=label)
        else:
            ax.plot(xs, ys, marker="o", label=label)
    mark_train_lengths(ax, series)
    ax.set_xscale("log", base=2)
    lengths = sorted({x for s in series for x in s["lengths"]})
    ax.set_xticks(lengths)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        # Within one decade there is no major tick: label the minor ones instead.
        ys = [y for s in series for y in s["values"] if y is not None and y > 0]
        narrow = ys and max(ys) / min(ys) < 10
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.4g") if narrow
                                     else matplotlib.ticker.NullFormatter())
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot(series, path, ylabel, title, log_y, ylim=None):
    methods = sorted({s.get("method", "none") for s in series})
    if len(series) <= MAX_SERIES_PER_PANEL or len(methods) == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw_panel(ax, series, ylabel, title, log_y, ylim)
    else:
        columns = 2
        rows = (len(methods) + columns - 1) // columns
        fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.5 * rows), squeeze=False)
        for ax, method in zip(axes.flat, methods):
            draw_panel(ax, [s for s in series if s.get("method", "none") == method], ylabel,
                       "%s: %s" % (title, method), log_y, ylim)
        for ax in list(axes.flat)[len(methods):]:
            ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        data = json.load(f)
    out = sys.argv[2]
    if data.get("ppl"):
        plot(data["ppl"], os.path.join(out, "ppl.png"), "perplexity", "Perplexity vs evaluation length", True)
    if data.get("passkey"):
        plot(data["passkey"], os.path.join(out, "passkey.png"), "accuracy", "Passkey retrieval accuracy", False,
             (-0.02, 1.02))
    return 0


if __name__ == "__main__":
    sys.exit(main())
