"""The model artifact format: a ``torch.export`` archive (``NAME.pt2``) with JSON metadata.

Ground floor: standard library and numpy only (no torch), so the writer (``training/``), the
reader (:mod:`warpcam.realtime.runtime`) and tools agree on one definition.

An artifact is a zip archive written by ``torch.export.save`` with the metadata embedded as the
extra file :data:`META_NAME` (``<root>/extra/warpcam_meta.json``) and, by convention, the same
JSON beside it as ``NAME.json``. The metadata is described by :class:`ArtifactMeta`.

A model file is untrusted input. :func:`check_archive` inspects the archive *before* anything in
it is deserialised and refuses every member through which ``torch.export.load`` (torch 2.13,
``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde/serialize.py``) would unpickle
or run code:

- any payload entry of a ``*_weights_config.json`` / ``*_constants_config.json`` with
  ``use_pickle`` not exactly ``false`` (torch calls ``torch.load(..., weights_only=False)`` on it);
- custom-object and opaque-object constants (``custom_obj_*``: ``torch._C._pickle_load_obj``;
  ``opaque_obj_*``: ``pickle.loads``) and any constant that is not a raw ``tensor_*`` payload;
- legacy weight / constant files (``data/weights/<model>.pt``, ``data/constants/<model>.pt``:
  unpickled by the deserialiser) and the pre-2.8 layout (``serialized_*.pt``);
- AOTInductor packages (``data/aotinductor/``: native shared libraries are loaded) and any
  other member outside the known layout, and any ``.pkl`` member;
- sample inputs (``data/sample_inputs/<model>.pt``, a ``torch.save`` zip that torch loads with
  ``weights_only=True`` and, when that fails, *again with* ``weights_only=False``) unless their
  pickle only names the plain tensor-rebuild globals (checked opcode by opcode, not loaded);
- program JSON that would be evaluated: symbolic-shape expressions (``expr_str``, given to
  ``sympy.sympify``, which ``eval`` s), guard code (``guards_code``, ``exec`` 'd by
  ``ExportedProgram.module()``) and pytree specs that import modules (``defaultdict``, enums)
  are accepted only in a restricted token grammar; graph node targets must be ``torch.ops.*``,
  ``_operator.*`` or ``math.*``; torchbind custom-object values are refused.

Errors are :class:`ArtifactError` (a ``ValueError``) with a one-line message.
"""
from __future__ import annotations

import io
import json
import pickletools
import re
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

#: Name of the metadata extra file inside the archive (``<root>/extra/META_NAME``).
META_NAME = "warpcam_meta.json"
#: The metadata format version this warpcam writes and reads.
FORMAT_VERSION = 1
#: ROI kinds an artifact may be trained on.
ROIS = ("eye", "mouth", "face")
#: Tensor layouts of the image input.
LAYOUTS = ("NCHW", "NHWC")

_MAX_META = 1 << 20
_MAX_JSON = 64 << 20
_MAX_PICKLE = 16 << 20


class ArtifactError(ValueError):
    """A model file that cannot be used: not an archive, an entry that would be unpickled or
    evaluated, missing or malformed metadata. The message is one line."""


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def _fail(msg: str):
    raise ArtifactError(_one_line(msg))


# --------------------------------------------------------------------------- schema

def _need(d: dict, key: str, types, where: str, optional: bool = False, default=None):
    if key not in d or d[key] is None:
        if optional:
            return default
        _fail(f"metadata: missing {where}{key}")
    v = d[key]
    if types is int and (isinstance(v, bool) or not isinstance(v, int)):
        _fail(f"metadata: {where}{key} must be an integer, not {type(v).__name__}")
    if types is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(f"metadata: {where}{key} must be a number, not {type(v).__name__}")
        return float(v)
    if types not in (int, float) and not isinstance(v, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        _fail(f"metadata: {where}{key} must be {names}, not {type(v).__name__}")
    return v


def _str_list(v, where: str) -> Tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        _fail(f"metadata: {where} must be a list of strings")
    return tuple(v)


@dataclass(frozen=True)
class InputSpec:
    """The image input: ``layout`` (``"NCHW"`` or ``"NHWC"``), ``channels`` (e.g. ``"RGB"``),
    ``range`` (``(lo, hi)`` float value range, e.g. ``(0.0, 1.0)``)."""

    layout: str = "NCHW"
    channels: str = "RGB"
    range: Tuple[float, float] = (0.0, 1.0)

    @classmethod
    def from_dict(cls, d) -> "InputSpec":
        if not isinstance(d, dict):
            _fail(f"metadata: input must be an object, not {type(d).__name__}")
        layout = _need(d, "layout", str, "input.")
        if layout not in LAYOUTS:
            _fail(f"metadata: input.layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        channels = _need(d, "channels", str, "input.")
        rng = d.get("range")
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rng)
                or not rng[0] < rng[1]):
            _fail("metadata: input.range must be [lo, hi] numbers with lo < hi")
        return cls(layout=layout, channels=channels, range=(float(rng[0]), float(rng[1])))

    def to_dict(self) -> dict:
        return dict(layout=self.layout, channels=self.channels, range=list(self.range))


@dataclass(frozen=True)
class ConditioningSpec:
    """What the network is conditioned on: ``name`` (free text), ``order`` (the components of
    the conditioning vector, in order), ``units`` (e.g. ``"degrees"``), ``convention`` (signs,
    free text)."""

    name: str
    order: Tuple[str, ...] = ()
    units: str = ""
    convention: str = ""

    @classmethod
    def from_dict(cls, d, units_default: Optional[str] = None) -> "ConditioningSpec":
        if not isinstance(d, dict):
            _fail(f"metadata: conditioning must be an object, not {type(d).__name__}")
        units = d.get("units", units_default)
        if units is not None and not isinstance(units, str):
            _fail("metadata: conditioning.units must be a string")
        return cls(name=_need(d, "name", str, "conditioning."),
                   order=_str_list(d.get("order", []), "conditioning.order"),
                   units=units or "",
                   convention=_need(d, "convention", str, "conditioning.", True, ""))

    def to_dict(self) -> dict:
        out: Dict[str, Any] = dict(name=self.name, order=list(self.order))
        if self.units:
            out["units"] = self.units
        if self.convention:
            out["convention"] = self.convention
        return out


@dataclass(frozen=True)
class OutputSpec:
    """One program output: ``name`` and ``description`` (shape, units, range as text)."""

    name: str
    description: str


@dataclass(frozen=True)
class TrainingInfo:
    """Where the weights came from (stored as top-level metadata keys): ``data`` (dataset
    names), ``sizes`` (samples per dataset), ``steps``, ``epochs``, ``commit``, ``seed``,
    ``exported`` (UTC ISO time), ``minutes`` (training wall time), ``notes``."""

    data: Tuple[str, ...] = ()
    sizes: Tuple[int, ...] = ()
    steps: Optional[int] = None
    epochs: Optional[int] = None
    commit: Optional[str] = None
    seed: Optional[int] = None
    exported: Optional[str] = None
    minutes: Optional[float] = None
    notes: Optional[str] = None

    # metadata key -> field
    KEYS = (("training_data", "data"), ("training_sizes", "sizes"), ("steps", "steps"),
            ("epochs", "epochs"), ("commit", "commit"), ("seed", "seed"),
            ("exported", "exported"), ("training_minutes", "minutes"), ("notes", "notes"))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingInfo":
        sizes = d.get("training_sizes", [])
        if not isinstance(sizes, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            _fail("metadata: training_sizes must be a list of integers")
        return cls(data=_str_list(d.get("training_data", []), "training_data"),
                   sizes=tuple(sizes),
                   steps=_need(d, "steps", int, "", True), epochs=_need(d, "epochs", int, "", True),
                   commit=_need(d, "commit", str, "", True), seed=_need(d, "seed", int, "", True),
                   exported=_need(d, "exported", str, "", True),
                   minutes=_need(d, "training_minutes", float, "", True),
                   notes=_need(d, "notes", str, "", True))

    def to_dict(self) -> dict:
        out: Dict[str, Any] = {}
        for key, name in self.KEYS:
            v = getattr(self, name)
            if isinstance(v, tuple):
                out[key] = list(v)
            elif v is not None:
                out[key] = v
        return out


_TOP_KEYS = {"kind", "format", "roi", "crop", "input", "conditioning", "outputs", "config"} | {
    k for k, _ in TrainingInfo.KEYS}


@dataclass(frozen=True)
class ArtifactMeta:
    """The metadata of one model artifact (``warpcam_meta.json``).

    Fields: ``kind`` (e.g. ``"warpcam.gaze.deepwarp"``), ``format`` (metadata version, at most
    :data:`FORMAT_VERSION`), ``roi`` (one of :data:`ROIS`), ``crop_h`` / ``crop_w`` (network
    input size in pixels) and ``crop_notes`` (the other ``crop`` keys: ROI rule, flip; text),
    ``input`` (:class:`InputSpec`), ``conditioning`` (:class:`ConditioningSpec` or ``None``),
    ``outputs`` (:class:`OutputSpec` s in program output order), ``config`` (the network's
    constructor config), ``training`` (:class:`TrainingInfo`) and ``extra`` (every other
    top-level key, kept as is).

    JSON layout: ``{"kind", "format", "roi", "crop": {"h", "w", ...}, "input": {...},
    "conditioning": {...}, "outputs": {name: description, ...}, "config": {...},
    "training_data", "training_sizes", "steps", ..., other keys}``. A ``conditioning`` without
    ``units`` takes the legacy top-level ``angle_units``.
    """

    kind: str
    crop_h: int
    crop_w: int
    roi: str = "eye"
    format: int = FORMAT_VERSION
    input: InputSpec = field(default_factory=InputSpec)
    conditioning: Optional[ConditioningSpec] = None
    outputs: Tuple[OutputSpec, ...] = ()
    config: Dict[str, Any] = field(default_factory=dict)
    training: TrainingInfo = field(default_factory=TrainingInfo)
    crop_notes: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> Tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @classmethod
    def from_dict(cls, d) -> "ArtifactMeta":
        """Validate and convert parsed metadata JSON.

        Raises:
            ArtifactError: not an object, a missing required key (kind, crop with h and w,
                input, outputs), a value of the wrong type or out of range, or a newer format.
        """
        if not isinstance(d, dict):
            _fail(f"metadata must be a JSON object, not a JSON {type(d).__name__}")
        kind = _need(d, "kind", str, "")
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", kind):
            _fail(f"metadata: kind {kind[:60]!r} is not a dotted name")
        fmt = _need(d, "format", int, "")
        if fmt < 1 or fmt > FORMAT_VERSION:
            _fail(f"metadata: format {fmt} is not one this warpcam reads (1..{FORMAT_VERSION})")
        roi = _need(d, "roi", str, "")
        if roi not in ROIS:
            _fail(f"metadata: roi {roi[:30]!r} is not one of {', '.join(ROIS)}")
        crop = _need(d, "crop", dict, "")
        h, w = _need(crop, "h", int, "crop."), _need(crop, "w", int, "crop.")
        if not (0 < h <= 4096 and 0 < w <= 4096):
            _fail(f"metadata: crop {h}x{w} is out of range (1..4096)")
        outs = _need(d, "outputs", dict, "")
        if not outs or not all(isinstance(v, str) for v in outs.values()):
            _fail("metadata: outputs must be a non-empty object of name: description strings")
        cond = d.get("conditioning")
        units = d.get("angle_units")
        conditioning = (None if cond is None else ConditioningSpec.from_dict(
            cond, units if isinstance(units, str) else None))
        return cls(kind=kind, format=fmt, roi=roi, crop_h=h, crop_w=w,
                   crop_notes={k: v for k, v in crop.items() if k not in ("h", "w")},
                   input=InputSpec.from_dict(_need(d, "input", dict, "")),
                   conditioning=conditioning,
                   outputs=tuple(OutputSpec(k, v) for k, v in outs.items()),
                   config=dict(_need(d, "config", dict, "", True, {})),
                   training=TrainingInfo.from_dict(d),
                   extra={k: v for k, v in d.items() if k not in _TOP_KEYS})

    def to_dict(self) -> dict:
        """The JSON object (plain dicts, lists and scalars) that :meth:`from_dict` reads back."""
        out: Dict[str, Any] = dict(kind=self.kind, format=self.format, roi=self.roi,
                                   crop=dict(h=self.crop_h, w=self.crop_w, **self.crop_notes),
                                   input=self.input.to_dict())
        if self.conditioning is not None:
            cd = self.conditioning.to_dict()
            if self.extra.get("angle_units") == cd.get("units"):
                cd.pop("units", None)  # legacy layout: the units live in angle_units
            out["conditioning"] = cd
        out["outputs"] = {o.name: o.description for o in self.outputs}
        out["config"] = dict(self.config)
        out.update(self.training.to_dict())
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --------------------------------------------------------------------------- archive check

_ROOT_FILES = {"archive_format", "archive_version", "byteorder", "version", ".data/version",
               ".data/serialization_id", ".format_version", ".storage_alignment"}
_WORD = r"[A-Za-z0-9_]+"
_ALLOWED = [re.compile(p) for p in (
    rf"models/{_WORD}\.json", rf"data/weights/{_WORD}_weights_config\.json",
    r"data/weights/weight_\d+", rf"data/constants/{_WORD}_constants_config\.json",
    r"data/constants/tensor_\d+", rf"data/sample_inputs/{_WORD}\.pt", r"extra/[^/]+")]

#: Globals a sample-inputs pickle may name (tensors, storages, ordered dicts).
_SAFE_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
                 ("collections", "OrderedDict")} | {
    ("torch", f"{t}Storage") for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int",
                                        "Short", "Char", "Byte", "Bool")}
_BANNED_OPS = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID"}


def _why_refused(rel: str) -> str:
    base = rel.rsplit("/", 1)[-1]
    if rel.endswith(".pkl"):
        return f"a pickle member {rel}"
    if base.startswith(("custom_obj_", "opaque_obj_")):
        return f"a pickled custom object {rel}"
    if rel.startswith("data/aotinductor/"):
        return f"compiled native code {rel}"
    if rel.endswith(".pt"):
        return f"a pickled member {rel}"
    return f"an unexpected member {rel}"


def _check_payload_config(z: zipfile.ZipFile, name: str, prefix: str, names: set, where: str):
    try:
        cfg = json.loads(z.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(f"{where}: unreadable {name}: {exc}")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        _fail(f"{where}: malformed {name}")
    folder = name.rsplit("/", 1)[0] + "/"
    for fqn, p in cfg["config"].items():
        if not isinstance(p, dict):
            _fail(f"{where}: malformed entry {str(fqn)[:60]!r} in {name}")
        if p.get("use_pickle") is not False:
            _fail(f"{where}: refused: entry {str(fqn)[:60]!r} in {name.split('/', 1)[-1]} would "
                  "be unpickled (use_pickle); a model file must never run code")
        path_name = p.get("path_name")
        if not isinstance(path_name, str) or not re.fullmatch(prefix + r"\d+", path_name):
            _fail(f"{where}: refused: entry {str(fqn)[:60]!r} in {name.split('/', 1)[-1]} is "
                  f"not a raw tensor ({str(path_name)[:60]!r})")
        if folder + path_name not in names:
            _fail(f"{where}: entry {str(fqn)[:60]!r} names a missing member {path_name}")
        if not isinstance(p.get("tensor_meta"), dict):
            _fail(f"{where}: entry {str(fqn)[:60]!r} in {name} has no tensor_meta")


def _check_pickle(data: bytes, what: str, where: str):
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in _BANNED_OPS:
                _fail(f"{where}: refused: {what} uses the pickle opcode {op.name}")
            if op.name == "GLOBAL":
                mod, _, name = str(arg).partition(" ")
                if (mod, name) not in _SAFE_GLOBALS:
                    _fail(f"{where}: refused: {what} would import {mod}.{name}"[:300])
    except ArtifactError:
        raise
    except Exception as exc:
        _fail(f"{where}: refused: {what} is not a readable pickle ({type(exc).__name__})")


def _check_sample_inputs(data: bytes, rel: str, where: str):
    """A ``torch.save`` zip whose only pickle names tensor-rebuild globals (nothing loaded)."""
    if not data:
        return
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
        infos = inner.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        _fail(f"{where}: refused: {rel} is not a torch zip (a legacy pickle)")
    names = [i.filename for i in infos]
    if not names or len(set(names)) != len(names):
        _fail(f"{where}: refused: {rel}: empty or duplicate members")
    root = names[0].split("/", 1)[0]
    pkls = []
    for n in names:
        r, _, sub = n.partition("/")
        if r != root or not sub:
            _fail(f"{where}: refused: {rel}: member {n[:80]!r} outside its root")
        if sub.endswith(".pkl"):
            pkls.append(n)
        elif not (sub in _ROOT_FILES or re.fullmatch(r"data/\d+", sub)):
            _fail(f"{where}: refused: {rel}: unexpected member {n[:80]!r}")
    if pkls != [f"{root}/data.pkl"]:
        _fail(f"{where}: refused: {rel}: pickles {pkls[:3]} (only data.pkl is allowed)")
    info = inner.getinfo(pkls[0])
    if info.file_size > _MAX_PICKLE:
        _fail(f"{where}: refused: {rel}: data.pkl is too large")
    _check_pickle(inner.read(pkls[0]), f"{rel} (sample inputs)", where)


_SYMPY_NAMES = {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "None", "oo",
    "zoo", "nan", "integer", "positive", "nonnegative", "negative", "real", "finite",
    "precision", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or", "Identity", "floor", "ceiling", "sqrt", "Piecewise", "ITE",
    "BooleanTrue", "BooleanFalse", "StrictLessThan", "LessThan", "StrictGreaterThan",
    "GreaterThan", "Equality", "Unequality"}
_GUARD_NAMES = {"L", "size", "stride", "storage_offset", "dim", "numel", "and", "or", "not",
                "in", "True", "False", "None", "abs", "min", "max", "int", "float", "bool"}
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "numel"}
_SYM_RE = re.compile(r"[a-z]{1,3}\d+")
_OPS = {"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">",
        ">="}


def _check_expr(text: str, names: set, guard: bool, where: str, what: str):
    if not isinstance(text, str) or len(text) > 20000:
        _fail(f"{where}: refused: malformed {what}")
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        _fail(f"{where}: refused: unparsable {what}")
    prev = None
    for t in toks:
        if t.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        ok = False
        if t.type == tokenize.NUMBER:
            ok = re.fullmatch(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", t.string) is not None
        elif t.type == tokenize.NAME:
            if guard and prev == ".":
                ok = t.string in _GUARD_ATTRS
            else:
                ok = t.string in names or (_SYM_RE.fullmatch(t.string) is not None)
        elif t.type == tokenize.STRING:
            ok = re.fullmatch(r"'[A-Za-z0-9_.]{0,100}'", t.string) is not None
        elif t.type == tokenize.OP:
            ok = t.string in _OPS or (guard and t.string in {".", "[", "]"})
        if not ok:
            _fail(f"{where}: refused: {what} contains {t.string[:40]!r} (it would be evaluated)")
        prev = t.string


_TREESPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict",
                   "collections.OrderedDict"}


def _check_treespec(text, where: str):
    if not isinstance(text, str):
        _fail(f"{where}: refused: malformed pytree spec")
    try:
        spec = json.loads(text)
    except ValueError:
        _fail(f"{where}: refused: unreadable pytree spec")

    def walk(node):
        if not isinstance(node, dict):
            _fail(f"{where}: refused: malformed pytree spec")
        if node.get("type") not in _TREESPEC_TYPES:
            _fail(f"{where}: refused: pytree type {str(node.get('type'))[:60]!r} in the program")
        ctx = node.get("context")
        if ctx is not None and (not isinstance(ctx, str) or "__enum__" in ctx):
            _fail(f"{where}: refused: a pytree context that imports a module")
        for c in node.get("children_spec") or []:
            walk(c)

    if not isinstance(spec, list) or len(spec) != 2:
        _fail(f"{where}: refused: malformed pytree spec")
    walk(spec[1])


def _check_program(data: bytes, rel: str, where: str):
    try:
        prog = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(f"{where}: unreadable program {rel}: {exc}")
    if not isinstance(prog, dict) or not isinstance(prog.get("graph_module"), dict):
        _fail(f"{where}: malformed program {rel}")
    for g in prog.get("guards_code") or []:
        _check_expr(g, _GUARD_NAMES | _SYMPY_NAMES, True, where, "guard code")
    gm = prog["graph_module"]
    for call in gm.get("module_call_graph") or []:
        sig = call.get("signature") if isinstance(call, dict) else None
        if isinstance(sig, dict):
            for k in ("in_spec", "out_spec"):
                if k in sig:
                    _check_treespec(sig[k], where)

    def walk(o):
        if isinstance(o, dict):
            if "nodes" in o and isinstance(o["nodes"], list):  # a graph
                if o.get("custom_obj_values"):
                    _fail(f"{where}: refused: the program holds custom (torchbind) objects")
                for n in o["nodes"]:
                    tgt = n.get("target") if isinstance(n, dict) else None
                    if not isinstance(tgt, str) or not re.fullmatch(
                            r"(torch\.ops|_operator|math)(\.[A-Za-z0-9_]+)+", tgt):
                        _fail(f"{where}: refused: graph node target {str(tgt)[:60]!r}")
            for k, v in o.items():
                if k == "expr_str":
                    _check_expr(v, _SYMPY_NAMES, False, where, "a symbolic expression")
                elif k in ("as_custom_obj", "as_opaque_obj"):
                    _fail(f"{where}: refused: the program takes custom objects")
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(gm)
    for k in prog.get("range_constraints") or {}:
        if not _SYM_RE.fullmatch(str(k)):
            _check_expr(k, _SYMPY_NAMES, False, where, "a range constraint")


def check_archive(path, what: str = "model") -> dict:
    """Check that ``path`` is a warpcam artifact that can be loaded without unpickling or
    evaluating anything, reading the archive's members as bytes and JSON only.

    Args:
        path: the ``.pt2`` file.
        what: the kind of file for messages (``"gaze model"``).

    Returns:
        The parsed (not yet schema-validated) metadata JSON value.

    Raises:
        ArtifactError: not a zip archive; no ``extra/warpcam_meta.json``; a member or entry that
            ``torch.export.load`` would unpickle or evaluate (see the module docstring); a
            malformed payload config or program; unreadable metadata.
    """
    where = str(path)
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        _fail(f"{where}: not a .pt2 archive (truncated or wrong kind): "
              f"{_one_line(exc)[:120]}")
    with z:
        try:
            infos = z.infolist()
        except Exception as exc:  # pragma: no cover - zipfile parses at open
            _fail(f"{where}: not a .pt2 archive: {exc}")
        names = [i.filename for i in infos]
        if not names:
            _fail(f"{where}: an empty archive: not a warpcam {what}")
        root = names[0].split("/", 1)[0]
        meta_name = f"{root}/extra/{META_NAME}"
        if meta_name not in names:
            _fail(f"{where}: a .pt2 archive without {META_NAME}: not a warpcam {what} (export it "
                  "with the exporter under training/)")
        if len(set(names)) != len(names):
            _fail(f"{where}: refused: duplicate members in the archive")
        rels = set()
        for n in names:
            r, _, rel = n.partition("/")
            if r != root or not rel or "\\" in n or ".." in n.split("/") or n.startswith("/"):
                _fail(f"{where}: refused: member {n[:80]!r} outside the archive root")
            if rel.endswith("/"):
                continue  # a folder entry
            if rel in _ROOT_FILES:
                pass
            elif not any(p.fullmatch(rel) for p in _ALLOWED) or rel.endswith(".pkl"):
                _fail(f"{where}: refused: {_why_refused(rel)}; a model file must never run code")
            rels.add(rel)
        models = [r[len("models/"):-len(".json")] for r in rels if r.startswith("models/")]
        if not models:
            _fail(f"{where}: no exported program in the archive")
        for m in models:
            for cfg, prefix in ((f"data/weights/{m}_weights_config.json", "weight_"),
                                (f"data/constants/{m}_constants_config.json", "tensor_")):
                if cfg not in rels:
                    _fail(f"{where}: {cfg} is missing")
        for rel in sorted(rels):
            n = f"{root}/{rel}"
            size = z.getinfo(n).file_size
            if rel.endswith("_weights_config.json"):
                _check_payload_config(z, n, "weight_", set(names), where)
            elif rel.endswith("_constants_config.json"):
                _check_payload_config(z, n, "tensor_", set(names), where)
            elif rel.startswith("data/sample_inputs/"):
                if size > 4 * _MAX_PICKLE:
                    _fail(f"{where}: refused: {rel} is too large")
                _check_sample_inputs(z.read(n), rel, where)
            elif rel.startswith("models/"):
                if size > _MAX_JSON:
                    _fail(f"{where}: refused: {rel} is too large")
                _check_program(z.read(n), rel, where)
        if z.getinfo(meta_name).file_size > _MAX_META:
            _fail(f"{where}: {META_NAME} is too large")
        try:
            return json.loads(z.read(meta_name).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            _fail(f"{where}: unreadable metadata {META_NAME}: {_one_line(exc)[:120]}")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a corrupt member
            _fail(f"{where}: not a .pt2 archive (truncated): {_one_line(exc)[:120]}")


def read_meta(path, what: str = "model") -> ArtifactMeta:
    """:func:`check_archive` then :meth:`ArtifactMeta.from_dict`.

    Raises:
        ArtifactError: as :func:`check_archive`, or malformed metadata (prefixed with the path).
    """
    raw = check_archive(path, what)
    try:
        return ArtifactMeta.from_dict(raw)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def meta_extra_files(meta) -> Dict[str, str]:
    """``extra_files`` for ``torch.export.save``: ``{META_NAME: json text}`` for an
    :class:`ArtifactMeta` or a metadata dict (validated through :class:`ArtifactMeta`).

    Raises:
        ArtifactError: invalid metadata.
    """
    return {META_NAME: _meta_text(meta)}


def _meta_text(meta) -> str:
    m = meta if isinstance(meta, ArtifactMeta) else ArtifactMeta.from_dict(meta)
    return m.to_json()


def write_sidecar(meta, out) -> Path:
    """Write the metadata beside the artifact as ``OUT.json`` (``out`` with suffix ``.json``);
    returns that path.

    Raises:
        ArtifactError: invalid metadata.
    """
    p = Path(out).with_suffix(".json")
    p.write_text(_meta_text(meta) + "\n")
    return p
