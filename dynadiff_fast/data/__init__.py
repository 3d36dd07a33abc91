"""HDF5 environment datasets: presets, the seen/unseen split, the resumable writer and the lazy reader, and the
import of gridded NetCDF/Zarr data (``gridded``)."""

from dynadiff_fast._lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "EnvDataset": "dataset",
        "ImportConfig": "gridded",
        "import_dataset": "gridded",
        "import_gridded": "gridded",
        "get_preset": "presets",
        "environment_grid": "environments",
        "split_environments": "environments",
    },
)
