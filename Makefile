# One virtualenv for everything local; created on first use from pinned requirements.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv run test measure invoke bench bench-dlt-env lint typecheck fmt check clean \
	sam-venv lint-template sam-build

$(STAMP): requirements-dev.txt functions/ingest/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## run: the main job on embedded defaults (local PostgreSQL + S3 emulator, generated stream)
run: $(STAMP)
	$(BIN)/tickets-devkit run $(ARGS)

## measure: time and peak memory of a 34,849-row baseline sync (child process, fsync on)
measure: $(STAMP)
	$(BIN)/tickets-devkit measure

## invoke: run the Lambda handler in-process with EVENT=events/<file>.json on the local stack
EVENT ?= events/sqs-fifo-object-created.json
invoke: $(STAMP)
	$(BIN)/tickets-devkit invoke $(EVENT)

## bench: ours vs psql \copy + upsert, backlog, memory, cold start (results in bench/results/)
bench: $(STAMP)
	$(BIN)/tickets-devkit bench --readme $(BENCH_ARGS)

## bench-dlt-env: dlt in its own environment, for the benchmark's peer comparison
bench-dlt-env:
	$(PYTHON) -m venv .venv-dlt
	.venv-dlt/bin/pip install --quiet --disable-pip-version-check "dlt[postgres]==1.31.0" psycopg2-binary==2.9.13

## test: the whole test suite (starts its own PostgreSQL; moto for AWS)
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint typecheck test

## sam-venv: aws-sam-cli, cfn-lint and AWS's serverless rules in their own virtualenv
SAM_VENV  ?= .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
$(SAM_STAMP): tools/sam/requirements.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/sam/requirements.txt
	touch $(SAM_STAMP)

sam-venv: $(SAM_STAMP)

## lint-template: cfn-lint with AWS's serverless rules (every finding fails), sam validate --lint
lint-template: $(SAM_STAMP)
	$(SAM_VENV)/bin/cfn-lint --include-checks I --append-rules cfn_lint_serverless.rules -- template.yaml
	SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-eu-west-1} \
		$(SAM_VENV)/bin/sam validate --lint --template-file template.yaml

## sam-build: lint, then `sam build` (needs RDS_CA_BUNDLE or certs/; see docs/deploy.md#build)
sam-build: lint-template
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build --template-file template.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
