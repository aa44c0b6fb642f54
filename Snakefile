# dog-breed workflow: fetch → prepare → upload → tune → train → deploy → evaluate.
# Targets: deploy (endpoint up and evaluated, training rules, profiler report), report (the run
# report, from outputs only), all (default: deploy + report), teardown (stop the endpoint), endpoints (list
# every endpoint this checkout started); the last two never part of another target.
import os
import shlex
import sys
import time

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

from dogbreed.backends import job_launcher
from dogbreed.runtime import rule_runner, run_guard, run_options, run_plan, finished_run
from dogbreed.runtime.config import ConfigError, check_config, coerce_command_line

# A refusal of the command line, the config or the run plan is its own words (one line per problem) and exit
# status 1, not an exception with Snakemake's pointers into this file.
REFUSALS = (run_options.TwoConfigfileFlags, ConfigError, run_plan.PlanRefused)
STARTED = time.time()  # finished-run.json is this run's only when it made the evaluation (finished_run.py)
# teardown stops, endpoints lists, what earlier runs started: never refused, replaces nothing
ENDPOINTS_ONLY = bool({"teardown", "endpoints"} & set(sys.argv[1:]))
# Under the workflow's quiet logger (profiles/default), the rule scripts keep their output to their logs and say
# one line per job; under profiles/verbose, everything they print is shown too.
QUIET = "dogbreed" in (workflow.output_settings.log_handler_settings or {})
os.environ[rule_runner.TERMINAL] = "quiet" if QUIET else "full"
# the run's --configfile/--config options, for the commands it prints (kept if a parent run set them)
os.environ.setdefault(run_options.ENV, shlex.join(run_options.from_argv(sys.argv)))

# a run killed outright leaves Snakemake's locks: gone here when that run is provably dead (run_guard.py)
if stale := run_guard.remove_stale_locks():
    print(stale, file=sys.stderr)


configfile: "config.yaml"


report: "workflow/report/workflow.rst"  # the landing page of `snakemake --report report.html`


try:
    run_options.check_one_configfile_flag(sys.argv)
    coerce_command_line(config)
    check_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))  # names the key
    validate(config, "workflow/schemas/config.schema.yaml")  # and fills in the defaults
    # Every refusal of the run plan, before any rule runs or anything is sent anywhere; but teardown stops what
    # an earlier run started, whatever this config asks for now, and is never refused.
    if not ENDPOINTS_ONLY:
        run_plan.check(config)
except REFUSALS as refusal:
    sys.exit(str(refusal))
# a dry run has no onstart: its plan's first line says it too, without the count (the plan lists the jobs)
if (
    workflow.output_settings.dryrun
    and not ENDPOINTS_ONLY
    and (replacing := finished_run.replacing(config["results_dir"], config))
):
    print(replacing, file=sys.stderr)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/training_checks.smk"
include: "workflow/rules/serving.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/reporting.smk"


# On a cluster executor (Slurm, Kubernetes: README), only the rules that run training jobs (extract_features, tune
# with its trials, train) go to the cluster, with the resources they declare; the endpoint must outlive its rule
# on this machine, and the rest takes seconds here.
localrules:
    all,
    fetch,
    prepare,
    sample_image,
    upload,
    check_training,
    profiler_report,
    training_gate,
    package_model,
    start_endpoint,
    evaluate,
    accuracy_gate,
    track_results,
    deploy,
    teardown,
    endpoints,
    report_figures,
    report,


rule all:
    default_target: True
    input:
        rules.deploy.input,
        rules.report.output,


onstart:
    run_guard.record_run()
    # first, if this run redoes a finished run of another data source or backend in its folder
    redo = [job for job in workflow.dag.needrun_jobs() if job.rule.name != "all"]
    if not ENDPOINTS_ONLY and (replacing := finished_run.replacing(RESULTS, config, len(redo))):
        print(replacing, file=sys.stderr)
    # a signal to Snakemake alone stops the running jobs now, as Ctrl-C does (run_guard.py)
    run_guard.stop_jobs_on_signals()


onsuccess:
    run_guard.forget_run()
    job_launcher.end_run_launcher()  # the local jobs' launcher, if a rule started one (job_launcher.py)
    if not ENDPOINTS_ONLY and finished_run.evaluated_since(RESULTS, STARTED):
        finished_run.remember(RESULTS, config)
    # The run in three lines, when the run produced an evaluation (not under a listing of the endpoints, which is
    # the whole answer).
    from dogbreed.reporting.summary import run_summary

    if "endpoints" not in sys.argv[1:]:
        print(run_summary(RESULTS, ENDPOINT_STATE, time.time() - STARTED))


onerror:
    run_guard.forget_run()
    job_launcher.end_run_launcher()
