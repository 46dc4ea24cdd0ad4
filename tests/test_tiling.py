"""Exact tiled inference: streamed output equals whole-image output; naive tiles do not; memory decisions; cleanup."""

import pytest
import torch

from stylize.config import GeneratorConfig, TilingConfig, parse_memory_size, parse_tile
from stylize.engine import tiling
from stylize.engine.routing import Engine
from stylize.errors import StylizeError
from stylize.network.generator import ConditionalInstanceNorm2d, Generator

SMALL = GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=2, decoder_channels=(8, 8), num_styles=3)
CONFIGS = {
    "cin": SMALL,
    # The bundled model's shape: norm after the output conv, no conv biases.
    "dumoulin": GeneratorConfig(
        encoder_channels=(8, 8, 8), num_residual_blocks=2, decoder_channels=(8, 4), normalize_output=True, conv_bias=False, num_styles=3
    ),
    # pytorch/examples imports: 0-255 pixels, clamped output.
    "pytorch_examples": GeneratorConfig(
        encoder_channels=(8, 16, 16), num_residual_blocks=2, decoder_channels=(8, 8), output_activation="clamp", pixel_scale=255.0
    ),
    "transposed": GeneratorConfig(
        encoder_channels=(8, 16, 16), num_residual_blocks=1, decoder_channels=(8, 8), upsample="transposed", output_activation="tanh"
    ),
}
TILE = 16


def make_generator(config: GeneratorConfig) -> Generator:
    """A random generator whose norms have non-trivial gamma/beta, so that wrong statistics show."""
    generator = Generator(config).eval().requires_grad_(False)
    for module in generator.modules():
        if isinstance(module, ConditionalInstanceNorm2d):
            module.gamma.normal_(1.0, 0.3)
            module.beta.normal_(0.0, 0.3)
    if config.pixel_scale != 1.0:  # keep the clamped 0-255 output mostly inside the range, not all saturated
        generator.tail.conv.weight.mul_(20.0)
        generator.tail.conv.bias.fill_(128.0)
    return generator


def difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and 99.9th percentile of |a - b| on the 0-255 scale."""
    diff = (a - b).abs().flatten() * 255
    return float(diff.mean()), float(torch.quantile(diff, 0.999))


def assert_matches(out: torch.Tensor, ref: torch.Tensor, storage: str = "ram") -> None:
    """Streaming with float32 maps is exact up to float rounding; float16 temporary files round every map once."""
    if storage == "ram":
        assert (out - ref).abs().max().item() * 255 <= 0.01, (out - ref).abs().max().item() * 255
    else:
        mean, p999 = difference(out, ref)
        assert mean <= 0.5 and p999 <= 4.0, (mean, p999)


CASES = [(name, (40, 56), "ram") for name in sorted(CONFIGS)] + [
    ("cin", (37, 51), "ram"),  # odd sizes: the input is reflection-padded to a multiple of 4
    ("dumoulin", (37, 51), "disk"),  # float16 temporary files
    ("pytorch_examples", (40, 56), "disk"),  # float32 temporary files (0-255 activations)
]


@pytest.mark.parametrize("name,size,storage", CASES)
def test_streamed_output_matches_whole_image(name, size, storage, tmp_path):
    config = CONFIGS[name]
    generator = make_generator(config)
    image = torch.rand(1, 3, *size)
    weights = torch.tensor([0.2, 0.5, 0.3]) if config.num_styles == 3 else None  # a CIN mix where there are styles
    with torch.inference_mode():
        whole = generator(image, weights)
    assert 0.05 < float(whole.mean()) < 0.95  # not a saturated output that would match trivially
    streamed = tiling.stream_forward(generator, image, weights, tile=TILE, storage=storage, temp_dir=tmp_path)
    assert streamed.shape == whole.shape
    # float16 files hold the 0-1 models' maps; 0-255 models keep float32 files, exact like RAM
    assert_matches(streamed, whole, "disk" if storage == "disk" and config.pixel_scale == 1.0 else "ram")


def test_naive_tiles_are_far_off_and_streamed_ones_are_not():
    """Tiles run through the network one by one (each normalised by its own statistics) shift tones; the streamer's
    whole-image statistics do not."""
    generator = make_generator(CONFIGS["dumoulin"])
    image = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        whole = generator(image)
        naive = torch.cat([torch.cat([generator(image[:, :, r : r + 20, c : c + 28]) for c in (0, 28)], 3) for r in (0, 20)], 2)
    exact = tiling.stream_forward(generator, image, tile=TILE)
    naive_mean, _ = difference(naive, whole)
    exact_mean, _ = difference(exact, whole)
    assert naive_mean > 5.0 > 100 * exact_mean


def test_bf16_autocast_stream_is_as_close_to_fp32_as_the_whole_bf16_pass():
    # The whole bf16 pass rounds its output to bf16 (steps of 1/256 near 0.5), so the streamed bf16 result (which
    # normalises and activates in fp32) is compared with fp32: it must be no further off than whole bf16 is.
    generator = make_generator(SMALL)
    image, weights = torch.rand(1, 3, 40, 56), torch.tensor([1.0, 0.0, 0.0])
    reference = Engine(generator, torch.device("cpu")).forward(image, weights, tile="off")
    engine = Engine(generator, torch.device("cpu"), "bf16")
    whole_mean, whole_p999 = difference(engine.forward(image, weights, tile="off"), reference)
    stream_mean, stream_p999 = difference(engine.forward(image, weights, tile=TILE), reference)
    assert stream_mean <= 1.25 * whole_mean and stream_p999 <= 4.0, (stream_mean, whole_mean, stream_p999, whole_p999)


def test_forward_routes_auto_whole_and_streamed(monkeypatch):
    generator = make_generator(SMALL)
    engine = Engine(generator, torch.device("cpu"))
    images, weights = torch.rand(2, 3, 40, 56), torch.tensor([0.0, 1.0, 0.0])
    whole = engine.forward(images, weights, tile="off")
    calls = []
    original = tiling.stream_forward
    monkeypatch.setattr(tiling, "stream_forward", lambda *a, **k: calls.append(k) or original(*a, **k))
    assert torch.equal(engine.forward(images, weights, tile="auto", memory_limit=8 * 10**9), whole)
    assert not calls
    # A budget far below the whole-image estimate streams, image by image, and still gives the same result.
    monkeypatch.setattr(tiling, "estimate_whole_bytes", lambda *a, **k: 10**15)
    assert_matches(engine.forward(images, weights, tile="auto", memory_limit=10**9), whole)
    assert len(calls) == 2


def test_out_of_memory_in_the_whole_pass_falls_back_to_streaming(monkeypatch):
    generator = make_generator(SMALL)
    engine = Engine(generator, torch.device("cpu"))
    image, weights = torch.rand(1, 3, 40, 56), torch.tensor([0.0, 0.0, 1.0])
    whole = engine.forward(image, weights, tile="off")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine, "run_whole", out_of_memory)
    assert_matches(engine.forward(image, weights, tile="auto"), whole)
    with pytest.raises(StylizeError, match="out of memory"):  # tile="off" has nowhere to fall back to
        engine.forward(image, weights, tile="off")


def test_estimator_picks_whole_or_streamed_by_budget():
    generator = make_generator(CONFIGS["dumoulin"])
    height, width = 2000, 3000
    whole = tiling.estimate_whole_bytes(generator, height, width)
    in_ram = tiling.estimate_stream(generator, height, width, 512)
    on_disk = tiling.estimate_stream(generator, height, width, 512, torch.float16)
    assert on_disk.disk_bytes < in_ram.ram_bytes < whole
    assert tiling.estimate_whole_bytes(generator, 2 * height, 2 * width) > 3.5 * whole
    assert tiling.decide(generator, height, width, whole + 1).mode == "whole"
    streamed = tiling.decide(generator, height, width, whole - 1)
    assert (streamed.mode, streamed.storage) == ("stream", "ram")
    tight = tiling.decide(generator, height, width, on_disk.disk_bytes)
    assert (tight.mode, tight.storage) == ("stream", "disk")
    assert tiling.decide(generator, height, width, on_disk.disk_bytes // 2).tile < 512  # smaller tiles when even that is short
    fixed = tiling.decide(generator, height, width, 10**15, tile=64, stream_only=True, shrink=False)
    assert (fixed.mode, fixed.tile) == ("stream", 64)
    largest = tiling.decide(generator, height, width, on_disk.disk_bytes // 2, tile=512, stream_only=True)  # a tile and a limit
    assert largest.mode == "stream" and largest.tile < 512


def test_passes_too_large_for_32_bit_cuda_indexing_stream_whatever_the_budget():
    from stylize.config import ARCHITECTURES
    from stylize.network.generator import Generator

    generator = Generator(ARCHITECTURES["johnson"])
    # 8192x8192 failed whole on an H200 ("input tensor must fit into 32-bit index math"). The largest tensor is the
    # last upsampling conv's input: 64 channels, upsampled to full size and reflection-padded by 1.
    assert tiling.largest_whole_tensor(generator, 8192, 8192) == 64 * 8194 * 8194 > tiling.CUDA_MAX_ELEMENTS
    assert tiling.largest_whole_tensor(generator, 4096, 4096) < tiling.CUDA_MAX_ELEMENTS
    assert tiling.decide(generator, 8192, 8192, 10**15).mode == "whole"  # the CPU has no such limit
    limited = tiling.decide(generator, 8192, 8192, 10**15, max_elements=tiling.CUDA_MAX_ELEMENTS)
    assert limited.mode == "stream"
    assert tiling.decide(generator, 4096, 4096, 10**15, max_elements=tiling.CUDA_MAX_ELEMENTS).mode == "whole"
    assert tiling.decide(generator, 4096, 4096, 10**15, batch=4, max_elements=tiling.CUDA_MAX_ELEMENTS).mode == "stream"


def test_temporary_files_are_removed_after_success_and_after_an_error(tmp_path, monkeypatch):
    generator = make_generator(SMALL)
    image = torch.rand(1, 3, 40, 56)
    created = []
    original_init = tiling._FileMap.__init__

    def spy(self, path, *args):
        created.append(path)
        original_init(self, path, *args)

    monkeypatch.setattr(tiling._FileMap, "__init__", spy)
    tiling.stream_forward(generator, image, tile=TILE, storage="disk", temp_dir=tmp_path)
    assert created and not any(tmp_path.iterdir())

    calls = []
    original_finish = tiling._Streamer.finish

    def failing_finish(self, *args):
        calls.append(1)
        if len(calls) == 3:
            assert any(path.exists() for path in created[-3:])  # files exist mid-run
            raise RuntimeError("injected failure")
        original_finish(self, *args)

    monkeypatch.setattr(tiling._Streamer, "finish", failing_finish)
    with pytest.raises(RuntimeError, match="injected"):
        tiling.stream_forward(generator, image, tile=TILE, storage="disk", temp_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text,expected",
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("512M", 512 * 2**20), ("1.5g", int(1.5 * 2**30)), ("100000000", 10**8), (None, None)],
)
def test_memory_sizes_parse(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "2XB", "-1GB", "GB", "1MB"])
def test_bad_memory_sizes_are_refused(text):
    with pytest.raises(StylizeError):
        parse_memory_size(text)


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("OFF", "off"), ("256", 256), (64, 64)])
def test_tile_settings_parse(value, expected):
    assert parse_tile(value) == expected


@pytest.mark.parametrize("value", ["8", "big", "-5", "1.5"])
def test_bad_tile_settings_are_refused(value):
    with pytest.raises(StylizeError):
        parse_tile(value)


def test_finish_pass_in_thin_strips_gives_the_same_result(monkeypatch):
    generator = make_generator(CONFIGS["dumoulin"])
    image = torch.rand(1, 3, 40, 56)
    expected = tiling.stream_forward(generator, image, tile=TILE)
    monkeypatch.setattr(tiling, "_FINISH_STRIP_BYTES", 1)  # one row at a time, as for very wide images
    assert torch.allclose(tiling.stream_forward(generator, image, tile=TILE), expected, atol=1e-6)  # vector vs scalar exp


def test_strips_lower_than_a_tile_for_wide_images_match(monkeypatch):
    generator = make_generator(CONFIGS["dumoulin"])
    image = torch.rand(1, 3, 40, 72)
    with torch.inference_mode():
        whole = generator(image)
    monkeypatch.setattr(tiling, "_STRIP_BYTES", 1)  # 16-row strips of 32-wide tiles
    assert_matches(tiling.stream_forward(generator, image, tile=32, storage="disk"), whole, "disk")


def test_stream_forward_puts_maps_on_disk_when_the_limit_is_short(tmp_path, monkeypatch):
    generator = make_generator(SMALL)
    made = []
    original_init = tiling._FileMap.__init__
    monkeypatch.setattr(tiling._FileMap, "__init__", lambda self, *a: made.append(a) or original_init(self, *a))
    monkeypatch.setattr(tiling, "estimate_stream", lambda *a, **k: tiling.StreamEstimate(10**12, 10**6, torch.float32))
    engine = Engine(generator, torch.device("cpu"), tiling_config=TilingConfig(temp_dir=str(tmp_path)))
    engine.forward(torch.rand(1, 3, 40, 56), None, tile=TILE, memory_limit=10**9)
    assert made and not any(tmp_path.iterdir())
