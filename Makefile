# The whole set-up on a fresh machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-long lock teardown clean container-images container-stop container-clean test-container mlflow-ui optuna-dashboard
# no AWS client here ever asks the instance-metadata address for credentials
export AWS_EC2_METADATA_DISABLED := true

# The environment installs from requirements.lock: every package of requirements.txt and below, pinned, with
# the hashes of its files, which uv checks on install (`make lock` writes it again after requirements.txt
# changes; tests/test_lock.py checks the two agree). uv reads no pip configuration: it is handed the index, the
# extra indexes and the wheel folders pip is set up with here (none set: PyPI alone), and trusts the system's
# certificates, as pip here does. A version may come from any of the indexes (unsafe-best-match), which the
# hashes make safe: no file other than the locked one installs.
UV_VERSION := 0.13.8
pip_setting = $(or $($(1)),$(shell $(PYTHON) -m pip config get global.$(2) 2>/dev/null))
PIP_INDEX := $(call pip_setting,PIP_INDEX_URL,index-url)
PIP_INDEXES := $(call pip_setting,PIP_EXTRA_INDEX_URL,extra-index-url)
PIP_LINKS := $(call pip_setting,PIP_FIND_LINKS,find-links)
UV_SOURCES := $(if $(PIP_INDEX),--index-url $(PIP_INDEX)) $(foreach url,$(PIP_INDEXES),--extra-index-url $(url)) \
	$(foreach dir,$(PIP_LINKS),--find-links $(dir)) --index-strategy unsafe-best-match --system-certs
# what the lock is resolved for: this project's machines and images (Linux x86_64, CPython 3.11); afresh
# (--upgrade: the newest versions requirements.txt allows, whatever the lock being replaced held)
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --upgrade

# --compile-bytecode: uv leaves that to the first import, which never writes it where PYTHONDONTWRITEBYTECODE is
# set, and then every job pays seconds of compiling torch again (pip compiles at install). The .pth file puts the
# workflow's logger plugin (profiles/default) on the venv's path, where Snakemake's plugin registry looks.
$(BIN)/.installed: requirements.lock requirements-uv.lock
	@echo "installing $(VENV)/ from requirements.lock (uv, every hash checked)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --require-hashes -r requirements-uv.lock
	@$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes --compile-bytecode $(UV_SOURCES) -r requirements.lock
	@echo "$(CURDIR)/workflow/plugins" >"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/dogbreed-plugins.pth"
	@touch $@

# requirements.txt (and the images' containers/requirements-*.txt) → the lock files, hashes and all
lock: $(BIN)/.installed
	echo "uv==$(UV_VERSION)" | $(BIN)/uv pip compile - --generate-hashes --no-header $(UV_SOURCES) -o requirements-uv.lock
	$(BIN)/uv pip compile requirements.txt $(LOCK_TARGET) $(UV_SOURCES) -o requirements.lock
	sed -E 's/\[[^]]*\]//' requirements.txt >containers/constraints.txt
	for layer in base training inference; do \
	  $(BIN)/uv pip compile containers/requirements-$$layer.txt -c containers/constraints.txt $(LOCK_TARGET) \
	    $(UV_SOURCES) -o containers/requirements-$$layer.lock || exit 1; \
	done

# VERBOSE=1: Snakemake's full output and the rules' own progress on screen (profiles/verbose)
demo: $(BIN)/.installed
	$(BIN)/snakemake deploy report --configfile config/demo.yaml $(if $(filter 1 yes true,$(VERBOSE)),--workflow-profile profiles/verbose)

# two workers (pytest-xdist), each test file on one of them, in order (its tests share the runs its
# fixtures build); one compute thread per job (tests/conftest.py), so two jobs never fight for the cores
test: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadfile

# the longest real runs, kept out of `make test`'s 8 minutes (CI runs both): planted training faults,
# a killed Snakemake, a full disk
test-long: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadfile -m long

# The documentation site (mkdocs.yml, docs/): built into site/ with --strict, so a broken link or anchor fails
# (tests/test_docs.py builds it too in make test); docs-serve rebuilds it as pages change, on 127.0.0.1:8000
.PHONY: docs docs-serve
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

# The UIs, in an environment of their own (requirements-ui.txt: full mlflow resolves beside the workflow's pins, but
# would add ~420 MB and a third to every install of .venv/ for a UI that only some open), on 127.0.0.1. MLflow: every
# results folder's runs (tracking.uri's default store); Optuna: one study DB.
UI_VENV := .venv-ui
STUDY ?= results/tuning/study.sqlite
TRACKING_URI ?= sqlite:///mlflow.db
EXPERIMENT ?= dog-breed
$(UI_VENV)/.installed: requirements-ui.txt
	$(PYTHON) -m venv $(UI_VENV)
	$(UI_VENV)/bin/pip install --quiet --upgrade pip
	$(UI_VENV)/bin/pip install -r requirements-ui.txt
	touch $@

# The link mlflow-ui prints: the experiment's trials and final trainings in one list with a chart of each metric
# (per epoch) across them, in the UI's model-training view. Sorted by valid_accuracy, as the UI nests child runs
# under their workflow run (collapsed) only when they are sorted by time; workflowType, as MLflow 3.17's UI opens
# experiments in the GenAI view the browser last chose (GenAI at first) otherwise.
define RUNS_LINK
import os, sys, urllib.parse
uri, name = sys.argv[1:3]
if uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
    found = None  # no store yet: the UI makes it
else:
    from mlflow.tracking import MlflowClient
    found = MlflowClient(uri).get_experiment_by_name(name)
view = {"workflowType": "machine_learning"}
if found is not None:
    view |= {"searchFilter": "tags.dogbreed.role != 'workflow'", "orderByKey": "metrics.`valid_accuracy`",
             "orderByAsc": "false", "compareRunsMode": "CHART"}
path = f"experiments/{found.experiment_id}/runs" if found is not None else "experiments"
link = f"http://127.0.0.1:5000/#/{path}?{urllib.parse.urlencode(view, quote_via=urllib.parse.quote)}"
print(f"trials and final trainings compared: {link}", flush=True)
endef
export RUNS_LINK

# One uvicorn worker, and no job runner (MLflow's background jobs serve its GenAI features: judges, issue detection):
# two processes, not 15 (BENCHMARKS.md). No access log, so the link stays on screen.
mlflow-ui: $(UI_VENV)/.installed
	@MLFLOW_DISABLE_TELEMETRY=true $(UI_VENV)/bin/python -c "$$RUNS_LINK" '$(TRACKING_URI)' '$(EXPERIMENT)' 2>/dev/null || true
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(UI_VENV)/bin/mlflow ui \
	  --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000 --workers 1 --uvicorn-opts=--no-access-log

optuna-dashboard: $(UI_VENV)/.installed
	$(UI_VENV)/bin/optuna-dashboard sqlite:///$(STUDY) --host 127.0.0.1 --port 8081

teardown: $(BIN)/.installed
	$(BIN)/snakemake teardown --configfile config/demo.yaml

# the demo's outputs and what every run shares (.snakemake, the store, downloads); the real run's results/ stays.
# Stops the demo's endpoint first (teardown lists any other run's it leaves running); the endpoint records in
# .dogbreed/endpoints/ stay, so a teardown of another run still finds its server after this
clean: teardown
	rm -rf results-demo .snakemake store data/raw

# SageMaker local mode (backend: local_container): a Docker engine and stand-ins for AWS's PyTorch
# training and inference containers, tagged with the ECR URIs the SDK resolves (docs/local-mode.md).
container-images: $(BIN)/.installed
	bash containers/build.sh

container-stop:
	bash containers/stop.sh

container-clean:  # only images built here carry the label (a real DLC pulled from ECR stays)
	-/usr/bin/docker images --quiet --filter label=org.dogbreed.stand-in | sort -u | xargs -r /usr/bin/docker rmi --force
	rm -rf .containers/wheelhouse

# The workflow on local_container end to end. Stops the engine afterwards if this target started it.
test-container: $(BIN)/.installed
	@was_running=$$(/usr/bin/docker info >/dev/null 2>&1 && echo yes); \
	bash containers/build.sh && $(BIN)/pytest -m container -p no:cacheprovider; status=$$?; \
	[ -n "$$was_running" ] || bash containers/stop.sh; exit $$status
