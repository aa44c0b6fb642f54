# The whole set-up on a fresh machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test teardown clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements.txt
	touch $@

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores 1 deploy report --configfile config/demo.yaml

test: $(BIN)/.installed
	$(BIN)/pytest

teardown: $(BIN)/.installed
	$(BIN)/snakemake --cores 1 teardown --configfile config/demo.yaml

# stop the endpoint first: its state lives under results/, and without it nothing could find the server
clean: teardown
	rm -rf results .snakemake store data/raw
