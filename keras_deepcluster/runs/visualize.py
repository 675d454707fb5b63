"""Pictures of what a run learned, and one self-contained HTML page that shows them.

`write_report(run, data)` writes ``RUN/report.html``: a gallery per chosen
cluster (the images nearest its centroid, then a random sample of its
members; each image enlarged, its file name, label and distance shown on
hover), and the figures it draws into ``RUN/figures/``: the first
convolution's filters untrained (the run's seed) beside trained, a 2-D map of
the embeddings coloured by cluster and by label, the cluster x label confusion
matrix after Hungarian matching and the per-epoch curves. The page holds them
all as data URIs, so it opens anywhere, offline, with no server.

The map is scikit-learn's t-SNE of a seeded subsample (default 3,000 images),
after PCA to 50 dimensions: t-SNE is in a dependency the project already has,
and at this size takes seconds on a CPU; UMAP (umap-learn) would add numba
and its compile time to every install for a picture of the same kind.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from keras_deepcluster.data import ImageData
from keras_deepcluster.evaluation.cluster_metrics import matched_confusion
from keras_deepcluster.runs.trained_run import Run

# Images per gallery row: nearest the centroid, then a random sample.
GALLERY_NEAREST = GALLERY_RANDOM = 8
# Side in CSS pixels the gallery shows each image at (small images enlarged, pixels kept sharp).
THUMBNAIL = 96
# Clusters drawn by default when k is larger: per criterion (largest, smallest, purest, ...).
CLUSTERS_PER_CRITERION = 2


def write_report(
    run: Run,
    data: ImageData,
    files: Sequence[str] | None = None,
    clusters: Sequence[int] | None = None,
    map_images: int = 3000,
    seed: int = 0,
    on_figure: Callable[[str], None] | None = None,
) -> dict:
    """Draws the run's figures into ``figures/`` and writes ``report.html``.

    Args:
        run: The finished run.
        data: The images it trained on (`Run.data`).
        files: The source file of each training image, shown on hover in the galleries
            (default: the image's row).
        clusters: The cluster ids to draw galleries of; default: all when
            k <= 8, else the largest, smallest, purest and least pure.
        map_images: Images in the 2-D map (a subsample seeded by `seed`).
        seed: Seed of the random samples.
        on_figure: Called with what is drawn next ("embeddings", "cluster 3",
            "map", ...), for a progress display.

    Returns:
        ``{"folder", "html", "figures"}``: the paths written (the galleries are in the page).

    Raises:
        ValueError: a cluster id out of range.
    """
    import matplotlib

    matplotlib.use("Agg")
    step = on_figure or (lambda what: None)
    images, labels, names = data.x_train, data.y_train, data.class_names
    step(f"embeddings of {len(images)} images")
    features = run.embed(images, layer="output")  # what the run clustered
    assigned, distances = run.cluster_model.assign(features)
    k = run.num_clusters
    chosen = _chosen_clusters(assigned, labels, k, clusters)  # bad ids: refused, nothing written
    folder = run.directory.path / "figures"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("cluster_*.png"):  # galleries drawn by earlier versions
        stale.unlink()
    rng = np.random.default_rng(seed)
    # (title, a PNG's path, or a gallery's HTML); the first: which galleries follow, and why
    figures: list[tuple[str, Path | str | None]] = [("", None)]
    for cluster in chosen:
        step(f"gallery of cluster {cluster}")
        figures.append(_gallery(images, assigned, distances, labels, names, files, cluster, rng))
    step("filters")
    filters = _filters(folder / "filters.png", run)
    if filters is not None:
        figures.append(("First-layer filters: untrained (the run's seed) and trained", filters))
    step(f"t-SNE map of {min(map_images, len(images))} images")
    figures.append(
        (
            f"t-SNE map of {min(map_images, len(images))} training images' embeddings",
            _embedding_map(folder / "map.png", features, assigned, labels, names, map_images, rng),
        )
    )
    if labels is not None:
        figures.append(
            (
                "Clusters x labels, clusters in the order of their Hungarian match",
                _confusion(folder / "confusion.png", assigned, labels, names),
            )
        )
    curves = _curves(folder / "curves.png", run.directory.history)
    if curves is not None:
        figures.append(("Per-epoch agreement of the pseudo-labels", curves))
    figures[0] = (_chosen_caption(chosen, k, clusters, labels is not None), None)
    page = run.directory.path / "report.html"
    _write_html(page, run, figures)
    drawn = [str(path) for _, path in figures if isinstance(path, Path)]
    return {"folder": str(folder), "html": str(page), "figures": drawn}


def _chosen_caption(chosen, k, asked, labelled) -> str:
    """Which clusters the galleries show, and by which rule."""
    shown = ", ".join(map(str, chosen))
    if asked is not None:
        return f"Galleries of the clusters asked for: {shown}."
    if len(chosen) == k:
        return f"Galleries of all {k} clusters."
    rule = f"the {CLUSTERS_PER_CRITERION} largest and smallest"
    if labelled:
        rule += f", and the {CLUSTERS_PER_CRITERION} purest and least pure by label"
    return f"Galleries of {len(chosen)} of the {k} clusters ({shown}): {rule}."


def _chosen_clusters(assigned, labels, k, clusters):
    sizes = np.bincount(assigned, minlength=k)
    if clusters is not None:
        bad = [c for c in clusters if not 0 <= c < k]
        if bad:
            raise ValueError(
                f"Cluster ids {bad} are out of range: the run has clusters 0..{k - 1}."
            )
        return list(dict.fromkeys(clusters))
    nonempty = np.flatnonzero(sizes)
    if len(nonempty) <= 4 * CLUSTERS_PER_CRITERION:
        return nonempty.tolist()
    by_size = nonempty[np.argsort(sizes[nonempty], kind="stable")]
    picks = [*by_size[::-1][:CLUSTERS_PER_CRITERION], *by_size[:CLUSTERS_PER_CRITERION]]
    if labels is not None:
        purity = np.array([_purity(labels[assigned == c]) for c in nonempty])
        by_purity = nonempty[np.argsort(purity, kind="stable")]
        picks += [*by_purity[::-1][:CLUSTERS_PER_CRITERION], *by_purity[:CLUSTERS_PER_CRITERION]]
    return [int(c) for c in dict.fromkeys(picks)]


def _purity(labels) -> float:
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def _gallery(images, assigned, distances, labels, names, files, cluster, rng) -> tuple[str, str]:
    """A cluster's title and its gallery as HTML: the images nearest its centroid, then a
    random sample of its members, each with its file, label and distance on hover."""
    members = np.flatnonzero(assigned == cluster)
    nearest = members[np.argsort(distances[members], kind="stable")][:GALLERY_NEAREST]
    sample = np.sort(rng.choice(members, min(GALLERY_RANDOM, len(members)), replace=False))
    title = f"Cluster {cluster}: {len(members)} image{'s' if len(members) != 1 else ''}"
    if labels is not None and len(members):
        counts = np.bincount(labels[members])
        majority = counts.argmax() if names is None else names[counts.argmax()]
        title += f", majority label {majority} ({counts.max() / len(members):.0%} pure)"
    rows = []
    for name, chosen in (("nearest", nearest), ("random", sample)):
        thumbnails = []
        for index in chosen.tolist():
            hover = files[index] if files is not None else f"image {index}"
            if labels is not None:
                label = labels[index] if names is None else names[labels[index]]
                hover += f" · label {label}"
            hover += f" · distance {distances[index]:.3f}"
            thumbnails.append(
                f"<img class='thumb' src='data:image/png;base64,{_png(images[index])}' "
                f"alt='{html.escape(hover)}' title='{html.escape(hover)}'>"
            )
        rows.append(f"<div class='row'><span>{name}</span>{''.join(thumbnails)}</div>")
    return title, "".join(rows)


def _png(image) -> str:
    """An image (H, W, C) as a base64 PNG."""
    import io

    from PIL import Image

    image = np.asarray(image)
    image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _filters(path, run) -> Path | None:
    """The first convolution's kernels, untrained beside trained (None: no recipe or conv)."""
    import matplotlib.pyplot as plt

    from keras_deepcluster.runs.build import build_backbone

    conv = next((layer for layer in run.backbone.layers if layer.name == "conv_1"), None)
    if conv is None or run.recipe is None:
        return None
    untrained = build_backbone(run.recipe, tuple(run.backbone.input_shape[1:]))
    kernels = [np.asarray(untrained.get_layer("conv_1").get_weights()[0])]
    kernels.append(np.asarray(conv.get_weights()[0]))
    count = min(kernels[0].shape[-1], 32)
    figure, axes = plt.subplots(2, count, figsize=(count * 0.8, 2.2), squeeze=False)
    for row, (name, kernel) in enumerate(zip(("untrained", "trained"), kernels)):
        for column in range(count):
            tile = kernel[..., column]  # (kh, kw, in)
            tile = tile[..., :3] if tile.shape[-1] >= 3 else tile[..., 0]
            tile = (tile - tile.min()) / max(float(np.ptp(tile)), 1e-12)
            axes[row, column].imshow(tile, cmap=None if tile.ndim == 3 else "gray")
            axes[row, column].axis("off")
        axes[row, 0].set_title(name, fontsize=7, loc="left")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def two_dimensional_map(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE of `points` (N, D) in 2-D, as `show` draws it, on at most 50 PCA dimensions.

    scikit-learn's Barnes-Hut t-SNE: at the map's sizes openTSNE's FFT gradients
    are not faster, so `show` needs no other dependency (docs/performance.md).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if points.shape[1] > 50 and len(points) > 50:
        points = PCA(50, random_state=seed).fit_transform(points)
    perplexity = min(30.0, max(2.0, (len(points) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def _embedding_map(path, features, assigned, labels, names, count, rng) -> Path:
    import matplotlib.pyplot as plt

    rows = np.sort(rng.choice(len(features), min(count, len(features)), replace=False))
    xy = two_dimensional_map(features[rows])
    panels = [("cluster", assigned[rows], "tab20", None)]
    if labels is not None:
        panels.append(("label", labels[rows], "Set1" if labels.max() < 9 else "tab20b", names))
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for axis, (name, values, palette, value_names) in zip(axes[0], panels):
        colours = plt.get_cmap(palette)
        for index, value in enumerate(np.unique(values)):
            shown = values == value
            label = str(value) if value_names is None else value_names[value]
            axis.scatter(
                xy[shown, 0], xy[shown, 1], s=4, color=colours(index % colours.N),
                linewidths=0, label=label,
            )  # fmt: skip
        axis.legend(title=name, fontsize=7, title_fontsize=8, markerscale=3, loc="best",
                    ncol=2 if len(np.unique(values)) > 12 else 1)  # fmt: skip
        axis.set_title(f"coloured by {name}", fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def _confusion(path, assigned, labels, class_names=None) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    table, ids = matched_confusion(assigned, labels)
    classes = table.shape[1]
    if len(table) > classes + 1:  # many clusters: the matched ones, the rest summed
        table = np.vstack([table[:classes], table[classes:].sum(axis=0, keepdims=True)])
        names = [str(i) for i in ids[:classes]] + ["others"]
    else:
        names = [str(i) for i in ids]
    present = np.unique(labels)
    columns = [str(c) if class_names is None else class_names[c] for c in present]
    cell = 0.55 if classes <= 12 else 0.4
    figure, axis = plt.subplots(figsize=(1.5 + cell * classes, 1 + cell * len(table)))
    axis.imshow(table, cmap="Blues")
    size = 9 if classes <= 12 else 7
    for (row, column), value in np.ndenumerate(table):
        dark = value > table.max() / 2  # white on the dark cells, black on the light
        axis.text(
            column, row, str(value), ha="center", va="center", fontsize=size,
            color="white" if dark else "black",
        )  # fmt: skip
    for diagonal in range(min(classes, len(table))):  # the Hungarian match of cluster to label
        axis.add_patch(
            Rectangle(
                (diagonal - 0.5, diagonal - 0.5), 1, 1, fill=False, edgecolor="tab:orange", lw=2
            )
        )
    axis.set_xticks(range(classes), labels=columns, fontsize=size, rotation=45, ha="right")
    axis.set_yticks(range(len(table)), labels=names, fontsize=size)
    axis.set_xlabel("label")
    axis.set_ylabel("cluster")
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def _curves(path, history) -> Path | None:
    import matplotlib.pyplot as plt

    keys = [
        k
        for k in ("nmi_labels", "acc_labels", "ari_labels", "nmi_previous")
        if history and k in history[0]
    ]
    if not keys:
        return None
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    epochs = [row["epoch"] for row in history]
    for key in keys:
        axis.plot(epochs, [row[key] for row in history], marker="o", markersize=3, label=key)
    axis.set_xlabel("epoch")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def _effect_html(summary: dict) -> str:
    """The clustering's scores, untrained -> trained and the change, per split, as a table."""
    final = summary.get("final_clustering") or {}
    untrained = summary.get("untrained_clustering") or {}
    effect = summary.get("training_effect") or {}
    metrics = ("nmi", "acc", "ari")
    rows = []
    for split in ("train", "test"):
        if split not in final:
            continue
        cells = []
        for metric in metrics:
            before = (untrained.get(split) or {}).get(metric)
            after = final[split][metric]
            change = "" if before is None else f" ({after - before:+.3f})"
            shown = f"{after:.3f}" if before is None else f"{before:.3f} → {after:.3f}"
            cells.append(f"<td>{shown}{change}</td>")
        verdict = (effect.get(split) or {}).get("verdict", "")
        rows.append(f"<tr><th>{split}</th>{''.join(cells)}<td>{html.escape(verdict)}</td></tr>")
    if not rows:
        return ""
    names = "".join(f"<th>{metric.upper()}: untrained → trained</th>" for metric in metrics)
    notes = []
    scored = summary.get("check_labels")
    if scored:
        notes.append(f"Scored on the check set: {html.escape(scored)}.")
    kept = summary.get("kept")
    if kept:
        notes.append(
            f"The run kept epoch {kept['epoch']} (NMI {kept['nmi']:.3f} on the labelled images; "
            f"the last epoch's clustering scored {kept['last_nmi']:.3f})."
        )
    if any((e or {}).get("verdict") == "worse" for e in effect.values()):
        notes.append("Training made the clustering worse than the untrained network's.")
    paragraphs = "".join(f"<p>{note}</p>" for note in notes)
    return (
        f"<table><tr><th>split</th>{names}<th>verdict</th></tr>{''.join(rows)}</table>{paragraphs}"
    )


def _probes_html(directory) -> str:
    """The probes' accuracies beside the untrained network's, where both were run."""
    rows = []
    for name, title in (("probe", "linear probe"), ("knn", "kNN")):
        reports = {}
        for stage, suffix in (("trained", ""), ("untrained", "_random")):
            if (directory.path / f"{name}{suffix}.json").is_file():
                reports[stage] = directory.read_json(f"{name}{suffix}.json")["accuracy"]
        if not reports:
            continue
        for key in sorted({k for r in reports.values() for k in _accuracies(r)}):
            values = {stage: _accuracies(r).get(key) for stage, r in reports.items()}
            label = title if key == "" else f"{title} (k = {key})"
            cells = "".join(
                "<td>–</td>"
                if values.get(stage) is None
                else f"<td>{100 * values[stage]:.1f} %</td>"
                for stage in ("untrained", "trained")
            )
            rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    if not rows:
        return ""
    return (
        "<table><tr><th>accuracy on the labels</th><th>untrained</th><th>trained</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _accuracies(accuracy) -> dict:
    """A probe's accuracy (a number) or kNN's (by k) as {key: value}."""
    return accuracy if isinstance(accuracy, dict) else {"": accuracy}


def _figure_html(title: str, content: Path | str | None) -> str:
    """A paragraph (no content), a PNG figure (a path) or a gallery (its HTML), captioned."""
    if content is None:
        return f"<p>{html.escape(title)}</p>"
    if isinstance(content, Path):
        encoded = base64.b64encode(content.read_bytes()).decode()
        content = f"<img alt='{html.escape(title)}' src='data:image/png;base64,{encoded}'>"
    return f"<figure>{content}<figcaption>{html.escape(title)}</figcaption></figure>"


def _write_html(page: Path, run: Run, figures) -> None:
    summary = run.directory.summary
    header = _effect_html(summary)
    probes = _probes_html(run.directory)
    body = "".join(_figure_html(title, content) for title, content in figures)
    title = html.escape(run.directory.path.name)
    run.directory.write_text(
        page.name,
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}figure{{margin:1.5em 0}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}
.row{{display:flex;align-items:center;gap:4px;margin:4px 0}}.row span{{width:5em;font-size:90%}}
img.thumb{{width:{THUMBNAIL}px;height:{THUMBNAIL}px;object-fit:contain;image-rendering:pixelated;
background:#eee}}img.thumb:hover{{outline:2px solid #36c}}</style></head>
<body><h1>{title}</h1><p>Recipe {html.escape(str(summary.get("recipe", "none")))},
{summary.get("epochs")} epochs, {run.num_clusters} clusters,
{summary.get("images")} images, backend {html.escape(str(summary.get("backend")))}.</p>
{header}{probes}{body}
<script>window.addEventListener("load", () => {{
  const images = [...document.images];
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
}});</script></body></html>
""",
    )
