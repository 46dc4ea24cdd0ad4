"""VGG16 as a loss network: named feature layers relu1_2 ... relu4_3 with their own input conversion.

Images come in as ``(B, 3, H, W)`` RGB floats in ``[0, 1]``, the convention of the whole package. The network
converts them itself to what its weights were trained on:

* ``caffe`` (the bundled Keras/Caffe ImageNet weights): BGR, 0-255, minus the mean (103.939, 116.779, 123.68);
* ``torchvision`` (torchvision's ``VGG16_Weights.IMAGENET1K_V1``): RGB, ``(x - mean) / std`` with the ImageNet
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).

:meth:`VGG16Features.forward` runs the layers in order and stops after the deepest requested one, so a loss that
needs only ``relu2_2`` pays for four convolutions, not ten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stylize.errors import StylizeError
from stylize.io import bundled_folder, verify_file

InputConvention = Literal["caffe", "torchvision"]

#: The convolutions we keep, in order, with (in_channels, out_channels). Pooling follows conv1_2, conv2_2, conv3_3.
VGG16_CONVS: dict[str, tuple[int, int]] = {
    "conv1_1": (3, 64),
    "conv1_2": (64, 64),
    "conv2_1": (64, 128),
    "conv2_2": (128, 128),
    "conv3_1": (128, 256),
    "conv3_2": (256, 256),
    "conv3_3": (256, 256),
    "conv4_1": (256, 512),
    "conv4_2": (512, 512),
    "conv4_3": (512, 512),
}
_POOL_AFTER = ("conv1_2", "conv2_2", "conv3_3")
#: Every layer name forward() can return: each conv's output ("conv3_3") and its ReLU ("relu3_3").
LAYER_NAMES: tuple[str, ...] = tuple(name for conv in VGG16_CONVS for name in (conv, "relu" + conv.removeprefix("conv")))

BUNDLED_FILE = "vgg16_conv1_1-conv4_3.fp16.safetensors"

# Caffe mean in BGR order, on the 0-255 scale.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCHVISION_MEAN = (0.485, 0.456, 0.406)
_TORCHVISION_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """VGG16's conv1_1 ... conv4_3, frozen, returning the named layers a loss asks for.

    ``forward(images, layers)`` takes ``(B, 3, H, W)`` RGB in ``[0, 1]`` and returns ``{name: (B, C, H', W')}``;
    ``relu1_x`` has full resolution and 64 channels, ``relu2_x`` 1/2 and 128, ``relu3_x`` 1/4 and 256,
    ``relu4_x`` 1/8 and 512.
    """

    def __init__(self, input_convention: InputConvention = "caffe") -> None:
        super().__init__()
        if input_convention not in ("caffe", "torchvision"):
            raise ValueError(f"unknown VGG input convention {input_convention!r}")
        self.input_convention = input_convention
        self.convs = nn.ModuleDict({name: nn.Conv2d(cin, cout, 3, padding=1) for name, (cin, cout) in VGG16_CONVS.items()})
        if input_convention == "caffe":
            self.register_buffer("mean", torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.full((1, 3, 1, 1), 255.0), persistent=False)
        else:
            self.register_buffer("mean", torch.tensor(_TORCHVISION_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", 1.0 / torch.tensor(_TORCHVISION_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        # A loss network never trains; there is no dropout or batch norm here, but keep eval() honest.
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` RGB -> the weights' input convention (a new tensor; the input is not modified)."""
        if self.input_convention == "caffe":
            images = images.flip(1)  # RGB -> BGR
            return images * self.scale - self.mean
        return (images - self.mean) * self.scale

    def forward(self, images: torch.Tensor, layers: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown or not layers:
            raise ValueError(f"unknown or no VGG16 layers {unknown}; known: {', '.join(LAYER_NAMES)}")
        wanted = set(layers)
        deepest = max(LAYER_NAMES.index(name) for name in layers)
        outputs: dict[str, torch.Tensor] = {}
        x = self.preprocess(images)
        for conv_name, conv in self.convs.items():
            if LAYER_NAMES.index(conv_name) > deepest:
                break
            x = conv(x)
            if conv_name in wanted:
                outputs[conv_name] = x
            relu_name = "relu" + conv_name.removeprefix("conv")
            # in place unless the conv's own output was asked for (a conv's backward needs its input, not its output)
            x = F.relu(x) if conv_name in wanted else F.relu_(x)
            if relu_name in wanted:
                outputs[relu_name] = x
            if conv_name in _POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return outputs


def bundled_weights_path() -> Path:
    return bundled_folder("weights") / BUNDLED_FILE


def load_vgg16(loss_net: str = "bundled", weights_file: str | os.PathLike[str] | None = None) -> VGG16Features:
    """Build the loss network.

    ``loss_net="bundled"``: the shipped fp16 Caffe weights (SHA-256 checked), or ``weights_file`` with the same
    tensor names (``conv1_1.weight`` ...) and convention. ``loss_net="torchvision"``: torchvision's VGG16
    ``IMAGENET1K_V1`` through its weights API and download cache (needs the internet once).
    """
    if loss_net == "torchvision":
        if weights_file is not None:
            raise StylizeError("`vgg_weights` and `loss_net=torchvision` exclude each other", "pass only one of them")
        return _load_torchvision()
    if loss_net != "bundled":
        raise StylizeError(f"unknown loss network {loss_net!r}", "use `loss_net=bundled` or `loss_net=torchvision`")
    if weights_file is not None:
        return _load_safetensors(Path(weights_file))
    return _load_safetensors(bundled_weights_path(), bundled=True)


def _load_safetensors(path: Path, bundled: bool = False) -> VGG16Features:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise StylizeError(
            f"VGG16 weights not found: {path}",
            "reinstall stylize, or recreate them with scripts/import/extract_vgg16.py, or pass `vgg_weights=FILE`",
        )
    if bundled:  # the SHA-256 recorded in stylize.io.resources, checked before every use
        verify_file(path, f"weights/{BUNDLED_FILE}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise StylizeError(f"could not read VGG16 weights {path}: {exc}", "pass a safetensors file") from None
    network = VGG16Features("caffe")
    expected = network.convs.state_dict()
    for key, reference in expected.items():
        if key not in tensors or tuple(tensors[key].shape) != tuple(reference.shape):
            got = tuple(tensors[key].shape) if key in tensors else "nothing"
            raise StylizeError(
                f"{path.name} is not VGG16 conv1_1-conv4_3 weights: '{key}' expected {tuple(reference.shape)}, got {got}",
                "use a file written by scripts/import/extract_vgg16.py",
            )
    # Stored as fp16 to halve the download; compute happens in fp32 or autocast, never in stored fp16.
    network.convs.load_state_dict({key: tensors[key].to(torch.float32) for key in expected})
    return network


def _load_torchvision() -> VGG16Features:
    # Imported here only: the bundled path needs no torchvision model code or network access.
    from torchvision.models import VGG16_Weights, vgg16

    try:
        features = vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features
    except (OSError, RuntimeError) as exc:
        raise StylizeError(
            f"could not get torchvision's VGG16 weights: {exc}",
            "it needs the internet once; or use the bundled loss network (`loss_net=bundled`)",
        ) from None
    # torchvision's Sequential holds convs, ReLUs and pools; the first ten convs are conv1_1 ... conv4_3 in order.
    source_convs = [module for module in features if isinstance(module, nn.Conv2d)][: len(VGG16_CONVS)]
    network = VGG16Features("torchvision")
    for name, source in zip(VGG16_CONVS, source_convs, strict=True):
        network.convs[name].load_state_dict(source.state_dict())
    return network
