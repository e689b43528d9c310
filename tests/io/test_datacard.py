"""Data cards: every card in data_cards/ validates; a broken card names its file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medlora.config import load_config
from medlora.errors import ConfigError
from medlora.io.datacard import REQUIRED_FIELDS, card_for_run, check_card_matches, load_card

REPO = Path(__file__).resolve().parents[2]
CARDS = sorted((REPO / "data_cards").glob("*.md"))
CONFIGS_WITH_CARDS = ["demo.yaml", "breastmnist.yaml", "pneumoniamnist.yaml", "adrenalmnist3d.yaml",
                      "multilabel_demo.yaml", "chestmnist.yaml", "organamnist.yaml"]


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_every_card_validates(path):
    card = load_card(path)
    assert card.name == path.stem
    assert card.text.startswith("---") and "# " in card.text  # prose kept
    if card.task == "classification":
        assert card.abnormal_class in card.classes
    elif card.task == "none":
        assert card.classes == [] and card.abnormal_class is None
    else:  # multiclass / multilabel: the classes or findings, no single abnormal class
        assert card.classes and card.abnormal_class is None


def test_the_datasets_of_the_shared_readme_have_cards():
    names = {p.stem for p in CARDS}
    assert {"breastmnist", "pneumoniamnist", "adrenalmnist3d", "ct_3slice", "highdicom_testfiles",
            "totalsegmentator_fixtures", "synthetic_phantoms"} <= names


@pytest.mark.parametrize("name, abnormal, index", [("breastmnist", "malignant", 0), ("pneumoniamnist", "pneumonia", 1),
                                                   ("adrenalmnist3d", "hyperplasia", 1)])
def test_medmnist_cards_name_the_abnormal_label_index(name, abnormal, index):
    card = load_card(REPO / "data_cards" / f"{name}.md")
    assert card.abnormal_class == abnormal and card.abnormal_index == index
    assert "CC BY 4.0" in card.licence and "Scientific Data 10:41" in card.citation


def _front(**changes) -> dict:
    meta = yaml.safe_load((REPO / "data_cards" / "synthetic_phantoms.md").read_text().split("---")[1])
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    return meta


_DROP = object()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"limitations": _DROP}, "missing required field 'limitations'"),
        ({"licence": _DROP}, "missing required field 'licence'"),
        ({"license": "MIT"}, "unknown field 'license'; allowed fields: name, version"),
        ({"abnormal_class": "tumour"}, "abnormal_class='tumour' is not one of classes"),
        ({"classes": ["normal"], "abnormal_class": "normal"}, "classes must hold at least two distinct names"),
        ({"obtain": "  "}, "field obtain: must not be empty"),
        ({"limitations": []}, "field limitations: must name at least one known limitation"),
        ({"task": "segmentation"}, "field task"),
        ({"task": "none"}, "task: none means no labels"),
        ({"path": "x"}, "unknown field 'path'"),
    ],
)
def test_broken_card_names_file_and_field(tmp_path, changes, message):
    path = tmp_path / "broken.md"
    path.write_text("---\n" + yaml.safe_dump(_front(**changes)) + "---\n\n# prose\n")
    with pytest.raises(ConfigError) as err:
        load_card(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("text, message", [("name: x\n", "must start with a '---' line"),
                                           ("---\nname: x\n", "no closing '---' line"),
                                           ("---\n- a\n---\n", "must be a mapping")])
def test_card_without_front_matter(tmp_path, text, message):
    path = tmp_path / "bad.md"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_card(path)


def test_required_fields_are_the_documented_ones():
    assert len(REQUIRED_FIELDS) == 16 and "format" in REQUIRED_FIELDS and "obtain" in REQUIRED_FIELDS


@pytest.mark.parametrize("config", CONFIGS_WITH_CARDS)
def test_configs_agree_with_their_cards(config):
    cfg = load_config(REPO / "configs" / config)
    card = card_for_run(cfg.data)
    assert card is not None and card.classes == cfg.data.outputs  # the classes, or the findings (multilabel)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.classes=[normal_or_benign, malignant]"], "same names in the same (label-index) order"),
        (["data.classes=[malignant, benign]", "data.abnormal=malignant"], "data.classes=['malignant', 'benign']"),
        (["data.abnormal=normal_or_benign"], "abnormal_class='malignant' but data.abnormal='normal_or_benign'"),
        (["data.card=data_cards/ct_3slice.md"], "task: none (no task labels)"),
    ],
)
def test_card_and_config_disagree(overrides, message):
    cfg = load_config(REPO / "configs" / "breastmnist.yaml", overrides)
    with pytest.raises(ConfigError) as err:
        card_for_run(cfg.data)
    assert message in str(err.value)


def test_a_missing_card_is_refused_when_the_config_is_loaded():
    with pytest.raises(ConfigError, match="data.card: data_cards/missing.md does not exist"):
        load_config(REPO / "configs" / "breastmnist.yaml", ["data.card=data_cards/missing.md"])


def test_card_for_run_without_a_card_is_none():
    cfg = load_config(REPO / "configs" / "breastmnist.yaml", ["data.card=null"])
    assert card_for_run(cfg.data) is None


def test_check_card_matches_accepts_the_demo():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    check_card_matches(load_card(REPO / "data_cards" / "synthetic_phantoms.md"), cfg.data)


def test_card_is_logged_with_the_run(monkeypatch):
    """The helper's contract, without an MLflow store (the slow BreastMNIST run checks a real one)."""
    import mlflow

    from medlora.tracking.mlflow_run import log_data_card

    calls: dict = {}
    monkeypatch.setattr(mlflow, "log_text", lambda text, name: calls.setdefault("text", (text, name)))
    monkeypatch.setattr(mlflow, "set_tags", lambda tags: calls.setdefault("tags", tags))
    log_data_card(None)  # no card configured: nothing is logged
    assert calls == {}
    card = load_card(REPO / "data_cards" / "breastmnist.md")
    log_data_card(card)
    assert calls["text"] == (card.text, "data_card.md")
    assert calls["tags"] == {"medlora.data_card.name": "breastmnist", "medlora.data_card.version": "1"}
