"""Evaluate stage: send every test image to the endpoint (batched JSON requests of base64 images, so
the server preprocesses them exactly as it does for any client) and score the answers."""
import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dogbreed.backends import EndpointGone


def restart_hint(results_dir) -> str:
    return (f"bring it back with: snakemake --cores 1 deploy --forcerun start_endpoint "
            f"(with the same --configfile/--config options as before; results_dir={results_dir})")


def predict_all(backend, endpoint, image_paths, batch_size):
    """Returns (list of top-k prediction lists, list of per-request latencies in ms)."""
    predictions, latencies = [], []
    for start in tqdm(range(0, len(image_paths), batch_size), desc="evaluate", unit="request"):
        batch = image_paths[start:start + batch_size]
        body = json.dumps({"instances": [{"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in batch]})
        sent = time.perf_counter()
        answer = json.loads(backend.invoke(endpoint, body.encode(), "application/json"))
        latencies.append((time.perf_counter() - sent) * 1000)
        if len(answer["predictions"]) != len(batch):
            raise RuntimeError(f"the endpoint answered {len(answer['predictions'])} predictions for {len(batch)} images")
        predictions += answer["predictions"]
    return predictions, latencies


def evaluate(backend, endpoint, manifest_csv, channels_dir, classes: dict, batch_size=16, results_dir="results"):
    if not backend.healthy(endpoint):
        raise EndpointGone(f"the endpoint {endpoint.get('endpoint_name')} at {endpoint.get('url')} does not answer "
                           f"/ping: it was stopped (teardown, reboot) or crashed; {restart_hint(results_dir)}")
    manifest = pd.read_csv(manifest_csv)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    paths = [str(Path(channels_dir) / p) for p in test["path"]]
    predictions, latencies = predict_all(backend, endpoint, paths, batch_size)

    top1 = np.array([p[0]["index"] for p in predictions])
    truth = test["class_index"].to_numpy()
    in_top5 = np.array([t in [q["index"] for q in p[:5]] for t, p in zip(truth, predictions)])
    rows = pd.DataFrame({
        "path": test["path"], "true_index": truth, "true_breed": test["breed"],
        "predicted_index": top1, "predicted_breed": [p[0]["breed"] for p in predictions],
        "probability": [p[0]["probability"] for p in predictions], "correct": top1 == truth,
        "top5_indices": [" ".join(str(q["index"]) for q in p[:5]) for p in predictions],
    })

    n_classes = max(int(i) for i in classes) + 1  # numbered folders may leave gaps
    names = [classes.get(str(i), f"class_{i + 1:03d}") for i in range(n_classes)]
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (truth, top1), 1)
    per_class = {}
    for index in range(n_classes):
        mask = truth == index
        if mask.any():
            per_class[names[index]] = {"index": index, "n": int(mask.sum()),
                                              "accuracy": round(float((top1[mask] == index).mean()), 4)}
    latency = np.array(latencies)
    return {
        "accuracy": round(float((top1 == truth).mean()), 4),
        "top5_accuracy": round(float(in_top5.mean()), 4),
        "n": int(len(truth)),
        "chance_accuracy": round(1 / len(classes), 4),
        "per_class_accuracy": per_class,
        "confusion_matrix": {"classes": names, "matrix": confusion.tolist()},
        "latency_ms": {"p50": round(float(np.percentile(latency, 50)), 2),
                       "p95": round(float(np.percentile(latency, 95)), 2),
                       "p99": round(float(np.percentile(latency, 99)), 2),
                       "mean": round(float(latency.mean()), 2)},
        "requests": len(latencies), "images_per_request": batch_size,
        "endpoint": {k: endpoint.get(k) for k in ("backend", "endpoint_name", "url")},
    }, rows
