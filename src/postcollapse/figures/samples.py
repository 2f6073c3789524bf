"""Figure 3 of the paper: images decoded from prior samples, one row per beta."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["samples_figure", "montage"]


def montage(images: np.ndarray, *, shape: tuple[int, int] = (28, 28), pad: int = 2) -> np.ndarray:
    """Place ``n`` flat images side by side.

    Parameters
    ----------
    images : ndarray (n, h * w)
    shape : (h, w)
    pad : int
        White-ish gap between images, in pixels.

    Returns
    -------
    ndarray (h, n * (w + pad) - pad), values clipped to [0, 1].
    """
    images = np.asarray(images, dtype=float)
    h, w = shape
    if images.ndim != 2 or images.shape[1] != h * w:
        raise ValueError(f"images must have shape (n, {h * w}), got {images.shape}")
    n = images.shape[0]
    out = np.full((h, n * (w + pad) - pad), 0.5)
    for j in range(n):
        out[:, j * (w + pad): j * (w + pad) + w] = np.clip(images[j].reshape(h, w), 0.0, 1.0)
    return out


def samples_figure(
    samples: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    shape: tuple[int, int] = (28, 28),
    title: str = "",
):
    """One row of decoded prior samples per model.

    Parameters
    ----------
    samples : sequence of ndarray (n, h * w)
        Decoder means for z ~ N(0, I), one array per trained model (e.g. per beta).
    labels : sequence of str
        Row labels (e.g. beta and the number of surviving modes), same length.
    shape : (h, w)
        Image shape.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if len(samples) != len(labels):
        raise ValueError(f"got {len(samples)} sample arrays but {len(labels)} labels")
    if len(samples) == 0:
        raise ValueError("samples is empty: give at least one array of images")
    rows = [montage(s, shape=shape) for s in samples]
    width = max(r.shape[1] for r in rows)
    fig = Figure(figsize=(1.0 + width / 28 * 0.85, 0.6 + 0.95 * len(rows)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, img, lab in zip(axes, rows, labels, strict=True):
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=9)
        for s in ax.spines.values():
            s.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
