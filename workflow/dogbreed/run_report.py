"""The run report: figures and tables over a run's outputs (each also a Snakemake report() item), and
one self-contained HTML page that shows them all. Reads files only; never needs a live endpoint."""
import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

SPLITS = ["train", "valid", "test"]


def _save(figure, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def data_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split."""
    table = manifest.pivot_table(index=["class_index", "breed"], columns="split", values="path", aggfunc="count", fill_value=0)
    table = table.reindex(columns=SPLITS, fill_value=0)
    table["total"] = table.sum(axis=1)
    return table.reset_index()


def plot_data_summary(summary: pd.DataFrame, path):
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.16 * len(summary))))
    left = np.zeros(len(summary))
    for split in SPLITS:
        axis.barh(summary["breed"], summary[split], left=left, label=split)
        left += summary[split].to_numpy()
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=6 if len(summary) > 30 else 9)
    axis.set(xlabel="images")
    axis.legend()
    _save(figure, path)


def plot_trials(trials: pd.DataFrame, objective: str, parameters: list, path):
    numeric = [p for p in parameters if p in trials and pd.api.types.is_numeric_dtype(trials[p])]
    done = trials[trials[objective].notna()]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    colours = {"Completed": "tab:green", "Stopped": "tab:orange", "Failed": "tab:red"}
    axes[0].bar(trials["trial"].astype(str), trials[objective].fillna(0),
                color=[colours.get(s, "grey") for s in trials["status"]])
    axes[0].set(xlabel="trial (green completed, orange stopped early, red failed)", ylabel=objective)
    if len(numeric) >= 2 and len(done):
        x, y = numeric[0], numeric[1]
        points = axes[1].scatter(done[x], done[y], c=done[objective], cmap="viridis", s=60)
        figure.colorbar(points, ax=axes[1], label=objective)
        axes[1].set(xlabel=x, ylabel=y, xscale="log" if (done[x] > 0).all() and done[x].max() / done[x].min() > 20 else "linear")
    elif numeric and len(done):
        axes[1].scatter(done[numeric[0]], done[objective])
        axes[1].set(xlabel=numeric[0], ylabel=objective)
    else:
        axes[1].axis("off")
    _save(figure, path)


def plot_training_curves(metrics: pd.DataFrame, path):
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for column in ("train_loss", "valid_loss"):
        if column in metrics:
            axes[0].plot(metrics["epoch"], metrics[column], "o-", label=column.replace("_", " "))
    for column in ("train_accuracy", "valid_accuracy"):
        if column in metrics:
            axes[1].plot(metrics["epoch"], metrics[column], "o-", label=column.replace("_", " "))
    losses = metrics[[c for c in ("train_loss", "valid_loss") if c in metrics]].to_numpy(dtype=float)
    spread = np.nanmax(losses) / max(np.nanmin(losses), 1e-12) if losses.size else 1
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log" if spread > 50 else "linear")
    axes[1].set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for axis in axes:
        axis.legend()
    _save(figure, path)


def plot_per_class(metrics: dict, path):
    per_class = metrics["per_class_accuracy"]
    names = list(per_class)
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.16 * len(names))))
    axis.barh(names, [per_class[n]["accuracy"] for n in names])
    axis.axvline(metrics["accuracy"], color="black", linestyle="--", label=f"overall {metrics['accuracy']:.3f}")
    axis.invert_yaxis()
    axis.tick_params(axis="y", labelsize=6 if len(names) > 30 else 9)
    axis.set(xlabel="test accuracy", xlim=(0, 1))
    axis.legend()
    _save(figure, path)


def plot_confusion(metrics: dict, path):
    matrix = np.array(metrics["confusion_matrix"]["matrix"], dtype=float)
    names = metrics["confusion_matrix"]["classes"]
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = min(14, 3 + 0.09 * len(names))
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="share of the true class")
    if len(names) <= 30:
        axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                axis.text(j, i, int(value), ha="center", va="center", fontsize=7,
                          color="white" if normalised[i, j] > 0.5 else "black")
    axis.set(xlabel="predicted", ylabel="true")
    _save(figure, path)


def top_confusions(evaluation: dict, count=10) -> pd.DataFrame:
    """The most frequent (true, predicted) mix-ups: readable where a 133-class heat map is not."""
    matrix = np.array(evaluation["confusion_matrix"]["matrix"])
    names = evaluation["confusion_matrix"]["classes"]
    rows = [{"true breed": names[i], "predicted as": names[j], "images": int(matrix[i, j]),
             "share of the true breed": round(matrix[i, j] / matrix[i].sum(), 3)}
            for i, j in zip(*np.nonzero(matrix)) if i != j]
    return pd.DataFrame(rows, columns=["true breed", "predicted as", "images", "share of the true breed"]
                        ).sort_values("images", ascending=False, kind="stable").head(count)


def worst_misclassified(predictions: pd.DataFrame, count=12) -> pd.DataFrame:
    """The wrong answers the model was most sure of."""
    return predictions[~predictions["correct"]].sort_values("probability", ascending=False).head(count)


def plot_gallery(worst: pd.DataFrame, channels_dir, path):
    columns = 4
    rows = max(1, -(-len(worst) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, worst.itertuples()):
        with Image.open(Path(channels_dir) / row.path) as image:
            axis.imshow(image.convert("RGB"))
        axis.set_title(f"true: {row.true_breed}\npredicted: {row.predicted_breed} ({row.probability:.2f})", fontsize=8)
    if worst.empty:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center")
    _save(figure, path)


def make_figures(inputs: dict, outputs: dict, objective: str, parameters: list):
    """inputs: manifest, trials, metrics_csv, evaluation, predictions, channels; outputs: figure and table paths."""
    manifest = pd.read_csv(inputs["manifest"])
    summary = data_summary(manifest)
    summary.to_csv(outputs["data_summary_table"], index=False)
    plot_data_summary(summary, outputs["data_summary"])
    plot_trials(pd.read_csv(inputs["trials"]), objective, parameters, outputs["trials_plot"])
    plot_training_curves(pd.read_csv(inputs["metrics_csv"]), outputs["training_curves"])
    evaluation = json.loads(Path(inputs["evaluation"]).read_text())
    plot_per_class(evaluation, outputs["per_class"])
    plot_confusion(evaluation, outputs["confusion"])
    worst = worst_misclassified(pd.read_csv(inputs["predictions"]))
    worst.to_csv(outputs["misclassified_table"], index=False)
    plot_gallery(worst, inputs["channels"], outputs["misclassified"])


# --- the page -------------------------------------------------------------------------------------
def _image(path) -> str:
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}">'


def _table(frame: pd.DataFrame, max_rows=200) -> str:
    shown = frame.head(max_rows)
    more = f"<p><em>{len(frame) - max_rows} more rows in the CSV file</em></p>" if len(frame) > max_rows else ""
    return shown.to_html(index=False, escape=True, na_rep="", float_format=lambda v: f"{v:.4g}", border=0) + more


def _definitions(pairs) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs) + "</table>"


CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #333; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; font-size: 90%; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } img { max-width: 100%; } pre { background: #f7f7f7; padding: 8px; font-size: 85%; overflow-x: auto; }
.big { font-size: 140%; } .triggered { color: #c0392b; font-weight: bold; } .ok { color: #1e8449; }
"""


def build_page(config: dict, files: dict, figures: dict, report_path) -> str:
    """files: the run's outputs (paths); figures: the figure paths from make_figures."""
    read = lambda key: json.loads(Path(files[key]).read_text())  # noqa: E731
    best, model, endpoint, evaluation, rules = (read(k) for k in ("best", "model_json", "endpoint", "evaluation", "rules"))
    rejected = pd.read_csv(files["rejected"])
    summary = pd.read_csv(figures["data_summary_table"])
    trials = pd.read_csv(files["trials"]).drop(columns=["log"], errors="ignore")
    metrics = pd.read_csv(files["metrics_csv"])
    latency = evaluation["latency_ms"]
    profiler_link = Path(files["profiler_report"]).resolve().relative_to(Path(report_path).resolve().parent)
    rule_rows = "".join(
        f'<tr><td>{r["rule"]}</td><td>{r["kind"]}</td><td class="{r["verdict"]}">{r["verdict"]}</td>'
        f'<td>{html.escape(r["recommendation"])}</td></tr>' for r in rules["rules"])
    totals = {split: int(summary[split].sum()) for split in SPLITS}
    # classes too small to appear in every split (prepare warns of them too)
    short = [f"{row.breed} (no {', no '.join(split for split in SPLITS if row[split] == 0)})"
             for _, row in summary.iterrows() if any(row[split] == 0 for split in SPLITS)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dog-breed run report</title><style>{CSS}</style></head><body>
<h1>dog-breed run report</h1>
<p class="big">Test accuracy <b>{evaluation['accuracy']:.4f}</b> (top-5 {evaluation['top5_accuracy']:.4f}) on {evaluation['n']}
test images, {len(summary)} classes (chance {evaluation['chance_accuracy']:.4f}); backend <b>{html.escape(config['backend'])}</b>.</p>

<h2>Configuration</h2>
<details><summary>the run's configuration (backend {html.escape(config['backend'])}, data source {html.escape(str(config['data_source']))})</summary>
<pre>{html.escape(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))}</pre></details>

<h2>Data</h2>
<p>{sum(totals.values())} images used: {totals['train']} train, {totals['valid']} valid, {totals['test']} test;
{len(rejected)} rejected.</p>
{f'<p class="triggered">Classes missing from a split (too few images; not scored on what they lack): {html.escape("; ".join(short))}.</p>' if short else ""}
{_image(figures['data_summary'])}
<details><summary>images per class and split</summary>{_table(summary)}</details>
<h3>Rejected files</h3>
{_table(rejected) if len(rejected) else "<p>none</p>"}

<h2>Hyperparameter tuning</h2>
{_image(figures["trials_plot"])}
{_table(trials)}
<h3>Best hyperparameters</h3>
{_definitions([*best['hyperparameters'].items(), ('trial', best['trial']), (best['objective']['metric'], best['objective']['value'])])}

<h2>Training</h2>
<p>Job {html.escape(str(model.get('job_name')))} ({html.escape(str(model.get('status')))}, {model.get('seconds')} s) with
{html.escape(json.dumps(model.get('hyperparameters', {})))}.</p>
{_image(figures['training_curves'])}
{_table(metrics)}

<h2>Debugger and profiler rules</h2>
<p>The full profiler report: <a href="{html.escape(profiler_link.as_posix())}">{html.escape(profiler_link.as_posix())}</a>.</p>
<table><tr><th>rule</th><th>kind</th><th>verdict</th><th>recommendation</th></tr>{rule_rows}</table>

<h2>Endpoint</h2>
{_definitions(endpoint.items())}

<h2>Evaluation</h2>
{_definitions([("accuracy", evaluation['accuracy']), ("top-5 accuracy", evaluation['top5_accuracy']), ("test images", evaluation['n']),
               ("latency p50 / p95 / p99 (ms per request)", f"{latency['p50']} / {latency['p95']} / {latency['p99']}"),
               ("images per request", f"at most {evaluation['max_images_per_request']}, within {evaluation['max_request_bytes']:,} bytes"
                                         + (f"; {evaluation['images_sent_as_arrays']} too large for JSON sent as input arrays"
                                            if evaluation['images_sent_as_arrays'] else ""))])}
<h3>Per-class accuracy</h3>
{_image(figures['per_class'])}
<h3>Confusion matrix</h3>
{_image(figures['confusion'])}
<h3>Most frequent confusions</h3>
{_table(top_confusions(evaluation))}
<h3>The most confident mistakes</h3>
{_image(figures['misclassified'])}
</body></html>
"""
