"""Task loading (altlas.md §5.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinframe.tasks.altlas.tasks import (
    Task,
    TaskError,
    TaskNotFoundError,
    list_tasks,
    load_task,
    load_task_bundle,
    task_from_dict,
)

EXPECTED = {
    "hello_world": "hello world",
    "benchmark_add_two_numbers": "8",
    "benchmark_concatenate_strings": "helloworld",
    "benchmark_basic_loop": "15",
    "benchmark_function_with_return": "15.0",
    "benchmark_list_operations": "8",
    "benchmark_conditional_check": "Greater",
    "benchmark_js_add_two_numbers": "8",
    "benchmark_js_basic_loop": "15",
    "benchmark_js_concatenate_strings": "helloworld",
    "benchmark_js_conditional_check": "Greater",
}


def test_bundle_contents() -> None:
    tasks = load_task_bundle()
    assert set(tasks) == set(EXPECTED) and list_tasks() == list(tasks)
    for name, task in tasks.items():
        assert task.expected_output == EXPECTED[name]
        assert task.is_python == (not name.startswith("benchmark_js_"))
    hw = tasks["hello_world"]
    assert not hw.success_criteria.case_sensitive and hw.constraints is None
    assert hw.success_criteria.valid_patterns == ()
    add = tasks["benchmark_add_two_numbers"]
    assert add.success_criteria.case_sensitive and not add.success_criteria.whitespace_sensitive
    assert add.constraints is not None
    assert add.constraints.required_operators == ("+",)
    assert add.constraints.required_numbers == (5, 3)
    assert add.constraints.max_tokens == 20 and add.constraints.required_keywords is None
    assert add.max_tokens is None  # no top-level max_tokens anywhere
    first = add.success_criteria.valid_patterns[0]
    assert first.pattern == "print(5+3)" and len(first.all_patterns()) == 4
    assert add.success_criteria.valid_patterns[1].pattern == "x=5\ny=3\nprint(x+y)"
    assert add.raw["provenance"].startswith("task/benchmarks/")
    hash(add)  # frozen and hashable


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_directory_layout_lookup(tmp_path: Path) -> None:
    data = {
        "name": "my_task",
        "description": "Print 8",
        "success_criteria": {"exact_output": "8"},
    }
    _write(tmp_path / "sub" / "deeper" / "my_task.json", data)
    task = load_task("my_task", task_dir=tmp_path)
    assert isinstance(task, Task) and task.expected_output == "8"
    assert task.target_language == "python" and task.success_criteria.case_sensitive
    # not in the directory: falls back to the bundle
    assert load_task("hello_world", task_dir=tmp_path).expected_output == "hello world"


def test_directory_errors(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "wrong.json", {"name": "other", "description": "d",
                                             "success_criteria": {}})  # fmt: skip
    with pytest.raises(TaskError, match="expected 'wrong'"):
        load_task("wrong", task_dir=tmp_path)
    _write(tmp_path / "b" / "incomplete.json", {"name": "incomplete", "description": "d"})
    with pytest.raises(TaskError, match="success_criteria"):
        load_task("incomplete", task_dir=tmp_path)
    for sub in ("c", "d"):
        _write(tmp_path / sub / "twice.json", {"name": "twice", "description": "d",
                                               "success_criteria": {}})  # fmt: skip
    with pytest.raises(TaskError, match="ambiguous"):
        load_task("twice", task_dir=tmp_path)
    with pytest.raises(TaskNotFoundError):
        load_task("no_such_task")
    with pytest.raises(TaskError):
        load_task("x", task_dir=tmp_path / "missing")


def test_synonyms_and_optional_fields() -> None:
    t = task_from_dict(
        {
            "name": "t",
            "description": "d",
            "success_criteria": {
                "exact_output": "a",
                "expected_output": "b",
                "required_structures": {"function": True, "class": False},
                "function_name": "f",
            },
            "max_tokens": 7,
        }
    )
    assert t.expected_output == "b"  # expected_output wins over exact_output
    assert t.success_criteria.required_structures == ("function",)
    assert t.success_criteria.function_name == "f" and t.max_tokens == 7
    no_key = task_from_dict({"name": "u", "description": "d", "success_criteria": {}})
    assert no_key.expected_output is None
    with pytest.raises(TaskError):
        task_from_dict({"name": "v", "description": "d",
                        "success_criteria": {"valid_patterns": [{"pattern": 5}]}})  # fmt: skip
