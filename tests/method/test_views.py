import dataclasses

import keras
import numpy as np
import pytest
from conftest import MATMUL_ATOL

from keras_deepcluster import FixedView, ImageViews, RandomView


@pytest.mark.backend_independent
def test_fixed_view_is_resize_then_centre_crop():
    views = ImageViews(size=4, resize=4, mean=(0.0,), std=(1.0,))
    images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    np.testing.assert_allclose(views.fixed(images)[0, :, :, 0], images[0] / 255, atol=1e-6)
    # Upsampling 28 -> 44 then cropping 32 keeps the centre pixel values' order.
    fm = ImageViews.for_dataset("fashion_mnist")
    out = fm.fixed(np.full((2, 28, 28), 255, np.uint8))
    assert out.shape == (2, 32, 32, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, (1 - 0.2860) / 0.3205, rtol=1e-5)


def random_view(views, images, rng):
    images = images[..., None] if images.ndim == 3 else images
    boxes = views.random_boxes(len(images), images.shape[1], images.shape[2], rng)
    return keras.ops.convert_to_numpy(RandomView(views)(images, boxes)), boxes


def test_random_view_is_reproducible_and_varies():
    views = ImageViews.for_dataset("mnist")
    images = np.random.default_rng(0).integers(0, 255, (8, 28, 28), dtype=np.uint8)
    a, _ = random_view(views, images, np.random.default_rng(1))
    b, _ = random_view(views, images, np.random.default_rng(1))
    c, _ = random_view(views, images, np.random.default_rng(2))
    assert a.shape == (8, 32, 32, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_random_view_stays_inside_the_image_range():
    views = ImageViews(size=32, resize=44, mean=(0.0,), std=(1.0,))
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    out, _ = random_view(views, images, np.random.default_rng(0))
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6


def test_flip_mirrors_columns():
    views = ImageViews(
        size=8, resize=8, mean=(0.0,), std=(1.0,), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True
    )
    image = np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))[None]
    outs = [random_view(views, image, np.random.default_rng(s))[0][0, 0, :, 0] for s in range(8)]
    assert any(o[0] > o[-1] for o in outs) and any(o[0] < o[-1] for o in outs)
    flipped = max(outs, key=lambda o: o[0])
    np.testing.assert_allclose(flipped[::-1] * 255, np.arange(8) * 30, atol=1e-3)


@pytest.mark.parametrize("shape", [(6, 28, 28, 1), (6, 32, 24, 3)])
def test_random_view_is_torch_crop_then_bilinear_resize(shape):
    torch = pytest.importorskip("torch")
    views = ImageViews(size=32, resize=44, mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])
    views = dataclasses.replace(views, flip=True)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out, boxes = random_view(views, images, np.random.default_rng(4))
    for image, view, (top, left, height, width, flip) in zip(images, out, boxes.astype(int)):
        crop = torch.tensor(image[top : top + height, left : left + width] / 255.0)
        resized = torch.nn.functional.interpolate(
            crop.permute(2, 0, 1)[None].float(), size=(32, 32), mode="bilinear"
        )[0].permute(1, 2, 0)
        if flip:
            resized = resized.flip(1)
        np.testing.assert_allclose(view, (resized.numpy() - 0.5) / 0.25, atol=4 * MATMUL_ATOL)


def test_crops_larger_than_the_view_are_antialiased_as_torchvision_does():
    torch = pytest.importorskip("torch")
    views = ImageViews(size=32, resize=32, mean=(0.0,) * 3, std=(1.0,) * 3, flip=True)
    images = np.random.default_rng(0).integers(0, 256, (6, 96, 80, 3), dtype=np.uint8)
    out, boxes = random_view(views, images, np.random.default_rng(1))
    assert (boxes[:, 2:4] > 32).any()  # some crops are shrunk
    for image, view, (top, left, height, width, flip) in zip(images, out, boxes.astype(int)):
        crop = torch.tensor(image[top : top + height, left : left + width] / 255.0)
        resized = torch.nn.functional.interpolate(
            crop.permute(2, 0, 1)[None].float(), size=(32, 32), mode="bilinear", antialias=True
        )[0].permute(1, 2, 0)
        if flip:
            resized = resized.flip(1)
        np.testing.assert_allclose(view, resized.numpy(), atol=4 * MATMUL_ATOL)
    # The fixed view of an 80 x 80 image at 32 px: a shrinking resize, antialiased too.
    whole = torch.tensor(images / 255.0).permute(0, 3, 1, 2).float()
    fixed = ImageViews(size=32, resize=32, mean=(0.0,) * 3, std=(1.0,) * 3).fixed(images[:, :80])
    expected = torch.nn.functional.interpolate(
        whole[:, :, :80], size=(32, 32), mode="bilinear", antialias=True
    )
    np.testing.assert_allclose(fixed, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.backend_independent
def test_bad_views():
    with pytest.raises(ValueError, match="No image views for dataset 'nope'; known: cifar10"):
        ImageViews.for_dataset("nope")
    with pytest.raises(ValueError, match="size <= resize"):
        ImageViews(size=40, resize=32)
    with pytest.raises(ValueError, match="3-channel"):
        ImageViews.for_dataset("cifar10").fixed(np.zeros((1, 32, 32), np.uint8))


@pytest.mark.backend_independent
def test_fixed_view_matches_torch_bilinear_resize():
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    views = ImageViews(size=32, resize=44, mean=(0.0,), std=(1.0,))
    tensor = torch.tensor(images[:, None] / 255.0, dtype=torch.float32)
    resized = torch.nn.functional.interpolate(
        tensor, size=(44, 44), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(
        views.fixed(images)[..., 0], resized[:, 0, 6:38, 6:38].numpy(), atol=1e-5
    )


@pytest.mark.parametrize(
    "preset, shape, dtype",
    [("fashion_mnist", (5, 28, 28, 1), "uint8"), ("svhn", (5, 30, 20, 3), "float32")],
)
@pytest.mark.parametrize("flip", [False, True])
def test_fixed_view_layer_computes_the_fixed_view(preset, shape, dtype, flip):
    views = ImageViews.for_dataset(preset)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape).astype(np.uint8)
    if dtype == "float32":
        images = images.astype(np.float32) / 255
    expected = views.fixed(images)
    if flip:
        expected = expected[:, :, ::-1]
    layer = FixedView(views, flip=flip)
    got = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(images)))
    assert got.shape == expected.shape == (5, views.size, views.size, shape[-1])
    # Normalised views reach about 3 in size: the tolerance scales with them.
    np.testing.assert_allclose(got, expected, atol=4 * MATMUL_ATOL)


def test_fixed_view_layer_round_trips_through_a_keras_file(tmp_path):
    views = ImageViews.for_dataset("svhn", resize=40)
    inputs = keras.Input((36, 36, 3), dtype="uint8")
    model = keras.Model(inputs, FixedView(views, flip=True)(inputs))
    model.save(tmp_path / "view.keras")
    loaded = keras.saving.load_model(tmp_path / "view.keras")
    images = np.random.default_rng(0).integers(0, 256, (2, 36, 36, 3)).astype(np.uint8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)),
        views.fixed(images)[:, :, ::-1],
        atol=4 * MATMUL_ATOL,
    )
    assert loaded.layers[-1].views == views


def test_random_view_layer_round_trips_through_a_keras_file(tmp_path):
    views = ImageViews.for_dataset("cifar10")
    images = keras.Input((36, 36, 3), dtype="uint8")
    boxes = keras.Input((5,))
    model = keras.Model([images, boxes], RandomView(views)(images, boxes))
    model.save(tmp_path / "view.keras")
    loaded = keras.saving.load_model(tmp_path / "view.keras")
    x = np.random.default_rng(0).integers(0, 256, (3, 36, 36, 3)).astype(np.uint8)
    b = views.random_boxes(3, 36, 36, np.random.default_rng(0))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded([x, b])), keras.ops.convert_to_numpy(model([x, b]))
    )
    assert loaded.layers[-1].views == views


def test_the_window_matrices_are_one_formula_on_the_host_and_the_device():
    """NumPy's (float64, the fixed view's) and keras.ops's (the random view's) agree, flips
    included, and each window's weights sum to one."""
    from keras_deepcluster.method.views import window_matrices
    from keras_deepcluster.platform import array_ops

    rng = np.random.default_rng(3)
    length = rng.integers(1, 25, 12).astype("float32")
    start = np.floor(rng.random(12) * (31 - length)).astype("float32")
    flip = (rng.random(12) < 0.5).astype("float32")
    host = window_matrices(start, length, 30, 8, flip, xp=array_ops.NUMPY)
    tensors = [keras.ops.convert_to_tensor(x) for x in (start, length, flip)]
    device = keras.ops.convert_to_numpy(window_matrices(*tensors[:2], 30, 8, tensors[2]))
    assert host.dtype == np.float64 and host.shape == device.shape == (12, 8, 30)
    np.testing.assert_allclose(device, host, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host.sum(-1), 1.0)
    np.testing.assert_array_equal(
        host[flip == 1],
        window_matrices(start, length, 30, 8, xp=array_ops.NUMPY)[flip == 1][:, ::-1],
    )
