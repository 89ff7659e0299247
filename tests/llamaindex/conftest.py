"""Fixtures of the tests of foreign LlamaIndex LLMs as pool members."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelmesh_llamaindex import MeshLLM
from tests.llamaindex.foreign_helpers import fast, like


@pytest.fixture
def made() -> Iterator[list[MeshLLM]]:
    """MeshLLMs built by from_models own their Mesh: closed after the test."""
    built: list[MeshLLM] = []
    yield built
    for llm in built:
        llm.mesh.close()


@pytest.fixture
def pair(servers, made) -> MeshLLM:
    """Two foreign OpenAILike members, a.m1 first."""
    llm = MeshLLM.from_models(
        {"a.m1": like(servers[0], "m1"), "b.m2": like(servers[1], "m2")},
        config=fast("a.m1", "b.m2"),
    )
    made.append(llm)
    return llm
