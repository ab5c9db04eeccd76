"""CNN feature extractor of the network: a thin ResNet with a small feature pyramid.

Built from torchvision's ResNet `BasicBlock` (no pretrained download: the weights come from this
project's training). A 256 x 256 crop gives

- a dense feature map at 1/4 resolution (64 x 64) for the feature-metric residuals, sampled at the
  projected vertices, and
- a pooled global vector for the regression heads and the rig decoder's fusion over images.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

__all__ = ["FeatureExtractor", "FEATURE_STRIDE"]

FEATURE_STRIDE = 4


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride=stride, downsample=down)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class FeatureExtractor(nn.Module):
    """ResNet-style backbone + top-down feature pyramid.

    Args:
        widths: channels of the four ResNet stages (strides 4, 8, 16, 32).
        blocks: BasicBlocks per stage.
        pyramid: channels of the pyramid's lateral maps.
        feature_channels: channels of the dense output map (stride 4).

    Shape:
        images (N, 3, H, W) in [0, 1] -> features (N, feature_channels, H/4, W/4), pooled
        (N, widths[-1]).
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), blocks: Sequence[int] = (1, 1, 1, 1),
                 pyramid: int = 64, feature_channels: int = 16) -> None:
        super().__init__()
        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"widths and blocks: four stages expected, got {widths}, {blocks}")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        chans = [widths[0], *widths]
        self.stages = nn.ModuleList(_stage(chans[i], chans[i + 1], blocks[i], 1 if i == 0 else 2)
                                    for i in range(4))
        self.lateral = nn.ModuleList(nn.Conv2d(w, pyramid, 1) for w in widths)
        self.smooth = nn.Sequential(nn.Conv2d(pyramid, pyramid, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(pyramid, feature_channels, 3, padding=1))
        self.out_dim = int(widths[-1])
        self.feature_channels = int(feature_channels)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        x = self.stem(images - 0.5)
        levels = []
        for stage in self.stages:
            x = stage(x)
            levels.append(x)
        top = self.lateral[3](levels[3])
        for i in (2, 1, 0):
            top = self.lateral[i](levels[i]) + F.interpolate(top, size=levels[i].shape[-2:], mode="bilinear",
                                                            align_corners=False)
        features = self.smooth(top)
        pooled = levels[3].mean(dim=(2, 3))
        return features, pooled
