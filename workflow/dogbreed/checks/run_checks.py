"""Run the Debugger and ProfilerReport rules over one training job's recorded artifacts."""

import inspect

from dogbreed.checks import debugger_checks, profiler_checks
from dogbreed.checks.artifacts import load_debug, load_profile

ALL_RULES = {
    **{name: ("debugger", f) for name, f in debugger_checks.RULES.items()},
    **{name: ("profiler", f) for name, f in profiler_checks.RULES.items()},
}
RECOMMENDATIONS = {**debugger_checks.RECOMMENDATIONS, **profiler_checks.RECOMMENDATIONS}


class RuleConfigError(ValueError):
    pass


def rule_parameters(function, overrides: dict) -> dict:
    defaults = {name: p.default for name, p in list(inspect.signature(function).parameters.items())[1:]}
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise RuleConfigError(
            f"{function.__name__}: unknown parameter(s) {sorted(unknown)}; it takes {sorted(defaults)}"
        )
    return {**defaults, **overrides}


def describe(function) -> tuple:
    """(what the rule checks, how it differs from SageMaker's rule): its docstring's first paragraph
    and the paragraph that begins "Versus SageMaker:", each on one line."""
    paragraphs = [" ".join(p.split()) for p in inspect.getdoc(function).split("\n\n")]
    versus = next(
        (p.removeprefix("Versus SageMaker:").strip() for p in paragraphs if p.startswith("Versus SageMaker:")), ""
    )
    versus = versus[:1].upper() + versus[1:]
    return paragraphs[0], versus


def evaluate(output_dir, settings: dict | None = None, debug: dict | None = None) -> dict:
    """settings: {rule name: {parameter: value}} overrides, or {rule name: false} to skip a rule.
    debug: the job's debug tables when the caller has loaded them already."""
    settings = settings or {}
    unknown = set(settings) - set(ALL_RULES)
    if unknown:
        raise RuleConfigError(f"unknown rule(s) in profiling.rules: {sorted(unknown)}; known: {sorted(ALL_RULES)}")
    profile = load_profile(f"{output_dir}/profiler")
    debug = debug if debug is not None else load_debug(f"{output_dir}/debug")
    # the breeds' names, which the job records with its profile, for rules that name classes
    data = {"debugger": {**debug, "class_names": profile["job"].get("class_names") or []}, "profiler": profile}
    results = []
    for name, (kind, function) in ALL_RULES.items():
        overrides = settings.get(name, {})
        if overrides is False:
            continue
        parameters = rule_parameters(function, overrides or {})
        try:
            outcome = function(data[kind], **parameters)
        except Exception as error:  # one broken rule must not hide the verdicts of the others
            outcome = {
                "verdict": "error",
                "triggered_steps": [],
                "evidence": {"error": f"{type(error).__name__}: {error}"},
            }
        description, versus_sagemaker = describe(function)
        results.append(
            {
                "rule": name,
                "kind": kind,
                **outcome,
                "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()},
                "description": description,
                "versus_sagemaker": versus_sagemaker,
                "recommendation": RECOMMENDATIONS[name] if outcome["verdict"] == "triggered" else "",
            }
        )
    verdicts = [r["verdict"] for r in results]
    return {"rules": results, "summary": {v: verdicts.count(v) for v in sorted(set(verdicts))}}
