"""
The PNG chart of the sweeps: one panel per sweep, one line per series,
log-scaled x (clients, VMs, operations in flight).
"""


def draw(sweeps, path):
    """Draw ``sweeps`` ({title: {series: [(x, y)]}}) into path; returns
    the path, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        print("(no chart: matplotlib is not installed; "
              "pip install '.[bench]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = sorted(sweeps)
    cols = min(3, len(titles))
    rows = (len(titles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows),
                             squeeze=False)
    for ax, title in zip(axes.flat, titles):
        for series, points in sorted(sweeps[title].items()):
            points = sorted(p for p in points if p[1] is not None)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points],
                        marker="o", label=series)
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
