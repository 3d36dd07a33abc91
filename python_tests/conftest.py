"""Test setup. TRITON_INTERPRET must be set before any Triton kernel module is imported, so it is
set here, at collection start, whenever no CUDA device is present."""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One thread: the CI machine has 2 vCPUs and the second is not a free core.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    """A seeded torch.Generator so every test's random data is reproducible."""
    return torch.Generator().manual_seed(1234)
