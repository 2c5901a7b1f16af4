"""A model file is untrusted input: crafted archives made from the bundled gaze model are
refused before anything in them is deserialised, through the loader and through the CLI (one
line, exit status 2, no traceback, no torch warning), and their payload never runs.

Each crafted archive carries a payload that would create a marker file; a control test shows
that plain ``torch.export.load`` does run several of them (so the refusals are meaningful)."""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from warpcam import models
from warpcam.core.artifact import (META_NAME, ArtifactError, ArtifactMeta, check_archive,
                                   read_meta)
from warpcam.realtime.gaze_model import GazeModelError, load_gaze_model
from warpcam.realtime.runtime import ModelError, load_model
from tests import realdata

REPO = Path(__file__).resolve().parents[1]
BUNDLED = models.path("gaze_deepwarp.pt2")


class _Payload:
    """Pickles as a call: ``func(*args)`` runs when the pickle is loaded."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _open_marker(marker: Path) -> bytes:
    return pickle.dumps(_Payload(open, (str(marker), "w")), protocol=2)


def _system_marker(marker: Path) -> bytes:
    return pickle.dumps(_Payload(os.system, (f"touch '{marker}'",)), protocol=2)


def _torch_zip_with(pkl: bytes) -> bytes:
    """A torch.save-style zip whose data.pkl is ``pkl``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _rewrite(dst: Path, edit, add=None):
    """Copy the bundled archive to ``dst``; ``edit(rel, data) -> bytes | None`` per member
    (``None`` drops it; ``rel`` without the root folder); ``add``: ``{rel: bytes}``."""
    with zipfile.ZipFile(BUNDLED) as src, zipfile.ZipFile(dst, "w") as out:
        root = src.namelist()[0].split("/", 1)[0]
        for n in src.namelist():
            rel = n.split("/", 1)[1]
            data = edit(rel, src.read(n))
            if data is not None:
                out.writestr(n, data)
        for rel, data in (add or {}).items():
            out.writestr(f"{root}/{rel}", data)
    return dst


def _edit_json(rel_want, fn):
    def edit(rel, data):
        if rel == rel_want:
            obj = json.loads(data)
            obj = fn(obj)
            return json.dumps(obj).encode()
        return data
    return edit


def _pickled_weight(dst, marker):
    """(a) one weight switched to use_pickle, its payload a pickle that writes the marker."""
    with zipfile.ZipFile(BUNDLED) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith("weights_config.json"))
        target = json.loads(z.read(cfg_name))["config"]["net.embed.0.weight"]["path_name"]
    payload = _open_marker(marker)

    def edit(rel, d):
        if rel == f"data/weights/{target}":
            return payload
        if rel.endswith("weights_config.json"):
            return json.dumps(_flip_cfg(json.loads(d), {target})).encode()
        return d
    return _rewrite(dst, edit)


def _flip_cfg(cfg, paths=None):
    for e in cfg["config"].values():
        if paths is None or e["path_name"] in paths:
            e["use_pickle"] = True
    return cfg


def _all_weights_pickled(dst, marker):
    """(b) every weight file replaced by such a pickle, and flagged."""
    payload = _system_marker(marker)

    def edit(rel, d):
        if rel.startswith("data/weights/weight_"):
            return payload
        if rel.endswith("weights_config.json"):
            return json.dumps(_flip_cfg(json.loads(d))).encode()
        return d
    return _rewrite(dst, edit)


def _plain_pickle(dst, marker):
    """(c) a plain pickle named .pt2."""
    dst.write_bytes(_open_marker(marker))
    return dst


def _pickled_constant(dst, marker):
    payload = _open_marker(marker)

    def edit(rel, d):
        if rel == "data/constants/tensor_1":
            return payload
        if rel.endswith("constants_config.json"):
            return json.dumps(_flip_cfg(json.loads(d), {"tensor_1"})).encode()
        return d
    return _rewrite(dst, edit)


def _custom_object(dst, marker):
    payload = _open_marker(marker)

    def edit(rel, d):
        if rel.endswith("constants_config.json"):
            cfg = json.loads(d)
            cfg["config"]["evil"] = dict(path_name="opaque_obj_0", is_param=False,
                                         use_pickle=False, tensor_meta=None)
            return json.dumps(cfg).encode()
        return d
    return _rewrite(dst, edit, add={"data/constants/opaque_obj_0": payload})


def _pkl_member(dst, marker):
    return _rewrite(dst, lambda rel, d: d, add={"extra/payload.pkl": _open_marker(marker)})


def _sample_inputs(dst, marker):
    """torch.load(weights_only=True) fails on it and torch retries with weights_only=False."""
    payload = _torch_zip_with(_open_marker(marker))
    return _rewrite(dst, lambda rel, d: payload if rel.startswith("data/sample_inputs/") else d)


def _sympy_expr(dst, marker):
    """A symbolic shape expression: torch hands it to sympy.sympify, which evaluates it."""
    code = f"__import__('builtins').open('{marker}', 'w') and Symbol('s45')"

    def edit(rel, d):
        if rel == "models/model.json":
            return d.replace(b"Symbol('s45', positive=True, integer=True)",
                             code.encode())
        return d
    return _rewrite(dst, edit)


def _guard_code(dst, marker):
    """Guard code: exec'd by ExportedProgram.module()."""
    def change(prog):
        prog["guards_code"].append(f"__import__('builtins').open('{marker}', 'w') is not None")
        return prog
    return _rewrite(dst, _edit_json("models/model.json", change))


def _legacy_weights(dst, marker):
    return _rewrite(dst, lambda rel, d: d, add={"data/weights/model.pt": _open_marker(marker)})


def _meta_list(dst, marker):
    return _rewrite(dst, lambda rel, d: b"[1, 2, 3]" if rel == f"extra/{META_NAME}" else d)


def _meta_types(dst, marker):
    def change(m):
        m["crop"]["h"] = "41"
        return m
    return _rewrite(dst, _edit_json(f"extra/{META_NAME}", change))


def _meta_missing_crop(dst, marker):
    def change(m):
        del m["crop"]
        return m
    return _rewrite(dst, _edit_json(f"extra/{META_NAME}", change))


def _meta_not_json(dst, marker):
    return _rewrite(dst, lambda rel, d: b"{kind: gaze" if rel == f"extra/{META_NAME}" else d)


def _no_meta(dst, marker):
    """(e) a zip without the metadata."""
    return _rewrite(dst, lambda rel, d: None if rel == f"extra/{META_NAME}" else d)


CRAFTED = {
    "pickled_weight": (_pickled_weight, "use_pickle"),
    "all_weights_pickled": (_all_weights_pickled, "use_pickle"),
    "plain_pickle": (_plain_pickle, "not a .pt2 archive"),
    "pickled_constant": (_pickled_constant, "use_pickle"),
    "custom_object": (_custom_object, "custom object"),
    "pkl_member": (_pkl_member, "pickle member"),
    "sample_inputs": (_sample_inputs, "would import"),
    "sympy_expr": (_sympy_expr, "evaluated"),
    "guard_code": (_guard_code, "evaluated"),
    "legacy_weights": (_legacy_weights, "pickled member"),
    "meta_list": (_meta_list, "JSON object, not a JSON list"),
    "meta_types": (_meta_types, "crop.h must be an integer"),
    "meta_missing_crop": (_meta_missing_crop, "missing crop"),
    "meta_not_json": (_meta_not_json, "unreadable metadata"),
    "no_meta": (_no_meta, "without warpcam_meta.json"),
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A shared real face photo (the astronaut when ../shared/data/real is absent)."""
    p = realdata.REAL / "images" / "mediapipe" / "business-person.png"
    if p.is_file():
        return p
    import cv2
    q = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(q), realdata.astronaut_bgr())
    return q


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archive_is_refused_by_the_loader(tmp_path, case):
    make, why = CRAFTED[case]
    marker = tmp_path / "marker"
    path = make(tmp_path / f"{case}.pt2", marker)
    with pytest.raises(ArtifactError, match=why) as exc:
        read_meta(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(GazeModelError, match=why) as exc:
        load_gaze_model(path, device="cpu", threads=None)
    assert "\n" not in str(exc.value) and isinstance(exc.value, ModelError)
    with pytest.raises(ModelError, match=why):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archive_is_refused_by_the_cli(tmp_path, photo, case):
    make, why = CRAFTED[case]
    marker = tmp_path / "marker"
    path = make(tmp_path / f"{case}.pt2", marker)
    out = tmp_path / "out.png"
    r = subprocess.run([sys.executable, "-m", "warpcam.realtime.cli", "--input", str(photo),
                        "--output", str(out), "--gaze-model", str(path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = r.stderr.splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("warpcam: error:"), r.stderr
    assert why in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert "Warning" not in r.stderr and "torch" not in r.stderr.lower().replace(
        "torch-", "")
    assert not out.exists() and not marker.exists()


@pytest.mark.parametrize("case", ["pickled_weight", "all_weights_pickled", "pickled_constant",
                                  "sample_inputs", "sympy_expr", "guard_code"])
def test_plain_torch_load_would_run_the_payload(tmp_path, case):
    """Control: the crafted files are real attacks on ``torch.export.load`` (then
    ``module()`` and one call) in torch 2.13 (run in a child process; the payload only creates the marker)."""
    make, _ = CRAFTED[case]
    marker = tmp_path / "marker"
    path = make(tmp_path / f"{case}.pt2", marker)
    code = ("import torch, warnings\nwarnings.simplefilter('ignore')\n"
            f"try:\n    ep = torch.export.load({str(path)!r})\n    ep.module()(*ep.example_inputs[0])\n"
            "except Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=300)
    if not marker.exists():
        pytest.skip(f"this torch no longer runs the {case} payload")
    assert marker.exists()


def test_bundled_model_passes_the_check_and_loads(tmp_path):
    meta = check_archive(BUNDLED)
    assert isinstance(meta, dict) and meta["kind"] == "warpcam.gaze.deepwarp"
    copy = tmp_path / "copy.pt2"
    copy.write_bytes(BUNDLED.read_bytes())
    m = load_gaze_model(copy, device="cpu", threads=None)
    assert m.backend == "torch-cpu" and m.artifact.crop_h == 41 and m.artifact.crop_w == 51
    flow, w, pal = m(np.full((1, 3, 41, 51), 0.5, np.float32), np.zeros((1, 2), np.float32),
                     np.zeros((1, 7, 2), np.float32))
    assert flow.shape == (1, 41, 51, 2) and flow.dtype == np.float32
    rt = load_model(copy, kind="warpcam.gaze.deepwarp", device="cpu", threads=None)
    assert (rt.crop_h, rt.crop_w, rt.roi) == (41, 51, "eye")
    assert rt.output_names == ("flow", "lcm_weight", "palette")
    assert rt.conditioning.order == ("pitch", "yaw") and rt.conditioning.units == "degrees"
    outs = rt(*rt.example_inputs(3))
    assert [o.shape for o in outs] == [(3, 2, 41, 51), (3, 1, 41, 51), (3,)]
    with pytest.raises(ModelError, match="not a 'warpcam.smile"):
        load_model(copy, kind="warpcam.smile.deepwarp")


def test_metadata_roundtrips_through_the_schema(tmp_path):
    raw = check_archive(BUNDLED)
    meta = ArtifactMeta.from_dict(raw)
    assert meta.to_dict() == raw
    assert ArtifactMeta.from_dict(json.loads(meta.to_json())) == meta
    assert json.loads(BUNDLED.with_suffix(".json").read_text()) == raw
    # a fresh export writes the same schema into the archive and the sidecar
    import torch
    from warpcam.training.gaze.export import export, metadata
    from warpcam.training.gaze.model import DeepWarpGaze, GazeNetConfig
    torch.manual_seed(0)
    net = DeepWarpGaze(GazeNetConfig(width=4, fine_width=4, anchors=True))
    out = export(net, metadata(net.cfg, {"extra": {"data": ["test"]}, "step": 1}),
                 tmp_path / "tiny.pt2")
    m = read_meta(out)
    assert m.kind == "warpcam.gaze.deepwarp" and (m.crop_h, m.crop_w) == (41, 51)
    assert m.training.data == ("test",) and m.training.steps == 1
    assert ArtifactMeta.from_dict(json.loads(out.with_suffix(".json").read_text())) == m
    assert ArtifactMeta.from_dict(m.to_dict()) == m
    assert load_gaze_model(out, device="cpu", threads=None).meta == m.to_dict()


@pytest.mark.parametrize("bad, why", [
    ([], "JSON object, not a JSON list"), ("x", "not a JSON str"),
    ({"crop": {"h": 41, "w": 51}}, "missing kind"),
    ({"kind": 3}, "kind must be str"),
    ({"kind": "k", "format": 99}, "format 99"),
    ({"kind": "k", "format": 1, "roi": "nose"}, "roi 'nose'"),
    ({"kind": "k", "format": 1, "roi": "eye", "crop": {"h": True, "w": 5}}, "crop.h"),
    ({"kind": "k", "format": 1, "roi": "eye", "crop": {"h": 4, "w": 5}, "input": [1],
      "outputs": {"y": "(N, 3, 4, 5)"}},
     "input must be dict"),
])
def test_schema_rejects_malformed_metadata(bad, why):
    with pytest.raises(ArtifactError, match=why) as exc:
        ArtifactMeta.from_dict(bad)
    assert "\n" not in str(exc.value)
