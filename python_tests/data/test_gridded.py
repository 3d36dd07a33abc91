"""``dynadiff import``: gridded NetCDF/Zarr files -> EnvDataset, checked against the analytic field the test writes.

The synthetic files are ERA5-like (``valid_time``, ``latitude`` from 90 down to -90 with both poles, ``longitude``
0..352.5, u100/v100 in m s**-1, hourly): a wave travelling east whose speed depends on the 90° x 90° tile it is in,
u = cos(lat) sin(2 pi (lon - c t) / 45°), v = cos(lat) cos(...), c = 2 + 1.5 col + 3 row degrees per hour (row 0
south of the equator, col = floor(lon / 90)). One file per period (2018, 2019) unless a test says otherwise.
"""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from dynadiff_fast import cli
from dynadiff_fast.data import EnvDataset
from dynadiff_fast.data import gridded as gr

STEP = 7.5  # degrees
WAVELENGTH = 45.0  # degrees


def speed(lat, lon):
    """Degrees east per hour of the tile holding (lat, lon): the environment's dynamics."""
    row = (np.asarray(lat) >= 0).astype(float)
    col = np.floor(np.mod(lon, 360.0) / 90.0)
    return 2.0 + 1.5 * col + 3.0 * row


def field(lat, lon, hours):
    """(u, v) at latitudes ``lat`` [H], longitudes ``lon`` [W], times ``hours`` [T] since 2018-01-01: [T, H, W] each."""
    lat, lon, hours = np.asarray(lat, float), np.asarray(lon, float), np.asarray(hours, float)
    c = speed(lat[:, None], lon[None, :])
    phase = 2 * np.pi * (lon[None, None, :] - c[None] * hours[:, None, None]) / WAVELENGTH
    amp = np.cos(np.deg2rad(lat))[None, :, None]
    return amp * np.sin(phase), amp * np.cos(phase)


def hours_since(times) -> np.ndarray:
    return ((pd.DatetimeIndex(times) - pd.Timestamp("2018-01-01")) / pd.Timedelta("1h")).to_numpy()


def wave_dataset(start: str, hours: int, lat_descending=True, lon_from=0.0, variables=("u100", "v100")) -> xr.Dataset:
    t = pd.date_range(start, periods=hours, freq="h")
    lat = np.arange(-90.0, 90.0 + 1e-9, STEP)
    lat = lat[::-1] if lat_descending else lat
    lon = lon_from + np.arange(0.0, 360.0, STEP)
    u, v = field(lat, lon, hours_since(t))
    data = {"u100": u, "v100": v}
    return xr.Dataset(
        {k: (("valid_time", "latitude", "longitude"), data[k].astype("f4"), {"units": "m s**-1"}) for k in variables},
        coords={
            "valid_time": t,
            "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )


def write(ds: xr.Dataset, path) -> str:
    if str(path).endswith(".zarr"):
        ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    else:
        ds.to_netcdf(path, engine="h5netcdf")
    return str(path)


N_FRAMES = 10
TRAIN_H, TEST_H = 3 * (N_FRAMES + 1), 2 * (N_FRAMES + 1)  # three training, two test trajectories


@pytest.fixture
def wave_files(tmp_path):
    return [
        write(wave_dataset("2018-01-01", TRAIN_H), tmp_path / "era5_2018.nc"),
        write(wave_dataset("2019-01-01", TEST_H), tmp_path / "era5_2019.nc"),
    ]


def config(files, out, **kw) -> gr.ImportConfig:
    base = dict(
        files=tuple(files),
        variables=("u100", "v100"),
        train_time="2018-01:2018-01",
        test_time="2019-01:2019-01",
        regions="2x4",
        n_seen=4,
        n_frames=N_FRAMES,
        out=str(out),
        progress=False,
    )
    return gr.ImportConfig(**{**base, **kw})


def run(files, out, **kw):
    return EnvDataset(gr.import_gridded(config(files, out, **kw)))


def expected_box(lat_lo, lat_hi, lon_lo, lon_hi, start: str, n: int) -> np.ndarray:
    """[n, 2, H, W]: the analytic field on the grid points of a box (lo <= coord < hi), from ``start``, hourly."""
    lat = np.arange(-90.0, 90.0 + 1e-9, STEP)
    lat = lat[(lat >= lat_lo) & (lat < lat_hi)]
    lon = np.arange(lon_lo, lon_hi - 1e-9, STEP)
    u, v = field(lat, lon, hours_since(pd.date_range(start, periods=n, freq="h")))
    return np.stack([u, v], axis=1)


# ------------------------------------------------------------------------------------------------
# the dataset
# ------------------------------------------------------------------------------------------------
def test_import_writes_the_simulated_datasets_format(wave_files, tmp_path):
    with run(wave_files, tmp_path / "w.h5") as ds:
        assert ds.system_name == "gridded" and ds.channel_names == ("u100", "v100")
        assert (ds.n_env, ds.n_traj, ds.n_train_traj, ds.n_frames) == (8, 5, 3, N_FRAMES + 1)
        assert ds.frame_shape == (2, 12, 12) and ds.dt_frame == 1.0
        assert ds.param_names == ("lat_center", "lon_center")
        # tiles row by row from the south-west corner
        assert ds.params[0].tolist() == [-45.0, 45.0] and ds.params[7].tolist() == [45.0, 315.0]
        assert ds.params[:4, 1].tolist() == [45.0, 135.0, 225.0, 315.0]
        split = {k: v.tolist() for k, v in ds.split.items()}
        assert len(split["seen"]) == 4 and sorted(sum(split.values(), [])) == list(range(8))
        # trajectory j of env e: the analytic field on the tile, window j of its period (raw, float32)
        raw = ds.load(normalized=False).numpy()
        for e in range(8):
            lat_lo, lon_lo = -90.0 + 90.0 * (e // 4), 90.0 * (e % 4)
            box = (lat_lo, lat_lo + 90.0, lon_lo, lon_lo + 90.0)
            for j in range(5):
                start = pd.Timestamp("2018-01-01" if j < 3 else "2019-01-01") + pd.Timedelta(hours=11 * (j % 3))
                np.testing.assert_allclose(raw[e, j], expected_box(*box, str(start), N_FRAMES + 1), atol=1e-6)
        # standardisation: per channel over the seen environments' training trajectories, as for simulated data
        seen = raw[ds.split["seen"].numpy(), :3].astype(np.float64)
        np.testing.assert_allclose(ds.mean.numpy(), seen.mean(axis=(0, 1, 2, 4, 5)), atol=1e-6)
        np.testing.assert_allclose(ds.std.numpy(), seen.std(axis=(0, 1, 2, 4, 5)), rtol=1e-5)
        assert ds.solver["units"] == {"u100": "m s**-1", "v100": "m s**-1"} and ds.solver["periodic_lon"]
        assert ds.solver["test_starts"][0].startswith("2019-01-01T00")
    assert not (tmp_path / "w.h5.partial").exists()


def test_the_paper_tiling_of_an_era5_grid_gives_120_rows_per_tile_and_skips_the_north_pole():
    lat = np.arange(-90.0, 90.0 + 1e-9, 0.25)  # 721 rows, both poles
    grid = gr.Grid(lat=lat, lon=np.arange(0.0, 360.0, 0.25), dlat=0.25, dlon=0.25)
    cfg = gr.ImportConfig(regions="6x12")
    boxes = gr.environment_boxes(cfg)
    assert len(boxes) == 72 and boxes[0] == (-90.0, -60.0, 0.0, 30.0) and boxes[-1] == (60.0, 90.0, 330.0, 360.0)
    index = [gr.box_indices(b, grid, "box") for b in boxes]
    assert {(len(r), len(c)) for r, c in index} == {(120, 120)}
    rows = np.concatenate([r for r, _ in index[::12]])
    assert len(np.unique(rows)) == 720 and lat[rows].min() == -90.0 and 90.0 not in lat[rows]


def test_longitude_is_periodic_and_either_grid_order_or_convention_gives_the_same_data(wave_files, tmp_path):
    other = [
        write(wave_dataset("2018-01-01", TRAIN_H, lat_descending=False, lon_from=-180.0), tmp_path / "a.nc"),
        write(wave_dataset("2019-01-01", TEST_H, lat_descending=False, lon_from=-180.0), tmp_path / "b.nc"),
    ]
    with run(wave_files, tmp_path / "x.h5") as a, run(other, tmp_path / "y.h5") as b:
        # the same field up to float rounding of the phase (lon -180 and 180 are eight wavelengths apart)
        torch.testing.assert_close(a.load(normalized=False), b.load(normalized=False), atol=1e-6, rtol=0)
    # a box across the prime meridian, written either way, wraps round the periodic grid
    boxes = (
        [[-45.0, 45.0, 330.0, 420.0], [0.0, 90.0, 0.0, 90.0]],
        [[-45.0, 45.0, -30.0, 60.0], [0.0, 90.0, 0.0, 90.0]],
    )
    with (
        run(wave_files, tmp_path / "p.h5", regions="", boxes=boxes[0], n_seen=1) as p,
        run(wave_files, tmp_path / "q.h5", regions="", boxes=boxes[1], n_seen=1) as q,
    ):
        x = p.load(envs=0, normalized=False)[0].numpy()
        np.testing.assert_allclose(x[0], expected_box(-45.0, 45.0, 330.0, 420.0, "2018-01-01", N_FRAMES + 1), atol=1e-6)
        assert torch.equal(p.load(normalized=False), q.load(normalized=False))
        assert p.params[0].tolist() == [0.0, 375.0] and q.params[0].tolist() == [0.0, 15.0]  # the box's own frame


def test_coarsen_averages_blocks_and_param_stats_describe_the_training_frames(wave_files, tmp_path):
    with (
        run(wave_files, tmp_path / "full.h5") as full,
        run(wave_files, tmp_path / "c.h5", coarsen=3, param_stats=("mean", "std")) as c,
    ):
        assert c.frame_shape == (2, 4, 4)
        x = full.load(normalized=False).numpy()
        blocks = x.reshape(*x.shape[:4], 4, 3, 4, 3).mean(axis=(-3, -1))
        np.testing.assert_allclose(c.load(normalized=False).numpy(), blocks, atol=1e-6)
        assert c.param_names == ("lat_center", "lon_center", "u100_mean", "u100_std", "v100_mean", "v100_std")
        train = c.train(normalized=False).numpy().astype(np.float64)  # [env, traj, T, C, H, W]
        np.testing.assert_allclose(c.params[:, 2], train[:, :, :, 0].mean(axis=(1, 2, 3, 4)), atol=1e-9)
        np.testing.assert_allclose(c.params[:, 5], train[:, :, :, 1].std(axis=(1, 2, 3, 4)), atol=1e-9)
        assert c.solver["lat_step"] == 3 * STEP


def test_zarr_netcdf3_and_one_file_per_variable_give_the_same_dataset(wave_files, tmp_path):
    periods = (("2018-01-01", TRAIN_H), ("2019-01-01", TEST_H))
    stores = [write(wave_dataset(start, n), tmp_path / f"y{start[:4]}.zarr") for start, n in periods]
    netcdf3 = [str(tmp_path / f"c{start[:4]}.nc") for start, _ in periods]
    for (start, n), path in zip(periods, netcdf3):
        wave_dataset(start, n).to_netcdf(path, engine="scipy")  # NetCDF-3 (classic 64-bit offset)
    split = [write(wave_dataset(start, n, variables=(v,)), tmp_path / f"{v}_{start[:4]}.nc") for start, n in periods
             for v in ("v100", "u100")]  # fmt: skip
    with run(wave_files, tmp_path / "nc.h5") as a:
        for i, files in enumerate((stores, netcdf3, split)):
            with run(files, tmp_path / f"{i}.h5") as b:
                assert torch.equal(a.load(normalized=False), b.load(normalized=False)), files


def test_window_stride_time_stride_and_periods_within_one_file(tmp_path):
    one = write(wave_dataset("2018-01-01", 60), tmp_path / "one.nc")
    cfg = dict(train_time="2018-01-01T00:00:2018-01-01T23:00", test_time="2018-01-02T00:00:2018-01-03", n_frames=4)
    with run([one], tmp_path / "s.h5", window_stride=2, time_stride=2, **cfg) as ds:
        assert ds.dt_frame == 2.0
        # 24 training hours -> 12 frames every 2 h -> windows of 5 starting every 2 frames: 0, 2, 4, 6
        assert ds.n_train_traj == 4 and ds.solver["train_starts"][1].startswith("2018-01-01T04")
        x = ds.load(envs=5, trajs=1, normalized=False)[0, 0].numpy()
        start = pd.Timestamp("2018-01-01T04:00")
        lat = np.arange(0.0, 90.0 - 1e-9, STEP)
        lon = np.arange(90.0, 180.0 - 1e-9, STEP)
        u, v = field(lat, lon, hours_since(pd.date_range(start, periods=5, freq="2h")))
        np.testing.assert_allclose(x, np.stack([u, v], axis=1), atol=1e-6)


def test_an_interrupted_import_resumes_to_the_same_file(wave_files, tmp_path, monkeypatch):
    ref = gr.import_gridded(config(wave_files, tmp_path / "ref.h5"))
    out = tmp_path / "r.h5"
    real, calls = gr._read_window, []

    def flaky(src, variables, frames, rows):
        calls.append(len(frames))
        if len(calls) == 5:  # two first-frame mask checks, then windows 0 and 1, then stop in window 2
            raise KeyboardInterrupt
        return real(src, variables, frames, rows)

    monkeypatch.setattr(gr, "_read_window", flaky)
    with pytest.raises(KeyboardInterrupt):
        gr.import_gridded(config(wave_files, out))
    with h5py.File(out.with_name(out.name + ".partial"), "r") as f:
        assert f[gr._DONE][...].tolist() == [True, True, False, False, False]
    calls.clear()
    monkeypatch.setattr(gr, "_read_window", lambda *a: (calls.append(1), real(*a))[1])
    gr.import_gridded(config(wave_files, out))
    assert len(calls) == 2 + 3  # the mask checks, then only the three windows not yet written
    with EnvDataset(ref) as a, EnvDataset(out) as b:
        assert torch.equal(a.load(normalized=False), b.load(normalized=False))
        assert a.split.keys() == b.split.keys() and all(torch.equal(a.split[k], b.split[k]) for k in a.split)
        assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    # a finished file is reused; another config is refused
    assert gr.import_gridded(config(wave_files, out)) == out
    with pytest.raises(ValueError, match="exists and was made with another config"):
        gr.import_gridded(config(wave_files, out, seed=1))


def test_the_cli_takes_space_separated_files_and_variables(wave_files, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = ["import", "--files", *wave_files, "--variables", "u100", "v100", "--train-time", "2018-01:2018-01",
            "--test-time", "2019-01:2019-01", "--regions", "2x4", "--n-seen", "4", "--n-frames", "10", "--out", str(out),
            "--no-progress", "-q"]  # fmt: skip
    assert cli.main(args) == 0
    assert "gridded, 8 envs x 5 traj" in capsys.readouterr().out
    saved = json.loads(h5py.File(out, "r").attrs["config"])
    assert saved["files"] == wave_files and saved["variables"] == ["u100", "v100"]


def test_the_gridded_experts_are_the_papers_era5_fno():
    from dynadiff_fast.experts.configs import expert_config
    from dynadiff_fast.stages.zoo import zoo_preset

    cfg = expert_config("gridded", "paper", in_channels=3, out_channels=3)
    assert (cfg.in_channels, cfg.hidden_channels, cfg.n_modes, cfg.n_layers) == (3, 64, (8, 8), 4)
    paper = zoo_preset("gridded", "paper")
    assert (paper.pretrain_epochs, paper.finetune_epochs) == (50, 20)


# ------------------------------------------------------------------------------------------------
# errors: one line, naming the argument, before any work
# ------------------------------------------------------------------------------------------------
def _edit(ds: xr.Dataset, what: str) -> xr.Dataset:
    if what == "no_lat":
        return ds.rename(latitude="y").assign_coords(y=("y", ds["latitude"].values, {}))
    if what == "unsorted":
        lat = ds["latitude"].values.copy()
        lat[[3, 4]] = lat[[4, 3]]
        return ds.assign_coords(latitude=("latitude", lat, ds["latitude"].attrs))
    if what == "irregular":
        lat = ds["latitude"].values.copy()
        lat[5] += 2.0
        return ds.assign_coords(latitude=("latitude", lat, ds["latitude"].attrs))
    if what == "radians":
        return ds.assign_coords(latitude=("latitude", ds["latitude"].values, {"units": "radians"}))
    if what == "nan_mask":
        u = ds["u100"].values.copy()
        u[:, 2:4, 5:8] = np.nan  # latitudes 75, 67.5 N, longitudes 37.5 to 52.5 E: environment 4
        return ds.assign(u100=(ds["u100"].dims, u, ds["u100"].attrs))
    if what == "units":
        return ds.assign(v100=ds["v100"].assign_attrs(units="km h**-1"))
    if what == "level":
        return ds.expand_dims(pressure_level=[850.0, 500.0]).transpose("valid_time", "pressure_level", ...)
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what, message",
    [
        ("no_lat", r"files: .*era5_2019\.nc has no latitude coordinate"),
        ("unsorted", r"files: .*latitude is not sorted"),
        ("irregular", r"files: .*latitude is irregular .*regridding"),
        ("radians", r"files: .*lat coordinate units 'radians' \(valid: degrees_north"),
        (
            "nan_mask",
            r"variables: 'u100' has 6 NaN/inf point\(s\) in environment 4 .*first frame of test_time \(2019-01-01T00:00:00\)",
        ),
        ("units", r"variables: 'v100' has units 'm s\*\*-1' in .*era5_2018\.nc but 'km h\*\*-1' in .*era5_2019\.nc"),
        ("level", r"variables: 'u100' .* choose one value of pressure_level with --set select.pressure_level="),
    ],
)
def test_cf_problems_are_one_line_errors(tmp_path, what, message):
    files = [
        write(wave_dataset("2018-01-01", TRAIN_H), tmp_path / "era5_2018.nc"),
        write(_edit(wave_dataset("2019-01-01", TEST_H), what), tmp_path / "era5_2019.nc"),
    ]
    with pytest.raises(ValueError, match=message) as err:
        gr.import_gridded(config(files, tmp_path / "bad.h5"))
    assert "\n" not in str(err.value)
    assert not list(tmp_path.glob("bad.h5*"))  # refused before any work


def test_select_picks_a_level(tmp_path):
    files = [
        write(_edit(wave_dataset("2018-01-01", TRAIN_H), "level"), tmp_path / "l18.nc"),
        write(_edit(wave_dataset("2019-01-01", TEST_H), "level"), tmp_path / "l19.nc"),
    ]
    with run(files, tmp_path / "l.h5", select={"pressure_level": 500.0}) as ds:
        assert ds.frame_shape == (2, 12, 12)
    with pytest.raises(ValueError, match=r"select: pressure_level=700.0 is not in"):
        run(files, tmp_path / "m.h5", select={"pressure_level": 700.0})
    with pytest.raises(ValueError, match=r"select: no file has a dimension 'level'"):
        run(files, tmp_path / "n.h5", select={"pressure_level": 500.0, "level": 1})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(test_time="2018-01-01T20:00:2018-01-02"), r"test_time: overlaps train_time"),
        (dict(test_time="2020-01:2020-02"), r"test_time: 2020-01:2020-02 selects no time step \(the files cover 2018"),
        (dict(n_frames=40), r"train_time: 33 time steps, fewer than one trajectory's n_frames \+ 1 = 41"),
        (dict(regions="", boxes=[[0, 90, 0, 90], [0, 45, 90, 180]], n_seen=1), r"boxes: every environment must hold"),
        (dict(coarsen=5), r"coarsen: 5 does not divide the boxes' 12x12 grid points"),
        (dict(variables=("u100", "t2m")), r"variables: 't2m' is in none of the files"),
        (dict(files=("nowhere.nc",)), r"files: nowhere.nc does not exist"),
    ],
)
def test_bad_settings_for_these_files_are_one_line_errors(wave_files, tmp_path, overrides, message):
    overrides = dict(overrides)
    files = overrides.pop("files", wave_files)
    error = FileNotFoundError if files != wave_files else ValueError
    with pytest.raises(error, match=message):
        gr.import_gridded(config(files, tmp_path / "bad.h5", **overrides))
    assert not list(tmp_path.glob("bad.h5*"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(regions="6by12"), r"regions: expected ROWSxCOLS"),
        (dict(boxes=[[0, 30, 0, 30]]), r"regions: give either regions"),
        (dict(regions="", boxes=[[60, 100, 0, 30]]), r"boxes\[0\]: latitudes must satisfy .*latitude does not wrap"),
        (dict(regions="", boxes=[[0, 30, 30, 0]]), r"boxes\[0\]: longitudes must satisfy lon_lo < lon_hi"),
        (dict(n_seen=8), r"n_seen: must be in \[1, 7\] for 8 environments, got 8"),
        (dict(regions="1x1"), r"boxes: one environment; the seen/unseen split needs at least two"),
        (dict(train_time="January"), r"train_time: expected START:END with two dates"),
        (dict(test_time="2019-02:2019-01"), r"test_time: START 2019-02 is after END 2019-01"),
        (dict(param_stats=("max",)), r"param_stats: unknown statistic 'max' \(valid: mean, std\)"),
        (dict(coarsen=0), r"coarsen: expected an integer >= 1, got 0"),
        (dict(lat_range=(-90.0, 95.0)), r"lat_range: expected -90 <= lo < hi <= 90"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_built(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(["a.nc"], "x.h5", **overrides)


def test_boxes_past_a_regional_grid_do_not_wrap(tmp_path):
    regional = wave_dataset("2018-01-01", TRAIN_H).isel(longitude=slice(0, 24))  # 0 .. 172.5 E
    files = [write(regional, tmp_path / "r18.nc"), write(wave_dataset("2019-01-01", TEST_H).isel(longitude=slice(0, 24)), tmp_path / "r19.nc")]  # fmt: skip
    with run(files, tmp_path / "ok.h5", lon_range=(0.0, 180.0), regions="2x2", n_seen=2) as ds:
        assert ds.n_env == 4 and not ds.solver["periodic_lon"]
    with pytest.raises(ValueError, match=r"environment 2: longitudes \[180, 270\) go past the files' longitudes 0 to"):
        run(files, tmp_path / "bad.h5")
    with pytest.raises(ValueError, match=r"environment 0: longitudes \[-30, 60\) go past"):
        run(files, tmp_path / "bad.h5", regions="", boxes=[[0, 90, -30, 60], [0, 90, 60, 150]], n_seen=1)


def test_cli_errors_are_one_line(wave_files, tmp_path, capsys):
    args = ["import", "--files", *wave_files, "--variables", "u100", "--train-time", "2018-01:2018-01", "--test-time",
            "2019-01:2019-01", "--n-seen", "4", "--out", str(tmp_path / "e.h5"), "-q"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("dynadiff import: error: regions: missing; pass --regions")


# ------------------------------------------------------------------------------------------------
# the whole pipeline on imported data, no simulator: import -> zoo -> VAE -> DiT -> evaluate
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_imported_data_runs_the_whole_pipeline_one_command_per_stage(tmp_path):
    from dynadiff_fast.experts.zoo import Zoo

    files = [
        write(wave_dataset("2018-01-01", 6 * (N_FRAMES + 1)), tmp_path / "era5_2018.nc"),
        write(wave_dataset("2019-01-01", 2 * (N_FRAMES + 1)), tmp_path / "era5_2019.nc"),
    ]
    data, zoo, run_dir, ev = (str(tmp_path / name) for name in ("era5.h5", "zoo", "dd", "eval"))
    cpu = ["--device", "cpu", "--no-progress", "-q"]
    stages = [
        ["import", "--files", *files, "--variables", "u100", "v100", "--train-time", "2018-01:2018-01",
         "--test-time", "2019-01:2019-01", "--regions", "2x4", "--n-seen", "4", "--n-frames", "10", "--out", data,
         "--no-progress", "-q"],
        ["zoo", "build", "--data", data, "--out", zoo, "--experts-per-env", "2", "--pretrain-epochs", "4",
         "--finetune-epochs", "8", "--val-rollout-steps", "5", "--set", "expert.hidden_channels=8",
         "--set", "expert.n_modes=[4, 4]", *cpu],
        ["train", "all", "--zoo", zoo, "--data", data, "--out", run_dir, "--set", "vae.steps=60",
         "--set", "vae.quality=false", "--set", "dit.steps=60", "--set", "dit.obs_len=5", *cpu],
        ["evaluate", "--run", run_dir, "--data", data, "--zoo", zoo, "--out", ev, "--methods",
         "dynadiff_prefix,base,one_per_env", "--n-samples", "2", "--strict", "--set", "protocol.obs_len=5",
         "--device", "cpu", "-q"],
    ]  # fmt: skip
    for args in stages:
        assert cli.main(args) == 0, args
    z = Zoo.open(zoo)
    assert z.system_name == "gridded" and z.config.in_channels == 2 and len(z) == 4 * 2
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert doc["system"] == "gridded" and doc["param_names"] == ["lat_center", "lon_center"]
    rmse = {k: {d: v[d]["rmse"]["mean"] for d in ("in_domain", "out_domain")} for k, v in doc["methods"].items()}
    assert set(rmse) == {"dynadiff_prefix", "base", "one_per_env"}
    assert all(np.isfinite(x) for r in rmse.values() for x in r.values()), rmse
    # the region's dynamics are learnable from its data: an expert trained on the environment beats the pooled model
    assert rmse["one_per_env"]["in_domain"] < rmse["base"]["in_domain"], rmse
    assert rmse["one_per_env"]["out_domain"] < rmse["base"]["out_domain"], rmse
    assert "gridded" in (tmp_path / "eval" / "report.md").read_text()
