"""Given instance-norm statistics (video frames): every executor calls the hook at the same layers with the same
statistics and normalises with what it returns."""

from __future__ import annotations

import pytest
import torch

from stylize.config import GeneratorConfig
from stylize.engine import tiling
from stylize.engine.fastpath import PreparedGenerator
from stylize.engine.routing import Engine
from tests.conftest import randomized_generator

CONFIGS = {
    "cin": GeneratorConfig(encoder_channels=(8, 16, 16), num_residual_blocks=2, decoder_channels=(8, 8), num_styles=3),
    "dumoulin": GeneratorConfig(
        encoder_channels=(16, 32, 32), num_residual_blocks=1, decoder_channels=(8, 4), normalize_output=True, conv_bias=False, num_styles=3
    ),
    "arbitrary_like": GeneratorConfig(
        encoder_channels=(8, 16, 16), num_residual_blocks=1, decoder_channels=(8, 8), normalize_encoder=False, normalize_output=True
    ),
}


class Recorder:
    """Gives back each layer's own statistics and remembers them."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, name: str, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen[name] = (mean.clone(), var.clone())
        return mean, var


class Replay:
    """Gives recorded statistics instead of the image's own."""

    def __init__(self, recorded: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.recorded = recorded

    def __call__(self, name: str, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.recorded[name]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_own_statistics_through_the_hook_change_nothing_on_any_executor(name):
    generator = randomized_generator(CONFIGS[name])
    weights = torch.softmax(torch.rand(CONFIGS[name].num_styles), 0)
    images = torch.rand(2, 3, 28, 36)
    with torch.no_grad():
        plain = generator(images, weights)
        recorder = Recorder()
        assert (generator(images, weights, recorder) - plain).abs().max() < 1e-5
    normalised = [step.name for step in generator.plan if getattr(step, "norm", False)]
    assert list(recorder.seen) == normalised
    engine = Engine(generator, torch.device("cpu"), compile="never")
    assert (engine.forward(images, weights, tile="off", statistics=Recorder()) - plain).abs().max() < 2e-5
    streamed = tiling.stream_forward(generator, images[:1], weights, tile=16, statistics=Recorder())
    assert (streamed - plain[:1]).abs().max() < 2e-5


@pytest.mark.parametrize("layout", [{}, {"wide_channels_last": True}, {"channels_last": True}])
def test_replayed_statistics_give_the_same_frame_on_every_executor(layout):
    """Frame B normalised with frame A's statistics: the reference, the fast path and the streamer agree."""
    generator = randomized_generator(CONFIGS["dumoulin"])
    weights = torch.tensor([0.2, 0.3, 0.5])
    frame_a, frame_b = torch.rand(1, 3, 32, 40), torch.rand(1, 3, 32, 40)
    recorder = Recorder()
    with torch.no_grad():
        generator(frame_a, weights, recorder)
        reference = generator(frame_b, weights, Replay(recorder.seen))
        own = generator(frame_b, weights)
    assert (reference - own).abs().max() > 1e-2  # the replayed statistics matter
    prepared = PreparedGenerator(generator, **layout)
    affine = prepared.mixed_affine(weights[None])
    with torch.no_grad():
        fast = prepared.core(frame_b, affine, 32, 40, Replay(recorder.seen))
    assert (fast - reference).abs().max() < 2e-5
    streamed = tiling.stream_forward(generator, frame_b, weights, tile=16, statistics=Replay(recorder.seen))
    assert (streamed - reference).abs().max() < 2e-5
