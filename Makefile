# The one entry point. Every target builds its own virtualenv, so a fresh machine needs only Python.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUNDLE ?= bundles/saas
LISTEN ?= 127.0.0.1:50051
HTTP_LISTEN ?= 127.0.0.1:8181
DATA_DIR ?= data
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)
PROTO_STAMP := pdp/_proto/.built

.PHONY: run dev-client test lint typecheck deadcode check bench bench-quick bench-instructions bench-peers profile proto clean

# xds-protos (Envoy's API) ships stale copies of opentelemetry-proto's and googleapis' files and
# may overwrite theirs (grpc/grpc#42926; OTLP export then fails to import): after the install, the
# real ones go back, at the versions just resolved. tests/adversarial/test_envoy.py checks it held.
SHADOWED_PROTOS := opentelemetry-proto googleapis-common-protos

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --force-reinstall --no-deps $$($(PY) -c 'import sys, importlib.metadata as m; \
		print(*(p + "==" + m.version(p) for p in sys.argv[1:]))' $(SHADOWED_PROTOS))
	touch $(STAMP)

# Generated protobuf/gRPC code is built here, never written by hand or committed.
$(PROTO_STAMP): $(STAMP) $(PROTOS)
	rm -rf pdp/_proto && mkdir -p pdp/_proto
	$(if $(PROTOS),$(PY) -m grpc_tools.protoc -Ipdp/_proto=proto --python_out=. --grpc_python_out=. --pyi_out=. $(patsubst proto/%,pdp/_proto/%,$(PROTOS)))
	touch $(PROTO_STAMP)

proto: $(PROTO_STAMP)

# --dev-keys: a signing key is made under $(DATA_DIR)/dev-keys (gitignored) on first run, so the token
# endpoint, subject_token checks and admin tokens work on a fresh machine. Not for production.
run: $(PROTO_STAMP)
	$(VENV)/bin/pdp serve --bundle $(BUNDLE) --listen $(LISTEN) --http-listen $(HTTP_LISTEN) \
		--data-dir $(DATA_DIR) --dev-keys

# An operator's client (bound to no tenant) allowed every admin RPC, for `make run`: prints its
# secret once. Get a token with
# curl -u dev-admin:SECRET -d grant_type=client_credentials http://$(HTTP_LISTEN)/oauth/token
dev-client: $(STAMP)
	mkdir -p $(DATA_DIR)
	$(VENV)/bin/pdp tokens create-client --db $(DATA_DIR)/tokens.db --client-id dev-admin \
		--tenant '*' --scope admin

test: $(PROTO_STAMP)
	$(PY) -m pytest -q

lint: $(PROTO_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(PROTO_STAMP)
	$(VENV)/bin/mypy pdp policy_lang

# Code nothing calls. Tests count as callers; uses vulture cannot see (grpc, uvicorn, the parser's
# rule methods) are in .vulture_whitelist.py, and whole classes of them are patterns here.
deadcode: $(STAMP)
	$(VENV)/bin/vulture pdp policy_lang tests .vulture_whitelist.py --exclude pdp/_proto \
		--min-confidence 60 --ignore-names 'test_*' --ignore-decorators '@rule,@invariant'

check: lint typecheck deadcode test

bench: $(PROTO_STAMP)
	$(PY) -m benchmarks.run --full

bench-quick: $(PROTO_STAMP)
	$(PY) -m benchmarks.run --quick

# Instructions per decision under callgrind (needs valgrind): ratios that a busy machine cannot move.
bench-instructions: $(PROTO_STAMP)
	$(PY) -m benchmarks.instructions

# The hot paths (decide, cache, parse, BatchCheck, token issue) under py-spy, ~8 s each: a flame
# graph and a text summary per path in benchmarks/results/profile/ (py-spy attaches by ptrace).
profile: $(PROTO_STAMP)
	$(PY) -m benchmarks.profile

# PostgreSQL and sidecars on loopback: propagation, write throughput, cold start from 1M tuples.
bench-fleet: $(PROTO_STAMP)
	$(PY) -m benchmarks.fleet

# PostgreSQL (from the machine's binaries) and three sidecars: a write at one seen at the others.
fleet-demo: $(PROTO_STAMP)
	$(PY) -m benchmarks.fleet --demo

bench-peers: $(PROTO_STAMP)
	$(PY) -m benchmarks.peers.run

clean:
	rm -rf $(VENV) pdp/_proto build *.egg-info .pytest_cache .mypy_cache .ruff_cache
