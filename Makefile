# The whole set-up on a fresh machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-long teardown clean container-images container-stop container-clean test-container mlflow-ui optuna-dashboard
# no AWS client here ever asks the instance-metadata address for credentials
export AWS_EC2_METADATA_DISABLED := true

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores 1 deploy report --configfile config/demo.yaml

# two workers (pytest-xdist), each test file on one of them, in order (its tests share the runs its
# fixtures build); one compute thread per job (tests/conftest.py), so two jobs never fight for the cores
test: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadfile

# the longest real runs, kept out of `make test`'s 8 minutes (CI runs both): planted training faults,
# a killed Snakemake, a full disk
test-long: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadfile -m long

# The UIs, in an environment of their own (requirements-ui.txt: full mlflow cannot live beside smdebug's protobuf
# pin), on 127.0.0.1. MLflow: every results folder's runs (tracking.uri's default store); Optuna: one study DB.
UI_VENV := .venv-ui
STUDY ?= results/tuning/study.sqlite
TRACKING_URI ?= sqlite:///mlflow.db
$(UI_VENV)/.installed: requirements-ui.txt
	$(PYTHON) -m venv $(UI_VENV)
	$(UI_VENV)/bin/pip install --quiet --upgrade pip
	$(UI_VENV)/bin/pip install -r requirements-ui.txt
	touch $@

mlflow-ui: $(UI_VENV)/.installed
	MLFLOW_DISABLE_TELEMETRY=true $(UI_VENV)/bin/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000

optuna-dashboard: $(UI_VENV)/.installed
	$(UI_VENV)/bin/optuna-dashboard sqlite:///$(STUDY) --host 127.0.0.1 --port 8081

teardown: $(BIN)/.installed
	$(BIN)/snakemake --cores 1 teardown --configfile config/demo.yaml

# stop the demo's endpoint first (teardown lists any other run's it leaves running); the endpoint records in
# .dogbreed/endpoints/ stay, so a teardown of another run still finds its server after this
clean: teardown
	rm -rf results .snakemake store data/raw

# SageMaker local mode (backend: local_container): a Docker engine and stand-ins for AWS's PyTorch
# training and inference containers, tagged with the ECR URIs the SDK resolves (docs/guide.md: local mode).
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
