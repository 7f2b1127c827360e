"""YAML that refuses a key given twice in one mapping (PyYAML keeps the last).

A module of its own so that PyYAML is imported only when a tokens file is read:
a server without one never loads it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

MarkedYAMLError = yaml.MarkedYAMLError
YAMLError = yaml.YAMLError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            problem = f"key {str(key)[:64]!r} appears twice in one mapping"
            raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        if isinstance(key, Hashable):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load(text: str) -> Any:
    """The document in ``text``; raises ``YAMLError`` (``MarkedYAMLError`` with a place)."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
