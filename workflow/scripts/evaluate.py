import json
from pathlib import Path

from dogbreed.backends.registry import rule_backend
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.serving import endpoint_registry, evaluation


def main(smk):
    backend = rule_backend(smk)
    endpoint = json.loads(Path(smk.input.endpoint).read_text())
    classes = json.loads(Path(smk.input.classes).read_text())
    if not backend.healthy(endpoint):  # stopped, or died during an earlier evaluation: back at its address first
        print(f"endpoint {endpoint['endpoint_name']} at {endpoint['url']} does not answer: bringing it back")
        endpoint = endpoint_registry.bring_back(
            backend, endpoint, smk.input.model, smk.params.state_dir, smk.params.results_dir, smk.params.backend
        )
    # requests packed by the smaller of the configured limit and the endpoint's own (a serverless endpoint's 4 MB)
    max_request_bytes = evaluation.request_byte_limit(backend, endpoint, smk.params.max_request_bytes)
    # the answers so far, kept beside the outputs: a rerun after a failure sends only the rest
    identity = evaluation.answers_identity(
        smk.input.model, smk.input.manifest, smk.params.batch_size, max_request_bytes
    )
    answers = evaluation.Answers(Path(smk.output.metrics).parent / "answers-so-far.jsonl", identity)
    metrics, predictions = evaluation.evaluate(
        backend,
        endpoint,
        smk.input.manifest,
        smk.input.channels,
        classes,
        smk.params.batch_size,
        max_request_bytes,
        evaluation.served_transform(smk.input.model),
        answers,
        smk.params.retry_for_s,
    )
    predictions.to_csv(smk.output.predictions, index=False)
    Path(smk.output.metrics).write_text(json.dumps(metrics, indent=2, ensure_ascii=False))
    answers.done()  # only now: a failure above reruns evaluate, which then sends nothing again
    return (
        f"test accuracy {metrics['accuracy']:.4f} (top-5 {metrics['top5_accuracy']:.4f}, n={metrics['n']}, "
        f"chance {metrics['chance_accuracy']:.4f}); latency p50 {metrics['latency_ms']['p50']} ms per request"
    )


run_rule(main, snakemake)
