#!/usr/bin/env python3
"""Training throughput: our step (channels_last + autocast) versus a plain fp32 step, in the same run.

Both loops train the same generator (``--arch``, default johnson) against the same bundled VGG16 perceptual loss
with Adam, at batch 4 and 256x256 by default, on random photos (decoding is not measured). The plain loop is
what most published scripts do: contiguous tensors, fp32, no autocast. Rounds alternate between the loops so
that load from other processes on a shared machine hits both alike; the median step time of each is reported.

Also reported: the split of our step between the generator (forward + backward with a trivial loss) and the rest
(VGG16 forward/backward and the losses), and the achieved fraction of this machine's bf16 matmul ceiling
(FLOPs of one step counted by torch's FlopCounterMode, divided by step time, divided by the rate of a large
bf16 matmul measured here). ``--compile`` adds a third loop with generator and VGG under ``torch.compile``, which
``stylize train`` uses for CUDA runs of 500 steps or more; on CUDA the target is then judged on it. Exits with status
1 when the speed-up misses ``--target`` (3x).

Both loops share one process, run as a plain script runs (glibc's allocator defaults, libgomp's default spinning),
the setup in which the issue measured its baseline. ``--stylize-process`` gives both the process settings that the
``stylize`` CLI applies (:func:`stylize.runtime.prepare_process`); glibc then keeps freed memory, which spares the
plain loop's large fp32 activations their page faults (on the 2-core AMD host 2.8 -> 2.1 s a step; ours is unchanged).

    python scripts/bench/bench_train.py --steps 3 --rounds 2 [--compile] [--device cuda] [--stylize-process]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

if "--stylize-process" in sys.argv:
    from stylize.runtime import prepare_process

    prepare_process()  # as the `stylize` CLI does, before torch is imported: for both loops

import torch  # noqa: E402

from stylize.config import ARCHITECTURES, LossConfig  # noqa: E402
from stylize.devices import autocast_dtype  # noqa: E402
from stylize.network.generator import Generator  # noqa: E402
from stylize.training.data import load_style_image  # noqa: E402
from stylize.training.loop import apply_gradients, compute_losses, trainable_parameters  # noqa: E402
from stylize.training.losses import PerceptualLoss  # noqa: E402
from stylize.training.vgg import load_vgg16  # noqa: E402


class Loop:
    """One training configuration: its own generator, optimiser and loss network copy."""

    def __init__(self, arch: str, fast: bool, style: torch.Tensor, batch: int, size: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.fast = fast
        self.device = device
        self.dtype = autocast_dtype("auto", device) if fast else None
        self.layout = torch.channels_last if fast else torch.contiguous_format
        self.generator = Generator(ARCHITECTURES[arch]).to(device, memory_format=self.layout)
        parameters = trainable_parameters(self.generator, 0) if fast else list(self.generator.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=1e-3)
        # fp16 (GPUs without bf16) needs the scaler; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        vgg = load_vgg16().to(device, memory_format=self.layout)
        self.loss = PerceptualLoss(vgg, LossConfig())
        self.loss.set_styles([style.to(device)])
        self.images = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=self.layout)
        self.styles = torch.zeros(batch, dtype=torch.long, device=device)

    def step(self) -> float:
        start = time.perf_counter()
        terms = compute_losses(self.generator, self.loss, self.images, self.styles, 1, 0, self.dtype)
        apply_gradients(terms, self.optimizer, self.scaler)
        _sync(self.device)
        return time.perf_counter() - start

    def generator_only(self) -> float:
        """Generator forward + backward (to its parameters) with a trivial loss: its share of a step."""
        start = time.perf_counter()
        weights = torch.ones(self.images.shape[0], 1, device=self.device)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            output = self.generator(self.images, weights)
        output.float().mean().backward()
        self.generator.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start

    def flops(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            terms = compute_losses(self.generator, self.loss, self.images, self.styles, 1, 0, self.dtype)
            terms.total.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def matmul_ceiling(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Best FLOP/s of a large square matmul in ``dtype``: the compute ceiling a conv net can approach."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    function()
    _sync(device)
    return time.perf_counter() - start


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="johnson", choices=sorted(ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per loop per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both loops")
    parser.add_argument("--target", type=float, default=3.0, help="required speed-up of ours over plain fp32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the 3x target is the CPU's)")
    parser.add_argument(
        "--stylize-process",
        action="store_true",
        help="run both loops with the process settings the stylize CLI applies (glibc keeps freed memory, bounded "
        "OpenMP spinning); by default both run as a plain script does",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add a loop with torch.compile'd generator and VGG, as long `stylize train` runs use (~1 min)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)

    _, style = load_style_image("starry_night", 512)
    loops = {
        "ours": Loop(args.arch, True, style, args.batch, args.size, device),
        "plain fp32": Loop(args.arch, False, style, args.batch, args.size, device),
    }
    if args.compile:
        compiled = Loop(args.arch, True, style, args.batch, args.size, device)
        compiled.generator.forward = torch.compile(compiled.generator.forward, dynamic=False)
        compiled.loss.vgg.forward = torch.compile(compiled.loss.vgg.forward, dynamic=False)
        started = time.perf_counter()
        compiled.step()
        print(f"first compiled step (the compile): {time.perf_counter() - started:.0f} s")
        loops["ours compiled"] = compiled
    times: dict[str, list[float]] = {name: [] for name in loops}
    generator_times: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():  # warm-up: oneDNN picks and caches kernels on first use
        loop.step()
        loop.generator_only()
    for _ in range(args.rounds):
        for name, loop in loops.items():
            times[name] += [loop.step() for _ in range(args.steps)]
            generator_times[name].append(loop.generator_only())
    flops = loops["ours"].flops()
    bf16_ceiling = matmul_ceiling(torch.bfloat16, device)
    fp32_ceiling = matmul_ceiling(torch.float32, device)

    print(
        f"device {_device_name(device)}, arch {args.arch}, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
        f"precision ours: {loops['ours'].dtype}, {args.rounds} rounds x {args.steps} steps; process settings: "
        + ("stylize CLI's (--stylize-process)" if args.stylize_process else "a plain script's (defaults)")
    )
    print(
        f"step FLOPs (fwd+bwd): {flops / 1e9:.1f} GFLOP; matmul ceiling bf16 {bf16_ceiling / 1e12:.2f} TFLOP/s, "
        f"fp32 {fp32_ceiling / 1e12:.2f} TFLOP/s"
    )
    header = (
        f"{'loop':<13} {'s/step':>8} {'images/s':>9} {'generator s':>12} {'VGG+loss s':>11} {'TFLOP/s':>8} {'% bf16 ceiling':>15}"
    )
    print(header)
    print("-" * len(header))
    medians = {}
    for name in loops:
        step = statistics.median(times[name])
        generator = min(statistics.median(generator_times[name]), step)
        rate = flops / step
        medians[name] = step
        print(
            f"{name:<13} {step:>8.3f} {args.batch / step:>9.2f} {generator:>12.3f} {step - generator:>11.3f} "
            f"{rate / 1e12:>8.3f} {100 * rate / bf16_ceiling:>14.1f}%"
        )
    if "ours compiled" in medians:
        print(f"ours compiled vs ours eager: {medians['ours'] / medians['ours compiled']:.2f}x")
    # What `stylize train` runs: compiled only where training._should_compile says so (long runs on CUDA); eager on
    # the CPU, where it measured faster.
    ours = "ours compiled" if "ours compiled" in medians and device.type == "cuda" else "ours"
    speedup = medians["plain fp32"] / medians[ours]
    verdict = "met" if speedup >= args.target else "MISSED"
    print(f"speed-up {ours} vs plain fp32: {speedup:.2f}x (target {args.target:.1f}x: {verdict})")
    print("all step times (s): " + "; ".join(f"{n}: {', '.join(f'{t:.2f}' for t in ts)}" for n, ts in times.items()))
    return 0 if speedup >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
