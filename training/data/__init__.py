"""Face datasets for the expression models.

- :mod:`.build` (``python -m warpcam.training.data.build``): tracker over image folders and
  videos -> aligned faces (64, 128, 256) and KeepSmiling mouth crops (64) as PNG files, an index
  CSV with labels, same-person pairs, splits by person or video, a manifest.
- :mod:`.align`: the alignment template and the mouth-crop rule (defined once).
- :mod:`.labels`: label CSVs, OpenFace CSVs, seed AU pickles, the AU estimator.
- :mod:`.safe_pickle`: the restricted unpickler for the seeds' pickles.
- :mod:`.index`: the index/pairs/manifest files, the split and pair rules.
- :mod:`.loaders`: PyTorch ``Dataset`` classes over a built set (imports torch).
- :mod:`.sheet`: the contact sheet.

Importing this package imports neither torch nor mediapipe.
"""
