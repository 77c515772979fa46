"""Datasets: every source format loads into one :class:`~ferkit.data.base.FaceDataset`.

Formats (``format=`` or detected from the path by :func:`detect_format`):

=========  ===========================================================================================
fer2013    a FER2013 CSV (``emotion,pixels[,Usage]``), or a folder holding exactly one CSV
folder     ``ROOT/{train,val|validation,test}/<class>/*.jpg`` or ``ROOT/<class>/*.jpg`` (incl. me/not_me)
affectnet  ``ROOT/images/<id>.jpg`` + ``ROOT/annotations/<id>_{exp,val,aro,lnd}.npy`` [+ ``splits.csv``]
idx        MNIST / Fashion-MNIST ``train-images-idx3-ubyte[.gz]`` ... (a folder or one of its files)
=========  ===========================================================================================

``synth`` (what ``ferkit data synth`` writes) is one of these layouts and is detected as such.
Loaders decode once into the memory-mapped cache of :mod:`ferkit.data.cache`.

This package only re-exports: :mod:`~ferkit.data.loading` (detection, :func:`load_dataset`),
:mod:`~ferkit.data.inspection` (``ferkit data inspect``), :mod:`~ferkit.data.fetch` (``ferkit data fetch``).
It imports no loader (nor PIL) until one is needed.
"""

from __future__ import annotations

from ferkit.data.base import FaceDataset, Problem, Split
from ferkit.data.inspection import (
    BINARY_IMBALANCE_RATIO,
    IMBALANCE_RATIO,
    format_inspection,
    imbalance_warning,
    inspect_dataset,
)
from ferkit.data.loading import FORMATS, LAYOUTS, detect_format, load_dataset

__all__ = [
    "BINARY_IMBALANCE_RATIO",
    "FORMATS",
    "IMBALANCE_RATIO",
    "LAYOUTS",
    "FaceDataset",
    "Problem",
    "Split",
    "detect_format",
    "format_inspection",
    "imbalance_warning",
    "inspect_dataset",
    "load_dataset",
]
