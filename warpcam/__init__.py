"""warpcam: realtime gaze correction and expression control for webcams and video files.

One import package. The repository keeps its product layout, and setuptools' ``package-dir``
installs each top-level folder as a subpackage (``pyproject.toml``):

- :mod:`warpcam.core` (``warpcam/core/``): the ground floor: contracts, geometry, the model
  artifact format;
- :mod:`warpcam.kernels` (``kernels/``): compositor backends and the CUDA sources;
- :mod:`warpcam.realtime` (``realtime/``): model runtime, tracker, effects, sources and sinks,
  the pipeline and the command line;
- :mod:`warpcam.training` (``training/``): datasets, models, training loops and exports;
- :mod:`warpcam.models` (``models/``): the bundled model artifacts (package data).

Which floor may import which is in ``docs/architecture.md`` and checked by
``tests/test_architecture.py``.
"""
__version__ = "0.1.0"
