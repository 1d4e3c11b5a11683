# Two commands from a fresh clone: `make run` (install, start the embedded services, run all notebooks on the
# bundled sample, write reports) and `make test`. scripts/install.sh makes the environment (uv, else pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml

.PHONY: install run test test-fast services-up services-down live live-stop notebooks lab orchestrate clean

$(VENV)/.installed: pyproject.toml jvm/pom.xml scripts/install.sh
	bash scripts/system-deps.sh
	bash scripts/install.sh $(PYTHON) $(VENV)
	touch $@

install: $(VENV)/.installed

# Spark's driver starts ~3.5 s sooner with its class archive (tootpipe.spark.archive; ~28 s to build, once per java
# and pyspark): the suite waits for it; lab, orchestrate and live build it in the background at the lowest CPU
# priority, `make run` once its notebooks are done (the first run's CPU goes to the notebooks)
ARCHIVE := $(PY) -m tootpipe.spark.archive

run: install
	$(PY) run_all.py --params $(PARAMS)
	@$(ARCHIVE) --background

# two workers (pytest-xdist), each with its own services, one test module at a time: the suite waits on processes
# starting as much as it computes, so two keep the 2 cores busy (554 -> 456 s on 2 cores)
TEST_WORKERS ?= 2
test: install
	$(ARCHIVE)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: install
	$(PY) -m pytest -m "not integration and not notebooks"

services-up: install
	$(VENV)/bin/tootpipe services up

services-down:
	$(VENV)/bin/tootpipe services down

# JupyterLab on notebooks/ (the .py files open as notebooks), the embedded services started first
lab: install
	@$(ARCHIVE) --background
	$(VENV)/bin/tootpipe lab

# Dagster's UI and daemon on 127.0.0.1:3000 (orchestration.port), the embedded services started first: the sensor
# runs the pipeline when new toots reach the topic (`make live` in another terminal), the schedule on its clock
orchestrate: install
	@$(ARCHIVE) --background
	$(VENV)/bin/tootpipe --params $(PARAMS) orchestrate

notebooks: install
	$(VENV)/bin/jupytext --to ipynb notebooks/[0-9][0-9]_*.py

# The live demo: a real instance into the embedded services (params/live.yaml; LIVE_PARAMS=params/live-compose.yaml
# for the services of compose.yaml), secrets in .env. Ingest and the stream run in the background (logs and pids
# under .tootpipe/live/); `make live-stop` stops both. `make orchestrate PARAMS=$(LIVE_PARAMS)` refreshes the rest.
LIVE_PARAMS ?= params/live.yaml
live: install
	@$(PY) -c "from tootpipe.core.config import load, secret; import sys; p = load('$(LIVE_PARAMS)'); \
	  pw = secret('DB_PASSWORD') or ''; sys.exit(0 if p.database.url is None or (len(pw) >= 12 and pw != 'change-me') \
	  else 'make live: set DB_PASSWORD in .env to a long random value first (see .env.example)')"
	mkdir -p -m 700 .tootpipe/live
	@$(ARCHIVE) --background
	$(VENV)/bin/tootpipe --params $(LIVE_PARAMS) services up > /dev/null
	$(VENV)/bin/tootpipe --params $(LIVE_PARAMS) ingest > .tootpipe/live/ingest.log 2>&1 & echo $$! > .tootpipe/live/ingest.pid
	$(VENV)/bin/tootpipe --params $(LIVE_PARAMS) stream --follow > .tootpipe/live/stream.log 2>&1 & echo $$! > .tootpipe/live/stream.pid
	@echo "ingest and stream are running; logs in .tootpipe/live/; stop them with: make live-stop"

# only a pid whose process is still a tootpipe command is signalled (a stale file names nobody else's process)
live-stop:
	-@for f in .tootpipe/live/ingest.pid .tootpipe/live/stream.pid; do \
	  pid=$$(cat $$f 2>/dev/null) && tr '\0' ' ' < /proc/$$pid/cmdline 2>/dev/null | grep -q 'tootpipe.*\(ingest\|stream\)' \
	  && kill -TERM $$pid && echo "stopped $$f ($$pid)"; rm -f $$f; done; true

clean:
	-$(VENV)/bin/tootpipe services down
	rm -rf .tootpipe reports models
