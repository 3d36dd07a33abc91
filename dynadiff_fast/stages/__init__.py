"""The pipeline stages: one module per ``dynadiff`` command, each holding that command's whole story (its config
and presets, run folder, resume, distributed set-up and ``COMMAND``). ``runner`` runs a list of stages, reusing
finished ones (``demo``, ``benchmark``); ``common`` holds what every stage shares. The library below knows nothing
of this floor."""
