"""From a YAML file (or a mapping) to a validated :class:`~medlora.config.schema.Config`.

YAML config files are read here and nowhere else (front matter of cards: :mod:`medlora.frontmatter`).
The loader does what needs files and the working directory, before the schema validates:

- ``--set a.b=c`` overrides, parsed as YAML, applied to the raw mapping (validated like the file);
- relative paths resolved against the config file's folder (overrides: the working directory);
- ``model.weights``: a base card (``base_card.md``) stands for the weights file it names, and a
  ``save_pretrained`` folder's ``config.json`` gives ``model.backbone`` when none is written;
- input files the config names (:data:`MUST_EXIST`) must exist.

A schema error becomes a :class:`~medlora.errors.ConfigError` that names the key and, for an
unknown key, the allowed ones.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..basecard import weights_of
from ..errors import ConfigError
from .schema import Config, path_keys, sections
from .tracking import redact_uri

MUST_EXIST = ("data.card", "data.labels", "model.weights", "model.adapter", "oneclass.adapter")  # inputs read, never written


def _parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, booleans, lists, null)."""
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw config mapping (in place, and returned)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at ``loc`` (a pydantic error location) of ``model``."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            return []
        found = sections(field.annotation)
        current = found[0] if found else None
    return sorted(current.model_fields) if current is not None else []


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Config, e["loc"])
            lines.append(f"  unknown key {key!r}; allowed here: {', '.join(allowed)}")
        elif e["type"] == "missing":
            lines.append(f"  missing required key {key!r}")
        else:
            shown = redact_uri(e["input"]) if isinstance(e.get("input"), str) else e.get("input")
            got = f" (got {shown!r})" if key else ""  # a whole-config check: the input is the config
            lines.append(f"  {key or '<root>'}: {e['msg'].removeprefix('Value error, ')}{got}")
    return "\n".join(lines)


def _get(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = value


def _absolute(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """``raw`` with every relative path value made absolute against ``base_dir`` (in place)."""
    for key in path_keys():
        value = _get(raw, key)
        if isinstance(value, str | Path) and str(value) and not Path(value).is_absolute():
            _set(raw, key, str(Path(base_dir) / value))
    return raw


def folder_architecture(folder: Path) -> str | None:
    """The timm architecture named in a ``save_pretrained`` folder's ``config.json`` (None when absent)."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if arch is None and isinstance(cfg, dict) and isinstance(cfg.get("pretrained_cfg"), dict):
        arch = cfg["pretrained_cfg"].get("architecture")
    return arch if isinstance(arch, str) and arch else None


def _resolve_weights(raw: dict[str, Any], source: str) -> None:
    """``model.weights`` as the model will load it (in place): a base card becomes the weights file it
    names; a ``save_pretrained`` folder gives ``model.backbone`` when none is written."""
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("weights"), str | Path) or not model["weights"]:
        return
    weights = Path(model["weights"])
    if weights.suffix == ".md" and weights.is_file():
        try:
            model["weights"] = str(weights_of(weights))
        except ConfigError as err:
            raise ConfigError(f"invalid config {source}:\n  {err}") from None
    elif weights.is_dir() and not model.get("backbone"):
        arch = folder_architecture(weights)
        if arch is None:
            raise ConfigError(f"invalid config {source}:\n  model.weights: folder {weights} has no config.json naming "
                              "a timm 'architecture' (timm save_pretrained / save_for_hf layout); set model.backbone "
                              "to its timm name")
        model["backbone"] = arch


def config_from_dict(raw: dict[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Validate a raw mapping into a frozen :class:`Config`; relative paths resolve against ``base_dir``
    and ``model.weights`` is read (:func:`_resolve_weights`) before validation: the validated config is
    never changed afterwards. ``raw`` itself is not changed."""
    raw = copy.deepcopy(raw)
    if base_dir is not None:
        _absolute(raw, base_dir)
    _resolve_weights(raw, source)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file (not validated); a missing or malformed file is a ConfigError."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None, base_dir: Path | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides, validate.

    Relative paths written in the config file resolve against the file's folder (``base_dir``
    when given), so a config works from any working directory; relative paths in ``--set``
    overrides resolve against the current directory, where the user typed them. Input files the
    config names (data card, labels, weights, adapter) must exist: the error shows the path as
    written and as resolved.
    """
    path = Path(path)
    raw = read_config_file(path)
    written = {k: _get(raw, k) for k in MUST_EXIST}
    _absolute(raw, Path(base_dir) if base_dir is not None else path.resolve().parent)
    given = apply_overrides({}, overrides or [])
    written.update({k: _get(given, k) for k in MUST_EXIST if _get(given, k) is not None})
    apply_overrides(raw, overrides or [])
    for key in path_keys():
        value = _get(given, key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            _set(raw, key, str(Path.cwd() / value))
    cfg = config_from_dict(raw, str(path))
    for key in MUST_EXIST:
        resolved = _get(cfg.model_dump(), key)
        if resolved is not None and not Path(resolved).exists():
            raise ConfigError(f"{key}: {written[key]!s} does not exist (resolved to {resolved}; relative paths in a "
                              f"config file resolve against its folder {path.resolve().parent})")
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain YAML-able data (paths as strings)."""
    return cfg.model_dump(mode="json")
