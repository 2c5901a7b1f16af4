"""The live control panel: a local web page to steer a running pipeline (``warpcam --panel``).

What NVIDIA Broadcast's window gives its users, as a page served on ``127.0.0.1`` by a
background thread of the ``warpcam`` process: the live output (before/after), a switch or
slider for every setting of every effect (generated from the effects' settings dataclasses, so a
new effect gets its controls without an edit here), the pipeline's per-stage timings and frame
rate, and presets saved to a TOML file that ``warpcam --config FILE`` reads too.

- :class:`Panel` (:mod:`~warpcam.realtime.panel.server`): the server; ``Panel(pipeline).start()``
  then ``panel.url``; needs the ``panel`` extra (aiohttp).
- :mod:`~warpcam.realtime.panel.presets`: the presets file (standard library only).
"""
from warpcam.realtime.panel.presets import (PresetError, apply_preset, check_preset,  # noqa: F401
                                            config_dir, current_preset, preset_from_file,
                                            presets_path, save_preset)
from warpcam.realtime.panel.server import Panel, PanelError  # noqa: F401
