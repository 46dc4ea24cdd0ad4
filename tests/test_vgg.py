"""The VGG16 loss network: bundled weights, named layers, input conversion."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stylize.errors import EXIT_FAILURE, StylizeError
from stylize.io import resources
from stylize.io.resources import BUNDLED_SHA256, sha256_of
from stylize.training.vgg import BUNDLED_FILE, VGG16Features, bundled_weights_path, load_vgg16

LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    return load_vgg16()


def test_bundled_weights_are_the_recorded_file_and_keras_imagenet(vgg: VGG16Features) -> None:
    assert sha256_of(bundled_weights_path()) == BUNDLED_SHA256[f"weights/{BUNDLED_FILE}"]
    # Keras' ImageNet VGG16 block1_conv1 biases, rounded to fp16 on storage.
    expected = torch.tensor([0.73429835, 0.09340367, 0.06775674, 0.8862966])
    torch.testing.assert_close(vgg.convs["conv1_1"].bias[:4], expected, atol=1e-3, rtol=0)
    assert vgg.convs["conv4_3"].weight.dtype == torch.float32
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def test_layer_shapes(vgg: VGG16Features) -> None:
    features = vgg(torch.rand(2, 3, 64, 48), LAYERS)
    assert list(features) == list(LAYERS)
    assert features["relu1_2"].shape == (2, 64, 64, 48)
    assert features["relu2_2"].shape == (2, 128, 32, 24)
    assert features["relu3_3"].shape == (2, 256, 16, 12)
    assert features["relu4_3"].shape == (2, 512, 8, 6)
    assert all((f >= 0).all() for f in features.values())


def test_stops_after_the_deepest_requested_layer(vgg: VGG16Features) -> None:
    called: list[str] = []
    hooks = [conv.register_forward_hook(lambda m, i, o, n=name: called.append(n)) for name, conv in vgg.convs.items()]
    try:
        vgg(torch.rand(1, 3, 32, 32), ("relu2_2",))
    finally:
        for hook in hooks:
            hook.remove()
    assert called == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    with pytest.raises(ValueError, match="unknown"):
        vgg(torch.rand(1, 3, 32, 32), ("relu9_9",))


def test_caffe_preprocessing_is_bgr_0_255_minus_mean(vgg: VGG16Features) -> None:
    image = torch.empty(1, 3, 2, 2)
    image[:, 0], image[:, 1], image[:, 2] = 1.0, 0.5, 0.0  # RGB
    before = image.clone()
    converted = vgg.preprocess(image)
    torch.testing.assert_close(image, before)  # the input is not modified
    torch.testing.assert_close(converted[0, :, 0, 0], torch.tensor([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68]))


def test_torchvision_preprocessing_normalises_rgb() -> None:
    network = VGG16Features("torchvision")
    converted = network.preprocess(torch.full((1, 3, 1, 1), 0.485))
    assert converted[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert converted[0, 2, 0, 0].item() == pytest.approx((0.485 - 0.406) / 0.225, rel=1e-5)


def test_damaged_bundled_weights_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "weights" / BUNDLED_FILE  # the same name: the recorded SHA-256 is looked up by it
    copy.parent.mkdir()
    shutil.copy(bundled_weights_path(), copy)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF  # one byte of tensor data: still a valid safetensors file, just not the recorded one
    copy.write_bytes(bytes(data))
    monkeypatch.setattr("stylize.training.vgg.bundled_weights_path", lambda: copy)
    with pytest.raises(StylizeError, match="does not match its recorded SHA-256") as info:
        load_vgg16()
    assert "damaged" in info.value.message and info.value.exit_code == EXIT_FAILURE


def test_vgg_weights_file_is_checked(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, str(wrong))
    with pytest.raises(StylizeError, match="conv1_1.bias"):
        load_vgg16(weights_file=wrong)
    with pytest.raises(StylizeError, match="not found"):
        load_vgg16(weights_file=tmp_path / "missing.safetensors")
    with pytest.raises(StylizeError, match="unknown loss network"):
        load_vgg16("alexnet")


def test_vgg_weights_file_round_trip(tmp_path: Path, vgg: VGG16Features) -> None:
    own = tmp_path / "own.safetensors"
    save_file({k: v.half() for k, v in vgg.convs.state_dict().items()}, str(own))
    loaded = load_vgg16(weights_file=own)
    torch.testing.assert_close(loaded.convs["conv3_2"].weight, vgg.convs["conv3_2"].weight)


def test_bundled_folder_prefers_the_installed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "stylize"
    (package / "_bundled" / "weights").mkdir(parents=True)
    # The installed package is located through importlib.resources, not through a path relative to the checkout.
    monkeypatch.setattr(resources.resources, "files", lambda name: package)
    resources.bundle_root.cache_clear()
    try:
        assert resources.bundled_folder("weights") == package / "_bundled" / "weights"
        shutil.rmtree(package / "_bundled")
        resources.bundle_root.cache_clear()
        assert resources.bundled_folder("weights") == Path(resources.__file__).resolve().parents[2] / "weights"  # the checkout
    finally:
        resources.bundle_root.cache_clear()
