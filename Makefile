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

DEMO := $(BIN)/medlora run configs/demo.yaml

# a site with 3,000 unlabelled studies and a few labelled patients: LoRA on the base medlora pretrained
# on the unlabelled ones (bases/demo) -> the adapter and review bundle in $(OUT); then, on the same
# labelled patients, the same LoRA on a random base, full fine-tuning and a linear probe of the
# pretrained base, and the four side by side
demo: $(BIN)/medlora
	$(DEMO) --out $(OUT)
	$(DEMO) --out $(OUT)-random-lora --set model.weights=null
	$(DEMO) --out $(OUT)-full --set model.method=full --set train.lr=0.0003
	$(DEMO) --out $(OUT)-linear-probe --set model.method=linear_probe --set train.lr=0.01 --set train.epochs=30 --set train.patience=10
	@$(BIN)/python benchmarks/demo_pretrain.py table $(OUT) $(OUT)-random-lora $(OUT)-full $(OUT)-linear-probe

test: $(BIN)/medlora
	$(BIN)/pytest -q

test-all: $(BIN)/medlora
	$(BIN)/pytest -q -m "slow or not slow" -p no:cacheprovider

lint: $(BIN)/medlora
	$(BIN)/ruff check medlora pipelines tests benchmarks

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
