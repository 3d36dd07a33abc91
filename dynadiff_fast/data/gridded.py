"""``dynadiff import``: an ``EnvDataset`` from gridded NetCDF or Zarr files (reanalysis, satellite, experiment).

    dynadiff import --files era5_201801.nc era5_201901.nc --variables u100 v100 \\
        --train-time 2018-01:2018-01 --test-time 2019-01:2019-01 --regions 6x12 --n-seen 24 --out runs/data/era5.h5

The file is the one ``dynadiff simulate`` writes (``data.dataset``), with system name ``gridded``, so the zoo,
the VAE, the DiT, generation and evaluation take it unchanged (the experts are ``expert_config("gridded")``: the
paper's ERA5 FNO, Table 3, with the dataset's channel count). There is no simulator behind it:
``EnvDataset.system()`` refuses the name.

Reading. The files are opened lazily with xarray (dask arrays in the files' own chunks; NetCDF-4/HDF5 through
h5netcdf, NetCDF-3 through scipy, Zarr stores through zarr); a variable may be split over several files (one
file per variable or per month, as the Copernicus store delivers them). Only one trajectory window of the
latitude rows the environments use is in memory at a time, so the files may be larger than memory.

Grid. A latitude/longitude/time coordinate is found by its CF ``standard_name``, then its ``units``, ``axis`` or
name (``latitude``/``lat``, ``longitude``/``lon``, ``time``/``valid_time``). Latitude must lie in [-90, 90] and be
regular (either order; stored ascending, so row 0 of a frame is the southernmost); longitude must be regular modulo
360 (either order; a repeated cyclic column, 0 and 360, is dropped) and is *periodic* when its columns cover 360°.
Frames are ``[C, H, W]``: C the variables in ``--variables`` order, H south to north, W west to east.

Environments. ``--regions ROWSxCOLS`` cuts ``lat_range x lon_range`` into equal tiles (the paper: 6x12 tiles of 30°
of the globe), numbered row by row from the south-west corner (environment ``row * COLS + col``); ``--boxes``
gives the boxes ``[lat_lo, lat_hi, lon_lo, lon_hi]`` instead. A box holds the grid points with ``lo <= coordinate
< hi`` (half-open on both axes, so a tiling gives every point to exactly one tile). Longitude wraps: a box is
taken modulo 360 (``[350, 380]`` and ``[-10, 20]`` are the same box across the prime meridian) when the grid is
periodic, and is an error past the grid's edge when it is not. Latitude never wraps: a box past a pole is an
error. The poles, explicitly: on a grid with points at +-90° (ERA5's 721 rows), the north-pole row is the upper
edge of the top tiles and belongs to no tile, and the south-pole row, the lower edge of the bottom tiles, belongs
to them (a row of one physical point, like any other row to the FNO); so each 30° tile of a 0.25° grid has
120 rows. Every box must hold the same number of points (the dataset is one array). ``coarsen k`` averages
k x k blocks of grid points within each box (a plain mean, not area-weighted; box sizes must divide by k).

Parameters. An environment's parameters are its box centre, ``lat_center`` and ``lon_center`` (degrees, in the
box's own longitude frame: the tile [330, 360) has 345), and, with ``param_stats``, the mean and standard
deviation of each variable over the box's training frames (physical units; ``u100_mean``, ``u100_std``, ...).
The longitude parameter is not periodic: tiles centred at 345 and 15 are neighbours on the globe, not in
parameter space.

Trajectories. ``train_time`` and ``test_time`` (``START:END``, inclusive, pandas date strings: ``2018-01:2018-01``
is January 2018, ``2018-01-01T00:00:2018-01-07T23:00`` a week) select the time steps, keeping every
``time_stride``-th; both must be regularly spaced and must not overlap. Each period is cut into windows of
``n_frames + 1`` consecutive frames starting every ``window_stride`` frames (default ``n_frames + 1``: disjoint
windows): the training period's windows are trajectories ``[0, n_train_traj)`` of every environment and the
test period's the rest, as in a simulated dataset. ``dt_frame`` is the frame spacing in hours.

Split and statistics: as for simulated data (``split_environments`` with ``n_seen``, ``out_fraction``, ``seed``;
per-channel mean/std over the seen environments' training trajectories, ``dataset.finalize``).

Checks, each a one-line error before any work: missing coordinates or variables, curvilinear, unsorted or
irregular grids, latitudes outside [-90, 90], a variable's units differing between files, a variable's data
missing for part of a period, times repeated across files, NaN in a box at the first frame of either period (a
land/sea mask: choose boxes without masked points or fill them first); a NaN found later names the window.

Resumable: trajectories are written to ``<out>.partial`` one window (all environments) at a time, with a
per-window marker; a re-run with the same config continues, and the file is renamed to ``<out>`` once complete.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynadiff_fast import config as config_mod
from dynadiff_fast import io, progress
from dynadiff_fast.data import dataset as ds_mod
from dynadiff_fast.data.environments import split_environments

log = logging.getLogger("dynadiff.import")

SYSTEM_NAME = "gridded"
STATS = ("mean", "std")
_DONE = "import_done"  # per-window marker in the .partial file, removed before it is finalised
_CORE = ("time", "lat", "lon")
# coordinate kind -> (CF standard_name, CF units (lower case), CF axis, usual names)
_COORDS: dict[str, tuple[str, tuple[str, ...], str, tuple[str, ...]]] = {
    "lat": ("latitude", ("degrees_north", "degree_north", "degrees_n", "degree_n", "degreesn", "degreen"), "Y",
            ("latitude", "lat")),
    "lon": ("longitude", ("degrees_east", "degree_east", "degrees_e", "degree_e", "degreese", "degreee"), "X",
            ("longitude", "lon")),
    "time": ("time", (), "T", ("time", "valid_time")),
}  # fmt: skip
_GENERIC_DEGREES = ("degrees", "degree")  # not CF for latitude/longitude, but common: accepted on a found coordinate


@dataclass(frozen=True)
class ImportConfig:
    files: tuple[str, ...] = field(
        default=(), metadata={"help": "NetCDF files or Zarr stores (a variable may span several)", "nargs": "+"}
    )
    variables: tuple[str, ...] = field(default=(), metadata={"help": "variables, one channel each", "nargs": "+"})
    train_time: str = field(default="", metadata={"help": "training period START:END, inclusive (2018-01:2018-01)"})
    test_time: str = field(default="", metadata={"help": "test period START:END, inclusive (2019-01:2019-01)"})
    regions: str = field(default="", metadata={"help": "ROWSxCOLS equal tiles of lat_range x lon_range (6x12)"})
    boxes: tuple[tuple[float, float, float, float], ...] = field(
        default=(), metadata={"help": "instead of regions: [[lat_lo, lat_hi, lon_lo, lon_hi], ...] in degrees"}
    )
    lat_range: tuple[float, float] = field(default=(-90.0, 90.0), metadata={"help": "latitudes tiled by regions"})
    lon_range: tuple[float, float] = field(default=(0.0, 360.0), metadata={"help": "longitudes tiled by regions"})
    n_seen: int = field(default=0, metadata={"help": "seen environments (the rest are unseen)"})
    out_fraction: float = field(default=0.0, metadata={"help": "split_environments' out_fraction (0: random)"})
    n_frames: int = field(default=24, metadata={"help": "frames per trajectory after the initial one"})
    window_stride: int | None = field(
        default=None, metadata={"help": "frames between trajectory starts (None: n_frames + 1, disjoint)"}
    )
    time_stride: int = field(default=1, metadata={"help": "keep every k-th time step of the files"})
    coarsen: int = field(default=1, metadata={"help": "average k x k blocks of grid points"})
    param_stats: tuple[str, ...] = field(
        default=(), metadata={"help": "per-variable training statistics added to the parameters (mean, std)"}
    )
    select: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "values of other dimensions, e.g. {pressure_level: 850}"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the seen/unseen split"})
    out: str = field(default="", metadata={"help": "output dataset .h5"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )

    def __post_init__(self) -> None:
        check(self)

    @property
    def stride(self) -> int:
        return self.n_frames + 1 if self.window_stride is None else self.window_stride


# ------------------------------------------------------------------------------------------------
# settings (checked when the config is built, before any file is opened)
# ------------------------------------------------------------------------------------------------
def check(cfg: ImportConfig) -> None:
    """Refuse unusable settings in one line; the required ones (files, variables, periods, environments,
    n_seen, out) are refused when missing by ``import_gridded``, so a default ``ImportConfig()`` can be built."""
    for name in ("n_frames", "time_stride", "coarsen") + (("window_stride",) if cfg.window_stride is not None else ()):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    for name in ("files", "variables", "param_stats"):
        values = getattr(cfg, name)
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: {list(values)} repeats an entry")
    bad = [s for s in cfg.param_stats if s not in STATS]
    if bad:
        raise ValueError(f"param_stats: unknown statistic {bad[0]!r} (valid: {', '.join(STATS)})")
    for name in ("train_time", "test_time"):
        if getattr(cfg, name):
            parse_time_range(getattr(cfg, name), name)
    if cfg.regions and cfg.boxes:
        raise ValueError("regions: give either regions (ROWSxCOLS tiles) or boxes, not both")
    lo, hi = cfg.lat_range
    if not -90.0 <= lo < hi <= 90.0:
        raise ValueError(
            f"lat_range: expected -90 <= lo < hi <= 90 (latitude does not wrap), got {list(cfg.lat_range)}"
        )
    if not 0.0 < cfg.lon_range[1] - cfg.lon_range[0] <= 360.0:
        raise ValueError(f"lon_range: expected lo < hi <= lo + 360, got {list(cfg.lon_range)}")
    boxes = environment_boxes(cfg) if (cfg.regions or cfg.boxes) else []
    if cfg.n_seen < 0:
        raise ValueError(f"n_seen: expected an integer >= 1, got {cfg.n_seen}")
    if len(boxes) == 1:
        raise ValueError("boxes: one environment; the seen/unseen split needs at least two regions or boxes")
    if boxes and cfg.n_seen and not 1 <= cfg.n_seen < len(boxes):
        raise ValueError(f"n_seen: must be in [1, {len(boxes) - 1}] for {len(boxes)} environments, got {cfg.n_seen}")
    if not 0.0 <= cfg.out_fraction < 0.5:
        raise ValueError(f"out_fraction: must be in [0, 0.5), got {cfg.out_fraction}")


def _require(cfg: ImportConfig) -> None:
    missing = {
        "files": "--files F [F ...] (NetCDF files or Zarr stores)",
        "variables": "--variables V [V ...]",
        "train_time": "--train-time START:END",
        "test_time": "--test-time START:END",
        "n_seen": "--n-seen N",
        "out": "--out FILE.h5",
    }
    for name, how in missing.items():
        if not getattr(cfg, name):
            raise ValueError(f"{name}: missing; pass {how}")
    if not (cfg.regions or cfg.boxes):
        raise ValueError(
            "regions: missing; pass --regions ROWSxCOLS (e.g. 6x12) or --boxes [[lat_lo, lat_hi, lon_lo, lon_hi], ...]"
        )


def parse_time_range(text: str, name: str = "time") -> tuple[str, str]:
    """``"START:END"`` -> ``(START, END)``. Times contain colons (``2018-01-01T00:00``), so the separator is the one
    colon with a date on both sides; none or several such colons is an error."""
    import pandas as pd

    def is_time(s: str) -> bool:
        try:
            pd.Timestamp(s)
        except (ValueError, TypeError):
            return False
        return bool(re.match(r"^\d{4}", s))

    splits = [(text[:i], text[i + 1 :]) for i, ch in enumerate(text) if ch == ":"]
    found = [(a, b) for a, b in splits if is_time(a) and is_time(b)]
    if len(found) != 1:
        raise ValueError(f"{name}: expected START:END with two dates (e.g. 2018-01-01:2018-01-31T23:00), got {text!r}")
    start, end = found[0]
    if pd.Timestamp(start) > pd.Timestamp(end):
        raise ValueError(f"{name}: START {start} is after END {end}")
    return start, end


def environment_boxes(cfg: ImportConfig) -> list[tuple[float, float, float, float]]:
    """The environments' boxes ``(lat_lo, lat_hi, lon_lo, lon_hi)``: ``regions`` tiles row by row from the
    south-west corner of ``lat_range x lon_range``, or ``boxes`` as given (checked)."""
    if cfg.regions:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", cfg.regions)
        if not m or min(int(m[1]), int(m[2])) < 1:
            raise ValueError(f"regions: expected ROWSxCOLS with positive integers (e.g. 6x12), got {cfg.regions!r}")
        rows, cols = int(m[1]), int(m[2])
        lat = np.linspace(*cfg.lat_range, rows + 1)
        lon = np.linspace(*cfg.lon_range, cols + 1)
        return [(lat[r], lat[r + 1], lon[c], lon[c + 1]) for r in range(rows) for c in range(cols)]
    out = []
    for i, box in enumerate(cfg.boxes):
        lat_lo, lat_hi, lon_lo, lon_hi = (float(v) for v in box)
        if not -90.0 <= lat_lo < lat_hi <= 90.0:
            raise ValueError(
                f"boxes[{i}]: latitudes must satisfy -90 <= lat_lo < lat_hi <= 90 (latitude does not wrap), "
                f"got [{lat_lo}, {lat_hi}]"
            )
        if not 0.0 < lon_hi - lon_lo <= 360.0:
            raise ValueError(
                f"boxes[{i}]: longitudes must satisfy lon_lo < lon_hi <= lon_lo + 360 (write [350, 380] for a box "
                f"across 0°), got [{lon_lo}, {lon_hi}]"
            )
        out.append((lat_lo, lat_hi, lon_lo, lon_hi))
    return out


# ------------------------------------------------------------------------------------------------
# opening and checking the files (CF conventions)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """The files' horizontal grid after normalisation: ``lat`` ascending with spacing ``dlat``; ``lon`` in the
    files' own values, increasing modulo 360 with spacing ``dlon``; ``periodic`` when its columns cover 360°."""

    lat: np.ndarray
    lon: np.ndarray
    dlat: float
    dlon: float

    @property
    def periodic(self) -> bool:
        return abs(len(self.lon) * self.dlon - 360.0) < 1e-3 * self.dlon


@dataclass
class Source:
    """The opened files: ``data`` (lazy, dims ``time, lat, lon``, one variable per channel), its grid, each
    variable's units (None when a file gives none) and the time steps each variable has data for."""

    data: Any  # xarray.Dataset
    grid: Grid
    units: dict[str, str | None]
    times: dict[str, np.ndarray]


def _engine(path: Path) -> str:
    if path.is_dir() or path.suffix == ".zarr":
        return "zarr"
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"\x89HDF"):
        return "h5netcdf"
    if magic.startswith(b"CDF"):
        return "scipy"
    raise ValueError(
        f"files: {path} is neither NetCDF-4/HDF5, NetCDF-3 nor a Zarr store (GRIB files: convert them to NetCDF first)"
    )


def _find_coord(ds, kind: str, path: str) -> str:
    """The name of ``ds``'s coordinate of ``kind`` (lat, lon, time), by standard_name, CF units (time: a decoded
    datetime), axis, then name."""
    standard, units, axis, names = _COORDS[kind]
    coords = [str(c) for c in ds.coords]
    tests = (
        lambda c: ds[c].attrs.get("standard_name") == standard,
        lambda c: (
            str(ds[c].attrs.get("units", "")).lower() in units
            or (kind == "time" and np.issubdtype(ds[c].dtype, np.datetime64))
        ),
        lambda c: ds[c].attrs.get("axis") == axis,
        lambda c: c.lower() in names,
    )
    for test in tests:
        found = [c for c in coords if test(c)]
        if found:
            return found[0]
    raise ValueError(
        f"files: {path} has no {standard} coordinate (looked for standard_name {standard!r}, axis {axis!r} or a "
        f"name {'/'.join(names)}; its coordinates: {', '.join(coords) or 'none'})"
    )


def _regular_step(values: np.ndarray, name: str, path: str, modulo: float | None = None) -> float:
    """The constant spacing of a 1-D coordinate (positive: ascending), or a one-line error for an unsorted or
    irregular one; ``modulo`` compares differences modulo 360 (longitude). The spacing is the mean difference
    (exact for a regular grid: (last - first) / (n - 1)); a difference may deviate from it by a thousandth of it
    plus the rounding of float32 coordinates."""
    if len(values) < 2:
        raise ValueError(f"files: {path}: {name} has {len(values)} value(s); a grid needs at least 2")
    d = np.diff(values.astype(np.float64))
    if modulo is not None:
        d = (d + modulo / 2) % modulo - modulo / 2  # in [-180, 180): wrap-around steps are small steps
    if np.any(d == 0) or np.any(np.sign(d) != np.sign(d[0])):
        raise ValueError(f"files: {path}: {name} is not sorted (neither increasing nor decreasing)")
    step = float(d.mean())
    dev = float(np.abs(d - step).max())
    if dev > 1e-3 * abs(step) + 4 * np.finfo(np.float32).eps * float(np.abs(values).max()):
        raise ValueError(
            f"files: {path}: {name} is irregular (spacing {abs(step):g} varies by up to {dev:g}; a Gaussian or "
            "curvilinear grid needs regridding to a regular lat/lon grid first)"
        )
    return step


def _open_file(path: str, variables: Sequence[str], select: dict[str, Any]):
    """One file, lazily: the requested variables it holds, renamed to ``time, lat, lon``, latitude ascending,
    longitude increasing without a repeated cyclic column; every CF check of one file."""
    import xarray as xr

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"files: {path} does not exist")
    engine = _engine(p)
    try:
        ds = xr.open_dataset(p, engine=engine, chunks={})
    except Exception as err:  # a damaged or unsupported file: what the backend said, on one line
        raise ValueError(f"files: {path} could not be opened with {engine} ({type(err).__name__}: {err})") from err
    present = [v for v in variables if v in ds.data_vars]
    if not present:
        raise ValueError(
            f"files: {path} holds none of the variables {', '.join(variables)} (it has: {', '.join(map(str, ds.data_vars))})"
        )
    ds = ds[present]
    names = {kind: _find_coord(ds, kind, path) for kind in _CORE}
    for kind, name in names.items():
        if ds[name].ndim != 1:
            raise ValueError(
                f"files: {path}: {kind} coordinate {name!r} has dimensions {ds[name].dims}; a regular lat/lon grid "
                "has 1-D coordinates (a curvilinear grid needs regridding first)"
            )
        dim = ds[name].dims[0]
        if dim != name:
            ds = ds.swap_dims({dim: name})
    ds = ds.rename({name: kind for kind, name in names.items() if name != kind})
    for kind in ("lat", "lon"):
        units = ds[kind].attrs.get("units")
        if units is not None and str(units).lower() not in _COORDS[kind][1] + _GENERIC_DEGREES:
            raise ValueError(
                f"files: {path}: {kind} coordinate units {units!r} (valid: {', '.join(_COORDS[kind][1][:2])} or degrees)"
            )
    for dim, value in select.items():
        if dim in ds.dims:
            try:
                ds = ds.sel({dim: value})
            except KeyError:
                raise ValueError(
                    f"select: {dim}={value!r} is not in {path} (values: {ds[dim].values.tolist()[:10]})"
                ) from None
    extra = [d for d in ds.dims if d not in _CORE and ds.sizes[d] == 1]
    ds = ds.squeeze(extra, drop=True) if extra else ds
    for v in present:
        if set(ds[v].dims) != set(_CORE):
            other = [d for d in ds[v].dims if d not in _CORE]
            raise ValueError(
                f"variables: {v!r} in {path} has dimensions {ds[v].dims}; choose one value of {', '.join(other)} "
                f"with --set select.{other[0]}=VALUE" if other else
                f"variables: {v!r} in {path} has dimensions {ds[v].dims}, expected time, latitude and longitude"
            )  # fmt: skip
    ds = ds.transpose(*_CORE)
    t = ds.indexes["time"]
    if not (np.issubdtype(ds["time"].dtype, np.datetime64) or type(t).__name__ == "CFTimeIndex"):
        raise ValueError(
            f"files: {path}: time coordinate is not a CF time (units like 'hours since 1900-01-01' and a calendar)"
        )
    if not t.is_monotonic_increasing or not t.is_unique:
        raise ValueError(f"files: {path}: time is not sorted increasing without repeats")
    lat = ds["lat"].values.astype(np.float64)
    if lat.min() < -90.0 - 1e-6 or lat.max() > 90.0 + 1e-6:
        raise ValueError(f"files: {path}: latitudes outside [-90, 90] ({lat.min():g} to {lat.max():g})")
    if _regular_step(lat, "latitude", path) < 0:
        ds = ds.isel(lat=slice(None, None, -1))
    lon = ds["lon"].values.astype(np.float64)
    if _regular_step(lon, "longitude", path, modulo=360.0) < 0:
        ds = ds.isel(lon=slice(None, None, -1))
        lon = lon[::-1]
    step = abs(_regular_step(lon, "longitude", path, modulo=360.0))
    if len(lon) * step > 360.0 + 1e-3 * step:
        if abs((lon[-1] - lon[0]) % 360.0) < 1e-3 * step or abs((lon[-1] - lon[0]) % 360.0 - 360.0) < 1e-3 * step:
            ds = ds.isel(lon=slice(0, -1))  # the cyclic column repeats the first one (0 and 360)
        else:
            raise ValueError(f"files: {path}: longitude covers more than 360° ({len(lon)} columns of {step:g}°)")
    return ds


def open_source(files: Sequence[str], variables: Sequence[str], select: dict[str, Any] | None = None) -> Source:
    """Open and check ``files`` (lazily), and join them: every file on the same grid, each variable's units the
    same in every file that holds it, no time step of a variable in two files."""
    import xarray as xr

    select = select or {}
    parts = [_open_file(f, variables, select) for f in files]
    ref, ref_path = parts[0], files[0]
    lat = ref["lat"].values.astype(np.float64)
    lon = ref["lon"].values.astype(np.float64)
    for part, path in zip(parts[1:], files[1:]):
        other_lat, other_lon = part["lat"].values, part["lon"].values
        same = (
            len(other_lat) == len(lat)
            and len(other_lon) == len(lon)
            and np.allclose(other_lat, lat, atol=1e-6)
            and np.allclose((other_lon - lon + 180.0) % 360.0 - 180.0, 0.0, atol=1e-6)
        )
        if not same:
            raise ValueError(
                f"files: {path} is on another grid than {ref_path} ({len(other_lat)}x{len(other_lon)} points from "
                f"({other_lat[0]:g}, {other_lon[0]:g}) vs {len(lat)}x{len(lon)} from ({lat[0]:g}, {lon[0]:g}))"
            )
    unknown = [d for d in select if not any(d in p.coords for p in parts)]  # a selected dimension stays a coordinate
    if unknown:
        raise ValueError(f"select: no file has a dimension {unknown[0]!r}")
    units: dict[str, str | None] = {}
    times: dict[str, np.ndarray] = {}
    arrays = []
    for v in variables:
        holders = [(p, f) for p, f in zip(parts, files) if v in p.data_vars]
        if not holders:
            raise ValueError(f"variables: {v!r} is in none of the files ({', '.join(files)})")
        first = holders[0][1]
        units[v] = holders[0][0][v].attrs.get("units")
        for p, f in holders[1:]:
            if p[v].attrs.get("units") != units[v]:
                raise ValueError(
                    f"variables: {v!r} has units {units[v]!r} in {first} but {p[v].attrs.get('units')!r} in {f}"
                )
        holders.sort(key=lambda pf: pf[0]["time"].values[0])
        t = np.sort(np.concatenate([p["time"].values for p, _ in holders]))
        repeated = np.flatnonzero(t[1:] == t[:-1])
        if len(repeated):
            raise ValueError(
                f"files: two files hold {v!r} at {_when(t[repeated[0]])} (overlapping files); keep one of them"
            )
        times[v] = t
        # auxiliary coordinates (ERA5's number, expver) are dropped: only time, lat, lon are joined
        pieces = [p[v].reset_coords(drop=True).assign_coords(lat=lat, lon=lon) for p, _ in holders]
        arrays.append(xr.concat(pieces, dim="time") if len(pieces) > 1 else pieces[0])
    data = xr.merge(arrays, join="outer", compat="override", combine_attrs="drop_conflicts").sortby("time")
    dlat = abs(_regular_step(lat, "latitude", ref_path))
    dlon = abs(_regular_step(lon, "longitude", ref_path, modulo=360.0))
    return Source(data=data, grid=Grid(lat, lon, dlat, dlon), units=units, times=times)


# ------------------------------------------------------------------------------------------------
# environments on the grid
# ------------------------------------------------------------------------------------------------
def _lattice(lo: float, hi: float, x0: float, step: float) -> tuple[int, int]:
    """``(first, last)``: indices k of the lattice points ``x0 + k * step`` with ``lo <= x < hi`` (last < first:
    none), to a thousandth of a step."""
    return math.ceil((lo - x0) / step - 1e-3), math.ceil((hi - x0) / step - 1e-3) - 1


def box_indices(box: tuple[float, float, float, float], grid: Grid, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)``: indices of the grid points in ``box`` (``lo <= coordinate < hi``), rows south to north,
    columns west to east from ``lon_lo`` (wrapping modulo 360 on a periodic grid). A box must hold every point
    its grid's lattice has in it: one reaching past the files' latitudes, or past the longitudes of a grid that
    is not global, is an error rather than a smaller box."""
    lat_lo, lat_hi, lon_lo, lon_hi = box
    first, last = _lattice(lat_lo, lat_hi, grid.lat[0], grid.dlat)
    if first < 0 or last > len(grid.lat) - 1:
        raise ValueError(
            f"{where}: latitudes [{lat_lo:g}, {lat_hi:g}) go past the files' latitudes {grid.lat[0]:g} to "
            f"{grid.lat[-1]:g}; set lat_range (or the boxes) inside them"
        )
    rows = np.arange(first, last + 1)
    tol = 1e-3 * grid.dlon
    offset = (grid.lon - lon_lo + tol) % 360.0 - tol  # in [-tol, 360 - tol): degrees east of lon_lo
    inside = offset < (lon_hi - lon_lo) - tol
    cols = np.flatnonzero(inside)[np.argsort(offset[inside], kind="stable")]
    if not grid.periodic:
        start = grid.lon[0] + (lon_lo - grid.lon[0] + tol) % 360.0 - tol  # lon_lo east of the first column
        first, last = _lattice(start, start + lon_hi - lon_lo, grid.lon[0], grid.dlon)
        if first < 0 or last > len(grid.lon) - 1:
            raise ValueError(
                f"{where}: longitudes [{lon_lo:g}, {lon_hi:g}) go past the files' longitudes {grid.lon[0]:g} to "
                f"{grid.lon[-1]:g} (the grid is not global, so longitude does not wrap)"
            )
    if len(rows) == 0 or len(cols) == 0:
        raise ValueError(f"{where}: [{lat_lo:g}, {lat_hi:g}) x [{lon_lo:g}, {lon_hi:g}) holds no grid point")
    return rows, cols


def coarsen_blocks(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of the last two axes (sizes divisible by k), accumulated in float64."""
    if k == 1:
        return x
    *lead, h, w = x.shape
    return x.reshape(*lead, h // k, k, w // k, k).mean(axis=(-3, -1), dtype=np.float64).astype(x.dtype)


# ------------------------------------------------------------------------------------------------
# time periods and trajectory windows
# ------------------------------------------------------------------------------------------------
def _when(t) -> str:
    """A time step for messages and provenance: ISO seconds (numpy datetime64) or the cftime text."""
    return str(np.datetime_as_string(t, unit="s")) if isinstance(t, np.datetime64) else str(t)


def _hours(delta) -> float:
    """A time difference (numpy timedelta64 or datetime.timedelta, for cftime) in hours."""
    if isinstance(delta, np.timedelta64):
        return float(delta / np.timedelta64(1, "s")) / 3600.0
    return delta.total_seconds() / 3600.0


def period_positions(src: Source, text: str, name: str, stride: int) -> np.ndarray:
    """Indices into ``src.data``'s time axis of the period ``text`` (START:END, inclusive), every ``stride``-th
    step; checked: not empty, regularly spaced, every variable has data at each of them."""
    start, end = parse_time_range(text, name)
    index = src.data.indexes["time"]
    pos = np.arange(len(index))[index.slice_indexer(start, end)][::stride]
    if len(pos) == 0:
        raise ValueError(
            f"{name}: {text} selects no time step (the files cover {_when(src.data['time'].values[0])} to {_when(src.data['time'].values[-1])})"
        )
    times = src.data["time"].values[pos]
    if len(pos) > 1:
        steps = np.array([_hours(d) for d in np.diff(times)])
        bad = np.flatnonzero(np.abs(steps - steps[0]) > 1e-6 * steps[0])
        if len(bad):
            raise ValueError(
                f"{name}: the time steps are irregular ({steps[bad[0]]:g} h after {_when(times[bad[0]])} where the step is "
                f"{steps[0]:g} h); a trajectory needs equally spaced frames"
            )
    for v, have in src.times.items():
        missing = ~np.isin(times, have)
        if missing.any():
            raise ValueError(
                f"{name}: no file holds {v!r} at {_when(times[np.flatnonzero(missing)[0]])} (and {int(missing.sum()) - 1} more)"
            )
    return pos


def windows(pos: np.ndarray, n_frames: int, stride: int, name: str) -> list[np.ndarray]:
    """Windows of ``n_frames + 1`` consecutive positions starting every ``stride`` positions."""
    if len(pos) < n_frames + 1:
        raise ValueError(
            f"{name}: {len(pos)} time steps, fewer than one trajectory's n_frames + 1 = {n_frames + 1}; lower "
            "n_frames (or time_stride) or widen the period"
        )
    return [pos[s : s + n_frames + 1] for s in range(0, len(pos) - n_frames, stride)]


# ------------------------------------------------------------------------------------------------
# the dataset descriptor (the role a System plays for simulated data)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GriddedSource:
    """What ``dataset.create_partial`` records about imported data: channels, parameters, frame spacing (hours),
    one environment's extent in degrees (``domain``) and frame size (``grid``), and the provenance (``settings``:
    files, units, boxes, grid steps, window start times)."""

    param_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    dt_frame: float
    domain: tuple[tuple[float, float], tuple[float, float]]
    grid: tuple[int, int]
    info: dict[str, Any]
    name: str = SYSTEM_NAME

    def settings(self) -> dict[str, Any]:
        return self.info


def _read_window(src: Source, variables: Sequence[str], frames: np.ndarray, rows: slice) -> np.ndarray:
    """float32 ``[T, C, rows, lon]``: the frames at time positions ``frames`` (an arithmetic run), computed."""
    step = int(frames[1] - frames[0]) if len(frames) > 1 else 1
    block = src.data[list(variables)].isel(time=slice(int(frames[0]), int(frames[-1]) + 1, step), lat=rows)
    return np.stack([np.asarray(block[v].values, dtype=np.float32) for v in variables], axis=1)


def _cut(frames: np.ndarray, index: list[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """``[n_env, T, C, H, W]``: every environment's box from frames ``[T, C, rows, lon]``, coarsened by ``k``."""
    return np.stack([coarsen_blocks(frames[:, :, r[:, None], c[None, :]], k) for r, c in index])


def _check_finite(x: np.ndarray, variables, boxes, when: Sequence[str]) -> None:
    """A one-line error naming the variable, the environment and the time of the first NaN/inf in ``x``
    ``[n_env, T, C, H, W]``."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    e, t, c = (int(i) for i in np.argwhere(bad)[0][:3])
    lat_lo, lat_hi, lon_lo, lon_hi = boxes[e]
    count = int(bad[e, t, c].sum())
    raise ValueError(
        f"variables: {variables[c]!r} has {count} NaN/inf point(s) in environment {e} (lat [{lat_lo:g}, "
        f"{lat_hi:g}), lon [{lon_lo:g}, {lon_hi:g})) at {when[t]} (a land/sea mask or missing data?); choose "
        "boxes without masked points or fill them first"
    )


def _env_params(partial: Path, centres: np.ndarray, variables, stats: Sequence[str], n_train: int) -> np.ndarray:
    """``[n_env, P]`` float64: box centres, then per variable the requested statistics of its training frames."""
    if not stats:
        return centres
    import h5py

    cols = []
    with h5py.File(partial, "r") as f:
        traj = f["trajectories"]
        for e in range(centres.shape[0]):
            x = traj[e, :n_train].astype(np.float64)  # [n_train, T+1, C, H, W]
            x = np.moveaxis(x, 2, 0).reshape(len(variables), -1)
            row = {"mean": x.mean(axis=1), "std": x.std(axis=1)}
            cols.append(np.stack([row[s][c] for c in range(len(variables)) for s in stats]))
    return np.concatenate([centres, np.stack(cols)], axis=1)


def _write_params_and_split(partial: Path, params: np.ndarray, split: dict[str, torch.Tensor]) -> None:
    import h5py

    with h5py.File(partial, "r+") as f:
        del f["params"]
        f.create_dataset("params", data=params)
        for k in ds_mod.SPLITS:
            del f[f"split/{k}"]
            f["split"].create_dataset(k, data=split[k].numpy().astype(np.int64))
        del f[_DONE]
        f["env_done"][...] = True


# ------------------------------------------------------------------------------------------------
# the import
# ------------------------------------------------------------------------------------------------
def import_dataset(
    files: Sequence[str], variables: Sequence[str], train_time: str, test_time: str, out: str, **overrides
) -> Path:
    """Import (or resume, or reuse) a dataset; ``overrides`` are ``ImportConfig`` fields (e.g. ``regions="6x12"``,
    ``n_seen=24``)."""
    cfg = ImportConfig(
        files=tuple(files), variables=tuple(variables), train_time=train_time, test_time=test_time, out=out, **overrides
    )
    return import_gridded(cfg)


@dataclass
class ImportPlan:
    """Everything ``import_gridded`` writes, worked out and checked before any work: the opened files, each
    environment's box and grid indices (``index``: rows relative to ``rows``, the latitude rows read), the
    trajectory windows (time positions; training ones first) and the dataset descriptor."""

    src: Source
    boxes: list[tuple[float, float, float, float]]
    index: list[tuple[np.ndarray, np.ndarray]]
    rows: slice
    windows: list[np.ndarray]
    n_train: int
    source: GriddedSource


def plan_import(cfg: ImportConfig) -> ImportPlan:
    """Open and check the files and the settings against them; reads only the first frame of each period (the
    NaN-mask check)."""
    _require(cfg)
    src = open_source(cfg.files, cfg.variables, cfg.select)
    boxes = environment_boxes(cfg)
    index = [box_indices(b, src.grid, f"environment {e}") for e, b in enumerate(boxes)]
    sizes = {(len(r), len(c)) for r, c in index}
    if len(sizes) > 1:
        listed = ", ".join(f"{e}: {len(r)}x{len(c)}" for e, (r, c) in enumerate(index[:8]))
        raise ValueError(
            f"boxes: every environment must hold the same number of grid points (rows x columns: {listed})"
        )
    h, w = sizes.pop()
    k = cfg.coarsen
    if h % k or w % k:
        raise ValueError(f"coarsen: {k} does not divide the boxes' {h}x{w} grid points")
    times = src.data["time"].values
    train_pos = period_positions(src, cfg.train_time, "train_time", cfg.time_stride)
    test_pos = period_positions(src, cfg.test_time, "test_time", cfg.time_stride)
    overlap = np.intersect1d(train_pos, test_pos)
    if len(overlap):
        raise ValueError(
            f"test_time: overlaps train_time ({len(overlap)} time steps from {_when(times[overlap[0]])}); "
            "the test period must be held out"
        )
    train_w = windows(train_pos, cfg.n_frames, cfg.stride, "train_time")
    test_w = windows(test_pos, cfg.n_frames, cfg.stride, "test_time")
    dt, dt_test = (_hours(times[wd[0][1]] - times[wd[0][0]]) for wd in (train_w, test_w))
    if abs(dt - dt_test) > 1e-6 * dt:
        raise ValueError(f"test_time: frames every {dt_test:g} h, but the training period's are every {dt:g} h")
    used = np.unique(np.concatenate([r for r, _ in index]))
    rows = slice(int(used[0]), int(used[-1]) + 1)
    local = [(r - rows.start, c) for r, c in index]
    # a land/sea mask is static: the first frame of each period shows it
    for pos, name in ((train_pos, "train_time"), (test_pos, "test_time")):
        first = _cut(_read_window(src, cfg.variables, pos[:1], rows), local, k)
        _check_finite(first, cfg.variables, boxes, [f"the first frame of {name} ({_when(times[pos[0]])})"])
    stats = tuple(f"{v}_{s}" for v in cfg.variables for s in cfg.param_stats)
    source = GriddedSource(
        param_names=("lat_center", "lon_center") + stats,
        channel_names=tuple(cfg.variables),
        dt_frame=dt,
        domain=((0.0, h * src.grid.dlat), (0.0, w * src.grid.dlon)),
        grid=(h // k, w // k),
        info={
            "files": [str(Path(f).resolve()) for f in cfg.files],
            "variables": list(cfg.variables),
            "units": src.units,
            "boxes": [list(b) for b in boxes],
            "lat_step": src.grid.dlat * k,
            "lon_step": src.grid.dlon * k,
            "periodic_lon": src.grid.periodic,
            "coarsen": k,
            "time_unit": "hours",
            "train_starts": [_when(times[wd[0]]) for wd in train_w],
            "test_starts": [_when(times[wd[0]]) for wd in test_w],
        },
    )
    return ImportPlan(src, boxes, local, rows, train_w + test_w, len(train_w), source)


def import_gridded(cfg: ImportConfig) -> Path:
    """Build (or resume, or reuse) the dataset ``cfg`` describes; returns the final file path."""
    import h5py

    _require(cfg)
    out = Path(cfg.out)
    resolved = config_mod.to_dict(cfg)
    if ds_mod.reuse_finished(out, resolved):
        log.info("%s is complete; nothing to do", out)
        return out
    with io.output_lock(out, "dynadiff import"):
        t0 = time.perf_counter()
        plan = plan_import(cfg)
        n_traj = len(plan.windows)
        centres = np.array([[(a + b) / 2, (c + d) / 2] for a, b, c, d in plan.boxes], dtype=np.float64)
        partial = out.with_name(out.name + ".partial")
        done = ds_mod.resume_state(partial, resolved, _DONE, n_traj, "trajectory windows")
        if done is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            # params and split are placeholders of the right kind until the statistics are known (the end)
            ds_mod.create_partial(
                partial,
                system=plan.source,
                params=torch.zeros(len(plan.boxes), len(plan.source.param_names), dtype=torch.float64),
                split=split_environments(torch.from_numpy(centres), cfg.n_seen, cfg.out_fraction, cfg.seed),
                n_traj=n_traj,
                n_train_traj=plan.n_train,
                n_frames=cfg.n_frames,
                frame_shape=(len(cfg.variables), *plan.source.grid),
                seed=cfg.seed,
                config=resolved,
                versions=config_mod.versions(),
            )
            with h5py.File(partial, "r+") as f:
                f.create_dataset(_DONE, data=np.zeros(n_traj, dtype=bool))
            done = np.zeros(n_traj, dtype=bool)
        times = plan.src.data["time"].values
        bar = progress.bar(n_traj, int(done.sum()), "import", "traj", enabled=cfg.progress)
        for j, frames in enumerate(plan.windows):
            if done[j]:
                continue
            x = _cut(_read_window(plan.src, cfg.variables, frames, plan.rows), plan.index, cfg.coarsen)
            _check_finite(x, cfg.variables, plan.boxes, [_when(t) for t in times[frames]])  # x: [n_env, T+1, C, H, W]
            with h5py.File(partial, "r+") as f:
                f["trajectories"][:, j] = x
                f.flush()
                f[_DONE][j] = True
            bar.update(1)
        bar.close()
        params = _env_params(partial, centres, cfg.variables, cfg.param_stats, plan.n_train)
        split = split_environments(torch.from_numpy(params), cfg.n_seen, cfg.out_fraction, cfg.seed)
        _write_params_and_split(partial, params, split)
        ds_mod.finalize(partial, out)
        seconds = round(time.perf_counter() - t0, 2)
        config_mod.save_resolved(cfg, out.with_suffix(".config.yaml"), seed=cfg.seed, seconds=seconds)
        log.info("wrote %s in %.1f s", out, seconds)
        return out
