PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo test test-all lint clean

$(BIN)/medlora: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/medlora

demo: $(BIN)/medlora
	$(BIN)/medlora run configs/demo.yaml --out $(OUT)

test: $(BIN)/medlora
	$(BIN)/pytest -q

test-all: $(BIN)/medlora
	$(BIN)/pytest -q -m "slow or not slow" -p no:cacheprovider

lint: $(BIN)/medlora
	$(BIN)/ruff check medlora pipelines tests benchmarks

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
