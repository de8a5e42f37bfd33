"""AltLAS task definitions (altlas.md §5.1).

Sources: the bundled ``data/altlas_tasks.json`` (format ``altlas-tasks/1``, lookup by ``name``)
and, optionally, a directory in the reference layout (``<name>.json`` found recursively).

Choices made where the spec is silent:

* A directory is searched first when given; a task not found there falls back to the bundle.
  More than one ``<name>.json`` under the directory is an error (ambiguous).
* Pattern lists (``pattern``/``variations`` given as a list of lines) are stored joined with
  ``"\\n"``, which is how the shaped scorer compares them (altlas.md §5.5).
* ``required_structures`` may be a list of names (``function``, ``class``, ``control_flow``) or a
  mapping name -> bool (the truthy keys are kept); no published task uses it.
* ``constraints`` keys that are absent stay ``None`` (the shaped scorer scores only keys that are
  present); ``required_numbers`` keep their JSON type (``str(n)`` is what is matched).
* ``case_sensitive`` defaults to ``True`` and ``whitespace_sensitive`` to ``False`` (altlas.md
  §5.1).
* The raw JSON object is kept (read-only copy) in ``Task.raw`` for round-tripping.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from twinframe.errors import TwinframeError

logger = logging.getLogger(__name__)

__all__ = [
    "TASK_BUNDLE_FORMAT",
    "Constraints",
    "SuccessCriteria",
    "Task",
    "TaskError",
    "TaskNotFoundError",
    "ValidPattern",
    "list_tasks",
    "load_task",
    "load_task_bundle",
    "task_from_dict",
]

TASK_BUNDLE_FORMAT = "altlas-tasks/1"
_BUNDLE_FILE = "altlas_tasks.json"
_REQUIRED_FIELDS = ("name", "description", "success_criteria")


class TaskError(TwinframeError, ValueError):
    """A task definition is malformed or inconsistent."""


class TaskNotFoundError(TwinframeError, LookupError):
    """No task of the requested name exists in the searched sources."""


def _join_lines(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise TaskError(f"{where}: pattern must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True)
class ValidPattern:
    """One entry of ``valid_patterns``; list-of-lines patterns are joined with newlines."""

    type: str
    pattern: str
    variations: tuple[str, ...] = ()

    def all_patterns(self) -> tuple[str, ...]:
        """The pattern followed by its variations."""
        return (self.pattern, *self.variations)


@dataclass(frozen=True)
class SuccessCriteria:
    """``success_criteria`` of a task (``exact_output``/``expected_output`` are synonyms)."""

    type: str = "exact_output"
    expected_output: str | None = None
    valid_patterns: tuple[ValidPattern, ...] = ()
    case_sensitive: bool = True
    whitespace_sensitive: bool = False
    structure_patterns: tuple[str, ...] = ()
    function_name: str | None = None
    class_name: str | None = None
    required_structures: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Constraints:
    """``constraints`` of a task; ``None`` means the key is absent."""

    required_operators: tuple[str, ...] | None = None
    required_numbers: tuple[int | float | str, ...] | None = None
    required_strings: tuple[str, ...] | None = None
    required_keywords: tuple[str, ...] | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Task:
    """One AltLAS task."""

    name: str
    description: str
    success_criteria: SuccessCriteria
    target_language: str = "python"
    constraints: Constraints | None = None
    difficulty: str | None = None
    max_tokens: int | None = None  # top-level field: kept, unused (altlas.md §5.1)
    provenance: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def expected_output(self) -> str | None:
        """Expected stdout (``expected_output``, else ``exact_output``), or ``None``."""
        return self.success_criteria.expected_output

    @property
    def is_python(self) -> bool:
        """True when the sandbox can run this task's programs."""
        return self.target_language == "python"


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _str_tuple(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _parse_patterns(items: Any, where: str) -> tuple[ValidPattern, ...]:
    if not isinstance(items, list):
        raise TaskError(f"{where} must be a list")
    out = []
    for k, item in enumerate(items):
        if not isinstance(item, Mapping) or "pattern" not in item:
            raise TaskError(f"{where}[{k}] needs a 'pattern'")
        variations = item.get("variations", [])
        if not isinstance(variations, list):
            raise TaskError(f"{where}[{k}].variations must be a list")
        out.append(
            ValidPattern(
                type=str(item.get("type", "")),
                pattern=_join_lines(item["pattern"], f"{where}[{k}].pattern"),
                variations=tuple(
                    _join_lines(v, f"{where}[{k}].variations[{j}]")
                    for j, v in enumerate(variations)
                ),
            )
        )
    return tuple(out)


def _parse_required_structures(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return tuple(str(k) for k, v in value.items() if v)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise TaskError(f"required_structures must be a list or an object, got {value!r}")


def _parse_criteria(sc: Any, where: str) -> SuccessCriteria:
    if not isinstance(sc, Mapping):
        raise TaskError(f"{where}: success_criteria must be an object")
    expected = sc.get("expected_output", sc.get("exact_output"))
    if expected is not None and not isinstance(expected, str):
        expected = str(expected)
    return SuccessCriteria(
        type=str(sc.get("type", "exact_output")),
        expected_output=expected,
        valid_patterns=_parse_patterns(sc.get("valid_patterns", []), f"{where}.valid_patterns"),
        case_sensitive=bool(sc.get("case_sensitive", True)),
        whitespace_sensitive=bool(sc.get("whitespace_sensitive", False)),
        structure_patterns=_str_tuple(
            sc.get("structure_patterns", []), f"{where}.structure_patterns"
        ),
        function_name=sc.get("function_name"),
        class_name=sc.get("class_name"),
        required_structures=_parse_required_structures(sc.get("required_structures")),
    )


def _parse_constraints(c: Any, where: str) -> Constraints | None:
    if c is None:
        return None
    if not isinstance(c, Mapping):
        raise TaskError(f"{where}: constraints must be an object")

    def opt(key: str) -> tuple[str, ...] | None:
        return None if key not in c else _str_tuple(c[key], f"{where}.constraints.{key}")

    numbers = c.get("required_numbers")
    if numbers is not None and not isinstance(numbers, list):
        raise TaskError(f"{where}.constraints.required_numbers must be a list")
    max_tokens = c.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise TaskError(f"{where}.constraints.max_tokens must be an integer")
    return Constraints(
        required_operators=opt("required_operators"),
        required_numbers=None if numbers is None else tuple(numbers),
        required_strings=opt("required_strings"),
        required_keywords=opt("required_keywords"),
        max_tokens=max_tokens,
    )


def _freeze(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def task_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Task:
    """Validate and convert one task JSON object."""
    if not isinstance(data, Mapping):
        raise TaskError(f"{source}: a task must be a JSON object")
    missing = [k for k in _REQUIRED_FIELDS if k not in data]
    if missing:
        raise TaskError(f"{source}: missing required field(s) {missing}")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise TaskError(f"{source}: name must be a non-empty string")
    where = f"{source}:{name}"
    return Task(
        name=name,
        description=str(data["description"]),
        success_criteria=_parse_criteria(data["success_criteria"], where),
        target_language=str(data.get("target_language", "python")),
        constraints=_parse_constraints(data.get("constraints"), where),
        difficulty=data.get("difficulty"),
        max_tokens=data.get("max_tokens"),
        provenance=data.get("provenance"),
        raw=_freeze(copy.deepcopy(dict(data))),
    )


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _bundle_source(path: str | Path | None) -> Any:
    if path is not None:
        return Path(path)
    return resources.files("twinframe.tasks.altlas").joinpath("data").joinpath(_BUNDLE_FILE)


def load_task_bundle(path: str | Path | None = None) -> dict[str, Task]:
    """All tasks of a bundle (default: the packaged copy), keyed by name, in file order."""
    src = _bundle_source(path)
    data = json.loads(src.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or data.get("format") != TASK_BUNDLE_FORMAT:
        raise TaskError(f"{src}: not an {TASK_BUNDLE_FORMAT} bundle")
    tasks: dict[str, Task] = {}
    for k, entry in enumerate(data.get("tasks", [])):
        task = task_from_dict(entry, f"{src}[{k}]")
        if task.name in tasks:
            raise TaskError(f"{src}: duplicate task name {task.name!r}")
        tasks[task.name] = task
    return tasks


def list_tasks(bundle_path: str | Path | None = None) -> list[str]:
    """Names of the bundled tasks."""
    return list(load_task_bundle(bundle_path))


def _find_in_directory(name: str, task_dir: Path) -> Path | None:
    if not task_dir.is_dir():
        raise TaskError(f"task directory {task_dir} does not exist")
    hits = sorted(p for p in task_dir.rglob(f"{name}.json") if p.is_file())
    if len(hits) > 1:
        raise TaskError(f"task {name!r} is ambiguous in {task_dir}: {[str(h) for h in hits]}")
    return hits[0] if hits else None


def _load_task_file(name: str, path: Path) -> Task:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path}: invalid JSON ({exc})") from exc
    task = task_from_dict(data, str(path))
    if task.name != name:
        raise TaskError(f"{path}: file defines task {task.name!r}, expected {name!r}")
    return task


def load_task(
    name: str,
    task_dir: str | Path | None = None,
    bundle_path: str | Path | None = None,
) -> Task:
    """Load task ``name`` from ``task_dir`` (if given and found there), else from the bundle."""
    if task_dir is not None:
        path = _find_in_directory(name, Path(task_dir))
        if path is not None:
            return _load_task_file(name, path)
        logger.info("task %s not found under %s; using the bundle", name, task_dir)
    tasks = load_task_bundle(bundle_path)
    if name not in tasks:
        raise TaskNotFoundError(f"unknown task {name!r}; known: {sorted(tasks)}")
    task = tasks[name]
    if not task.is_python:
        logger.info("task %s targets %s (not runnable in the sandbox)", name, task.target_language)
    return task
