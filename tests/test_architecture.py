"""The floors of DESIGN.md, checked from the source: who may import whom, and what the command
line loads before a model flag is given."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: repository folder -> import package
FOLDERS = {"warpcam/core": "warpcam.core", "kernels": "warpcam.kernels",
           "realtime": "warpcam.realtime", "training": "warpcam.training"}

#: the app floor: nothing below may import it
APP = ("warpcam.realtime.pipeline", "warpcam.realtime.cli", "warpcam.realtime.io",
       "warpcam.realtime.calibrate", "warpcam.realtime.analyze",
       "warpcam.realtime.panel", "warpcam.realtime.batch")
EFFECTS = ("warpcam.realtime.effects",)
RUNTIME = ("warpcam.realtime.runtime", "warpcam.realtime.tracker", "warpcam.realtime.smoothing",
           "warpcam.realtime.au",
           "warpcam.realtime.gaze_model")


def _modules(folder: str):
    pkg = FOLDERS[folder]
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT / folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join([pkg, *parts]), path


def _imports(name: str, path: Path):
    """Every module named by an import statement anywhere in the file (lazy ones included),
    relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for a in node.names:  # "from warpcam.realtime import pipeline"
                yield f"{mod}.{a.name}", node.lineno


def _violations(folder: str, forbidden, allowed_prefixes=None):
    bad = []
    for name, path in _modules(folder):
        for mod, line in _imports(name, path):
            if not mod.startswith("warpcam"):
                if mod.split(".")[0] in ("realtime", "kernels", "training", "benchmarks"):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports top-level {mod}")
                continue
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
            if allowed_prefixes is not None and not any(
                    mod == a or mod.startswith(a + ".") for a in allowed_prefixes) and mod != "warpcam":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod} (outside its floors)")
    return bad


def test_ground_floor_imports_only_itself():
    assert _violations("warpcam/core", (), allowed_prefixes=("warpcam.core",)) == []


def test_ground_floor_needs_no_torch():
    bad = [f"{p.relative_to(ROOT)}:{ln}" for n, p in _modules("warpcam/core")
           for m, ln in _imports(n, p) if m.split(".")[0] == "torch"]
    assert bad == []


def test_kernels_stand_on_the_ground_floor_only():
    assert _violations("kernels", (), allowed_prefixes=("warpcam.core", "warpcam.kernels")) == []


def test_training_never_imports_effects_or_the_app():
    assert _violations("training", APP + EFFECTS) == []


def test_runtime_and_effects_never_import_the_app():
    bad = []
    for name, path in _modules("realtime"):
        floor_effects = name.startswith(EFFECTS)
        floor_runtime = name.startswith(RUNTIME)
        if not (floor_effects or floor_runtime):
            continue
        forbidden = APP + (() if floor_effects else EFFECTS) + ("warpcam.training",)
        for mod, line in _imports(name, path):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert bad == []


def test_nothing_in_realtime_imports_training_at_module_level():
    """Run time never needs the training code: only lazily, inside a function of a subcommand
    (calibration), may the app reach it."""
    bad = []
    for name, path in _modules("realtime"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {m}" for m in mods
                    if m.startswith("warpcam.training")]
    assert bad == []


def test_cli_job_loads_no_training_code_and_deserialises_no_model(tmp_path):
    """A job without a model flag: no ``warpcam.training`` module is imported and
    ``torch.export.load`` is never called (checked in a fresh interpreter)."""
    import cv2

    from tests.realdata import astronaut_bgr

    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), astronaut_bgr())
    code = textwrap.dedent(f"""
        import sys
        calls = []
        try:
            import torch.export
            real = torch.export.load
            torch.export.load = lambda *a, **k: calls.append(a) or real(*a, **k)
        except ImportError:
            pass
        from warpcam.realtime import cli
        loaded_at_import = sorted(m for m in sys.modules if m.startswith("warpcam.training"))
        rc = cli.main(["--input", {str(photo)!r}, "--output", {str(tmp_path / 'out.png')!r},
                       "--gaze-pitch", "10", "--smile", "0.5", "--quiet"])
        training = sorted(m for m in sys.modules if m.startswith("warpcam.training"))
        print("RESULT", rc, len(calls), loaded_at_import, training)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, r.stdout + r.stderr
    assert line[0] == "RESULT 0 0 [] []", line[0]


@pytest.mark.parametrize("name", ["warpcam.realtime.cli"])
def test_cli_module_import_is_light(name):
    """Importing the CLI module (what ``warpcam --help`` does first) imports neither torch nor
    the training code."""
    code = (f"import sys, {name}; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('warpcam.training')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
