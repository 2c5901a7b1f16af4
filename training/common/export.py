"""Writing a model artifact safely: one save-and-verify step for every exporter.

``torch.export.save`` has no option to forbid pickling (it pickles tensor subclasses, custom
objects and the sample inputs), so the archive is written under a temporary name, read back
with the runtime's own check (:func:`warpcam.core.artifact.read_meta`) and renamed into place
only when the loader would accept it and the metadata reads back unchanged.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from warpcam.core import artifact
from warpcam.core.artifact import ArtifactError, ArtifactMeta


class ExportError(RuntimeError):
    """An export that would not load safely (one-line message); nothing was written."""


def save_verified(ep, meta: dict, out) -> Path:
    """Save the exported program ``ep`` as ``out`` (``.pt2``, ``meta`` embedded as
    ``warpcam_meta.json``) and ``out.json``, after checking that the model runtime accepts it.

    Raises:
        ArtifactError: ``meta`` does not fit the artifact schema.
        ExportError: the archive would need unpickling to load, or the metadata does not read
            back unchanged (no file is left behind).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    m = ArtifactMeta.from_dict(meta)  # one schema for writer and reader (ArtifactError)
    tmp = out.with_name(out.name + ".tmp.pt2")
    with warnings.catch_warnings():  # torch's note about CPU-only weight groups
        warnings.filterwarnings("ignore", message="No complete tensor found")
        torch.export.save(ep, str(tmp), extra_files=artifact.meta_extra_files(m))
    try:  # the loader's check: no entry may need unpickling
        back = artifact.read_meta(tmp)
    except ArtifactError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"export refused, the archive would not load safely: {exc}") from None
    if back != m:
        tmp.unlink(missing_ok=True)
        raise ExportError("export refused: the metadata does not read back unchanged")
    tmp.replace(out)
    artifact.write_sidecar(m, out)
    return out
