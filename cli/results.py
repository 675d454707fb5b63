"""`deepcluster export` and `show`: what a finished run learned, by file and in pictures."""

from __future__ import annotations

from pathlib import Path

import click

from keras_deepcluster.runs.run_directory import RunDirectory
from keras_deepcluster_cli.options import (
    IntList,
    backend_option,
    cache_dir_option,
    make_console,
    run_data_option,
    use_backend,
    user_errors,
)

TABLE_FORMATS = ("parquet", "csv")
# Those of `keras_deepcluster.runs.deployment.SUFFIXES`, named here: importing it imports Keras.
MODEL_FORMATS = ("keras", "onnx", "litert", "saved_model")


def _open(run_dir: Path, data_dir, source=None, split="train", console=None):
    """The run, its data (or other data), the source files of the split's rows and their root."""
    use_backend(None)
    import keras_deepcluster as kdc
    from keras_deepcluster_cli.progress import load_data

    run = kdc.Run.open(run_dir)
    if run.recipe is None:
        raise ValueError(
            f"{run_dir} was recorded from a fit without a recipe: it does not know its data; "
            "use kdc.Run.open(...).assign(images) from Python."
        )
    if source is None:
        data = load_data(console, run.recipe, run.directory, data_dir)
    else:
        if data_dir is None and source != "digits":
            raise click.UsageError(f"--source {source} needs --data-dir.")
        other = run.recipe.replace(source=source, data_dir=data_dir and str(data_dir), limit=None)
        data = load_data(console, other)
    if getattr(data, f"x_{split}") is None:
        raise ValueError(f"The data has no {split!r} split; use `split=train`.")
    origin = data.origin or {}
    files = None
    if origin.get("source") == "folder":
        files = kdc.data.ImageCache(origin["cache"]).files(split)
    return run, data, files, origin.get("path")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="Which split's images.",
)
@click.option(
    "--source",
    type=click.Choice(["folder", "idx", "npz", "tfds", "cache", "digits"]),
    help="Assign other images to the run's clusters (with --data-dir) instead of its own.",
)
@run_data_option
@click.option(
    "--format",
    "file_format",
    type=click.Choice([*TABLE_FORMATS, *MODEL_FORMATS]),
    help="The table's (parquet, the default, or csv), or with --model the model's (default: "
    "by the suffix: .keras, .onnx, .tflite, a folder for saved_model).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The table's path.")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    help="Instead of a table, write one model from image to cluster, id, distance and "
    "embedding, that loads without this package (outside RUN_DIR).",
)
@click.option(
    "--input-dtype",
    type=click.Choice(["uint8", "float32"]),
    default="uint8",
    show_default=True,
    help="With --model: the images it takes, uint8 in 0-255 or float32 in [0, 1].",
)
@backend_option
@click.option("--embeddings", is_flag=True, help="Also the feature vectors (.npy next to it).")
@click.option(
    "--layer", help="Backbone layer of the embeddings (default: the recipe's [probe] layer)."
)
@click.option(
    "--link-clusters",
    type=click.Path(file_okay=False, path_type=Path),
    help="Make one folder per cluster here with links to its images, most typical first "
    "(folder sources).",
)
@click.option("--copy", is_flag=True, help="With --link-clusters: copy the images, not link them.")
@cache_dir_option
def export(
    run_dir,
    split,
    source,
    data_dir,
    file_format,
    out,
    model,
    input_dtype,
    backend,
    embeddings,
    layer,
    link_clusters,
    copy,
):
    """One row per image of RUN_DIR's training split: file (or row index), label,
    cluster and distance to its centroid; Parquet, or CSV. With --model, instead,
    the run as one model from images to clusters (Keras, ONNX, LiteRT, SavedModel).

    \b
    Examples:
      deepcluster export runs/photos                      # runs/photos/clusters_train.parquet
      deepcluster export runs/photos --link-clusters ~/photos-by-cluster
      deepcluster export runs/photos --split test --format csv --embeddings
      deepcluster export runs/photos --source folder --data-dir ~/new_photos
      deepcluster export runs/photos --model photos.keras  # loads with plain Keras
      deepcluster export runs/photos --model photos.tflite --backend tensorflow
    """
    console = make_console()
    if model is not None:
        given = {
            "--source": source,
            "--data-dir": data_dir,
            "--out": out,
            "--embeddings": embeddings,
            "--layer": layer,
            "--link-clusters": link_clusters,
            "--copy": copy,
        }
        clashing = [name for name, value in given.items() if value]
        if clashing or split != "train" or file_format in TABLE_FORMATS:
            wrong = clashing + (["--split"] if split != "train" else [])
            wrong += [f"--format {file_format}"] if file_format in TABLE_FORMATS else []
            raise click.UsageError(f"{', '.join(wrong)}: for tables, not --model.")
        _export_model(console, run_dir, model, file_format, input_dtype, backend)
        return
    if file_format in MODEL_FORMATS:
        raise click.UsageError(f"--format {file_format} goes with --model.")
    if backend is not None:
        raise click.UsageError("--backend goes with --model.")
    file_format = file_format or "parquet"
    if copy and link_clusters is None:
        raise click.UsageError("--copy goes with --link-clusters.")
    directory = RunDirectory(run_dir)
    with user_errors():
        run, data, files, root = _open(run_dir, data_dir, source, split, console)
        if link_clusters is not None and files is None:
            raise ValueError(
                "--link-clusters needs images from a folder (their files); this data comes from "
                f"the {(data.origin or {}).get('source', run.recipe.source)!r} source."
            )
        from keras_deepcluster.runs.export import check_link_folder, export_assignments, read_table
        from keras_deepcluster.runs.export import link_clusters as make_links

        if link_clusters is not None:
            check_link_folder(link_clusters)  # before any work: a refusal writes nothing

        name = split if source is None else f"{source}_{split}"
        out = out or directory.path / f"clusters_{name}.{file_format}"
        if out.resolve().parent == directory.path.resolve():
            directory.lock()
        with console.status(f"assigning the {split} images to the run's clusters"):
            written = export_assignments(
                run, data, out, split, files, file_format, embeddings, layer
            )
        console.print(
            f"{written['rows']} images in {written['clusters']} clusters: {written['table']}"
            + (f"; embeddings: {written['embeddings']}" if written["embeddings"] else "")
        )
        if link_clusters is not None:
            count = make_links(read_table(out), root, link_clusters, copy)
            console.print(f"{count} {'copies' if copy else 'links'} in {link_clusters}")


def _export_model(console, run_dir: Path, path: Path, file_format, input_dtype, backend) -> None:
    use_backend(backend)
    with user_errors():
        import keras_deepcluster as kdc
        from keras_deepcluster.runs import deployment

        # Refused before the run loads: a bad suffix or path, a format this backend cannot write.
        file_format = deployment.check_target(path, file_format)
        run = kdc.Run.open(run_dir)
        with console.status(f"exporting the run as a {file_format} model"):
            written = run.export_model(path, file_format, dtype=input_dtype)
        shape = "x".join(map(str, run.image_shape))
        console.print(
            f"{written}: the run as a {file_format} model ({run.num_clusters} clusters): "
            f"{shape} {input_dtype} images -> cluster, distance, embedding"
        )


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@run_data_option
@click.option(
    "--clusters",
    "chosen",
    type=IntList(),
    help="Cluster ids to draw (comma-separated, ranges like 0-9); default: the largest, "
    "smallest, purest and least pure.",
)
@click.option(
    "--map-images",
    type=click.IntRange(min=10),
    default=3000,
    show_default=True,
    help="Images in the 2-D map of the embeddings (a seeded subsample).",
)
@cache_dir_option
def show(run_dir, data_dir, chosen, map_images):
    """Pictures of what RUN_DIR learned, in RUN_DIR/figures/ and RUN_DIR/report.html.

    Galleries of clusters, first-layer filters before and after training, a
    2-D map of the embeddings, the cluster x label confusion matrix and the
    per-epoch curves; report.html holds them all and opens offline.

    \b
    Examples:
      deepcluster show runs/photos
      deepcluster show runs/photos --clusters 3,17,42
    """
    console = make_console()
    directory = RunDirectory(run_dir)
    with user_errors():
        run, data, files, _ = _open(run_dir, data_dir, console=console)
        directory.lock()
        from keras_deepcluster.runs.visualize import write_report

        with console.status("drawing") as status:
            report = write_report(
                run,
                data,
                files=files,
                clusters=chosen,
                map_images=map_images,
                on_figure=lambda what: status.update(f"drawing: {what}"),
            )
    from keras_deepcluster_cli.progress import effect_lines

    for line in effect_lines(directory.summary):
        console.print(line)
    console.print(f"{len(report['figures'])} figures in {report['folder']}; open {report['html']}")
