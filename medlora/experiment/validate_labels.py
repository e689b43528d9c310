"""Whether a site's labels can judge a bundle: the same task and classes, or a subset of its findings."""

from __future__ import annotations

from ..bundle.bundle import Bundle
from ..config import DataConfig
from ..errors import ConfigError


def check_labels(bundle: Bundle, data: DataConfig) -> list[str]:
    """Refuse (:class:`ConfigError`, naming the difference) labels that do not match the bundle's; return
    notes for a reader (e.g. the site labels only some of the bundle's findings)."""
    labels = bundle.meta["labels"]
    if bundle.task != data.task:
        raise ConfigError(f"the bundle {bundle.path} is a {bundle.task} model; the site config says data.task: "
                          f"{data.task}")
    if bundle.task == "binary":
        theirs, ours = set(labels["classes"]), set(data.classes)
        if theirs != ours or labels["abnormal"] != data.abnormal:
            raise ConfigError(f"the site's classes {sorted(ours)} (abnormal: {data.abnormal!r}) differ from the bundle's "
                              f"{sorted(theirs)} (abnormal: {labels['abnormal']!r}); only in site: "
                              f"{sorted(ours - theirs) or 'none'}, only in bundle: {sorted(theirs - ours) or 'none'}")
        return []
    outputs = list(labels.get("outputs") or [])
    site = list(data.outputs)
    extra = [name for name in site if name not in outputs]
    if extra:
        raise ConfigError(f"the site labels {extra} which the bundle {bundle.path} does not score (its outputs: "
                          f"{outputs})")
    if (labels.get("normal") or None) != (data.normal or None):
        raise ConfigError(f"the site's data.normal {data.normal!r} differs from the bundle's {labels.get('normal')!r}")
    missing = [name for name in outputs if name not in site]
    return [f"the site labels {len(site)} of the bundle's {len(outputs)} outputs; not evaluated: {', '.join(missing)}"] \
        if missing else []
