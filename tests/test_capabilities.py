import pytest

from mesh_core._capabilities import CapabilityTree, UnknownCapabilityError


def test_roots_and_documented_nodes():
    t = CapabilityTree()
    for root in (
        "generation",
        "understanding",
        "transformation",
        "representation",
        "retrieval",
        "interaction",
        "evaluation",
    ):
        assert root in t
    assert t.resolve("generation.text-generation.chat-completion").endswith("chat-completion")


def test_aliases_resolve_to_full_paths():
    t = CapabilityTree()
    assert t.resolve("chat-completion") == "generation.text-generation.chat-completion"
    assert t.resolve("text-embeddings") == "representation.embeddings.text-embeddings"
    assert t.resolve("tool-calling") == "interaction.tool-calling"


def test_unknown_names_suggest_the_closest():
    t = CapabilityTree()
    with pytest.raises(UnknownCapabilityError) as ei:
        t.resolve("chat-completon")
    assert "chat-completion" in str(ei.value)


def test_user_defined_nodes_join_the_tree():
    t = CapabilityTree(["generation.text-generation.poetry"])
    assert t.resolve("poetry") == "generation.text-generation.poetry"
    assert "generation.text-generation.poetry" in t.leaves("generation.text-generation")
    with pytest.raises(ValueError):
        t.add("nonsense.root")


def test_covers_ancestors_only():
    cov = CapabilityTree.covers
    assert cov("generation", "generation.text-generation.chat-completion")
    assert cov(
        "generation.text-generation.chat-completion", "generation.text-generation.chat-completion"
    )
    assert not cov("generation.text", "generation.text-generation.chat-completion")
    assert not cov("understanding", "generation.text-generation.chat-completion")
