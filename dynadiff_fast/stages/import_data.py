"""``dynadiff import``: gridded NetCDF/Zarr data (ERA5) as region environments, into the dataset file
``dynadiff simulate`` writes. The importer itself (its config, the lazy reader, the resumable writer) is the data
library's ``data.gridded.import_gridded``; this stage is its command."""

from __future__ import annotations

from dynadiff_fast.data.gridded import ImportConfig, import_gridded
from dynadiff_fast.stages.common import Command, print_dataset

COMMAND = Command(config=ImportConfig, run=lambda cfg: print_dataset(import_gridded(cfg)))
