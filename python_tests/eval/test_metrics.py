"""RMSE and SSIM against their definitions and scikit-image."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from dynadiff_fast.metrics import rmse, ssim


def _fields(rng, shape):
    true = torch.randn(shape, generator=rng)
    # a smooth field plus a perturbation, so SSIM lands well inside (0, 1)
    true = torch.nn.functional.avg_pool2d(true.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)
    pred = true + 0.3 * torch.randn(shape, generator=rng)
    return pred, true


def test_rmse_matches_definition(rng):
    pred, true = _fields(rng, (2, 5, 3, 16, 12))
    got = rmse(pred, true)
    want = ((pred - true) ** 2).mean(dim=(-3, -2, -1)).sqrt()
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert rmse(true, true).abs().max() == 0


def test_rmse_ode_frames(rng):
    pred, true = torch.randn(4, 7, 2, generator=rng), torch.randn(4, 7, 2, generator=rng)
    torch.testing.assert_close(rmse(pred, true, frame_dims=1), ((pred - true) ** 2).mean(-1).sqrt())


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("hw", [(16, 16), (11, 13), (32, 20)])
def test_ssim_matches_skimage(rng, gaussian, hw):
    pred, true = _fields(rng, (3, 2, *hw))
    if not gaussian or min(hw) >= 11:
        got = ssim(pred, true, gaussian=gaussian)
        for i in range(3):
            per_channel = []
            for c in range(2):
                t, p = true[i, c].double().numpy(), pred[i, c].double().numpy()
                per_channel.append(
                    structural_similarity(
                        t,
                        p,
                        data_range=float(t.max() - t.min()),
                        gaussian_weights=gaussian,
                        sigma=1.5,
                        use_sample_covariance=not gaussian,
                    )
                )
            np.testing.assert_allclose(got[i].item(), np.mean(per_channel), rtol=1e-5, atol=1e-6)


def test_ssim_fixed_data_range_and_identity(rng):
    pred, true = _fields(rng, (4, 1, 16, 16))
    got = ssim(pred, true, data_range=2.0, gaussian=False)
    for i in range(4):
        want = structural_similarity(true[i, 0].numpy(), pred[i, 0].numpy(), data_range=2.0)
        np.testing.assert_allclose(got[i].item(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ssim(true, true), torch.ones(4))


def test_ssim_constant_frame_is_finite():
    true = torch.zeros(1, 1, 12, 12)
    assert torch.isfinite(ssim(true + 0.1, true)).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        rmse(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="data_range"):
        ssim(torch.zeros(1, 1, 12, 12), torch.zeros(1, 1, 12, 12), data_range=0.0)
    with pytest.raises(TypeError, match="pred"):
        rmse(np.zeros((1, 1, 4, 4)), torch.zeros(1, 1, 4, 4))
