"""Write a figure as PNG and PDF, atomically (a reader never sees half a file)."""

from __future__ import annotations

from pathlib import Path

from postcollapse._io import atomic_path

__all__ = ["save_figure"]


def save_figure(fig, stem, *, formats=("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (or ``formats``); return the paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    stem = Path(stem)
    paths = []
    for ext in formats:
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi)
        paths.append(path)
    return paths
