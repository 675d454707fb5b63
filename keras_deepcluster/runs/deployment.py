"""One model from image to cluster: a finished run as a plain Keras model, and its export.

`deployable_model` builds what `Run.assign` computes as one functional Keras
model of built-in layers and `keras.ops` calls only: the fixed view, the
backbone, the PCA-whitening, L2 normalisation and the nearest centroid. Its
``.keras`` file loads with ``keras.saving.load_model`` where this package is
not installed. `export_model` writes it as ``.keras``, ONNX, LiteRT or a
TensorFlow SavedModel, refusing, before it writes anything, a format that
the current backend cannot produce.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
from keras import ops

from keras_deepcluster.backbones.pooling import MaxPooling2D
from keras_deepcluster.backbones.sobel import SobelFilter, sobel_convolutions
from keras_deepcluster.method.cluster_model import ClusterModel
from keras_deepcluster.method.views import ImageViews, fixed_view_layers
from keras_deepcluster.runs.run_directory import FILE_MODE

# The formats `export_model` writes: the file suffix of each (None: a folder).
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite", "saved_model": None}
# Keras's `Model.export` name of each format.
_KERAS_FORMATS = {"onnx": "onnx", "litert": "litert", "saved_model": "tf_saved_model"}
# The backends that write each format here, and the packages each needs, as measured with
# Keras 3.15, TensorFlow 2.21, JAX 0.10, PyTorch 2.13, jax2onnx 0.17 and litert-torch 0.10
# (docs/guides/after-training.md). Not listed: LiteRT on JAX and SavedModel on PyTorch (Keras
# 3.15 refuses both). LiteRT from PyTorch takes one image per call: litert-torch traces the
# model on a batch of one, which torch.export fixes to a constant (a dynamic batch fails in
# its converter).
PRODUCERS = {
    "keras": {"tensorflow": (), "jax": (), "torch": ()},
    "onnx": {
        "tensorflow": ("tf2onnx", "onnx"),
        "jax": ("jax2onnx", "onnx"),
        "torch": ("onnx", "onnxscript"),
    },
    "litert": {"tensorflow": (), "torch": ("litert_torch",)},
    "saved_model": {"tensorflow": (), "jax": ("tensorflow",)},
}
# The pip name of each package of `PRODUCERS` whose import name differs.
_PIP_NAMES = {"litert_torch": "litert-torch"}
# The model's outputs, in this order.
OUTPUTS = ("cluster", "distance", "embedding")


class ExportError(ValueError):
    """An export that cannot be made as asked (format, backend, path); nothing was written."""


def deployable_model(
    backbone: keras.Model,
    views: ImageViews,
    cluster_model: ClusterModel,
    image_shape: tuple[int, int, int],
    dtype: str = "uint8",
) -> keras.Model:
    """The model from images to the run's clusters, in built-in Keras layers.

    Layers, in order: the fixed view (`fixed_view_layers`), a copy of
    `backbone` whose package layers are replaced by built-in ones with the
    same weights (`plain_backbone`), the PCA-whitening as a frozen `Dense`
    (the mean folded into the bias), `UnitNormalization`, and the centroids
    as a frozen `Dense` giving ``|c|^2 - 2 x.c`` per centroid, to which
    ``keras.ops`` add ``|x|^2`` and take the nearest (Keras 3 serialises such
    calls in a functional model, and `load_model` restores them).

    Args:
        backbone: The run's backbone (its output: the features it clustered).
        views: The views whose fixed view the run extracted features on.
        cluster_model: The run's final clustering.
        image_shape: ``(height, width, channels)`` of the images it takes.
        dtype: ``"uint8"`` (images in [0, 255]) or ``"float32"`` (in [0, 1]).

    Returns:
        A functional `keras.Model`, frozen (``trainable = False``), taking a
        batch of images, named ``images``, and giving a dict: ``cluster``
        (int32 (N,), the nearest centroid), ``distance`` (float32 (N,), the
        Euclidean distance to it) and ``embedding`` (float32 (N, d'), the
        image's point in the clustering's space: whitened if the run used
        PCA, L2-normalised; `ClusterModel.transform` of
        `Run.embed(images, layer="output")`).

    Raises:
        ValueError: a bad dtype, or a backbone with layers that are not
            Keras's own and have no built-in equivalent here.
    """
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"dtype must be 'uint8' or 'float32'; got {dtype!r}.")
    height, width, channels = image_shape
    images = keras.Input((height, width, channels), dtype=dtype, name="images")
    x = images
    for layer in fixed_view_layers(views, height, width, uint8=dtype == "uint8"):
        x = layer(x)
    x = plain_backbone(backbone)(x)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="features_flatten")(x)
    if cluster_model.projection is not None:
        x = _frozen_dense(
            x,
            cluster_model.projection,
            # In float64: the folded bias is the mean's projection, subtracted from x's.
            -(cluster_model.mean.astype(np.float64) @ cluster_model.projection),
            name="whitening",
        )
    embedding = keras.layers.UnitNormalization(name="l2_normalise")(x)
    centroids = cluster_model.centroids.astype(np.float64)
    partial = _frozen_dense(
        embedding, -2 * centroids.T, np.sum(centroids**2, axis=1), name="centroids"
    )
    squared = partial + ops.sum(ops.square(embedding), axis=-1, keepdims=True)
    nearest = ops.min(squared, axis=-1, keepdims=True)
    # The first centroid at the minimum, as `argmin` would give it, taken from integers:
    # `argmin` of floats tests signs bitwise on TensorFlow, an op that LiteRT's built-in
    # set lacks, and `top_k` lowers on JAX to a composite that TensorFlow 2.21 cannot read.
    at_minimum = ops.cast(ops.less_equal(squared, nearest), "int32")
    outputs = {
        "cluster": ops.argmax(at_minimum, axis=-1),
        "distance": ops.sqrt(ops.maximum(ops.squeeze(nearest, axis=-1), 0.0)),
        "embedding": embedding,
    }
    model = keras.Model(images, outputs, name="deepcluster_clusterer")
    model.trainable = False  # for inference: no gradients tracked (PyTorch), BN frozen
    _check_plain(model)
    return model


def plain_backbone(backbone: keras.Model) -> keras.Model:
    """A copy of `backbone` in built-in Keras layers, with its weights.

    Every layer is cloned from its config and given the original's weights;
    the layers of backbones saved by earlier versions become Keras's own
    (`SobelFilter` two frozen convolutions, `sobel_convolutions`; the
    package's `MaxPooling2D` Keras's). The clone has none of the run-time
    formulas of `platform.layer_acceleration`.
    """

    def clone(layer):
        if isinstance(layer, SobelFilter):
            return sobel_convolutions(layer.input.shape[1:], name=layer.name)
        if isinstance(layer, MaxPooling2D):
            return keras.layers.MaxPooling2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(backbone, clone_function=clone)
    for original in backbone.layers:
        if not isinstance(original, SobelFilter):  # the Sobel kernels come with their layers
            copy.get_layer(original.name).set_weights(original.get_weights())
    return copy


def check_format(file_format: str) -> None:
    """Raises `ExportError` unless the current backend can write `file_format` here.

    The message names the formats this backend writes, the backends that
    write the one asked for, or the packages it is missing.
    """
    if file_format not in SUFFIXES:
        raise ExportError(f"Unknown model format {file_format!r}; known: {', '.join(SUFFIXES)}.")
    backend = keras.backend.backend()
    producers = PRODUCERS[file_format]
    if backend not in producers:
        own = [name for name, backends in PRODUCERS.items() if backend in backends]
        raise ExportError(
            f"The {backend} backend cannot export the {file_format} format (Keras "
            f"{keras.__version__}); it exports {', '.join(own)}. Export {file_format} on the "
            f"{' or '.join(producers)} backend (KERAS_BACKEND={next(iter(producers))})."
        )
    missing = [
        _PIP_NAMES.get(name, name)
        for name in producers[backend]
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ExportError(
            f"Exporting {file_format} on the {backend} backend needs the package"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            f"pip install {' '.join(missing)}."
        )


def format_of(path: str | Path) -> str:
    """The format a model path asks for by its suffix (no suffix: a SavedModel folder).

    Raises:
        ExportError: a suffix of no format.
    """
    suffix = Path(path).suffix
    if suffix == "":
        return "saved_model"
    for name, known in SUFFIXES.items():
        if suffix == known:
            return name
    raise ExportError(
        f"{path}: no model format has the suffix {suffix!r}; use .keras, .onnx, .tflite, a "
        "folder name without a suffix (saved_model), or give the format."
    )


def check_target(path: str | Path, file_format: str | None = None) -> str:
    """Raises `ExportError` unless `export_model` can write `path` as `file_format` here.

    Returns:
        The format: `file_format`, or by `path`'s suffix (`format_of`).

    Raises:
        ExportError: an unknown format, one the current backend cannot
            write (`check_format`), a path of another format's suffix, or
            a path that is an existing folder (a file format) or an existing
            folder that holds no SavedModel.
    """
    path = Path(path).expanduser()
    file_format = file_format or format_of(path)
    check_format(file_format)
    suffix = SUFFIXES[file_format]
    if suffix is not None and path.suffix != suffix:
        raise ExportError(f"The {file_format} format's file name ends in {suffix}; got {path}.")
    if path.is_dir() if suffix is not None else _is_foreign_folder(path):
        what = "a folder" if suffix is not None else "a folder that holds no SavedModel"
        raise ExportError(f"{path} is {what}; choose another path.")
    return file_format


def export_model(model: keras.Model, path: str | Path, file_format: str | None = None) -> Path:
    """Writes `model` to `path` as `file_format` (default: by its suffix, `format_of`).

    The file (or SavedModel folder) is written beside `path` under a
    temporary name and renamed into place when whole: an existing one is
    replaced only then, and a failed export leaves nothing.

    Returns:
        The path written.

    Raises:
        ExportError: what `check_target` refuses; nothing is written then.
    """
    path = Path(path).expanduser()
    file_format = check_target(path, file_format)
    suffix = SUFFIXES[file_format]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=path.parent))
    try:
        written = staging / ("model" + (suffix or ""))
        if file_format == "keras":
            model.save(written)
        else:
            model.export(
                str(written),
                format=_KERAS_FORMATS[file_format],
                verbose=False,
                input_signature=model.inputs,  # Keras would ask for a model that was called
            )
        if file_format == "onnx":
            _finish_onnx(written)
        if suffix is not None:
            os.chmod(written, FILE_MODE)  # as `open` would make it
            os.replace(written, path)
        else:
            _replace_folder(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _finish_onnx(path: Path) -> None:
    """Makes the ONNX model at `path` one file onnxruntime runs, its outputs named `OUTPUTS`.

    An exporter may write the weights into a ``.data`` file beside the model,
    by a name the model records, so the model is saved again with them
    inside; the PyTorch and JAX exporters name the outputs after their
    graphs' values, so ``Identity`` nodes give them the model's names (Keras
    flattens the outputs in the order of their sorted names, `OUTPUTS`'s);
    max pooling from JAX is made one onnxruntime can run (`_spatial_max_pools`).
    """
    import onnx

    model = onnx.load(path)  # with the external data
    _spatial_max_pools(model.graph)
    outputs = model.graph.output
    if sorted(output.name for output in outputs) != sorted(OUTPUTS):
        for output, name in zip(outputs, OUTPUTS):
            model.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
    onnx.save(model, path)


def _spatial_max_pools(graph) -> None:
    """Rewrites, in place, each max pooling over all four axes of NHWC images as a 2-D one.

    jax2onnx writes JAX's max pooling (a ``reduce_window`` over (N, H, W, C)
    with a window of 1 on N and C) as an ONNX ``MaxPool`` with four spatial
    axes, on the images unsqueezed to (1, 1, N, H, W, C); onnxruntime pools
    over at most three. Such a node becomes: squeeze to NHWC, transpose to
    NCHW, ``MaxPool`` over H and W, and back. Other ``MaxPool`` nodes are
    left as they are.
    """
    from onnx import helper, numpy_helper

    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attributes.get("kernel_shape", ()))
        strides = list(attributes.get("strides", [1] * len(kernel)))
        pads = list(attributes.get("pads", [0] * 2 * len(kernel)))
        dilations = list(attributes.get("dilations", [1] * len(kernel)))
        unbatched = (
            len(kernel) == 4
            and all(values[0] == values[3] == 1 for values in (kernel, strides, dilations))
            and not any(pads[i] for i in (0, 3, 4, 7))
            and attributes.get("auto_pad", b"NOTSET") == b"NOTSET"
            and len(node.output) == 1  # no indices asked for
        )
        if node.op_type != "MaxPool" or not unbatched:
            graph.node.append(node)
            continue
        name = node.name or node.output[0]
        axes = f"{name}_outer_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([0, 1], np.int64), axes))
        nhwc, nchw, pooled, back = (f"{name}_{step}" for step in ("nhwc", "nchw", "pooled", "back"))
        graph.node.extend(
            [
                helper.make_node("Squeeze", [node.input[0], axes], [nhwc]),
                helper.make_node("Transpose", [nhwc], [nchw], perm=[0, 3, 1, 2]),
                helper.make_node(
                    "MaxPool",
                    [nchw],
                    [pooled],
                    name=name,
                    kernel_shape=kernel[1:3],
                    strides=strides[1:3],
                    pads=pads[1:3] + pads[5:7],
                    dilations=dilations[1:3],
                    ceil_mode=attributes.get("ceil_mode", 0),
                ),
                helper.make_node("Transpose", [pooled], [back], perm=[0, 2, 3, 1]),
                helper.make_node("Unsqueeze", [back, axes], [node.output[0]]),
            ]
        )


def _frozen_dense(x, kernel: np.ndarray, bias: np.ndarray, name: str):
    """`x` through a frozen `Dense` holding `kernel` and `bias` (cast to float32)."""
    layer = keras.layers.Dense(kernel.shape[1], trainable=False, name=name)
    layer.build(x.shape)
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer(x)


def _check_plain(model: keras.Model) -> None:
    """Raises ValueError if `model` holds a layer that plain Keras would not know."""
    foreign = [
        f"{layer.name} ({type(layer).__module__}.{type(layer).__name__})"
        for layer in _leaf_layers(model)
        if not type(layer).__module__.startswith("keras.")
    ]
    if foreign:
        raise ValueError(
            "The backbone has layers that are not Keras's own, so the model would not load "
            f"without their code: {', '.join(foreign)}."
        )


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _is_foreign_folder(path: Path) -> bool:
    """Whether `path` exists and is not a SavedModel folder `_replace_folder` may replace."""
    return path.exists() and not (path.is_dir() and (path / "saved_model.pb").is_file())


def _replace_folder(new: Path, path: Path) -> None:
    """Moves the folder `new` to `path`, replacing the SavedModel folder there if any."""
    if not path.exists():
        os.replace(new, path)
        return
    old = new.with_name(new.name + ".old")
    os.replace(path, old)  # a folder cannot be renamed over a non-empty one
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)
