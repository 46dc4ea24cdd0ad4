"""Choosing a precision: fp32 when reduced precision leaves the tolerance, the faster one when it stays within."""

import torch

from stylize.config import GeneratorConfig
from stylize.engine.precision import MAX_MEAN_ABS, MAX_P999, choose_precision, deviation
from stylize.network.generator import Generator

TINY = GeneratorConfig(encoder_channels=(4, 4, 4), num_residual_blocks=1, decoder_channels=(4, 4), num_styles=2)


def test_deviation_statistics():
    reference = torch.zeros(1, 3, 10, 100)
    candidate = reference.clone()
    candidate.view(-1)[:3] = 1.0  # 3 of 3000 pixels off by 1: mean 0.001, p99.9 the 2997th smallest = 0
    result = deviation(reference, candidate)
    assert abs(result.mean_abs - 1e-3) < 1e-9 and result.max_abs == 1.0
    assert result.p999 == 0.0 and result.within_tolerance
    candidate.view(-1)[:10] = 1.0
    assert not deviation(reference, candidate).within_tolerance


def test_bf16_out_of_tolerance_falls_back_to_fp32():
    # An amplifying network: huge norm gains and a tiny epsilon turn bf16 rounding into visible differences.
    generator = Generator(TINY).eval()
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith("gamma"):
                param.fill_(40.0)
            elif "conv.weight" in name:
                param.normal_(0, 1.0)
    images = [torch.rand(3, 24, 24)]
    choice = choose_precision(generator, images, candidates=["bf16"], repeats=1)
    assert not choice.passed("bf16"), choice.summary()
    assert choice.precision == "fp32"
    worst = max(choice.deviations["bf16"], key=lambda d: d.p999)
    assert worst.mean_abs > MAX_MEAN_ABS or worst.p999 > MAX_P999


def test_fastest_passing_precision_wins():
    generator = Generator(TINY).eval()  # a fresh network: bf16 stays well within the tolerance
    images = [torch.rand(3, 16, 16)]
    for fp32_seconds, bf16_seconds, expected in [(1.0, 0.3, "bf16"), (0.3, 1.0, "fp32")]:
        seconds = {"fp32": fp32_seconds, "bf16": bf16_seconds}
        choice = choose_precision(generator, images, candidates=["bf16"], repeats=1, timer=lambda e, *_, s=seconds: s[e.precision])
        assert choice.passed("bf16"), choice.summary()
        assert choice.precision == expected, choice.summary()
    choice = choose_precision(generator, images, candidates=[], repeats=1)
    assert choice.precision == "fp32" and set(choice.seconds) == {"fp32"}
