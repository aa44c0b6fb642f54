# dog-breed workflow: fetch → prepare → upload → tune → train → deploy → evaluate.
# Targets: deploy (endpoint up and evaluated, training rules, profiler report), report (the run
# report, from outputs only), all (default: deploy + report), teardown (stop the endpoint; never
# part of another target).
import os
import shlex
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The orchestration package (workflow/dogbreed) for this file, rule scripts and the endpoint server, and the
# job contract it shares with the job code (scripts/job_contract.py).
WORKFLOW_CODE = os.path.join(workflow.basedir, "workflow")
JOB_CODE = os.path.join(workflow.basedir, "scripts")
sys.path[:0] = [WORKFLOW_CODE, JOB_CODE]
# Rule scripts and the endpoint server are processes of their own: they find the package through this.
# (--lint asks for an envvars: assertion; this one is set here, for the children, not asked of the user.)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [WORKFLOW_CODE, JOB_CODE, os.environ.get("PYTHONPATH")] if p)

from dogbreed.runtime import run_guard, run_options, run_plan
from dogbreed.runtime.config import check_config, coerce_command_line

# the run's --configfile/--config options, for the commands it prints (kept if a parent run set them)
os.environ.setdefault(run_options.ENV, shlex.join(run_options.from_argv(sys.argv)))

# a run killed outright leaves Snakemake's locks: gone here when that run is provably dead (run_guard.py)
if stale := run_guard.remove_stale_locks():
    print(stale, file=sys.stderr)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"  # the landing page of `snakemake --report report.html`


coerce_command_line(config)
check_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))  # names the key
validate(config, "workflow/schemas/config.schema.yaml")  # and fills in the defaults
# Every refusal of the run plan, before any rule runs or anything is sent anywhere; but teardown stops what an
# earlier run started, whatever this config asks for now, and is never refused.
if "teardown" not in sys.argv[1:]:
    run_plan.check(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/training_checks.smk"
include: "workflow/rules/serving.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/reporting.smk"


# On a cluster executor (Slurm, Kubernetes: README), only the rules that run training jobs (extract_features, tune
# with its trials, train) go to the cluster, with the resources they declare; the endpoint must outlive its rule
# on this machine, and the rest takes seconds here.
localrules:
    all,
    fetch,
    prepare,
    upload,
    check_training,
    profiler_report,
    training_gate,
    package_model,
    start_endpoint,
    evaluate,
    accuracy_gate,
    deploy,
    teardown,
    report_figures,
    report,


rule all:
    default_target: True
    input:
        rules.deploy.input,
        rules.report.output,


onstart:
    run_guard.record_run()
    # a signal to Snakemake alone stops the running jobs now, as Ctrl-C does (run_guard.py)
    run_guard.stop_jobs_on_signals()


onsuccess:
    run_guard.forget_run()
    # The run in three lines, when the run produced an evaluation.
    from dogbreed.reporting.summary import run_summary

    print(run_summary(RESULTS, ENDPOINT_STATE))


onerror:
    run_guard.forget_run()
