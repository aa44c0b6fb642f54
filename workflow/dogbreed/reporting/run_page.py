"""The run report: figures and tables over a run's outputs (each also a Snakemake report() item), and
one self-contained HTML page that shows them all. Reads files only; never needs a live endpoint."""

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from dogbreed.reporting import html_kit
from dogbreed.serving import servable

SPLITS = ["train", "valid", "test"]
STATUS_COLOURS = {"Completed": "tab:green", "Stopped": "tab:orange", "Failed": "tab:red"}


def data_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split."""
    table = manifest.pivot_table(
        index=["class_index", "breed"], columns="split", values="path", aggfunc="count", fill_value=0
    )
    table = table.reindex(columns=SPLITS, fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def plot_data_summary(summary: pd.DataFrame, path):
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.16 * len(summary))))
    left = np.zeros(len(summary))
    for split in SPLITS:
        axis.barh(summary["breed"], summary[split], left=left, label=split)
        left += summary[split].to_numpy()
    axis.margins(y=0.5 / len(summary))  # half a bar above the first and below the last, however many classes
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=6 if len(summary) > 30 else 9)
    axis.set(xlabel="images")
    html_kit.legend_above(axis, len(SPLITS))
    html_kit.save_figure(figure, path)


def _trial_bars(axis, trials, status, value):
    """The objective per trial: a stopped trial hatched at the last value it reported, a failed one
    (or one in any other state) a cross at the baseline with its status written above."""
    top = float(np.nanmax(value)) if value.notna().any() else 1.0
    epochs = trials["epochs_reported"] if "epochs_reported" in trials else pd.Series(np.nan, index=trials.index)
    stopped_style = {
        "color": STATUS_COLOURS["Stopped"],
        "alpha": 0.45,
        "hatch": "//",
        "edgecolor": STATUS_COLOURS["Stopped"],
    }
    for i, (state, height) in enumerate(zip(status, value)):
        if state == "Completed":
            axis.bar(i, height, color=STATUS_COLOURS["Completed"])
        elif state == "Stopped":
            height = 0 if pd.isna(height) else height
            axis.bar(i, height, **stopped_style)
            at = f" at epoch {int(epochs[i])}" if pd.notna(epochs[i]) and epochs[i] else ""
            axis.text(
                i,
                height + 0.02 * top,
                f"stopped{at}",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=7,
                color=STATUS_COLOURS["Stopped"],
            )
        else:
            colour = STATUS_COLOURS.get(state, "grey")
            axis.plot(i, 0, "X", color=colour, markersize=10, clip_on=False, zorder=3)
            axis.text(i, 0.04 * top, state.lower(), rotation=90, ha="center", va="bottom", fontsize=7, color=colour)
    axis.set_xticks(np.arange(len(trials)), trials["trial"].astype(str))
    axis.set(xlabel="trial", ylabel=value.name, ylim=(0, top * 1.25 if top > 0 else 1))
    html_kit.legend_above(
        axis,
        3,
        handles=[
            Patch(color=STATUS_COLOURS["Completed"], label="completed"),
            Patch(
                **{**stopped_style, "color": None, "facecolor": STATUS_COLOURS["Stopped"]},
                label="stopped early (its last reported value)",
            ),
            Line2D([], [], marker="X", color=STATUS_COLOURS["Failed"], linestyle="", label="failed"),
        ],
    )


def _scale(spec: dict, values: pd.Series) -> str:
    """The axis scale of a hyperparameter: its spec's scaling (Logarithmic, ReverseLogarithmic, Linear); for Auto or
    none, log where the tried values are positive and span more than 20×, as a learning rate's do."""
    scaling = str(spec.get("scaling", "Auto")).lower()
    if scaling in ("logarithmic", "reverselogarithmic"):
        return "log"
    if scaling == "linear":
        return "linear"
    low = min([*values, *[spec[k] for k in ("min", "max") if isinstance(spec.get(k), (int, float))]], default=0)
    return "log" if low > 0 and values.max() / values.min() > 20 else "linear"


def _pad(low, high, logarithmic) -> tuple:
    """Limits a little wider than [low, high]: by a factor on a log axis (never below zero), else by a margin."""
    if logarithmic and low > 0:
        factor = (high / low) ** 0.08 if high > low else 2
        return low / factor, high * factor
    margin = (high - low) * 0.1 or 1
    return low - margin, high + margin


def _tick_each(axis, values: list, vertical: bool):
    """A tick at each of a few values (batch sizes, a categorical hyperparameter's), and the axis just wider."""
    logarithmic = (axis.get_xscale if vertical else axis.get_yscale)() == "log"
    (axis.set_xticks if vertical else axis.set_yticks)(values)
    (axis.set_xlim if vertical else axis.set_ylim)(*_pad(values[0], values[-1], logarithmic))


def _search_bounds(axis, spec: dict, vertical: bool) -> bool:
    """The searched range of one hyperparameter as dashed lines at its min and max (a categorical one: its values
    as the ticks, in trials.csv or not), so what the trials tried can be seen against what they could have;
    whether lines were drawn."""
    limits, set_limits = (axis.get_xlim, axis.set_xlim) if vertical else (axis.get_ylim, axis.set_ylim)
    logarithmic = (axis.get_xscale if vertical else axis.get_yscale)() == "log"
    if spec.get("type") == "categorical":
        values = sorted(v for v in spec.get("values", []) if isinstance(v, (int, float)))
        if values and (values[0] > 0 or not logarithmic):
            _tick_each(axis, values, vertical)
        return False
    low, high = spec.get("min"), spec.get("max")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or (logarithmic and low <= 0):
        return False
    for bound in (low, high):
        (axis.axvline if vertical else axis.axhline)(bound, color="grey", linestyle="--", linewidth=1, zorder=1)
    padded = _pad(low, high, logarithmic)
    shown = limits()
    set_limits(min(shown[0], padded[0]), max(shown[1], padded[1]))
    return True


def _trial_scatter(figure, axis, trials, status, value, objective, x, y, bounds):
    """Every trial over hyperparameters x and y (y None: over x and the objective), the marker
    saying how it ended; completed trials coloured by the objective, all labelled with their number;
    bounds: the tuning's parameter specs (config tuning.parameters), drawn as the searched range."""
    placed = trials[x].notna() & (trials[y].notna() if y else True)
    heights = trials[y] if y else value.fillna(0)
    completed, stopped = placed & (status == "Completed"), placed & (status == "Stopped")
    others = placed & ~completed & ~stopped
    if completed.any():
        points = axis.scatter(
            trials.loc[completed, x],
            heights[completed],
            c=trials.loc[completed, objective],
            cmap="viridis",
            s=60,
            edgecolors="black",
            linewidths=0.5,
            label="completed (colour: objective)",
            zorder=3,
        )
        if y:
            figure.colorbar(points, ax=axis, label=objective)
    if stopped.any():
        axis.scatter(
            trials.loc[stopped, x],
            heights[stopped],
            marker="s",
            s=60,
            facecolors="none",
            edgecolors=STATUS_COLOURS["Stopped"],
            linewidths=1.5,
            label="stopped early",
            zorder=3,
        )
    if others.any():
        axis.scatter(
            trials.loc[others, x],
            heights[others],
            marker="X",
            s=70,
            c=[STATUS_COLOURS.get(v, "grey") for v in status[others]],
            label="failed" if (status[others] == "Failed").all() else "failed / other",
            zorder=3,
        )
    for i in trials.index[placed]:
        axis.annotate(
            str(trials.at[i, "trial"]),
            (trials.at[i, x], heights[i]),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=7,
        )
    xs = trials.loc[placed, x]
    axis.set(xlabel=x, ylabel=y or f"{objective} (stopped: last reported)", xscale=_scale(bounds.get(x, {}), xs))
    if axis.get_xscale() == "linear":  # a narrow range of small values: few ticks, or their labels collide
        axis.xaxis.set_major_locator(MaxNLocator(4))
    levels = sorted(trials.loc[placed, y].unique()) if y else []
    if 0 < len(levels) <= 6:  # categorical, as batch sizes are: a tick per value (every searched one, below)
        _tick_each(axis, levels, vertical=False)
    drawn = [_search_bounds(axis, bounds.get(x, {}), vertical=True)]
    if y:
        drawn.append(_search_bounds(axis, bounds.get(y, {}), vertical=False))
    if any(drawn):
        axis.plot([], [], color="grey", linestyle="--", linewidth=1, label="search bounds")
    html_kit.legend_above(axis, 4)


def plot_trials(trials: pd.DataFrame, objective: str, parameters: dict, path):
    """Left: the objective per trial. Right: every trial over the first two numeric hyperparameters, within the
    bounds they were searched in. parameters: config tuning.parameters (name: its spec)."""
    trials = trials.reset_index(drop=True)
    status = trials["status"].fillna("unknown").astype(str)
    reached = pd.to_numeric(trials["last_reported"], errors="coerce") if "last_reported" in trials else np.nan
    value = (
        pd.to_numeric(trials[objective], errors="coerce").fillna(reached).rename(objective)
    )  # stopped: how far it got
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    _trial_bars(axes[0], trials, status, value)
    numeric = [
        p for p in parameters if p in trials and pd.api.types.is_numeric_dtype(trials[p]) and trials[p].notna().any()
    ]
    if numeric:
        _trial_scatter(
            figure,
            axes[1],
            trials,
            status,
            value,
            objective,
            numeric[0],
            numeric[1] if len(numeric) > 1 else None,
            parameters,
        )
    else:
        axes[1].axis("off")
    html_kit.save_figure(figure, path)


def kept_epoch_line(kept: dict) -> str:
    """model.json's kept_epoch in words: over the curves and in the training section."""
    return f"the model keeps epoch {kept['epoch']} ({kept['why']})"


def plot_training_curves(metrics: pd.DataFrame, path, kept=None):
    """Loss and accuracy per epoch; kept: the epoch whose weights the model holds (model.json's kept_epoch,
    as train.py recorded it), marked on both."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for axis, columns in zip(axes, [("train_loss", "valid_loss"), ("train_accuracy", "valid_accuracy")]):
        for column in columns:
            if column in metrics:
                axis.plot(metrics["epoch"], metrics[column], "o-", label=column.replace("_", " "))
        if kept and kept["epoch"] in set(metrics["epoch"]) and columns[1] in metrics:
            at = metrics.loc[metrics["epoch"] == kept["epoch"], columns[1]].iloc[0]
            axis.axvline(kept["epoch"], color="black", linestyle=":", linewidth=1)
            axis.plot(
                kept["epoch"], at, "*", color="black", markersize=14, zorder=3, label=f"kept: epoch {kept['epoch']}"
            )
    losses = metrics[[c for c in ("train_loss", "valid_loss") if c in metrics]].to_numpy(dtype=float)
    spread = np.nanmax(losses) / max(np.nanmin(losses), 1e-12) if losses.size else 1
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log" if spread > 50 else "linear")
    axes[1].set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
    if kept:
        figure.suptitle(kept_epoch_line(kept), fontsize=10)
    html_kit.save_figure(figure, path)


# above this many classes a chart or matrix with every class name stops being readable on a page
NAMED_CLASSES = 30


def _mix_ups(metrics: dict) -> tuple:
    """(the confusion matrix without its diagonal: the wrong answers only, the class names)."""
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    return matrix - np.diag(np.diag(matrix)), metrics["confusion_matrix"]["classes"]


def per_class_table(metrics: dict) -> pd.DataFrame:
    """Every class, worst first: its accuracy, its test images and what it is most often taken for."""
    wrong, names = _mix_ups(metrics)
    rows = []
    for name, row in metrics["per_class_accuracy"].items():
        taken_for = wrong[names.index(name)]
        rows.append(
            {
                "breed": name,
                "accuracy": row["accuracy"],
                "test images": row["n"],
                "most often taken for": f"{names[taken_for.argmax()]} ({taken_for.max()})" if taken_for.any() else "",
            }
        )
    return pd.DataFrame(rows).sort_values(["accuracy", "test images"], ascending=[True, False], kind="stable")


def plot_per_class(metrics: dict, path):
    """Accuracy per class, sorted (worst first), each bar named with its count; above NAMED_CLASSES classes the
    worst and the best half of that each, the whole list being the table under it."""
    table, total = per_class_table(metrics), len(metrics["per_class_accuracy"])
    shown = "test accuracy per class, worst first (n: its test images)"
    if total > NAMED_CLASSES:
        half = NAMED_CLASSES // 2
        table = pd.concat([table.head(half), table.tail(half)])
        shown += f"; the worst {half} and the best {half} of {total}"
    labels = [f"{breed} (n={n})" for breed, n in zip(table["breed"], table["test images"])]
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.26 * len(labels))))
    axis.barh(labels, table["accuracy"])
    axis.axvline(metrics["accuracy"], color="black", linestyle="--", label=f"overall {metrics['accuracy']:.3f}")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=9)
    axis.set(xlabel=shown, xlim=(0, 1))
    html_kit.legend_above(axis, 1)
    html_kit.save_figure(figure, path)


def most_confused_classes(metrics: dict, count=NAMED_CLASSES) -> list:
    """The classes in the most mix-ups (as true or predicted class), most first: the rows and columns of a
    confusion matrix that can carry names at 133 classes."""
    wrong, names = _mix_ups(metrics)
    if len(names) <= count:
        return list(names)
    involved = wrong.sum(axis=0) + wrong.sum(axis=1)
    most = np.argsort(-involved, kind="stable")[:count]  # ties in folder order
    return [names[i] for i in most if involved[i] > 0] or list(names[:count])


def _matrix_axis(figure, axis, matrix, names, labelled, rows=None):
    """rows: each true class's images (its row total in the whole matrix, when this is a part of it)."""
    rows = matrix.sum(axis=1, keepdims=True) if rows is None else rows
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="share of the true class", shrink=0.8)
    if labelled:
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                axis.text(j, i, int(value), ha="center", va="center", fontsize=7, color=colour)
    axis.set(xlabel="predicted", ylabel="true")


def plot_confusion(metrics: dict, path):
    """The confusion matrix with class names; above NAMED_CLASSES classes, the most confused classes' own
    matrix with their names (share of each true class, over all its images) beside the whole one unnamed."""
    matrix = np.array(metrics["confusion_matrix"]["matrix"], dtype=float)
    names = metrics["confusion_matrix"]["classes"]
    if len(names) <= NAMED_CLASSES:
        size = 3 + 0.3 * len(names)
        figure, axis = plt.subplots(figsize=(size + 1.5, size))
        _matrix_axis(figure, axis, matrix, names, labelled=True)
        html_kit.save_figure(figure, path)
        return
    confused = most_confused_classes(metrics)
    index = [names.index(name) for name in confused]
    figure, (whole, named) = plt.subplots(1, 2, figsize=(22, 11), gridspec_kw={"width_ratios": [1, 1.2]})
    _matrix_axis(figure, whole, matrix, names, labelled=False)
    whole.set_title(f"all {len(names)} classes, in folder order")
    part = matrix[np.ix_(index, index)]
    rows = matrix[index].sum(axis=1, keepdims=True)  # shares of all each class's images, not of the part's
    _matrix_axis(figure, named, part, confused, labelled=True, rows=rows)
    named.set_title(f"the {len(confused)} classes in the most mix-ups")
    html_kit.save_figure(figure, path)


def top_confusions(evaluation: dict, count=10) -> pd.DataFrame:
    """The most frequent (true, predicted) mix-ups: readable where a 133-class heat map is not."""
    matrix = np.array(evaluation["confusion_matrix"]["matrix"])
    names = evaluation["confusion_matrix"]["classes"]
    rows = [
        {
            "true breed": names[i],
            "predicted as": names[j],
            "images": int(matrix[i, j]),
            "share of the true breed": round(matrix[i, j] / matrix[i].sum(), 3),
        }
        for i, j in zip(*np.nonzero(matrix))
        if i != j
    ]
    return (
        pd.DataFrame(rows, columns=["true breed", "predicted as", "images", "share of the true breed"])
        .sort_values("images", ascending=False, kind="stable")
        .head(count)
    )


def worst_misclassified(predictions: pd.DataFrame, count=12) -> pd.DataFrame:
    """The wrong answers the model was most sure of."""
    return predictions[~predictions["correct"]].sort_values("probability", ascending=False).head(count)


def crop_box(size: tuple, preprocessing: dict) -> tuple:
    """(the resized image's size, the centre crop's box in it): what torchvision's Resize(resize) and
    CenterCrop(crop), classifier.eval_transform's steps, do to a PIL image of this size (a test holds them equal)."""
    width, height = size
    resize, crop = preprocessing["resize"], preprocessing["crop"]
    resized = (resize, int(resize * height / width)) if width <= height else (int(resize * width / height), resize)
    left, top = round((resized[0] - crop) / 2.0), round((resized[1] - crop) / 2.0)
    return resized, (left, top, left + crop, top + crop)


def model_input(image: Image.Image, preprocessing: dict) -> Image.Image:
    """The image as the model saw it (before normalising): the shorter side resized, then the centre crop."""
    resized, box = crop_box(image.size, preprocessing)
    return image.resize(resized, Image.BILINEAR).crop(box)


def plot_gallery(worst: pd.DataFrame, channels_dir, path, preprocessing=None):
    """Each mistake as the file is, the part the model saw outlined, and beside it that part as the model saw
    it (preprocessing: the served model's, from its model_info.json; None: the file alone). Each mistake is a
    subfigure, its title over both of its panels, so that long breed names never run into the next one."""
    panels = 2 if preprocessing else 1
    per_row = 3 if preprocessing else 4
    rows = max(1, -(-len(worst) // per_row))
    figure = plt.figure(figsize=(2.6 * per_row * panels, 3.1 * rows))
    mistakes = figure.subfigures(rows, per_row, squeeze=False).flat
    for mistake, row in zip(mistakes, worst.itertuples()):
        axes = mistake.subplots(1, panels, squeeze=False).flat
        mistake.subplots_adjust(top=0.76)  # room for the two-line title above the panels' own
        for axis in axes:
            axis.axis("off")
        with Image.open(Path(channels_dir) / row.path) as image:
            image = image.convert("RGB")
        axes[0].imshow(image)
        mistake.suptitle(
            f"true: {row.true_breed}\npredicted: {row.predicted_breed} ({row.probability:.2f})", fontsize=8
        )
        if preprocessing:
            resized, (left, top, right, bottom) = crop_box(image.size, preprocessing)
            scale = image.size[0] / resized[0]
            axes[0].add_patch(
                Rectangle(
                    (left * scale, top * scale),
                    (right - left) * scale,
                    (bottom - top) * scale,
                    fill=False,
                    edgecolor="yellow",
                    linewidth=1.5,
                )
            )
            axes[0].set_title("the file", fontsize=7)
            axes[1].imshow(model_input(image, preprocessing))
            axes[1].set_title(f"the model's input ({preprocessing['crop']} px)", fontsize=7)
    if worst.empty:
        figure.text(0.5, 0.5, "no misclassified test images", ha="center")
    html_kit.save_figure(figure, path)


def _number(value, digits=4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def headline(evaluation: dict, best: dict, rules: dict) -> list:
    """The run's numbers as (item, value) rows: report/headline.tsv, which Snakemake's report shows on
    its landing page (workflow/report/workflow.rst reads it there; Jinja reads no JSON)."""
    latency = evaluation.get("latency_ms", {})
    triggered = [r["rule"] for r in rules["rules"] if r["verdict"] == "triggered"]
    objective = best.get("objective", {})
    rows = [
        ("test accuracy", _number(evaluation["accuracy"])),
        ("top-5 accuracy", _number(evaluation["top5_accuracy"])),
        ("test images", evaluation["n"]),
        ("classes", len(evaluation.get("per_class_accuracy", {})) or ""),
        ("chance accuracy", _number(evaluation.get("chance_accuracy", ""))),
        ("backend", evaluation.get("endpoint", {}).get("backend", "")),
        *[
            (f"best {name}", f"{value:.4g}" if isinstance(value, float) else value)
            for name, value in best["hyperparameters"].items()
        ],
        (
            "best trial",
            (
                f"{best.get('trial')} ({objective.get('metric')} {_number(objective.get('value'))}, "
                f"{best.get('trials_completed', '?')} trials completed)"
            ),
        ),
        (
            "rules triggered",
            f"{len(triggered)} of {len(rules['rules'])}" + (f": {', '.join(triggered)}" if triggered else ""),
        ),
        ("latency p50 / p95 (ms per request)", f"{latency.get('p50')} / {latency.get('p95')}" if latency else ""),
    ]
    return [(item, " ".join(str(value).split())) for item, value in rows]  # one line each, no tabs


def write_headline(rows: list, path):
    Path(path).write_text("item\tvalue\n" + "".join(f"{item}\t{value}\n" for item, value in rows), encoding="utf-8")


def make_figures(inputs: dict, outputs: dict, objective: str, parameters: dict):
    """inputs: manifest, trials, metrics_csv, model_json, model (the served artifact), evaluation, predictions,
    channels, best, verdicts; outputs: figure and table paths, and headline (the run's numbers, TSV);
    parameters: config tuning.parameters."""
    manifest = pd.read_csv(inputs["manifest"])
    summary = data_summary(manifest)
    summary.to_csv(outputs["data_summary_table"], index=False)
    plot_data_summary(summary, outputs["data_summary"])
    plot_trials(pd.read_csv(inputs["trials"]), objective, parameters, outputs["trials_plot"])
    kept = json.loads(Path(inputs["model_json"]).read_text()).get("kept_epoch")
    plot_training_curves(pd.read_csv(inputs["metrics_csv"]), outputs["training_curves"], kept)
    evaluation = json.loads(Path(inputs["evaluation"]).read_text())
    if "headline" in outputs:
        write_headline(
            headline(
                evaluation,
                json.loads(Path(inputs["best"]).read_text()),
                json.loads(Path(inputs["verdicts"]).read_text()),
            ),
            outputs["headline"],
        )
    plot_per_class(evaluation, outputs["per_class"])
    plot_confusion(evaluation, outputs["confusion"])
    worst = worst_misclassified(pd.read_csv(inputs["predictions"]))
    worst.to_csv(outputs["misclassified_table"], index=False)
    preprocessing = servable.model_info(inputs["model"])["preprocessing"] if inputs.get("model") else None
    plot_gallery(worst, inputs["channels"], outputs["misclassified"], preprocessing)


# --- the page -------------------------------------------------------------------------------------
def hyperparameter_table(hyperparameters: dict, tuned: dict) -> pd.DataFrame:
    """The training job's hyperparameters, one row each; where each came from: tuning or the config."""
    rows = [
        {
            "hyperparameter": name,
            "value": f"{value:.6g}" if isinstance(value, float) else str(value),
            "from": "tuning (best trial)" if name in tuned else "configuration",
        }
        for name, value in hyperparameters.items()
    ]
    frame = pd.DataFrame(rows, columns=["hyperparameter", "value", "from"])
    return frame.sort_values("from", ascending=False, kind="stable")  # the tuned ones first


def tracking_section(model: dict) -> str:
    """Where the final training's MLflow run is, and the command that opens it."""
    recorded = model.get("tracking") or {}
    if not recorded.get("run_id"):
        return "<p>The final training ran with MLflow tracking off (tracking.enabled).</p>"
    return (
        html_kit.definitions(
            [
                ("MLflow run of the final training", recorded["run_id"]),
                ("store", recorded["uri"]),
                ("experiment", recorded["experiment"]),
            ]
        )
        + "<p>Its trials and this run side by side: <code>make mlflow-ui</code> (docs/tracking.md).</p>"
    )


def build_page(config: dict, files: dict, figures: dict, report_path, earlier=None) -> str:
    """files: the run's outputs (paths); figures: the figure paths from make_figures; earlier: the tracking store's
    earlier final run on the same data (tracking.earlier_final_run), shown beside this one."""
    read = lambda key: json.loads(Path(files[key]).read_text())
    best, model, endpoint, evaluation, rules = (
        read(k) for k in ("best", "model_json", "endpoint", "evaluation", "verdicts")
    )
    summary = pd.read_csv(figures["data_summary_table"])
    profiler_link = Path(files["profiler_report"]).resolve().relative_to(Path(report_path).resolve().parent)
    body = "\n".join(
        [
            headline_section(config, evaluation, len(summary)),
            comparison_section(earlier),
            configuration_section(config),
            data_section(summary, pd.read_csv(files["rejected"]), figures),
            tuning_section(pd.read_csv(files["trials"]).drop(columns=["log"], errors="ignore"), best, figures),
            training_section(model, best, pd.read_csv(files["metrics_csv"]), figures),
            "<h2>Tracking</h2>\n" + tracking_section(model),
            checks_section(rules, profiler_link),
            "<h2>Endpoint</h2>\n" + html_kit.definitions(endpoint.items()),
            evaluation_section(evaluation, figures),
        ]
    )
    return html_kit.page("dog-breed run report", body)


def headline_section(config, evaluation, classes) -> str:
    return f"""<h1>dog-breed run report</h1>
<p class="big">Test accuracy <b>{evaluation["accuracy"]:.4f}</b> (top-5 {evaluation["top5_accuracy"]:.4f}) on \
{evaluation["n"]} test images, {classes} classes (chance {evaluation["chance_accuracy"]:.4f}); backend \
<b>{html.escape(config["backend"])}</b>.</p>"""


def comparison_table(earlier: dict) -> pd.DataFrame:
    """This run's evaluation numbers beside the earlier run's, then the hyperparameters that differ: both sides as
    the tracking store has them (tracking.earlier_final_run), so they are named and formatted alike on every
    backend."""
    this = earlier["this"]
    rows = [
        {"": name.replace("_", " "), "this run": this["metrics"][name], "earlier run": value}
        for name, value in earlier["metrics"].items()
        if name in this["metrics"]
    ]
    now, then = this["hyperparameters"], earlier["hyperparameters"]
    rows += [
        {"": name, "this run": now.get(name, ""), "earlier run": then.get(name, "")}
        for name in sorted(now.keys() | then.keys())
        if now.get(name) != then.get(name)
    ]
    return pd.DataFrame(rows, columns=["", "this run", "earlier run"])


def comparison_section(earlier) -> str:
    if not earlier:
        return ""
    return f"""<h2>Compared with the earlier run</h2>
<p class="versus">The tracking store's last earlier final run on the same data: \
<b>{html.escape(str(earlier["run_name"]))}</b>, started {html.escape(str(earlier["started"]))} \
({html.escape(str(earlier["link"]))}). Its numbers, and the hyperparameters that differ:</p>
{html_kit.frame_table(comparison_table(earlier))}"""


def configuration_section(config) -> str:
    return f"""<h2>Configuration</h2>
<details><summary>the run's configuration (backend {html.escape(config["backend"])}, data source \
{html.escape(str(config["data_source"]))})</summary>
<pre>{html.escape(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))}</pre></details>"""


def data_section(summary, rejected, figures) -> str:
    totals = {split: int(summary[split].sum()) for split in SPLITS}
    # classes too small to appear in every split (prepare warns of them too)
    short = [
        f"{row.breed} (no {', no '.join(split for split in SPLITS if row[split] == 0)})"
        for _, row in summary.iterrows()
        if any(row[split] == 0 for split in SPLITS)
    ]
    missing = (
        f'<p class="triggered">Classes missing from a split (too few images; not scored on what they lack): '
        f"{html.escape('; '.join(short))}.</p>"
        if short
        else ""
    )
    return f"""<h2>Data</h2>
<p>{sum(totals.values())} images used: {totals["train"]} train, {totals["valid"]} valid, {totals["test"]} test;
{len(rejected)} rejected.</p>
{missing}
{html_kit.image(figures["data_summary"])}
<details><summary>images per class and split</summary>{html_kit.frame_table(summary)}</details>
<h3>Rejected files</h3>
{html_kit.frame_table(rejected) if len(rejected) else "<p>none</p>"}"""


def tuning_section(trials, best, figures) -> str:
    found = [
        *best["hyperparameters"].items(),
        ("trial", best["trial"]),
        (best["objective"]["metric"], best["objective"]["value"]),
    ]
    return f"""<h2>Hyperparameter tuning</h2>
{html_kit.image(figures["trials_plot"])}
{html_kit.frame_table(trials)}
<h3>Best hyperparameters</h3>
{html_kit.definitions(found)}"""


def training_section(model, best, metrics, figures) -> str:
    hyperparameters = hyperparameter_table(model.get("hyperparameters", {}), best["hyperparameters"])
    kept = model.get("kept_epoch")
    kept = f"; {html.escape(kept_epoch_line(kept))}" if kept else ""
    return f"""<h2>Training</h2>
<p>Job {html.escape(str(model.get("job_name")))} ({html.escape(str(model.get("status")))}, \
{model.get("seconds")} s{kept}), with these hyperparameters:</p>
{html_kit.frame_table(hyperparameters)}
{html_kit.image(figures["training_curves"])}
<details><summary>every epoch's numbers</summary>{html_kit.frame_table(metrics)}</details>"""


def checks_section(rules, profiler_link) -> str:
    rows = "".join(
        f'<tr><td>{r["rule"]}</td><td>{r["kind"]}</td><td class="{r["verdict"]}">{r["verdict"]}{html_kit.why_not_applicable(r)}</td>'
        f"<td>{html.escape(r['recommendation'])}</td></tr>"
        for r in rules["rules"]
    )
    link = html.escape(profiler_link.as_posix())
    return f"""<h2>Debugger and profiler rules</h2>
<p>The full profiler report: <a href="{link}">{link}</a>.</p>
<table><tr><th>rule</th><th>kind</th><th>verdict</th><th>recommendation</th></tr>{rows}</table>"""


def evaluation_section(evaluation, figures) -> str:
    latency = evaluation["latency_ms"]
    per_request = f"at most {evaluation['max_images_per_request']}, within {evaluation['max_request_bytes']:,} bytes"
    if evaluation["images_sent_as_arrays"]:
        per_request += f"; {evaluation['images_sent_as_arrays']} too large for JSON sent as input arrays"
    numbers = [
        ("accuracy", evaluation["accuracy"]),
        ("top-5 accuracy", evaluation["top5_accuracy"]),
        ("test images", evaluation["n"]),
        ("latency p50 / p95 / p99 (ms per request)", f"{latency['p50']} / {latency['p95']} / {latency['p99']}"),
        # apart from the rest: a serverless endpoint (or a server's first model load) starts cold
        ("first request (ms)", evaluation.get("cold_start_ms", "")),
        ("images per request", per_request),
    ]
    return f"""<h2>Evaluation</h2>
{html_kit.definitions(numbers)}
<h3>Per-class accuracy</h3>
{html_kit.image(figures["per_class"])}
<details><summary>Every class, worst first (a click on a column's header sorts by it)</summary>
{html_kit.frame_table(per_class_table(evaluation), sortable=True)}
</details>
<h3>Confusion matrix</h3>
{html_kit.image(figures["confusion"])}
<h3>Most frequent confusions</h3>
{html_kit.frame_table(top_confusions(evaluation))}
<h3>The most confident mistakes</h3>
{html_kit.image(figures["misclassified"])}"""
