"""SageMaker Debugger's built-in rules, evaluated on the tensors the training job saved (its debug record).

Each rule is a plain function over the tables of artifacts.load_debug(), with SageMaker's
default thresholds as keyword defaults, returning {"verdict", "triggered_steps", "evidence"}.
Verdicts: "triggered", "ok", or "no_data" (the job saved nothing the rule can read).
Where our reading differs from SageMaker's, the docstring says so and why.
"""

import math

import numpy as np
import pandas as pd


def _result(triggered_steps, evidence, no_data=False):
    verdict = "no_data" if no_data else ("triggered" if triggered_steps else "ok")
    return {"verdict": verdict, "triggered_steps": [int(s) for s in triggered_steps][:100], "evidence": evidence}


def epoch_losses(losses: pd.DataFrame) -> pd.DataFrame:
    """Mean TRAIN and EVAL loss per epoch: an epoch is a TRAIN stretch of steps and the EVAL stretch after it."""
    rows, epoch, previous = [], 0, None
    for row in losses.sort_values("step").itertuples():
        if row.mode == "TRAIN" and previous != "TRAIN":
            epoch += 1
        previous = row.mode
        rows.append({"epoch": max(epoch, 1), "mode": row.mode, "loss": row.loss, "step": row.step})
    if not rows:
        return pd.DataFrame(columns=["epoch", "train_loss", "valid_loss", "last_step"])
    frame = pd.DataFrame(rows)
    table = frame.pivot_table(index="epoch", columns="mode", values="loss", aggfunc="mean")
    table = table.rename(columns={"TRAIN": "train_loss", "EVAL": "valid_loss"})
    table["last_step"] = frame.groupby("epoch")["step"].max()
    return table.reset_index()


def loss_not_decreasing(
    debug, num_steps=10, diff_percent=0.0, increase_threshold_percent=5.0, patience=3, mode="TRAIN"
):
    """Triggers when the loss climbs more than increase_threshold_percent above where it started for
    `patience` windows of num_steps steps in a row, at once when a window's loss is not finite, and
    at the end when the last window is not below the first by diff_percent (not learning).

    Versus SageMaker: SageMaker compares single saved steps one after the other; minibatch losses
    are noise at that scale (a from-scratch network's loss rises for a window or two while batch
    normalisation settles), so losses are averaged over windows, compared with the first window,
    and only a sustained climb (patience windows) counts.
    """
    losses = debug["losses"][debug["losses"]["mode"] == mode].sort_values("step")
    if len(losses) < 2 * num_steps:
        return _result(
            [],
            {"saved_losses": len(losses), "note": f"fewer than 2 × num_steps {mode} losses"},
            no_data=len(losses) == 0,
        )
    windows = [losses.iloc[i : i + num_steps] for i in range(0, len(losses) - num_steps + 1, num_steps)]
    means = [float(w["loss"].mean()) for w in windows]
    last_steps = [int(w["step"].iloc[-1]) for w in windows]
    limit = means[0] * (1 + increase_threshold_percent / 100)
    triggered, climbing = [], 0
    for step, mean in zip(last_steps, means):
        if not math.isfinite(mean):
            triggered.append(step)
            continue
        climbing = climbing + 1 if mean > limit else 0
        if climbing >= patience:
            triggered.append(step)
    if not (means[-1] < means[0] * (1 - diff_percent / 100)):
        triggered.append(last_steps[-1])
    return _result(
        sorted(set(triggered)),
        {
            "window_mean_losses": [round(m, 5) for m in means],
            "window_last_steps": last_steps,
            "limit": round(limit, 5),
            "first_window": round(means[0], 5),
            "last_window": round(means[-1], 5),
        },
    )


def vanishing_gradient(debug, threshold=1e-7):
    """Triggers at steps where some gradient's mean absolute value is below threshold.

    Versus SageMaker: the same test, on the reductions the job saved (not whole tensors)."""
    gradients = debug["tensors"][debug["tensors"]["collection"] == "gradients"]
    if gradients.empty:
        return _result([], {}, no_data=True)
    vanished = gradients[gradients["abs_mean"] < threshold]
    per_step = gradients.groupby("step")["abs_mean"].agg(["min", "median"])
    return _result(
        sorted(vanished["step"].unique()),
        {
            "smallest_gradient_abs_mean": float(gradients["abs_mean"].min()),
            "tensors_below_threshold": sorted(vanished["tensor"].unique())[:20],
            "median_gradient_abs_mean_by_step": {int(s): float(v) for s, v in per_step["median"].items()},
        },
    )


def exploding_tensor(
    debug, collection_names=("losses", "gradients", "weights", "biases", "relu_input"), only_nan=False
):
    """Triggers at steps where a saved tensor (its reductions, or the loss) is NaN, or infinite unless only_nan.

    Versus SageMaker: the same test, on the reductions the job saved (a NaN anywhere in a tensor
    makes its reductions NaN)."""
    bad = np.isnan if only_nan else (lambda values: ~np.isfinite(values))
    steps, names = set(), set()
    losses = debug["losses"]
    if "losses" in collection_names and not losses.empty:
        hit = losses[bad(losses["loss"].to_numpy(dtype=float))]
        steps |= set(hit["step"])
        names |= {"loss"} if not hit.empty else set()
    tensors = debug["tensors"][debug["tensors"]["collection"].isin(collection_names)]
    if not tensors.empty:
        values = tensors[["max", "min", "l2"]].to_numpy(dtype=float)
        hit = tensors[bad(values).any(axis=1)]
        steps |= set(hit["step"])
        names |= set(hit["tensor"])
    if losses.empty and tensors.empty:
        return _result([], {}, no_data=True)
    largest = float(np.nanmax(np.abs(tensors["abs_max"].to_numpy(dtype=float)))) if not tensors.empty else None
    return _result(sorted(steps), {"tensors": sorted(names)[:20], "largest_abs_value": largest})


def overfit(debug, start_step=0, warmup_epochs=1, patience=2, ratio_threshold=0.1):
    """Triggers when, after warmup_epochs, the validation loss exceeds the training loss by more than
    ratio_threshold (relative) and that gap has widened since the epoch before while the training
    loss fell, for `patience` epochs in a row. Compared per epoch, on mean losses, from start_step on.

    Versus SageMaker: SageMaker triggers on the gap alone, step by step. In a network's first epochs
    (batch normalisation's running statistics still settling) the validation loss can be hundreds of
    times the training loss and falling fast, or jump with the training loss at a too-high learning
    rate: neither is overfitting, which is the model learning its training set and not the rest. So
    the first warmup_epochs are skipped, and the gap must grow while the training loss falls, two
    epochs in a row by default (one epoch's bump is noise on a small validation set).
    """
    epochs = epoch_losses(debug["losses"][debug["losses"]["step"] >= start_step])
    if epochs.empty or "valid_loss" not in epochs or "train_loss" not in epochs:
        return _result([], {}, no_data=True)
    ratio = (epochs["valid_loss"] - epochs["train_loss"]) / epochs["train_loss"].abs()
    run, triggered, previous = 0, [], None
    for (_, row), value in zip(epochs.iterrows(), ratio):
        memorising = previous is not None and value > previous[0] and row["train_loss"] < previous[1]
        previous = (value, row["train_loss"])
        if row["epoch"] <= warmup_epochs:
            continue
        run = run + 1 if value > ratio_threshold and memorising else 0
        if run >= patience:
            triggered.append(row["last_step"])
    return _result(
        triggered, {"epochs": epochs.round(5).to_dict("records"), "ratio": [round(float(r), 4) for r in ratio]}
    )


def overtraining(debug, warmup_epochs=1, patience_train=5, patience_validation=10, delta=0.01):
    """Triggers when, after warmup_epochs, the training loss has not improved by delta for
    patience_train epochs, or the validation loss for patience_validation epochs.

    Versus SageMaker: SageMaker counts saved steps; per-step minibatch losses are noise, so this
    counts epochs, and the warm-up epochs (whose losses only say where training started) are left out.
    """
    epochs = epoch_losses(debug["losses"])
    epochs = epochs[epochs["epoch"] > warmup_epochs] if not epochs.empty else epochs
    if epochs.empty:
        return _result([], {}, no_data=True)
    triggered = []
    for column, patience in (("train_loss", patience_train), ("valid_loss", patience_validation)):
        if column not in epochs:
            continue
        best, since = math.inf, 0
        for _, row in epochs.iterrows():
            if row[column] < best - delta:
                best, since = row[column], 0
            else:
                since += 1
                if since >= patience:
                    triggered.append(row["last_step"])
    return _result(sorted(set(triggered)), {"epochs_judged": len(epochs)})


def poor_weight_initialization(
    debug, activation_inputs_regex=".*relu_input", threshold=10.0, distribution_range=0.001, patience=5, steps=10
):
    """Triggers when, in the first `steps` saved steps, ReLU inputs of some layer span less than
    distribution_range (max − min) in `patience` saved steps or more: activations that are all
    alike learn nothing (near-zero or degenerate initialisation).

    Versus SageMaker: SageMaker also compares the weight variance across layers against `threshold`; torchvision's own
    Kaiming initialisation of a ResNet spreads layer variances about 30×, so that test would flag
    every healthy run: the ratio is reported as evidence, not used as a trigger.
    """
    tensors = debug["tensors"]
    relu = tensors[(tensors["collection"] == "relu_input") & tensors["tensor"].str.match(activation_inputs_regex)]
    if relu.empty:
        return _result([], {}, no_data=True)
    early_steps = sorted(relu["step"].unique())[:steps]
    early = relu[relu["step"].isin(early_steps)].copy()
    early["range"] = early["max"] - early["min"]
    narrow = early[early["range"] < distribution_range]
    counts = narrow.groupby("tensor")["step"].nunique()
    dead_layers = sorted(counts[counts >= min(patience, len(early_steps))].index)
    weights = tensors[
        (tensors["collection"] == "weights")
        & (tensors["step"] == tensors["step"].min())
        & ~tensors["tensor"].str.contains("bn|downsample.1", regex=True)
    ]
    variances = weights["variance"][weights["variance"] > 0]
    ratio = float(variances.max() / variances.min()) if len(variances) > 1 else None
    steps_hit = sorted(narrow[narrow["tensor"].isin(dead_layers)]["step"].unique())
    return _result(
        steps_hit,
        {
            "layers_with_flat_activations": dead_layers[:20],
            "smallest_activation_range": float(early["range"].min()),
            "weight_variance_ratio_across_layers": ratio,
            "variance_ratio_threshold": threshold,
        },
    )


def class_imbalance(
    debug, threshold_imbalance=10, threshold_misprediction=0.7, rare_share=0.5, samples=500000, mode="TRAIN"
):
    """Triggers when the most frequent class has more than threshold_imbalance times the samples of the
    least frequent one, or when an underrepresented class (fewer than rare_share of the most frequent
    class's samples) is mispredicted more often than threshold_misprediction in the last epoch.

    Versus SageMaker: SageMaker counts mispredictions of every class over every saved step. The first
    epochs are mostly wrong for every class in any run, and on balanced data the hardest class of a run
    still learning is mispredicted for its looks, not its numbers (the advice, to resample, would not
    help): so only the last epoch is judged, and only the classes the data is short of; the classes
    mispredicted anyway are listed in the evidence.
    """
    labels = debug["labels"][debug["labels"]["mode"] == mode].head(samples)
    if labels.empty:
        return _result([], {}, no_data=True)
    counts = labels.groupby("label").size()
    # epochs are told apart by the EVAL steps between them
    eval_steps = debug["labels"].loc[debug["labels"]["mode"] == "EVAL", "step"]
    first_epoch = labels[labels["step"] < (eval_steps.min() if not eval_steps.empty else math.inf)]
    before_last = eval_steps[eval_steps < labels["step"].max()]
    last_epoch = labels[labels["step"] > (before_last.max() if not before_last.empty else -1)]
    per_epoch_counts = first_epoch.groupby("label").size()  # one pass over the training data
    imbalance = float(per_epoch_counts.max() / per_epoch_counts.min())
    misprediction = (last_epoch["label"] != last_epoch["prediction"]).groupby(last_epoch["label"]).mean()
    rare = {int(c) for c, n in per_epoch_counts.items() if n < rare_share * per_epoch_counts.max()}
    hard = sorted(int(c) for c in misprediction[misprediction > threshold_misprediction].index)
    mispredicted = [c for c in hard if c in rare]
    triggered = []
    if imbalance > threshold_imbalance or mispredicted:
        triggered = [int(labels["step"].max())]
    names = debug.get("class_names") or []  # the job's own (job.json), index i → "NNN.Breed_Name"
    name = lambda c: names[c] if c < len(names) else f"class {c}"
    return _result(
        triggered,
        {
            "mispredicted_breeds": [name(c) for c in mispredicted],
            "mispredicted_but_not_rare": [name(c) for c in hard if c not in rare],
            "least_frequent_breed": name(int(per_epoch_counts.idxmin())),
            "samples_per_class": {int(k): int(v) for k, v in per_epoch_counts.items()},
            "imbalance_ratio": round(imbalance, 2),
            "misprediction_rate_last_epoch": {int(k): round(float(v), 3) for k, v in misprediction.items()},
            "mispredicted_classes": mispredicted,
            "samples_seen": int(counts.sum()),
        },
    )


RULES = {
    "LossNotDecreasing": loss_not_decreasing,
    "VanishingGradient": vanishing_gradient,
    "ExplodingTensor": exploding_tensor,
    "Overfit": overfit,
    "Overtraining": overtraining,
    "PoorWeightInitialization": poor_weight_initialization,
    "ClassImbalance": class_imbalance,
}

RECOMMENDATIONS = {
    "LossNotDecreasing": "Check the learning rate (too high or too low), the labels and the loss function.",
    "VanishingGradient": "Use the default (Kaiming) or pretrained initialisation, keep batch normalisation, or raise the learning rate.",
    "ExplodingTensor": "Lower the learning rate, clip gradients, and check the input for NaN or infinite values.",
    "Overfit": "Regularise (weight decay, augmentation), add data, or stop earlier.",
    "Overtraining": "Stop earlier: fewer epochs, or early stopping on the validation loss.",
    "PoorWeightInitialization": "Use the framework's default initialisation or pretrained weights.",
    "ClassImbalance": "Resample or weight the loss by class, or collect more images of the rare classes.",
}
