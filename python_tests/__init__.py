"""The test suite as a package (every folder has an ``__init__.py``), so shared helpers are plain imports:
``from python_tests.dd_synth import SynthDataset``, ``from python_tests.synthetic_systems import Advect``."""
