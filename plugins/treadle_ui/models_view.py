"""The models pages' data: versions grouped by model name with tags, metrics and export
formats, a lineage graph per name and per version, and a version's data profile.

Read through :class:`~treadle.model_registry.ModelRegistry` and its store protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from treadle.storage import ModelRegistryEntry
from treadle_ui.lineage import LineageGraph, layout_lineage

if TYPE_CHECKING:
    from treadle.engine.drift import DataProfile
    from treadle.model_registry import ModelRegistry

__all__ = [
    "FeatureSummary",
    "ModelFamily",
    "ModelPage",
    "model_families",
    "model_page",
    "profile_summary",
]

#: versions per name drawn in the models page's graph (the version page draws the whole line)
GRAPH_VERSIONS = 30
#: metric columns of a version table: the most common names among its versions
METRIC_COLUMNS = 6


@attrs.frozen(kw_only=True)
class ModelFamily:
    """Every version of one model name, newest first."""

    name: str
    versions: tuple[ModelRegistryEntry, ...]
    metric_names: tuple[str, ...]
    tags: dict[str, ModelRegistryEntry]
    graph: LineageGraph


@attrs.frozen(kw_only=True)
class FeatureSummary:
    name: str
    kind: str
    bins: int
    counts: tuple[int, ...]
    missing: int
    low: float | None
    high: float | None


@attrs.frozen(kw_only=True)
class ModelPage:
    entry: ModelRegistryEntry
    parent: ModelRegistryEntry | None
    children: tuple[ModelRegistryEntry, ...]
    graph: LineageGraph
    profile: DataProfile | None
    features: tuple[FeatureSummary, ...]
    profile_error: str | None


def _metric_names(entries: Sequence[ModelRegistryEntry]) -> tuple[str, ...]:
    counts = Counter(name for entry in entries for name in entry.metrics)
    ranked = sorted(counts, key=lambda name: (-counts[name], not name.startswith("val_"), name))
    return tuple(ranked[:METRIC_COLUMNS])


def _with_parents(
    registry: ModelRegistry, entries: Sequence[ModelRegistryEntry]
) -> list[ModelRegistryEntry]:
    """``entries`` plus the parents they name that are not among them (another model name,
    or an older version than those drawn)."""
    known = {entry.model_id for entry in entries}
    missing = sorted(
        {entry.parent_model_id for entry in entries if entry.parent_model_id is not None} - known
    )
    extra = registry.store.find_models(model_ids=missing) if missing else []
    return [*entries, *extra]


def model_families(registry: ModelRegistry, *, name: str | None = None) -> list[ModelFamily]:
    """Model names (newest registration first), each with its versions and graph."""
    entries = registry.store.find_models(name=name)
    grouped: dict[str, list[ModelRegistryEntry]] = {}
    for entry in entries:
        grouped.setdefault(entry.name, []).append(entry)
    families = []
    for family_name, versions in grouped.items():
        drawn = _with_parents(registry, versions[:GRAPH_VERSIONS])
        tags = {tag: entry for entry in versions for tag in entry.tags}
        families.append(
            ModelFamily(
                name=family_name,
                versions=tuple(versions),
                metric_names=_metric_names(versions),
                tags=dict(sorted(tags.items())),
                graph=layout_lineage(drawn),
            )
        )
    return families


def profile_summary(profile: DataProfile) -> list[FeatureSummary]:
    """Per feature: its kind, bins, counts (for a small histogram), missing values and, for a
    numeric feature, its range."""
    summaries = []
    for feature_name, histogram in profile.features.items():
        edges = histogram.edges
        summaries.append(
            FeatureSummary(
                name=feature_name,
                kind=histogram.kind,
                bins=len(histogram.counts),
                counts=tuple(histogram.counts),
                missing=histogram.missing,
                low=edges[0] if edges else None,
                high=edges[-1] if edges else None,
            )
        )
    return summaries


def model_page(registry: ModelRegistry, model_id: int) -> ModelPage:
    """One version with its whole line (ancestors and descendants) and its data profile.

    :raises UnknownNameError: no model has this id.
    """
    lineage = registry.get_lineage(model_id)
    entry = lineage.model
    family = [*reversed(lineage.ancestors), entry, *lineage.descendants]
    parent = lineage.ancestors[0] if lineage.ancestors else None
    children = tuple(item for item in lineage.descendants if item.parent_model_id == model_id)
    profile = None
    profile_error = None
    if entry.has_data_profile:
        try:
            profile = registry.get_data_profile(model_id)
        except ValueError as err:  # DriftError: a malformed stored profile
            profile_error = str(err)
    features: tuple[Any, ...] = tuple(profile_summary(profile)) if profile is not None else ()
    return ModelPage(
        entry=entry,
        parent=parent,
        children=children,
        graph=layout_lineage(family, focus=model_id),
        profile=profile,
        features=features,
        profile_error=profile_error,
    )
