"""The inference-prepared network equals the plain Generator; the style cache follows the style vector."""

import time

import pytest
import torch

from stylize.config import GeneratorConfig
from stylize.engine import compilation
from stylize.engine.fastpath import PreparedGenerator
from stylize.engine.routing import Engine
from stylize.network.generator import Generator
from tests.conftest import randomized_generator

SMALL = GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=2, decoder_channels=(8, 8), num_styles=3)
DUMOULIN_LIKE = GeneratorConfig(
    encoder_channels=(8, 8, 8), num_residual_blocks=2, decoder_channels=(4, 4), normalize_output=True, conv_bias=False, num_styles=3
)
EXAMPLES_LIKE = GeneratorConfig(
    encoder_channels=(8, 16, 16), num_residual_blocks=1, decoder_channels=(8, 8), output_activation="clamp", pixel_scale=255.0
)
TRANSPOSED = GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=1, decoder_channels=(8, 8), upsample="transposed")


# The bundled 26-style network's shape, narrower: wide channels-last layers feed narrow contiguous ones.
MIXED_LAYOUT = GeneratorConfig(
    encoder_channels=(16, 32, 32), num_residual_blocks=1, decoder_channels=(8, 4), normalize_output=True, conv_bias=False, num_styles=3
)
LAYOUTS = {"contiguous": {}, "wide_channels_last": {"wide_channels_last": True}, "channels_last": {"channels_last": True}}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "config", [SMALL, DUMOULIN_LIKE, EXAMPLES_LIKE, TRANSPOSED, MIXED_LAYOUT], ids=["small", "dumoulin", "examples", "transposed", "mixed"]
)
@pytest.mark.parametrize("height,width", [(8, 8), (17, 29), (32, 33)])
def test_prepared_equals_generator_fp32(config, height, width, layout):
    generator = randomized_generator(config)
    prepared = PreparedGenerator(generator, **LAYOUTS[layout])
    images = torch.rand(2, 3, height, width)
    styles = [None, torch.eye(config.num_styles)[-1]]
    if config.num_styles > 1:
        styles.append(torch.tensor([0.2, 0.5, 0.3]))  # a mix
        styles.append(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]))  # per-image weights
    with torch.no_grad():
        for weights in styles:
            expected = generator(images, weights)
            got = prepared(images, weights)
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() <= 2e-5


def test_wide_channels_last_picks_the_layers_by_width():
    prepared = PreparedGenerator(randomized_generator(MIXED_LAYOUT), wide_channels_last=True)
    # head 3->16, down 16->32->32, residual 32->32, up1 32->8: channels-last; up2 8->4 and tail 4->3: contiguous
    assert [layer.channels_last for layer in prepared.layers] == [True] * 6 + [False, False]
    assert prepared.layer("head").weight.is_contiguous(memory_format=torch.channels_last)
    assert prepared.layer("tail").weight.is_contiguous()
    assert not any(layer.channels_last for layer in PreparedGenerator(randomized_generator(MIXED_LAYOUT)).layers)


def test_engine_fast_path_matches_plain_path():
    generator = randomized_generator(SMALL)
    images, weights = torch.rand(1, 3, 21, 30), torch.tensor([0.0, 1.0, 0.0])
    fast = Engine(generator, torch.device("cpu"), "fp32", compile="never").forward(images, weights)
    plain = Engine(generator, torch.device("cpu"), "fp32", optimize=False).forward(images, weights)
    assert fast.dtype == torch.float32 and fast.device.type == "cpu"
    assert (fast - plain).abs().max().item() <= 2e-5


def test_style_cache_is_invalidated_for_another_style_vector():
    generator = randomized_generator(SMALL)
    prepared = PreparedGenerator(generator)
    images = torch.rand(1, 3, 16, 20)
    first = prepared.mixed_affine(torch.tensor([[1.0, 0.0, 0.0]]))
    assert prepared.mixed_affine(torch.tensor([[1.0, 0.0, 0.0]])) is first  # same vector: cached
    second = prepared.mixed_affine(torch.tensor([[0.0, 0.0, 1.0]]))
    assert second is not first
    assert not torch.equal(first["head"][0], second["head"][0])
    with torch.no_grad():
        for weights in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]):
            w = torch.tensor(weights)
            assert (prepared(images, w) - generator(images, w)).abs().max().item() <= 2e-5


def test_bf16_fast_path_stays_close_on_a_small_network():
    generator = randomized_generator(SMALL)
    images, weights = torch.rand(1, 3, 24, 24), torch.tensor([1.0, 0.0, 0.0])
    fp32 = Engine(generator, torch.device("cpu"), "fp32", compile="never").forward(images, weights)
    bf16 = Engine(generator, torch.device("cpu"), "bf16", compile="never").forward(images, weights)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().mean().item() < 0.05


def test_unknown_compile_mode_is_refused():
    from stylize.errors import StylizeError

    with pytest.raises(StylizeError, match="compile"):
        Engine(Generator(SMALL), torch.device("cpu"), compile="sometimes")


def recording_compile(calls: list, seconds: float = 0.0):
    """A stand-in for stylize.engine.compilation.compile_function: the eager function, recording each call's input shape
    (and taking ``seconds`` longer)."""

    def compile_function(function, cuda_graphs=False):
        def run(*args):
            calls.append(args[0].shape)
            time.sleep(seconds)
            return function(*args)

        return run

    return compile_function


def test_auto_compile_waits_until_eager_time_would_have_paid_for_it(monkeypatch):
    import stylize.engine.routing as engine_module

    compiled_calls: list = []
    monkeypatch.setattr(engine_module, "compile_function", recording_compile(compiled_calls))
    monkeypatch.setattr(compilation, "AUTO_COMPILE_AFTER_SECONDS", 1e9)
    engine = Engine(randomized_generator(SMALL), torch.device("cpu"), "fp32")
    images, weights = torch.rand(1, 3, 16, 16), torch.tensor([1.0, 0.0, 0.0])
    engine.forward(images, weights)
    engine.forward(images, weights)
    assert compiled_calls == []  # one photo, or a few, never pay for a compile
    monkeypatch.setattr(compilation, "AUTO_COMPILE_AFTER_SECONDS", 0.0)
    out = engine.forward(images, weights)
    assert len(compiled_calls) == 1
    assert (out - engine.generator(images, weights)).abs().max().item() <= 2e-5
    never = Engine(randomized_generator(SMALL), torch.device("cpu"), "fp32", compile="never")
    never.forward(images, weights)
    assert len(compiled_calls) == 1


def test_auto_compile_is_skipped_when_the_calls_left_cannot_repay_it(monkeypatch):
    import stylize.engine.routing as engine_module

    compiled_calls: list = []
    monkeypatch.setattr(engine_module, "compile_function", recording_compile(compiled_calls))
    monkeypatch.setattr(compilation, "AUTO_COMPILE_AFTER_SECONDS", 1e-9)  # the eager rent is always paid up
    engine = Engine(randomized_generator(SMALL), torch.device("cpu"), "fp32")
    images, weights = torch.rand(1, 3, 16, 16), torch.tensor([1.0, 0.0, 0.0])
    engine.forward(images, weights)  # one eager call measures what a call of this shape costs
    engine.expect_calls(0)  # nothing left to repay a compile (a folder run on its last image)
    engine.forward(images, weights)
    assert compiled_calls == []
    engine.expect_calls(10**9)
    engine.forward(images, weights)
    assert len(compiled_calls) == 1


@pytest.mark.parametrize("height,width", [(5, 7), (16, 12)])
def test_subpixel_conv_equals_upsample_pad_conv(height, width):
    import torch.nn.functional as F

    from stylize.engine.fastpath import subpixel_weight

    x, weight = torch.randn(2, 6, height, width), torch.randn(5, 6, 3, 3)
    expected = F.conv2d(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"), weight)
    folded = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), subpixel_weight(weight)), 2)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel", [3, 5, 9])
def test_space_to_depth_conv_equals_the_plain_conv(kernel):
    import torch.nn.functional as F

    from stylize.engine.fastpath import space_to_depth_weight

    x, weight, pad = torch.randn(1, 4, 20, 14), torch.randn(3, 4, kernel, kernel), kernel // 2
    expected = F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight)
    unshuffled = F.pixel_unshuffle(F.pad(x, (pad,) * 4, mode="reflect"), 2)
    folded = F.pixel_shuffle(F.conv2d(unshuffled, space_to_depth_weight(weight)), 2)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-4)


def test_rewrites_are_chosen_per_layer():
    generator = randomized_generator(DUMOULIN_LIKE)
    prepared = PreparedGenerator(generator)
    assert [prepared.layer(name).layout for name in ("head", "down1", "up1", "up2", "tail")] == [
        "plain", "plain", "subpixel", "subpixel", "space_to_depth",
    ]  # fmt: skip
    assert prepared.layer("tail").weight.shape == (12, 16, 5, 5)  # 3 -> 4*3 outputs, 4 -> 4*4 inputs, 9x9 -> 5x5
    assert all(layer.layout == "plain" for layer in PreparedGenerator(generator, rewrite=False).layers)
    wide_head = randomized_generator(SMALL)  # an 8-channel 9x9 head stays plain: its shuffled output would cost more than it saves
    assert PreparedGenerator(wide_head).layer("head").layout == "plain"


@pytest.mark.parametrize("compiled_is_faster", [True, False])
def test_auto_compile_keeps_the_compiled_network_only_where_it_measured_faster(monkeypatch, compiled_is_faster):
    import stylize.engine.routing as engine_module

    compiled_calls: list = []
    # far slower than an eager 16x16 pass, or as fast
    monkeypatch.setattr(engine_module, "compile_function", recording_compile(compiled_calls, 0.0 if compiled_is_faster else 0.05))
    monkeypatch.setattr(compilation, "AUTO_COMPILE_AFTER_SECONDS", 1e-9)
    engine = Engine(randomized_generator(SMALL), torch.device("cpu"), "fp32")
    images, weights = torch.rand(1, 3, 16, 16), torch.tensor([1.0, 0.0, 0.0])
    # The eager time the policy compares against, as if measured (a real first call includes kernel set-up).
    engine.compile_policy.record(tuple(images.shape), 10.0 if compiled_is_faster else 0.001, compiled=False)
    for _ in range(compilation.COMPILE_TRIAL_CALLS + 1):  # the compile call, then the timed trial
        engine.forward(images, weights)
    trial = len(compiled_calls)
    assert trial == compilation.COMPILE_TRIAL_CALLS + 1
    engine.forward(images, weights)
    engine.forward(images, weights)
    assert len(compiled_calls) == (trial + 2 if compiled_is_faster else trial)


def test_the_cpu_engine_runs_the_rewritten_network_and_compiles_the_plain_one(monkeypatch):
    import stylize.engine.routing as engine_module

    compiled_from = []
    monkeypatch.setattr(engine_module, "compile_function", lambda function, cuda_graphs=False: compiled_from.append(function.__self__) or function)
    engine = Engine(randomized_generator(SMALL), torch.device("cpu"), "fp32", compile="always")
    assert engine.prepared.layer("up1").layout == "subpixel"
    images, weights = torch.rand(1, 3, 16, 16), torch.tensor([0.0, 1.0, 0.0])
    out = engine.forward(images, weights)
    assert compiled_from and compiled_from[0].layer("up1").layout == "plain"
    assert (out - engine.generator(images, weights)).abs().max().item() <= 2e-5


@pytest.mark.parametrize("pad", [1, 2, 4])
@pytest.mark.parametrize("shape", [(1, 32, 9, 13), (2, 16, 5, 6), (1, 3, 12, 10)])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_reflect_pad_equals_pytorch(shape, pad, channels_last, relu):
    from stylize.network.kernels import reflect_pad

    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.pad(x.relu() if relu else x, (pad,) * 4, mode="reflect")
    got = reflect_pad(x, pad, relu=relu)
    assert torch.equal(got, expected)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_the_cpu_fast_path_compiles_as_one_graph():
    """Ops dynamo cannot trace (out= into strided views) would split the compiled forward at every layer."""
    import torch._dynamo

    generator = randomized_generator(SMALL)
    prepared = PreparedGenerator(generator, torch.float32, wide_channels_last=True)
    images = torch.rand(1, 3, 24, 32)
    affine = prepared.mixed_affine(torch.eye(SMALL.num_styles)[:1])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(prepared.core)(images, affine, 24, 32)
    assert explanation.graph_break_count == 0, [str(reason.reason)[:80] for reason in explanation.break_reasons]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("relu", [False, True])
def test_phase_reflect_pad_equals_unshuffled_reflect_pad(layout, relu):
    """Padding the sub-pixel phases equals building the full-resolution map, reflect-padding it and unshuffling."""
    import torch.nn.functional as F

    from stylize.network.kernels import phase_reflect_pad

    for channels, height, width, pad in [(3, 4, 5, 2), (2, 7, 6, 1), (5, 6, 9, 3)]:
        full = torch.randn(2, channels, 2 * height, 2 * width)
        expected = F.pixel_unshuffle(F.pad(full.relu() if relu else full, (2 * pad,) * 4, mode="reflect"), 2)
        phases = F.pixel_unshuffle(full, 2)  # channel order (c, r, s)
        if layout == torch.channels_last:  # channels-last phases are stored (r, s, c)
            phases = phase_order_last(phases)
            expected = phase_order_last(expected)
        got = phase_reflect_pad(phases.contiguous(memory_format=layout), pad, relu=relu)
        assert got.is_contiguous(memory_format=layout)
        assert torch.equal(got, expected)


def test_last_upsampling_and_output_conv_share_the_phase_layout():
    for config, options in [(SMALL, {}), (MIXED_LAYOUT, {"wide_channels_last": True}), (SMALL, {"channels_last": True})]:
        prepared = PreparedGenerator(randomized_generator(config), **options)
        assert prepared.layer("up2").phases and prepared.layer("tail").phases
    assert not PreparedGenerator(randomized_generator(SMALL), rewrite=False).layer("tail").phases
    assert not PreparedGenerator(randomized_generator(TRANSPOSED)).layer("tail").phases


def phase_order_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, 4*C, H, W)`` with channels ordered ``(c, r, s)`` -> ordered ``(r, s, c)``."""
    batch, channels4, height, width = x.shape
    return x.reshape(batch, channels4 // 4, 4, height, width).transpose(1, 2).reshape(batch, channels4, height, width)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "config", [SMALL, DUMOULIN_LIKE, EXAMPLES_LIKE, TRANSPOSED, MIXED_LAYOUT], ids=["small", "dumoulin", "examples", "transposed", "mixed"]
)
def test_every_prepared_step_equals_the_reference_step(config, layout):
    """Each rewrite is a local substitution: every conv step of the fast path, fed the reference's input to that step,
    gives the reference step's output (steps in the phase layout are compared through pixel_shuffle)."""
    import torch.nn.functional as F

    from stylize.network.topology import AddSkip, Conv, SaveSkip, pad_input

    generator = randomized_generator(config)
    prepared = PreparedGenerator(generator, **LAYOUTS[layout])
    weights = torch.rand(2, config.num_styles).softmax(1)
    affine = prepared.mixed_affine(weights)
    x = pad_input(torch.rand(2, 3, 20, 28), config)
    skip = x
    with torch.no_grad():
        for step in generator.plan:
            if isinstance(step, SaveSkip):
                skip = x
                continue
            if isinstance(step, AddSkip):
                x = x + skip
                continue
            assert isinstance(step, Conv)
            expected = generator.layer(step)(x, weights)
            layer = prepared.layer(step.name)
            source = x
            if layer.phases and layer.layout == "space_to_depth":  # this step reads the four phases of its input
                source = F.pixel_unshuffle(x, 2)
                source = phase_order_last(source).contiguous(memory_format=torch.channels_last) if layer.channels_last else source
            got = prepared.run_step(layer, affine[step.name], source.clone())
            if layer.phases and layer.layout == "subpixel":  # this step gives the four phases of its output
                got = F.pixel_shuffle(phase_order_last_inverse(got) if layer.channels_last else got.contiguous(), 2)
            assert got.shape == expected.shape, step.name
            assert (got.float() - expected).abs().max().item() <= 2e-5, step.name
            x = expected


def phase_order_last_inverse(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`phase_order_last`."""
    batch, channels4, height, width = x.shape
    return x.contiguous().reshape(batch, 4, channels4 // 4, height, width).transpose(1, 2).reshape(batch, channels4, height, width)
