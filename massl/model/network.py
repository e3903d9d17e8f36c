"""The MASSL network (SPEC section 1): a shared encoder, a U-Net segmentation decoder and a
reconstruction decoder without skips. One definition serves 2D and 3D (`spatial_dims`), in
plain `torch.nn` layers (the CPU convolution path of `training.cpu_conv3d` is put in by whoever
runs the model: `massl.model.cpu_conv.set_cpu_conv3d`).

    x -> encoder -> feats[0..L-1] -> seg_decoder(feats)   -> logits (N, 1, ...)
                                  -> rec_decoder(feats[-1]) -> sigmoid (N, rec_channels, ...)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from massl.config import CHOICES, ModelConfig
from massl.methods import Method


def _conv(spatial_dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    return conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=True)


class ConvBlock(nn.Sequential):
    """3x3(x3) conv with zero padding -> InstanceNorm (affine off, no running stats) -> LeakyReLU(0.01)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, stride: int = 1):
        norm = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims]
        super().__init__(
            _conv(spatial_dims, cin, cout, 3, stride),
            norm(cout, eps=1e-5, affine=False, track_running_stats=False),
            nn.LeakyReLU(0.01),
        )


class UpBlock(nn.Sequential):
    """Nearest-neighbour x2 upsampling, then a conv block down to the next level's channels."""

    def __init__(self, spatial_dims: int, cin: int, cout: int):
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(spatial_dims, cin, cout))


class Encoder(nn.Module):
    """Levels of two conv blocks; x2 down between levels.

    `avgpool` (paper text) pools before the level's first conv; `strided` (released code) gives
    that first conv stride 2 instead, so both modes have the same parameter count.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: tuple[int, ...], downsample: str):
        super().__init__()
        if downsample not in CHOICES["model"]["downsample"]:
            raise ValueError(f"downsample must be one of {', '.join(CHOICES['model']['downsample'])}, got {downsample!r}")
        pool = {2: nn.AvgPool2d, 3: nn.AvgPool3d}[spatial_dims]
        self.levels = nn.ModuleList()
        cin = in_channels
        for i, cout in enumerate(channels):
            down = i > 0
            layers = [pool(2)] if down and downsample == "avgpool" else []
            stride = 2 if down and downsample == "strided" else 1
            layers += [ConvBlock(spatial_dims, cin, cout, stride), ConvBlock(spatial_dims, cout, cout)]
            self.levels.append(nn.Sequential(*layers))
            cin = cout

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class SegmentationDecoder(nn.Module):
    """U-Net path: per level up x2 + conv, concatenate the encoder skip, two conv blocks; 1x1 head."""

    def __init__(self, spatial_dims: int, channels: tuple[int, ...]):
        super().__init__()
        deep_to_shallow = list(reversed(channels))
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for cin, cout in zip(deep_to_shallow, deep_to_shallow[1:]):
            self.ups.append(UpBlock(spatial_dims, cin, cout))
            self.blocks.append(
                nn.Sequential(ConvBlock(spatial_dims, 2 * cout, cout), ConvBlock(spatial_dims, cout, cout))
            )
        self.head = _conv(spatial_dims, channels[0], 1, kernel=1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class ReconstructionDecoder(nn.Module):
    """The same up path fed by the bottleneck only (no skips), sigmoid head.

    One conv block per level after the up conv (the segmentation decoder has two): this gives
    the paper's ~8.3 M parameters for MASSL; two blocks would give ~8.8 M.
    """

    def __init__(self, spatial_dims: int, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        deep_to_shallow = list(reversed(channels))
        self.levels = nn.Sequential(
            *(
                nn.Sequential(UpBlock(spatial_dims, cin, cout), ConvBlock(spatial_dims, cout, cout))
                for cin, cout in zip(deep_to_shallow, deep_to_shallow[1:])
            )
        )
        self.head = _conv(spatial_dims, channels[0], out_channels, kernel=1)

    def forward(self, bottleneck: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.levels(bottleneck)))


class MASSLNet(nn.Module):
    """Shared encoder + optional segmentation decoder (1 logit channel) + optional reconstruction
    decoder (`rec_channels` sigmoid channels; 0 = none). MASSL: 2, MSSL/autoencoder: 1, CNN: 0."""

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        downsample: str = "avgpool",
        rec_channels: int = 2,
        segmentation: bool = True,
    ):
        super().__init__()
        if spatial_dims not in CHOICES["model"]["spatial_dims"]:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not segmentation and rec_channels <= 0:
            raise ValueError("a model needs a segmentation or a reconstruction decoder")
        # the constructor's arguments as model.pt stores them (`model_kwargs`), JSON-native
        self.kwargs = {"spatial_dims": spatial_dims, "in_channels": in_channels, "channels": list(channels),
                       "downsample": downsample, "rec_channels": rec_channels, "segmentation": segmentation}
        channels = tuple(int(c) for c in channels)
        self.spatial_dims = spatial_dims
        self.levels = len(channels)
        self.encoder = Encoder(spatial_dims, in_channels, channels, downsample)
        self.seg_decoder = SegmentationDecoder(spatial_dims, channels) if segmentation else None
        self.rec_decoder = ReconstructionDecoder(spatial_dims, channels, rec_channels) if rec_channels > 0 else None

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (one x2 down per level after the first)."""
        return 2 ** (self.levels - 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        spatial = tuple(x.shape[2:])
        if len(spatial) != self.spatial_dims or any(s % self.size_multiple for s in spatial):
            raise ValueError(
                f"input of spatial shape {spatial} does not fit a {self.spatial_dims}D network with "
                f"{self.levels} levels: need {self.spatial_dims} sizes divisible by {self.size_multiple}"
            )
        return self.encoder(x)

    def segment(self, feats: list[Tensor]) -> Tensor:
        if self.seg_decoder is None:
            raise RuntimeError("this model has no segmentation decoder")
        return self.seg_decoder(feats)

    def reconstruct(self, feats: list[Tensor]) -> Tensor:
        if self.rec_decoder is None:
            raise RuntimeError("this model has no reconstruction decoder")
        return self.rec_decoder(feats[-1])

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        feats = self.encode(x)
        seg = self.segment(feats) if self.seg_decoder is not None else None
        rec = self.reconstruct(feats) if self.rec_decoder is not None else None
        return seg, rec


def build_model(model_cfg: ModelConfig, method: Method) -> MASSLNet:
    """The network a method trains: a reconstruction decoder of `method.rec_channels` outputs
    only where the method itself trains one (not the pretraining rows: theirs belongs to the
    autoencoder run), and no segmentation decoder for the autoencoder. `model.kwargs` are its
    arguments (model.pt's `model_kwargs`)."""
    return MASSLNet(
        spatial_dims=model_cfg.spatial_dims,
        in_channels=model_cfg.in_channels,
        channels=list(model_cfg.channels),
        downsample=model_cfg.downsample,
        rec_channels=method.rec_channels if method.trains_reconstruction else 0,
        segmentation=method.strategy != "autoencoder",
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
