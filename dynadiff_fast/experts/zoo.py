"""The model zoo on disk: expert weights in safetensors shards plus one JSON manifest.

Layout of a zoo folder (written by ``dynadiff zoo build``, see ``stages/zoo.py``)::

    manifest.json                 everything below, with sha256 checksums of every weight file
    base.safetensors              the pretrained base expert (state dict keys of neuraloperator's FNO, or of the MLP)
    experts/env_0003.safetensors  the K experts of dataset environment 3, keys "k007/<state dict key>"
    experts/env_0003.json         that environment's expert records (merged into the manifest)
    config.yaml                   the resolved build config, versions and seed

Manifest (``FORMAT``, ``VERSION``)::

    system_name, expert_config (ExpertConfig or MLPExpertConfig fields), param_shapes {key: [shape, dtype]},
    dataset {path, system_name, param_names, channel_names, mean, std, seed, dt_frame, ...},
    build {resolved build config}, noise {how the per-expert noise layer/scale is chosen},
    validation {protocol of val_rmse}, base {file, sha256, train_loss, val_rmse per env},
    shards {relative path: sha256},
    experts [{env_index, params, k, seed, noise_layer, noise_sigma, train_loss, val_rmse,
              val_rmse_one_step, shard, prefix}]      (ordered by env_index, then k)

``Zoo.open`` checks the manifest against the architecture (every expert tensor's shape and dtype
against ``ExpertConfig.build()``), that every file it names lies inside the zoo folder (no absolute
path, no ``..``), and each shard's checksum on first read, so a truncated, foreign or misplaced file
fails with a clear error instead of loading wrong weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dynadiff_fast import io
from dynadiff_fast.data.dataset import identity_mismatches
from dynadiff_fast.experts.configs import config_from_dict
from dynadiff_fast.state_dict import module_tensors

FORMAT = "dynadiff-zoo"
VERSION = 1
MANIFEST = "manifest.json"
BASE_FILE = "base.safetensors"


def env_shard_name(env: int) -> str:
    """Relative path of the shard holding environment ``env``'s experts."""
    return f"experts/env_{env:04d}.safetensors"


def expert_prefix(k: int) -> str:
    """Key prefix of the ``k``-th expert of an environment inside its shard."""
    return f"k{k:03d}/"


def param_shapes(cfg: Any) -> dict[str, list]:
    """``{key: [shape, dtype]}`` of an expert built from ``cfg`` (the manifest's architecture fingerprint)."""
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module_tensors(cfg.build()).items()}


class Zoo:
    """Read access to a built zoo. ``Zoo.open(dir)``; indices ``i`` run over experts in manifest order.

    Attributes:
        config: the experts' ``ExpertConfig``; system_name; dataset_info (dict);
        params: float64 ``[N, P]`` environment parameters of each expert;
        env_index: int64 ``[N]`` dataset environment of each expert;
        val_rmse: float64 ``[N]`` validation RMSE (protocol in ``manifest["validation"]``);
        records: the manifest's per-expert dicts.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.config = config_from_dict(manifest["expert_config"])
        self.system_name: str = manifest["system_name"]
        self.dataset_info: dict[str, Any] = manifest["dataset"]
        self.records: list[dict[str, Any]] = manifest["experts"]
        n_param = len(self.dataset_info["param_names"])
        self.params = torch.tensor([r["params"] for r in self.records], dtype=torch.float64).reshape(-1, n_param)
        self.env_index = torch.tensor([r["env_index"] for r in self.records], dtype=torch.int64)
        self.val_rmse = torch.tensor([r["val_rmse"] for r in self.records], dtype=torch.float64)
        self._verified: set[str] = set()

    # ---- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike) -> Zoo:
        """Open the zoo in folder ``root``; raises ``FileNotFoundError``/``ValueError`` on a missing,
        unfinished, corrupt or foreign zoo, or one whose weights do not fit its architecture."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"zoo: {root} is not a folder")
        path = root / MANIFEST
        if not path.exists():
            hint = " (the build is unfinished: re-run `dynadiff zoo build` to finish it)" if root.exists() else ""
            raise FileNotFoundError(f"zoo: {path} does not exist{hint}")
        manifest = io.read_json(path, "zoo manifest")
        if manifest.get("format") != FORMAT:
            raise ValueError(f"zoo: {path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise ValueError(f"zoo: {path} has version {manifest.get('version')!r}; this code reads {VERSION}")
        zoo = cls(root, manifest)
        zoo._check_architecture()
        zoo._check_paths()
        return zoo

    def _check_paths(self) -> None:
        """Every file the manifest names (base, shards) is inside the zoo folder, and every expert's shard is
        listed with a checksum."""
        where = self.root / MANIFEST
        io.inside(self.root, self.manifest["base"]["file"], where, "base file")
        for rel in self.manifest["shards"]:
            io.inside(self.root, rel, where, "shard")
        for i, rec in enumerate(self.records):
            if rec["shard"] not in self.manifest["shards"]:
                raise ValueError(f"zoo: {where}: expert {i} names shard {rec['shard']!r}, which has no checksum entry")

    def _check_architecture(self) -> None:
        expected = param_shapes(self.config)
        stored = self.manifest["param_shapes"]
        if stored != expected:
            bad = [k for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]
            raise ValueError(
                f"zoo: {self.root} stores weights that do not fit its expert_config "
                f"(first mismatching keys: {bad[:3]}; stored {[stored.get(k) for k in bad[:3]]}, "
                f"config builds {[expected.get(k) for k in bad[:3]]})"
            )

    def check_dataset(self, ds) -> None:
        """Refuse a dataset other than the one this zoo was built from (call it before any compute): its
        experts are indexed by that file's environments and expect its standardisation."""
        bad = identity_mismatches(self.dataset_info, ds)
        if bad:
            raise ValueError(
                f"data: {ds.path} is not the dataset the zoo {self.root} was built from ({'; '.join(bad[:4])}); "
                "pass the zoo's own dataset"
            )

    # ---- metadata ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        n_env = len(set(self.env_index.tolist()))
        return f"Zoo({self.root}: {self.system_name}, {len(self)} experts over {n_env} environments)"

    @property
    def base_val_rmse(self) -> dict[int, float]:
        """Validation RMSE of the base model per dataset environment (same protocol as ``val_rmse``)."""
        return {int(k): float(v) for k, v in self.manifest["base"]["val_rmse"].items()}

    # ---- weights -----------------------------------------------------------------------------------
    def _shard(self, rel: str):
        """An open safetensors handle on shard ``rel``, its checksum verified on first use."""
        from safetensors import SafetensorError, safe_open

        path = self.root / rel
        if rel not in self._verified:
            if not path.exists():
                raise FileNotFoundError(f"zoo: shard {path} is missing")
            io.verify_checksum(path, self.manifest["shards"][rel], "zoo shard")
            self._verified.add(rel)
        try:
            return safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"zoo: shard {path} is not a readable safetensors file ({err})") from err

    def _check_index(self, i: int) -> int:
        if not hasattr(i, "__index__"):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        i = i.__index__()
        if not -len(self) <= i < len(self):
            raise IndexError(f"index: {i} out of range for a zoo of {len(self)} experts")
        return i % len(self)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Expert ``i``'s weights as a neuraloperator state dict (without ``_metadata``)."""
        rec = self.records[self._check_index(i)]
        with self._shard(rec["shard"]) as f:
            return {key: f.get_tensor(rec["prefix"] + key) for key in self.manifest["param_shapes"]}

    def state_dicts(self, indices: Sequence[int] | None = None) -> list[dict[str, torch.Tensor]]:
        """State dicts of experts ``indices`` (all when None), reading each shard once."""
        idx = list(range(len(self))) if indices is None else [self._check_index(i) for i in indices]
        by_shard: dict[str, list[int]] = {}
        for i in idx:
            by_shard.setdefault(self.records[i]["shard"], []).append(i)
        out: dict[int, dict[str, torch.Tensor]] = {}
        for rel, members in by_shard.items():
            with self._shard(rel) as f:
                for i in members:
                    prefix = self.records[i]["prefix"]
                    out[i] = {key: f.get_tensor(prefix + key) for key in self.manifest["param_shapes"]}
        return [out[i] for i in idx]

    def load_module(self, i: int) -> torch.nn.Module:
        """Expert ``i`` as the module ``config.build()`` makes (a neuraloperator ``FNO``, or an ``MLPExpert``), eval mode."""
        module = self.config.build()
        module.load_state_dict(self.state_dict(i))
        return module.eval()

    def batched(self, indices: Sequence[int] | None = None):
        """Experts ``indices`` (all when None) stacked in one ``BatchedFNO`` / ``BatchedMLP`` (eval mode)."""
        from dynadiff_fast.experts.stacked import experts_type

        return experts_type(self.config).from_state_dicts(self.config, self.state_dicts(indices)).eval()

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        base = self.manifest["base"]
        return io.load_safetensors(self.root / base["file"], base["sha256"], "zoo base model")

    def base_module(self) -> torch.nn.Module:
        """The pretrained base model every expert was fine-tuned from, as the module ``config.build()`` makes."""
        module = self.config.build()
        module.load_state_dict(self.base_state_dict())
        return module.eval()

    def indices(self, env: int | None = None) -> list[int]:
        """Expert indices of dataset environment ``env`` (all experts when None)."""
        if env is None:
            return list(range(len(self)))
        return (self.env_index == int(env)).nonzero().flatten().tolist()
