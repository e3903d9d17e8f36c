import numpy as np
import pytest
import torch

from massl.errors import ConfigError
from massl.device import autocast_dtype, pick_device
from massl.evaluation.inference import sliding_window_predict, window_starts
from massl.model.network import MASSLNet

torch.set_num_threads(1)


class PointwiseModel(torch.nn.Module):
    """prob = sigmoid(3x - 1) voxel by voxel, reconstruction = (x, 2x); records input shapes."""

    def __init__(self, spatial_dims, with_rec=True):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.rec_decoder = torch.nn.Identity() if with_rec else None
        self.seen = []

    def encode(self, x):
        self.seen.append(tuple(x.shape))
        return [x]

    def segment(self, feats):
        return 3 * feats[0] - 1

    def reconstruct(self, feats):
        return torch.cat([feats[0], 2 * feats[0]], dim=1)


class RampModel(PointwiseModel):
    """prob = 0.1, 0.2, 0.3, 0.4 along the last axis of every window, whatever the input."""

    def segment(self, feats):
        p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=feats[0].dtype)
        return torch.logit(p).expand_as(feats[0]).clone()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize(
    "size, window, overlap, starts",
    [
        (10, 4, 0.5, [0, 2, 4, 6]),
        (11, 4, 0.5, [0, 2, 4, 6, 7]),  # the last window is flush with the end
        (3, 4, 0.5, [0]),  # shorter than the window: one padded window
        (8, 4, 0.0, [0, 4]),
        (5, 1, 0.5, [0, 1, 2, 3, 4]),  # 2D models: every slice
    ],
)
def test_window_starts(size, window, overlap, starts):
    assert window_starts(size, window, overlap) == starts


@pytest.mark.parametrize(
    "spatial_dims, patch, shape",
    [(3, (4, 8, 8), (9, 13, 21)), (3, (4, 8, 8), (3, 5, 7)), (2, (8, 8), (3, 11, 6)), (2, (8, 8), (2, 20, 9))],
)
def test_stitching_reproduces_a_pointwise_model_exactly(spatial_dims, patch, shape):
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    model = PointwiseModel(spatial_dims)
    prob, rec = sliding_window_predict(model, volume, patch, batch_size=3, return_reconstruction=True)
    assert prob.dtype == np.float32 and prob.shape == shape
    np.testing.assert_allclose(prob, _sigmoid(3 * volume - 1), rtol=1e-6)
    np.testing.assert_allclose(rec, np.stack([volume, 2 * volume]), rtol=1e-6)
    # every forward pass saw whole windows (N, 1, *patch), at most batch_size of them
    assert all(s[1:] == (1, *patch) and s[0] <= 3 for s in model.seen)


def test_overlapping_windows_are_averaged_uniformly():
    model = RampModel(3, with_rec=False)
    # x: 8 voxels, window 4, step 2 -> windows at 0, 2, 4 with local probs 0.1 0.2 0.3 0.4
    # x=0: 0.1 | x=1: 0.2 | x=2: (0.3+0.1)/2 | x=3: (0.4+0.2)/2 | x=4: (0.3+0.1)/2 | x=5: (0.4+0.2)/2
    # x=6: 0.3 | x=7: 0.4
    expected = [0.1, 0.2, 0.2, 0.3, 0.2, 0.3, 0.3, 0.4]
    prob = sliding_window_predict(model, np.zeros((1, 1, 8), np.float32), (1, 1, 4), overlap=0.5)
    np.testing.assert_allclose(prob[0, 0], expected, rtol=1e-6)
    # the 2D model slides over each slice with the same windows
    prob2d = sliding_window_predict(RampModel(2, with_rec=False), np.zeros((2, 1, 8), np.float32), (1, 4))
    np.testing.assert_allclose(prob2d, np.broadcast_to(expected, (2, 1, 8)), rtol=1e-6)


def test_no_reconstruction_decoder_gives_none():
    model = PointwiseModel(3, with_rec=False)
    prob, rec = sliding_window_predict(model, np.zeros((4, 4, 4), np.float32), (4, 4, 4), return_reconstruction=True)
    assert rec is None and prob.shape == (4, 4, 4)


@pytest.mark.parametrize("spatial_dims, patch, shape", [(3, (4, 8, 8), (5, 11, 7)), (2, (8, 8), (3, 11, 6))])
def test_real_network_shapes(spatial_dims, patch, shape):
    torch.manual_seed(0)
    model = MASSLNet(spatial_dims, channels=(4, 8, 16), rec_channels=2).eval()
    volume = np.random.default_rng(1).random(shape, dtype=np.float32)
    prob, rec = sliding_window_predict(model, volume, patch, return_reconstruction=True)
    assert prob.shape == shape and rec.shape == (2, *shape)
    assert np.all((prob >= 0) & (prob <= 1)) and np.all(np.isfinite(rec))


def test_bf16_autocast_on_cpu_stays_close_and_float32():
    torch.manual_seed(0)
    model = MASSLNet(3, channels=(4, 8), rec_channels=0).eval()
    volume = np.random.default_rng(2).random((4, 6, 6), dtype=np.float32)
    full = sliding_window_predict(model, volume, (4, 4, 4))
    half = sliding_window_predict(model, volume, (4, 4, 4), amp_dtype=torch.bfloat16)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=0.05)


def test_patch_dimensionality_must_match_model():
    with pytest.raises(ValueError, match="2D patch"):
        sliding_window_predict(PointwiseModel(2), np.zeros((2, 4, 4), np.float32), (1, 4, 4))


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not valid"):
        pick_device("gpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_refuses_missing_cuda():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.parametrize(
    "amp, device, dtype",
    [("auto", "cpu", None), ("auto", "cuda", torch.bfloat16), ("bf16", "cpu", torch.bfloat16), ("off", "cuda", None)],
)
def test_autocast_dtype(amp, device, dtype):
    assert autocast_dtype(amp, device) == dtype


def test_autocast_dtype_rejects_unknown():
    with pytest.raises(ConfigError, match="training.amp"):
        autocast_dtype("fp8", "cpu")
