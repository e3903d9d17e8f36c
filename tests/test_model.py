import pytest
import torch

from massl.config import ModelConfig
from massl.methods import AUTOENCODER, METHODS
from massl.model.network import MASSLNet, build_model, count_parameters

torch.set_num_threads(1)
SMALL = (4, 8, 16)  # three levels: inputs divisible by 4


@pytest.mark.parametrize("spatial_dims, size", [(2, (16, 12)), (3, (8, 16, 12))])
@pytest.mark.parametrize("downsample", ["avgpool", "strided"])
def test_output_and_feature_shapes(spatial_dims, size, downsample):
    torch.manual_seed(0)
    model = MASSLNet(spatial_dims, channels=SMALL, downsample=downsample, rec_channels=2)
    x = torch.rand(2, 1, *size)
    feats = model.encode(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, *(s // 2**level for s in size)) for level, c in enumerate(SMALL)
    ]
    seg, rec = model(x)
    assert seg.shape == (2, 1, *size)
    assert rec.shape == (2, 2, *size)
    assert 0 <= rec.min() and rec.max() <= 1  # sigmoid output


def test_downsample_modes_have_equal_size_but_different_layers():
    avg = MASSLNet(2, channels=SMALL, downsample="avgpool")
    strided = MASSLNet(2, channels=SMALL, downsample="strided")
    assert count_parameters(avg) == count_parameters(strided)
    assert any(isinstance(m, torch.nn.AvgPool2d) for m in avg.modules())
    assert not any(isinstance(m, torch.nn.AvgPool2d) for m in strided.modules())
    assert any(getattr(m, "stride", None) == (2, 2) for m in strided.modules() if isinstance(m, torch.nn.Conv2d))


def test_paper_network_size():
    # SPEC section 1: about 8.3 M trainable parameters for MASSL, encoder about 3.5 M.
    model = build_model(ModelConfig(), METHODS["massl_alter"])
    assert model.rec_decoder is not None and model.seg_decoder is not None
    assert 8.1e6 <= count_parameters(model) <= 8.5e6
    assert 3.4e6 <= count_parameters(model.encoder) <= 3.6e6


def test_count_parameters_skips_frozen():
    model = MASSLNet(2, channels=SMALL)
    total = count_parameters(model)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == total - sum(p.numel() for p in model.encoder.parameters())


@pytest.mark.parametrize(
    "method, rec_channels, has_seg",
    [
        (METHODS["cnn"], 0, True),
        (METHODS["mssl_alter"], 1, True),
        (METHODS["massl_l07"], 2, True),
        (AUTOENCODER, 1, False),
        (METHODS["pretrain_dec"], 0, True),  # the reconstruction decoder belongs to the autoencoder run
        (METHODS["pretrain_cnn"], 0, True),
    ],
)
def test_build_model_follows_method(method, rec_channels, has_seg):
    model = build_model(ModelConfig(spatial_dims=2, channels=list(SMALL)), method)
    assert model.kwargs == {"spatial_dims": 2, "in_channels": 1, "channels": list(SMALL), "downsample": "avgpool",
                            "rec_channels": rec_channels, "segmentation": has_seg}  # model.pt's model_kwargs
    assert MASSLNet(**model.kwargs).kwargs == model.kwargs
    seg, rec = model(torch.rand(1, 1, 8, 8))
    assert (seg is not None) == has_seg == (model.seg_decoder is not None)
    if rec_channels:
        assert rec.shape[1] == rec_channels
    else:
        assert rec is None and model.rec_decoder is None


def test_reconstruction_ignores_shallow_features():
    torch.manual_seed(0)
    model = MASSLNet(3, channels=SMALL, rec_channels=2)
    feats = model.encode(torch.rand(1, 1, 8, 8, 8))
    perturbed = [f + torch.randn_like(f) for f in feats[:-1]] + [feats[-1]]
    assert torch.equal(model.reconstruct(feats), model.reconstruct(perturbed))
    # ...while the segmentation decoder does use them (the skips are real).
    assert not torch.allclose(model.segment(feats), model.segment(perturbed))


def test_encode_rejects_indivisible_input():
    model = MASSLNet(2, channels=SMALL)
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.rand(1, 1, 8, 10))
