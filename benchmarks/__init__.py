"""Measurement scripts: each prints a table and records its figures as JSON in
``benchmarks/results/`` (run them with ``python -m benchmarks.NAME --help``)."""
import json
import os
import platform
from pathlib import Path


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON to ``path`` (creating its folder) and say so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG at 110 dpi (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info(loadavg_start=None) -> dict:
    """What the figures were measured on: CPU, cores, Python, and the load average now (and at
    the start of the measurement when given): this machine is shared, so figures from a loaded
    run are not comparable with a quiet one's."""
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               python=platform.python_version(), loadavg=load)
    if loadavg_start is not None:
        out["loadavg_start"] = loadavg_start
    return out
