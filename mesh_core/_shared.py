"""One Mesh per configuration per process, shared by every adapter instance.

``MeshChatModel(pool="a")`` and ``MeshLLM(pool="b")`` built from the same file (or
an equal dict) route through the same Mesh, so they see one state: a model one of
them put in standby is in standby for the other.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._config import check_shape
from ._errors import ConfigurationError
from ._mesh import Mesh

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_VAR",
    "forget_shared_meshes",
    "mesh_for_pool",
    "shared_mesh",
]

ENV_VAR = "MODELMESH_CONFIG"
DEFAULT_CONFIG_PATH = "modelmesh.yaml"

_LOCK = threading.Lock()
_MESHES: dict[tuple[str, str], Mesh] = {}


def _key(config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[str, str]:
    if isinstance(config, Mapping):
        # Before dumping it whole: an alias bomb, a cycle or deep nesting is a clear error.
        check_shape(config)
        return "dict", json.dumps(config, sort_keys=True, default=str)
    return "path", str(Path(config).resolve())


def shared_mesh(config: str | os.PathLike[str] | Mapping[str, Any] | Mesh | None = None) -> Mesh:
    """The process-wide Mesh for ``config`` (a path, a dict, or a Mesh used as is).

    With no ``config``: the file named by ``$MODELMESH_CONFIG``, else ``./modelmesh.yaml``.
    """
    if isinstance(config, Mesh):
        return config
    if config is None:
        config = os.environ.get(ENV_VAR) or DEFAULT_CONFIG_PATH
        if not Path(config).exists():
            raise ConfigurationError(
                [
                    (
                        "",
                        f"no configuration: pass config=..., set {ENV_VAR}, "
                        f"or create ./{DEFAULT_CONFIG_PATH} (looked for {config})",
                    )
                ]
            )
    key = _key(config)
    with _LOCK:
        mesh = _MESHES.get(key)
        if mesh is None:
            mesh = _MESHES[key] = Mesh.from_config(config)
        return mesh


def mesh_for_pool(
    config: str | os.PathLike[str] | Mapping[str, Any] | Mesh | None, pool: str
) -> Mesh:
    """The shared Mesh for ``config``, after checking that it has ``pool``.

    What the adapters call at construction, so a wrong pool name fails at once, with a
    suggestion, rather than on the first request.
    """
    mesh = shared_mesh(config)
    mesh.pool(pool)
    return mesh


def forget_shared_meshes() -> None:
    """Close and forget every shared Mesh (for tests, or after editing a config file)."""
    with _LOCK:
        meshes = list(_MESHES.values())
        _MESHES.clear()
    for mesh in meshes:
        mesh.close()
