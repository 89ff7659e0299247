"""Reading a configuration that may be hostile: files, YAML and the shape of the data.

Configuration is not an attack surface. Only a regular file of at most
``MAX_CONFIG_BYTES`` is read (a FIFO would block forever, ``/dev/zero`` never ends),
YAML is parsed with a safe loader that caps nesting and merge-key copying, and
:func:`check_shape` refuses a structure nested deeper than ``MAX_DEPTH``, one that
contains itself, or one that expands (YAML aliases, shared objects) to more than
``MAX_VALUES`` values, before anything walks it: loading stays linear in the size of
the file. Everything here raises :class:`~mesh_core._errors.ConfigurationError`.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

__all__ = ["MAX_CONFIG_BYTES", "MAX_DEPTH", "MAX_VALUES", "check_shape", "join_path", "read_yaml"]


MAX_CONFIG_BYTES = 1 << 20
"""The largest configuration file read (1 MiB); real ones are a few KiB."""
MAX_DEPTH = 64
"""The deepest nesting accepted; real configurations nest five or six levels."""
MAX_VALUES = 100_000
"""The most values (scalars, lists and mappings, aliases expanded) a configuration may
hold: a thousand models take about ten thousand."""

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_yaml(source: str | os.PathLike[str]) -> tuple[Any, str]:
    """The data in a YAML file and the file's name (ConfigurationError naming it)."""
    path = Path(source)
    return _parse_yaml(_read_text(path), str(path)), str(path)


def _read_text(path: Path) -> str:
    """The file's text, read only when it is a regular file of at most MAX_CONFIG_BYTES.

    Checked before opening (opening a FIFO blocks until a writer comes, reading
    ``/dev/zero`` never ends), again on the open descriptor (opened with O_NONBLOCK, so a
    file swapped for a FIFO in between cannot block either), and the read stops one byte
    past the cap whatever ``st_size`` said (``/proc`` files report 0).
    """
    where = str(path)

    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError([("", problem)], source=where)

    def refuse_special(mode: int) -> None:
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
            raise fail(f"not a regular file ({kind}): {where}")

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        refuse_special(os.stat(path).st_mode)
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except ConfigurationError:
        raise
    except FileNotFoundError:
        raise fail(f"file not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    chunks: list[bytes] = []
    size = 0
    try:
        info = os.fstat(fd)
        refuse_special(info.st_mode)
        if info.st_size <= MAX_CONFIG_BYTES:
            while size <= MAX_CONFIG_BYTES:
                chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        else:
            size = info.st_size
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise fail(
            f"file is larger than {MAX_CONFIG_BYTES >> 20} MiB ({MAX_CONFIG_BYTES} bytes), "
            f"the most a configuration may be: {where}"
        )
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (invalid byte at offset {exc.start})") from None


class _Refused(Exception):
    """Raised from inside the YAML loader: a limit was hit at ``mark``."""

    def __init__(self, mark: Any, problem: str) -> None:
        super().__init__(problem)
        self.mark = mark
        self.problem = problem


@functools.cache
def _loader() -> type:
    """PyYAML's SafeLoader (no tags that run code), made safe against hostile shapes.

    The composer recurses once per level, so ``[[[[...`` ten thousand deep would end in a
    RecursionError: nesting is capped while composing. Merge keys (``<<``) copy the
    merged pairs into every mapping that merges them, so a chain of them multiplies:
    the pairs copied are counted, and each mapping is flattened once. Aliases themselves
    are cheap here (a shared node is composed and constructed once); their expansion is
    what ``check_shape`` measures afterwards.
    """
    import yaml
    from yaml.nodes import MappingNode, SequenceNode

    merge_tag = "tag:yaml.org,2002:merge"

    class Loader(yaml.SafeLoader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._depth = 0
            self._merged = 0
            self._flat: set[int] = set()
            self._flattening: set[int] = set()

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH + 1:  # + 1: the document's root
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it unannotated
                    raise _Refused(mark, f"nested more than {MAX_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def flatten_mapping(self, node: Any) -> None:
            if id(node) in self._flat:
                return  # already flattened: no merge key is left in it
            if id(node) in self._flattening:
                raise _Refused(node.start_mark, "a merge key (<<) merges its own mapping")
            self._flattening.add(id(node))
            for key_node, value_node in node.value:
                if key_node.tag != merge_tag:
                    continue
                merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for sub in merged:
                    if isinstance(sub, MappingNode):
                        self.flatten_mapping(sub)  # first, so that its size is final
                        self._merged += len(sub.value)
                if self._merged > MAX_VALUES:
                    raise _Refused(
                        key_node.start_mark,
                        f"merge keys (<<) copy more than {MAX_VALUES} values",
                    )
            super().flatten_mapping(node)
            self._flattening.discard(id(node))
            self._flat.add(id(node))

    return Loader


def _parse_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader: no tag runs code
    except _Refused as exc:
        problem = f"line {exc.mark.line + 1}, column {exc.mark.column + 1}: {exc.problem}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        detail = getattr(exc, "problem", None) or str(exc).partition("\n")[0]
        problem = f"{at}invalid YAML: {detail}"
    except RecursionError:  # the caps above should make this unreachable
        problem = "invalid YAML: nested too deeply"
    except (ValueError, OverflowError) as exc:  # a scalar it cannot build: 10,000 digits...
        problem = f"invalid YAML: {str(exc)[:200]}"
    raise ConfigurationError([("", problem)], source=where)


def check_shape(data: Any, *, source: str | None = None) -> None:
    """Raise ConfigurationError when walking ``data`` would not end, or not end soon.

    That is: when it contains itself (a recursive YAML alias, a dict holding itself),
    nests deeper than MAX_DEPTH, or expands to more than MAX_VALUES values. The last
    is the "billion laughs": a few hundred bytes of YAML aliases, or one list used many
    times, that every later walk (``${VAR}`` substitution, validation, a JSON dump)
    would expand into billions of values. Shared subtrees are measured once (memoized
    by ``id``), so this costs what the distinct objects cost, however they expand.
    Called by ``load_config`` before anything else walks a configuration, and by the
    shared mesh cache before a dict configuration is used as its key.
    """
    sizes: dict[int, int] = {}
    walking: set[int] = set()
    loc: list[Any] = []
    shared = False

    def fail(at: list[Any], problem: str) -> ConfigurationError:
        return ConfigurationError([(join_path(tuple(at)), problem)], source=source)

    def measure(node: Any) -> int:
        nonlocal shared
        if isinstance(node, Mapping):
            children: Any = node.items()
        elif isinstance(node, (list, tuple)):
            children = enumerate(node)
        else:
            return 1
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            shared = True
            return known
        if key in walking:
            raise fail(loc, "refers to itself (a recursive YAML alias, or a dict holding itself)")
        if len(loc) >= MAX_DEPTH:
            raise fail(loc, f"nested more than {MAX_DEPTH} levels deep")
        walking.add(key)
        total = 1
        for name, child in children:
            loc.append(name)
            total += measure(child)
            loc.pop()
            if total > MAX_VALUES:
                hint = ""
                if shared:
                    hint = " (YAML aliases?)" if source else " (one list or dict used many times?)"
                raise fail(loc, f"configuration expands to more than {MAX_VALUES} values{hint}")
        walking.discard(key)
        sizes[key] = total
        return total

    measure(data)


def join_path(loc: tuple[Any, ...]) -> str:
    """A key path as the messages write it: ``pools.chat.models[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
