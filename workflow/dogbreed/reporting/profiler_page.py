"""The profiler report: one self-contained HTML page (plots embedded as PNG), in the sections of
SageMaker's ProfilerReport: training job summary, system usage statistics, framework metrics summary,
rules summary, then one section per rule with its plot and recommendation."""

import html
import json
from datetime import UTC, datetime

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from dogbreed.checks.debugger_checks import epoch_losses
from dogbreed.reporting import html_kit

VERDICT_STYLE = {
    "triggered": "#c0392b",
    "ok": "#1e8449",
    "not_applicable": "#7f8c8d",
    "no_data": "#7f8c8d",
    "error": "#b9770e",
}
TRIGGERED = "#c0392b"  # the colour of what a rule flagged, in every plot


def _verdict(verdict) -> str:
    return (
        f'<span class="verdict" style="background:{VERDICT_STYLE.get(verdict, "#555")}">{html.escape(verdict)}</span>'
    )


def _when(timestamp) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if timestamp else ""


def _relative_time(system, column="timestamp"):
    return system[column] - system[column].min()


def _log_scale_if_wide(axis, values, spread=20):
    """A log y axis where the values are all positive and span more than `spread` times."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size and (values > 0).all() and values.max() / values.min() > spread:
        axis.set_yscale("log")


def _mark_steps(axis, steps, label="triggered"):
    """Vertical lines at the steps a rule triggered at."""
    for i, step in enumerate(steps):
        axis.axvline(step, color=TRIGGERED, linestyle=":", linewidth=1.2, label=label if i == 0 else None)


# --- plots, one per rule (None where there is nothing to draw) --------------------------------
def _plot_loss(debug, rule=None):
    losses = debug["losses"]
    if losses.empty:
        return None
    rule = rule or {}
    figure, axis = plt.subplots(figsize=(8, 3))
    for mode, part in losses.groupby("mode"):
        axis.plot(part["step"], part["loss"], ".", markersize=3, label=f"{mode.lower()} loss")
    evidence, parameters = rule.get("evidence", {}), rule.get("parameters", {})
    # the rule's own windows (rules.json is rebuilt whenever the rules' code changes, so it has them)
    means, last_steps = evidence.get("window_mean_losses"), evidence.get("window_last_steps")
    if means and last_steps and len(means) == len(last_steps):
        judged = losses[losses["mode"] == parameters.get("mode", "TRAIN")]
        first = float(judged["step"].min()) if len(judged) else last_steps[0]
        axis.step(
            [first, *last_steps],
            [means[0], *means],
            where="pre",
            color="black",
            linewidth=1.5,
            label=f"window means ({parameters['num_steps']} steps each)"
            if parameters.get("num_steps")
            else "window means",
        )
    if evidence.get("limit") is not None:
        axis.axhline(
            evidence["limit"],
            color=TRIGGERED,
            linestyle="--",
            linewidth=1,
            label=f"limit {evidence['limit']:.3g} (first window + {parameters.get('increase_threshold_percent', '?')}%)",
        )
    _mark_steps(axis, rule.get("triggered_steps", []))
    axis.set(xlabel="step", ylabel="loss", yscale="log" if (losses["loss"] > 0).all() else "linear")
    html_kit.legend_right(axis)
    return figure


def _plot_collection(debug, collection, column, label, log=True):
    tensors = debug["tensors"][debug["tensors"]["collection"] == collection]
    if tensors.empty:
        return None
    figure, axis = plt.subplots(figsize=(8, 3))
    stats = tensors.groupby("step")[column].agg(["min", "median", "max"])
    axis.plot(stats.index, stats["median"], label="median over tensors")
    axis.fill_between(stats.index, stats["min"], stats["max"], alpha=0.3, label="min – max")
    axis.set(xlabel="step", ylabel=label)
    if log and (stats["min"] > 0).all():
        axis.set_yscale("log")
    html_kit.legend_right(axis)
    return figure


def _plot_epochs(debug, rule=None):
    epochs = epoch_losses(debug["losses"])
    if epochs.empty:
        return None
    rule = rule or {}
    figure, axis = plt.subplots(figsize=(8, 3))
    columns = [c for c in ("train_loss", "valid_loss") if c in epochs]
    for column in columns:
        axis.plot(epochs["epoch"], epochs[column], "o-", label=column.replace("_", " "))
    warmup = rule.get("parameters", {}).get("warmup_epochs", 0) or 0
    if warmup > 0:
        axis.axvspan(
            epochs["epoch"].min() - 0.5,
            min(warmup, epochs["epoch"].max()) + 0.5,
            color="grey",
            alpha=0.15,
            label=f"warm-up (epoch{f's 1–{warmup}' if warmup > 1 else ' 1'}): not judged",
        )
    hit = epochs[epochs["last_step"].isin(rule.get("triggered_steps", []))]
    for i, row in enumerate(hit.itertuples()):
        axis.axvline(row.epoch, color=TRIGGERED, linestyle=":", linewidth=1.2, label="triggered" if i == 0 else None)
        for column in columns:
            axis.plot(
                row.epoch,
                getattr(row, column),
                "o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor=TRIGGERED,
                markeredgewidth=1.5,
            )
    axis.set(xlabel="epoch", ylabel="mean loss", xlim=(epochs["epoch"].min() - 0.5, epochs["epoch"].max() + 0.5))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    _log_scale_if_wide(axis, epochs[columns].to_numpy())
    html_kit.legend_right(axis)
    return figure


def _plot_activations(debug, **_):
    relu = debug["tensors"][debug["tensors"]["collection"] == "relu_input"]
    if relu.empty:
        return None
    first = relu[relu["step"] == relu["step"].min()]
    figure, axis = plt.subplots(figsize=(8, 3))
    axis.barh(first["tensor"], first["max"] - first["min"])
    axis.set(xlabel="ReLU input range (max − min) at the first saved step", xscale="log")
    axis.tick_params(axis="y", labelsize=7)
    return figure


def _plot_classes(debug, profile=None, rule=None, shown=15):
    """Training samples per class, by breed name (job.json's class_names; class indices without
    them). Many classes: the `shown` most and least frequent, and those the rule flagged."""
    labels = debug["labels"][debug["labels"]["mode"] == "TRAIN"]
    if labels.empty:
        return None
    names = list(((profile or {}).get("job") or {}).get("class_names") or [])
    counts = labels.groupby("label").size()
    if names:
        counts = counts.reindex(range(len(names)), fill_value=0).combine_first(counts).astype(int)
    flagged = {int(c) for c in (rule or {}).get("evidence", {}).get("mispredicted_classes", [])}
    name = lambda i: names[i] if 0 <= i < len(names) else f"class {i}"
    rows, title = [(name(int(i)), int(n), int(i) in flagged) for i, n in counts.items()], None  # by class index
    if len(counts) > 2 * shown + 5:  # by frequency; the classes left out as gaps
        order = counts.sort_values(ascending=False, kind="stable")
        rows, hidden = [], 0
        for rank, (i, n) in enumerate(order.items()):
            if shown <= rank < len(order) - shown and int(i) not in flagged:
                hidden += 1
                continue
            if hidden:
                rows.append((f"⋯ {hidden} more ⋯", 0, False))
                hidden = 0
            rows.append((name(int(i)), int(n), int(i) in flagged))
        title = f"the {shown} most and {shown} least frequent of {len(order)} classes" + (
            " and the flagged ones" if flagged else ""
        )
    figure, axis = plt.subplots(figsize=(8, max(2.5, 0.17 * len(rows) + 0.8)))
    positions = np.arange(len(rows))
    axis.barh(positions, [n for _, n, _ in rows], color=[TRIGGERED if hit else "tab:blue" for _, _, hit in rows])
    axis.set_yticks(positions, [label for label, _, _ in rows])
    axis.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top
    axis.tick_params(axis="y", labelsize=6 if len(rows) > 20 else 8)
    axis.set(xlabel="training samples seen")
    if title:
        axis.set_title(title, fontsize=9)
    if flagged:
        html_kit.legend_right(
            axis,
            handles=[
                Patch(color=TRIGGERED, label="mispredicted too often in the last epoch"),
                Patch(color="tab:blue", label="the other classes"),
            ],
        )
    return figure


def _plot_system(profile, columns, ylabel):
    system = profile["system"]
    columns = [c for c in columns if c in system]
    if system.empty or not columns:
        return None
    figure, axis = plt.subplots(figsize=(8, 3))
    for column in columns:
        axis.plot(_relative_time(system), system[column], label=column.replace("_", " "))
    axis.set(xlabel="seconds since the first sample", ylabel=ylabel)
    html_kit.legend_right(axis)
    return figure


def _plot_step_durations(profile, rule=None):
    steps = profile["steps"]
    if steps.empty:
        return None
    rule = rule or {}
    start = steps["start"].min()
    figure, axis = plt.subplots(figsize=(8, 3))
    for phase, part in steps.groupby("phase"):
        axis.plot(part["start"] - start, part["duration_s"], ".", markersize=3, label=phase)
    evidence, parameters = rule.get("evidence", {}), rule.get("parameters", {})
    limit = evidence.get("limit_s")
    if limit:
        axis.axhline(limit, color=TRIGGERED, linestyle="--", linewidth=1, label="outlier limit")
    triggered = steps.loc[steps.index.intersection(rule.get("triggered_steps", []))]
    if len(triggered):
        axis.plot(
            triggered["start"] - start,
            triggered["duration_s"],
            "o",
            color=TRIGGERED,
            markersize=6,
            label=f"outliers ({len(triggered)}): triggered",
        )
    elif limit:  # under n_outliers: not triggered, but where they are is still worth seeing
        mode = parameters.get("mode")
        judged = steps[((steps["phase"] == mode) if mode else True) & (steps["step"] > 0)]
        above = judged[judged["duration_s"] > limit]
        if len(above):
            axis.plot(
                above["start"] - start,
                above["duration_s"],
                "o",
                markersize=7,
                markerfacecolor="none",
                markeredgecolor=TRIGGERED,
                label=f"above the limit ({len(above)}; triggers above {parameters.get('n_outliers', '?')})",
            )
    axis.set(xlabel="seconds since the first step", ylabel="step duration (s)")
    html_kit.legend_right(axis)
    return figure


def _plot_data_wait(profile, **_):
    steps = profile["steps"]
    if steps.empty:
        return None
    figure, axis = plt.subplots(figsize=(8, 3))
    shares = steps.groupby("phase")[["data_wait_s", "compute_s"]].sum()
    shares.plot.barh(stacked=True, ax=axis, legend=False)
    axis.set(xlabel="seconds", ylabel="")
    html_kit.legend_right(axis)
    return figure


def _duration(seconds) -> str:
    return (
        f"{seconds:.3g} s"
        if seconds < 60
        else f"{seconds / 60:.3g} min"
        if seconds < 3600
        else f"{seconds / 3600:.3g} h"
    )


def _plot_init(profile, rule=None):
    minutes = (rule or {}).get("evidence", {}).get("initialization_minutes")
    if minutes is None:
        return None
    seconds, threshold = max(float(minutes) * 60, 0.0), rule.get("parameters", {}).get("threshold")
    low = min(0.1, seconds / 2) if seconds > 0 else 0.1
    high = max(seconds, (threshold or 0) * 60, low * 100) * 3  # past the threshold, whichever is larger
    figure, axis = plt.subplots(figsize=(7, 1.6))
    over = threshold is not None and seconds > threshold * 60
    axis.barh(["start-up"], [max(seconds, low) - low], left=low, color=TRIGGERED if over else "tab:blue", height=0.5)
    axis.text(max(seconds, low) * 1.15, 0, _duration(seconds), va="center", fontsize=9, fontweight="bold")
    if threshold is not None:
        axis.axvline(threshold * 60, color=TRIGGERED, linestyle="--")
        axis.text(
            threshold * 60 * 0.95,
            0.42,
            f"threshold {_duration(threshold * 60)}",
            ha="right",
            va="top",
            fontsize=8,
            color=TRIGGERED,
        )
    axis.set_xscale("log")
    ticks = [t for t in (0.1, 1, 10, 60, 600, 3600, 36000) if low <= t <= high]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xticklabels([_duration(t).replace(".0 ", " ") for t in ticks])
    axis.set(xlim=(low, high), ylim=(-0.5, 0.5), xlabel="process start → first step (log scale)")
    return figure


PLOTS = {
    "LossNotDecreasing": lambda d, p, r: _plot_loss(d, r),
    "VanishingGradient": lambda d, p, r: _plot_collection(d, "gradients", "abs_mean", "mean |gradient|"),
    "ExplodingTensor": lambda d, p, r: _plot_collection(d, "gradients", "abs_max", "max |gradient|"),
    "Overfit": lambda d, p, r: _plot_epochs(d, r),
    "Overtraining": lambda d, p, r: _plot_epochs(d, r),
    "PoorWeightInitialization": lambda d, p, r: _plot_activations(d),
    "ClassImbalance": lambda d, p, r: _plot_classes(d, p, r),
    "LowGPUUtilization": lambda d, p, r: _plot_system(p, ["gpu_utilization"], "GPU %"),
    "BatchSize": lambda d, p, r: _plot_system(p, ["cpu_total", "gpu_utilization", "gpu_memory_percent"], "%"),
    "CPUBottleneck": lambda d, p, r: _plot_system(p, ["cpu_total", "gpu_utilization"], "%"),
    "IOBottleneck": lambda d, p, r: _plot_system(p, ["iowait_percent", "gpu_utilization"], "%"),
    "Dataloader": lambda d, p, r: _plot_data_wait(p),
    "GPUMemoryIncrease": lambda d, p, r: _plot_system(p, ["gpu_memory_percent"], "GPU memory %"),
    "StepOutlier": lambda d, p, r: _plot_step_durations(p, r),
    "MaxInitializationTime": lambda d, p, r: _plot_init(p, r),
    "OverallSystemUsage": lambda d, p, r: _plot_system(p, ["cpu_total", "memory_percent", "gpu_utilization"], "%"),
}


def _rule_section(rule, debug, profile) -> str:
    parts = [
        f'<h3 id="{rule["rule"]}">{html.escape(rule["rule"])} {_verdict(rule["verdict"])}</h3>',
        f"<p>{html.escape(rule.get('description', ''))}</p>",
    ]
    if rule.get("versus_sagemaker"):  # absent from the rules.json of older runs
        parts.append(
            f'<p class="versus"><b>How this differs from SageMaker\'s rule:</b> {html.escape(rule["versus_sagemaker"])}</p>'
        )
    if rule.get("recommendation"):
        parts.append(f'<p class="recommendation"><b>Recommendation:</b> {html.escape(rule["recommendation"])}</p>')
    if rule["verdict"] != "not_applicable":
        try:
            figure = PLOTS[rule["rule"]](debug, profile, rule)
        except Exception as error:  # a plot that fails must not cost the report
            figure, parts = None, parts + [f"<p><em>plot failed: {html.escape(str(error))}</em></p>"]
        if figure is not None:
            parts.append(html_kit.figure(figure))
    if rule["triggered_steps"]:
        parts.append(
            f"<p>Triggered at steps: {', '.join(map(str, rule['triggered_steps'][:30]))}"
            f"{' …' if len(rule['triggered_steps']) > 30 else ''}</p>"
        )
    parts.append(
        f"<details><summary>parameters and evidence</summary><pre>"
        f"{html.escape(json.dumps({'parameters': rule['parameters'], 'evidence': rule['evidence']}, indent=2, default=str))}"
        f"</pre></details>"
    )
    return "\n".join(parts)


def build_report(model_json: dict, rules: dict, debug, profile, epoch_metrics: pd.DataFrame) -> str:
    """The page, in the sections of SageMaker's ProfilerReport."""
    job_name = html.escape(str(model_json.get("job_name")))
    summary_counts = ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in rules["summary"].items())
    body = "\n".join(
        [
            f"""<h1>Profiler report</h1>
<p>Training job <b>{job_name}</b>; rules: {html.escape(summary_counts)}.
Generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} from the job's own artifacts
(debug tensors, system metrics, step timings).</p>""",
            job_summary_section(model_json, profile, epoch_metrics),
            system_section(profile, rules),
            framework_section(profile["steps"]),
            "<h2>Rules summary</h2>\n" + rules_summary_table(rules),
            "<h2>Rules</h2>\n" + "".join(_rule_section(rule, debug, profile) for rule in rules["rules"]),
        ]
    )
    return html_kit.page(f"Profiler report — {model_json.get('job_name')}", body)


def job_summary_section(model_json, profile, epoch_metrics) -> str:
    job, steps = profile["job"], profile["steps"]
    first_step = float(steps["start"].min()) if len(steps) else None
    last_step = float(steps["end"].max()) if len(steps) else None
    rows = [
        ("job name", model_json.get("job_name")),
        ("backend", model_json.get("backend")),
        ("status", model_json.get("status")),
        ("device", job.get("device")),
        ("GPUs", job.get("gpu_count")),
        ("CPU cores", job.get("cpu_count")),
        ("architecture", job.get("arch")),
        ("batch size", job.get("batch_size")),
        ("data loader workers", job.get("num_workers")),
        ("epochs", job.get("epochs")),
        ("training images", job.get("train_images")),
        ("process start", _when(job.get("process_started"))),
        ("first step", _when(first_step)),
        ("last step", _when(last_step)),
        (
            "initialisation (s)",
            round(first_step - job["process_started"], 1) if first_step and job.get("process_started") else "",
        ),
        ("training loop (s)", round(last_step - first_step, 1) if first_step else ""),
        ("job duration (s)", model_json.get("seconds")),
    ]
    table = html_kit.rows_table([{"": k, "value": html.escape(str(v if v is not None else ""))} for k, v in rows])
    epochs = html_kit.rows_table(epoch_metrics.round(4).to_dict("records")) if not epoch_metrics.empty else ""
    return f"<h2>Training job summary</h2>\n{table}\n{epochs}"


def system_section(profile, rules) -> str:
    system = profile["system"]
    usage = next((r for r in rules["rules"] if r["rule"] == "OverallSystemUsage"), None)
    usage_rows = [{"metric": k, **v} for k, v in (usage or {}).get("evidence", {}).get("percentiles", {}).items()]
    interval = f", every {round(float(np.median(np.diff(system['timestamp']))), 2)} s" if len(system) > 1 else ""
    plot = _plot_system(
        profile, ["cpu_total", "memory_percent", "iowait_percent", "gpu_utilization", "gpu_memory_percent"], "%"
    )
    return f"""<h2>System usage statistics</h2>
<p>{len(system)} samples{interval}.</p>
{html_kit.rows_table(usage_rows)}
{html_kit.figure(plot) if plot is not None else ""}"""


def framework_section(steps) -> str:
    rows = []
    for phase, part in steps.groupby("phase"):
        total = part["duration_s"].sum()
        rows.append(
            {
                "phase": phase,
                "steps": len(part),
                "mean (s)": round(part["duration_s"].mean(), 4),
                "p50 (s)": round(part["duration_s"].median(), 4),
                "p95 (s)": round(part["duration_s"].quantile(0.95), 4),
                "max (s)": round(part["duration_s"].max(), 4),
                "data wait %": round(100 * part["data_wait_s"].sum() / total, 1) if total else "",
                "compute %": round(100 * part["compute_s"].sum() / total, 1) if total else "",
            }
        )
    histogram = ""
    if len(steps):
        figure, axis = plt.subplots(figsize=(8, 3))
        for phase, part in steps.groupby("phase"):
            axis.hist(part["duration_s"], bins=40, alpha=0.6, label=phase)
        axis.set(xlabel="step duration (s)", ylabel="steps")
        html_kit.legend_right(axis)
        histogram = html_kit.figure(figure)
    return f"""<h2>Framework metrics summary</h2>
<p>Each step split into the wait for its batch (data) and the forward/backward pass (compute).</p>
{html_kit.rows_table(rows)}
{histogram}"""


def rules_summary_table(rules) -> str:
    """The rules, the triggered first, each linked to its section."""
    order = {"triggered": 0, "error": 1, "ok": 2, "no_data": 3, "not_applicable": 4}
    return html_kit.rows_table(
        [
            {
                "rule": f'<a href="#{r["rule"]}">{r["rule"]}</a>',
                "kind": r["kind"],
                "verdict": _verdict(r["verdict"]) + html_kit.why_not_applicable(r),
                "triggered steps": len(r["triggered_steps"]),
                "recommendation": html.escape(r["recommendation"]),
            }
            for r in sorted(rules["rules"], key=lambda r: order.get(r["verdict"], 9))
        ]
    )
