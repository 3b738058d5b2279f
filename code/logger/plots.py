"""Line plots of per-epoch logs, rendered as PNG and PDF bytes without a display (matplotlib's Agg canvas); the
experiment folder writes them (logger/experiment.py)."""

import io

PLOT_FORMATS = ("png", "pdf")


def render_series(title: str, ylabel: str, series: dict[str, list[float]]) -> dict[str, bytes]:
    """Plot each series against epochs 1, 2, ...; the file's bytes for each of `PLOT_FORMATS`."""
    # imported here: matplotlib is half a second of a training process's start, and torchrun's other processes
    # never plot
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure()
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, values in series.items():
        axes.plot(range(1, len(values) + 1), values, label=label, marker="." if len(values) < 50 else None)
    axes.set_title(title)
    axes.set_xlabel("Epochs")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.grid(True)
    axes.legend()
    rendered = {}
    for extension in PLOT_FORMATS:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension)
        rendered[extension] = buffer.getvalue()
    return rendered
