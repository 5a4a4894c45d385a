"""The lineage graph of model versions, laid out for an SVG drawn on the server: a parent to
the left of its children (one column per generation), an arrow from parent to child, and in
each box the version, its tags and the run that trained it."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from treadle.storage import ModelRegistryEntry

__all__ = ["Edge", "LineageGraph", "Node", "layout_lineage"]

NODE_WIDTH = 200
NODE_HEIGHT = 58
COLUMN_GAP = 64
ROW_GAP = 14
MARGIN = 8


@attrs.frozen(kw_only=True)
class Node:
    entry: ModelRegistryEntry
    x: int
    y: int
    is_focus: bool

    @property
    def width(self) -> int:
        return NODE_WIDTH

    @property
    def height(self) -> int:
        return NODE_HEIGHT


@attrs.frozen(kw_only=True)
class Edge:
    """An arrow from ``parent`` to ``child`` (model ids); ``path`` is SVG path data."""

    parent: int
    child: int
    path: str


@attrs.frozen(kw_only=True)
class LineageGraph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def _generation(model_id: int, parents: dict[int, int | None], memo: dict[int, int]) -> int:
    chain: list[int] = []
    current: int | None = model_id
    seen: set[int] = set()
    while current is not None and current not in memo and current in parents:
        if current in seen:  # a cycle cannot be stored, but a drawing must never hang
            break
        seen.add(current)
        chain.append(current)
        current = parents[current]
    base = memo.get(current, -1) if current is not None else -1
    for offset, node in enumerate(reversed(chain), start=1):
        memo[node] = base + offset
    return memo[model_id]


def layout_lineage(
    entries: Iterable[ModelRegistryEntry], *, focus: int | None = None
) -> LineageGraph:
    """Place ``entries``: generation by generation from left to right (a version whose parent
    is not among ``entries`` starts a line), ordered by id within a column. An edge joins each
    entry to its parent when both are drawn."""
    by_id = {entry.model_id: entry for entry in entries}
    parents = {
        model_id: (entry.parent_model_id if entry.parent_model_id in by_id else None)
        for model_id, entry in by_id.items()
    }
    memo: dict[int, int] = {}
    columns: dict[int, list[int]] = {}
    for model_id in sorted(by_id):
        columns.setdefault(_generation(model_id, parents, memo), []).append(model_id)
    nodes: dict[int, Node] = {}
    for column, members in sorted(columns.items()):
        for row, model_id in enumerate(members):
            nodes[model_id] = Node(
                entry=by_id[model_id],
                x=MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
                y=MARGIN + row * (NODE_HEIGHT + ROW_GAP),
                is_focus=model_id == focus,
            )
    edges = []
    for model_id, parent in sorted(parents.items()):
        if parent is None:
            continue
        start, end = nodes[parent], nodes[model_id]
        x1, y1 = start.x + NODE_WIDTH, start.y + NODE_HEIGHT // 2
        x2, y2 = end.x - 6, end.y + NODE_HEIGHT // 2
        bend = (x2 - x1) // 2
        edges.append(
            Edge(
                parent=parent,
                child=model_id,
                path=f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}",
            )
        )
    width = max((node.x + NODE_WIDTH for node in nodes.values()), default=0) + MARGIN
    height = max((node.y + NODE_HEIGHT for node in nodes.values()), default=0) + MARGIN
    return LineageGraph(
        nodes=tuple(nodes[model_id] for model_id in sorted(nodes)),
        edges=tuple(edges),
        width=width,
        height=height,
    )
