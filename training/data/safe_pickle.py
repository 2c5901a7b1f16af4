"""A restricted unpickler for label files in the seeds' pickle formats.

A pickle is a program: ``pickle.load`` calls whatever callables the file names, so a label file
from elsewhere could run any code. :func:`safe_load` admits only what a label file holds:

- the containers and scalars that pickle builds without naming a global: lists, dicts, tuples,
  sets, strings, bytes, ints, floats, bools and None;
- NumPy arrays and NumPy scalars of plain numeric, bool or fixed-width string dtypes.

Every other global (``os.system``, ``builtins.eval``, any class) is refused with a one-line
:class:`UnsafePickleError` **before** it is called. The NumPy globals that array pickles name
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``numpy.core.multiarray.scalar``, ``numpy.core.numeric._frombuffer`` for protocol 5, and
``_codecs.encode`` with ``latin1`` and ``bytes()`` without arguments for Python 3 protocol-2
bytes; the ``numpy._core`` spellings of
NumPy 2 too) are not handed out: each is replaced by a stand-in that records its arguments, and
the array is rebuilt afterwards with ``np.dtype(<type string>)`` and ``np.frombuffer`` only, after
its dtype (no object or structured dtypes), shape and byte count are checked. No NumPy code sees
a state tuple from the file, so a forged dtype state (its flags) cannot make an object array out
of bytes.

Python 2 pickles (GANimation's ``aus_openface.pkl``) are read with ``encoding="latin1"``, NumPy's
documented way to load them.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "safe_load", "safe_loads"]

ADMITTED = ("lists, dicts, tuples, sets, strings, bytes, numbers, None, bools and NumPy arrays "
            "of numeric, bool or string dtypes")
#: dtype kinds admitted: bool, signed/unsigned int, float, complex, bytes, str
_DTYPE_KINDS = set("biufcSU")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something the restricted unpickler does not admit (one line)."""


def _refuse(what: str) -> "UnsafePickleError":
    return UnsafePickleError(f"refused to unpickle {what}: only {ADMITTED} are admitted "
                             "(a pickle can run code)")


class _DtypeStandIn:
    """Stands for ``numpy.dtype(obj, align, copy)`` plus its BUILD state (byte order only)."""

    def __init__(self, obj=None, align=False, copy=True, *rest):
        if not isinstance(obj, str):
            raise _refuse(f"numpy.dtype({type(obj).__name__})")
        try:
            dt = np.dtype(obj)
        except TypeError as e:
            raise _refuse(f"numpy.dtype({obj!r}) ({e})") from None
        if dt.kind not in _DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise _refuse(f"a NumPy array of dtype {obj!r}")
        self.dtype = dt

    def __setstate__(self, state):
        # (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 2:
            raise _refuse("a malformed numpy dtype state")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise _refuse(f"a numpy dtype byte order {order!r}")
        if any(x is not None for x in state[2:5]):
            raise _refuse("a structured numpy dtype")
        if order in "<>" and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)
        if self.dtype.kind in "SU" and len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
            self.dtype = np.dtype((self.dtype.type, state[5] // (4 if self.dtype.kind == "U" else 1)))
            if order in "<>" and self.dtype.kind == "U":
                self.dtype = self.dtype.newbyteorder(order)


def _as_dtype(d) -> np.dtype:
    if isinstance(d, _DtypeStandIn):
        return d.dtype
    raise _refuse(f"a NumPy array whose dtype is a {type(d).__name__}")


def _as_bytes(data) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # Python 2 str read with encoding="latin1"
        return data.encode("latin1")
    if isinstance(data, pickle.PickleBuffer):
        return bytes(data.raw())
    raise _refuse(f"NumPy array data of type {type(data).__name__} (object arrays)")


def _array(data, dtype: np.dtype, shape, fortran: bool) -> np.ndarray:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise _refuse(f"a NumPy array shape {shape!r}")
    raw = _as_bytes(data)
    n = math.prod(shape)
    if len(raw) != n * dtype.itemsize:
        raise _refuse(f"a NumPy array of {len(raw)} bytes for shape {shape} and dtype {dtype}")
    a = np.frombuffer(raw, dtype=dtype, count=n) if n else np.zeros(0, dtype)
    return a.reshape(shape, order="F" if fortran else "C").copy(order="K")


class _ArrayStandIn:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` plus BUILD."""

    def __init__(self, cls, shape, typecode):
        if cls is not _NDARRAY:
            raise _refuse(f"_reconstruct of {getattr(cls, '__name__', type(cls).__name__)}")
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, rawdata) or without the version (old pickles)
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse("a malformed numpy array state")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, raw = state
        self.array = _array(raw, _as_dtype(dtype), tuple(shape), bool(fortran))


class _NdarrayToken:
    """``numpy.ndarray`` as named by a pickle: only a marker for :class:`_ArrayStandIn`;
    calling it is refused."""

    def __new__(cls, *a, **k):
        raise _refuse("a call of numpy.ndarray")


_NDARRAY = _NdarrayToken


def _scalar(dtype, data=None):
    dt = _as_dtype(dtype)
    return _array(data, dt, (), False)[()]


def _frombuffer(buf, dtype, shape, order):
    dt = dtype.dtype if isinstance(dtype, _DtypeStandIn) else _as_dtype(dtype)
    return _ArrayDone(_array(buf, dt, tuple(shape), order == "F"))


class _ArrayDone:
    def __init__(self, array):
        self.array = array


def _codecs_encode(obj, encoding="utf-8", *rest):
    if isinstance(obj, str) and str(encoding).lower().replace("-", "") == "latin1" and not rest:
        return obj.encode("latin1")
    raise _refuse(f"_codecs.encode({type(obj).__name__}, {encoding!r})")


def _empty_bytes(*args):
    if not args:  # Python 3 protocol 2 writes b"" as bytes()
        return b""
    raise _refuse("a call of bytes with arguments")


_GLOBALS = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _GLOBALS[(_mod, "_reconstruct")] = _ArrayStandIn
    _GLOBALS[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _GLOBALS[(_mod, "_frombuffer")] = _frombuffer
_GLOBALS[("numpy", "ndarray")] = _NDARRAY
_GLOBALS[("numpy", "dtype")] = _DtypeStandIn
_GLOBALS[("_codecs", "encode")] = _codecs_encode
_GLOBALS[("builtins", "bytes")] = _GLOBALS[("__builtin__", "bytes")] = _empty_bytes


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the NumPy stand-ins (module
    docstring); anything else raises :class:`UnsafePickleError` before it could be called."""

    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _refuse(f"the global {module}.{name}") from None

    def persistent_load(self, pid):
        raise _refuse("a persistent id")


def _finish(obj, seen: dict):
    """Replace the stand-ins by the arrays they built (containers rebuilt as needed)."""
    if isinstance(obj, (_ArrayStandIn, _ArrayDone)):
        if obj.array is None:
            raise _refuse("a numpy array without its state")
        return obj.array
    if isinstance(obj, (_DtypeStandIn,)):
        return obj.dtype
    if isinstance(obj, _NdarrayToken) or obj is _NDARRAY:
        raise _refuse("a bare numpy.ndarray")
    if isinstance(obj, (list, dict, tuple, set, frozenset)):
        key = id(obj)
        if key in seen:
            return seen[key]
        if isinstance(obj, list):
            seen[key] = obj
            obj[:] = [_finish(v, seen) for v in obj]
            return obj
        if isinstance(obj, dict):
            seen[key] = obj
            items = [(_finish(k, seen), _finish(v, seen)) for k, v in obj.items()]
            obj.clear()
            obj.update(items)
            return obj
        out = type(obj)(_finish(v, seen) for v in obj)
        seen[key] = out
        return out
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray,
                                       np.generic, np.ndarray)):
        return obj
    raise _refuse(f"an object of type {type(obj).__name__}")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (module docstring).

    Raises:
        UnsafePickleError: the pickle names a global that is not admitted.
    """
    up = RestrictedUnpickler(io.BytesIO(data), encoding="latin1")
    return _finish(up.load(), {})


def safe_load(path) -> Any:
    """:func:`safe_loads` of a file; the error message names the file (one line)."""
    p = Path(path)
    try:
        return safe_loads(p.read_bytes())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{p}: {e}") from None
