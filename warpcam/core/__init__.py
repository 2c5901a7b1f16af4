"""The ground floor: the contracts every other part of warpcam stands on.

:mod:`~warpcam.core.types` (``Frame``, ``Face``, ``WarpJob``), :mod:`~warpcam.core.geometry`
(affines, ROI boxes, masks), :mod:`~warpcam.core.landmarks` (mediapipe FaceMesh indices),
:mod:`~warpcam.core.eyes` and :mod:`~warpcam.core.mouth` (one definition of the eye and mouth
geometry), :mod:`~warpcam.core.artifact` (the model file format). Nothing here imports any
other part of warpcam, nor torch.
"""
