"""Bundled model artifacts (package data of :mod:`warpcam.models`).

Find them with :func:`path`, which works from a checkout, an editable install and a wheel.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """Filesystem path of the bundled artifact ``name`` (for example ``"gaze_deepwarp.pt2"``).

    Raises:
        FileNotFoundError: no bundled file of that name.
    """
    p = Path(str(resources.files(__name__) / name))
    if not p.is_file():
        raise FileNotFoundError(f"bundled model {name} not found in {p.parent}")
    return p
