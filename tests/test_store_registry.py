"""A state-store backend that lives outside the package, named in a YAML configuration.

The backend here is a dictionary of this module (standing in for a database of your own):
registered under a name, it is what ``storage.backend`` builds, with its own
``storage.options``; the mesh saves into it and a second mesh restores from it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mesh_core import Mesh, StateStore, register_store_backend
from mesh_core._config import StorageConfig, load_config
from mesh_core._errors import ConfigurationError
from mesh_core.stores import PersistedState, create_store, known_store_backends

BUCKETS: dict[str, dict[str, object]] = {}


class BucketStore(StateStore):
    """Keeps the state in ``BUCKETS[bucket]`` (a snapshot store, like the JSON file)."""

    name = "bucket"

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    def load(self) -> PersistedState | None:
        data = BUCKETS.get(self.bucket)
        return None if data is None else PersistedState.from_dict(data, f"bucket {self.bucket}")

    def save(self, state: PersistedState) -> None:
        BUCKETS[self.bucket] = state.to_dict()


def bucket_store(config: StorageConfig) -> StateStore:
    return BucketStore(str(config.options.get("bucket", "default")))


register_store_backend("bucket", bucket_store)

YAML = """
providers:
  p: {base_url: "http://127.0.0.1:9/v1"}
models:
  p.a: {provider: p}
  p.b: {provider: p}
pools:
  chat: {models: [p.a, p.b]}
storage:
  backend: bucket
  options: {bucket: b1}
"""


def test_a_registered_backend_keeps_the_state_named_in_yaml(tmp_path: Path):
    path = tmp_path / "mesh.yaml"
    path.write_text(textwrap.dedent(YAML))
    BUCKETS.clear()
    with Mesh.from_config(path) as mesh:
        mesh.deactivate("p.a", reason="manual")
    saved = BUCKETS["b1"]["models"]
    assert isinstance(saved, dict) and saved["p.a"]["status"] == "standby"
    with Mesh.from_config(path) as again:  # a new process, in effect: restored from the bucket
        assert again.snapshot("p.a").status == "standby"
        assert again.snapshot("p.b").status == "active"


def test_an_unknown_backend_lists_the_known_ones_registered_included():
    with pytest.raises(ConfigurationError) as ei:
        load_config({"storage": {"backend": "buckett"}})
    problem = dict(ei.value.errors)["storage.backend"]
    assert problem.startswith("unknown storage backend; did you mean 'bucket'? (known: ")
    assert problem.endswith(") (got 'buckett')")
    known = problem.partition("(known: ")[2].partition(")")[0]
    assert {"bucket", "json", "memory", "redis", "sqlite"} <= set(known.split(", "))
    assert {"bucket", "memory", "json", "sqlite", "redis"} <= set(known_store_backends())


def test_options_are_for_registered_backends_only():
    with pytest.raises(ConfigurationError, match="the sqlite backend takes no options"):
        load_config({"storage": {"backend": "sqlite", "options": {"bucket": "x"}}})


def test_registering_a_name_twice_needs_replace():
    with pytest.raises(ValueError, match="already registered"):
        register_store_backend("bucket", lambda config: BucketStore("other"))
    register_store_backend("bucket", bucket_store)  # the same factory again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_store_backend("json", bucket_store)


def test_a_factory_must_return_a_state_store():
    register_store_backend("not-a-store", lambda config: object())
    with pytest.raises(TypeError, match=r"returned object, not a mesh_core\.stores\.StateStore"):
        create_store(StorageConfig(backend="not-a-store"))


def test_exported_from_the_package_and_the_stores_module():
    import mesh_core.stores

    assert mesh_core.register_store_backend is mesh_core.stores.register_store_backend
    assert "register_store_backend" in mesh_core.__all__
