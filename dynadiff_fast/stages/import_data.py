"""``dynadiff import``: gridded NetCDF/Zarr data (ERA5) as region environments, into the dataset file
``dynadiff simulate`` writes. The importer itself (its config, the lazy reader, the resumable writer) is the data
library's ``data.gridded.import_gridded``; this stage is its command."""

from __future__ import annotations

from dynadiff_fast.data import dataset as ds_mod
from dynadiff_fast.data.gridded import ImportConfig, import_gridded
from dynadiff_fast.stages.common import Command


def _run(cfg: ImportConfig) -> int:
    path = import_gridded(cfg)
    with ds_mod.EnvDataset(path) as ds:
        print(ds)
    return 0


COMMAND = Command(config=ImportConfig, run=_run)
