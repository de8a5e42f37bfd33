"""Scorers (altlas.md §5.5): test vectors and the end-to-end scripted-policy check of altlas.md
§5.1."""

from __future__ import annotations

import pytest

from twinframe.tasks.altlas.safety import is_safe
from twinframe.tasks.altlas.sandbox import ExecutionResult, Executor
from twinframe.tasks.altlas.scorers import (
    EXECUTION_SCORES,
    feedback_class,
    get_scorer,
    score_exact,
    score_shaped,
    shaped_breakdown,
)
from twinframe.tasks.altlas.tasks import load_task, task_from_dict
from twinframe.tasks.altlas.vocab import Tokenizer

ADD, HELLO, AVG = "benchmark_add_two_numbers", "hello_world", "benchmark_function_with_return"


def res(status: str, stdout: str = "", stderr: str = "") -> ExecutionResult:
    code = {"success": 0, "error": 1, "timeout": -1}[status]
    return ExecutionResult(status, stdout, stderr, code, 0.01, None, False)  # type: ignore[arg-type]


def tb(exc: str) -> str:
    return f'Traceback (most recent call last):\n  File "prog.py", line 1\n{exc}: boom\n'


# task, code, result, exact, shaped, (syn, exec, out, struct, cons, sem)  -- altlas.md §5.5 table
VECTORS = [
    (ADD, "print ( 8 )", res("success", "8\n"), 1.0, 1.0, None),
    (ADD, "print ( 7 )", res("success", "7\n"), 0.1, 0.3271, (0.25, 0.8, 0.1, 0.5478, 0.05, 0)),
    (ADD, "print ( 5 + 3", res("error", stderr=tb("SyntaxError")), 0.1, 0.2225,
     (0.05, 0.05, 0.1, 0.64, 0.15, 0)),
    (ADD, "var_a = 5 + 3", res("success"), 0.1, 0.2555, (0.25, 0.5, 0.1, 0.44, 0.15, 0)),
    (ADD, "print ( var_a )", res("error", stderr=tb("NameError")), 0.1, 0.2116,
     (0.25, 0.15, 0.1, 0.4963, 0.05, 0)),
    (ADD, "print ( 1 / 0 )", res("error", stderr=tb("ZeroDivisionError")), 0.1, 0.2341,
     (0.25, 0.3, 0.1, 0.4963, 0.05, 0)),
    (ADD, "print(5+3)", res("success", "8\n"), 1.0, 1.0, None),
    (HELLO, 'print ( "hello" )', res("success", "hello\n"), 0.6, 0.3375,
     (0.25, 0.8, 0.4, 0, 0, 0.05)),
    (AVG, "print ( 3 * 5 )", res("success", "15\n"), 0.6333, 0.3984,
     (0.25, 0.8, 0.4, 0.3045, 0.05, 0)),
    (ADD, "print ( 8 , 8 )", res("success", "8 8\n"), 0.5, 0.3568,
     (0.25, 0.8, 0.2, 0.4963, 0.05, 0)),
    (ADD, "", res("success"), 0.1, 0.1975, (0.25, 0.5, 0.1, 0.2, 0.05, 0)),
]  # fmt: skip


@pytest.mark.parametrize(("task", "code", "result", "exact", "shaped", "comps"), VECTORS)
def test_spec_vectors(task, code, result, exact, shaped, comps) -> None:  # noqa: ANN001
    t = load_task(task)
    assert score_exact(code, result, t) == pytest.approx(exact, abs=5e-5)
    b = shaped_breakdown(code, result, t)
    assert b.score == pytest.approx(shaped, abs=5e-5)
    assert score_shaped(code, result, t) == b.score
    if comps is not None:
        assert b.components() == pytest.approx(comps, abs=5e-5)


def test_struct_reaches_0_9_only_for_exact_pattern() -> None:
    b = shaped_breakdown("print(5+3)", res("success", "8"), load_task(ADD))
    assert b.structural == 0.9 and b.constraints == pytest.approx(0.15)


def test_exact_rules() -> None:
    add, hello = load_task(ADD), load_task(HELLO)
    assert score_exact("", res("timeout"), add) == 0.0
    assert score_exact("", res("error"), add) == 0.1
    assert score_exact("", res("success", "  HELLO world \n"), hello) == 1.0  # case-insensitive
    assert score_exact("", res("success", "8 "), add) == 1.0
    assert score_exact("", res("success", ""), add) == 0.1
    no_key = task_from_dict({"name": "f", "description": "d",
                             "success_criteria": {"type": "function_name"}})  # fmt: skip
    assert score_exact("", res("success", "x"), no_key) == 0.05
    empty = task_from_dict({"name": "e", "description": "d",
                            "success_criteria": {"expected_output": ""}})  # fmt: skip
    assert score_exact("", res("success", "\n"), empty) == 1.0


def test_feedback_classes_and_timeout_weights() -> None:
    assert feedback_class(res("success", "x")) == "execution_success"
    assert feedback_class(res("success", " \n")) == "execution_success_no_output"
    assert feedback_class(res("timeout")) == "execution_timeout"
    assert feedback_class(res("error", stderr="indentationerror: x")) == "syntax_error"
    assert feedback_class(res("error", stderr=tb("ModuleNotFoundError"))) == "import_error"
    assert feedback_class(res("error", stderr=tb("SandboxViolation"))) == "generic_error"
    assert feedback_class(res("error", stderr="")) == "generic_error"
    assert set(EXECUTION_SCORES) >= {feedback_class(res("timeout"))}
    b = shaped_breakdown("while True :\n    pass", res("timeout"), load_task(ADD))
    # base weights: 0.10 syn + 0.20 exec + 0.35 out + 0.15 struct + 0.10 cons + 0.10 sem
    expected = 0.1 * 0.25 + 0.2 * 0.05 + 0.35 * 0.1 + 0.15 * b.structural + 0.1 * 0.05 + 0.1 * 0.05
    assert b.score == pytest.approx(max(0.05, expected))


def test_semantic_and_constraints_components() -> None:
    loop = load_task("benchmark_basic_loop")
    code = "for var_a in [ 1 , 5 ] :\n    print ( var_a )"
    b = shaped_breakdown(code, res("success", "1\n5\n"), loop)
    assert b.constraints == pytest.approx(0.15)  # keywords for/in, numbers 1/5, max_tokens
    assert b.semantic == pytest.approx(0.1)  # description word "print" + a For node
    criteria = {
        "expected_output": "1",
        "function_name": "f",
        "required_structures": ["function", "control_flow"],
    }
    t = task_from_dict({"name": "s", "description": "print print numbers",
                        "success_criteria": criteria})  # fmt: skip
    b = shaped_breakdown("def f ( ) :\n    print ( 1 )", res("success", "1"), t)
    assert b.semantic == pytest.approx(min(0.5, 0.1 + 0.2 + 0.1))


def test_get_scorer() -> None:
    assert get_scorer("exact") is score_exact and get_scorer(" Shaped ") is score_shaped
    with pytest.raises(ValueError):
        get_scorer("llm")


# ------------------------------------------------------------------------------------------
# end to end: scripted shortest solutions (altlas.md §5.1 table) -> decode -> sandbox -> 1.0 under
# both
# ------------------------------------------------------------------------------------------

SOLUTIONS = [
    ("v1_63", "hello_world", 'print ( "hello" , "world" )', 6),
    ("v1_63", ADD, "print ( 8 )", 4),
    ("v1_63", ADD, "print ( 5 + 3 )", 6),
    ("v1_63", "benchmark_concatenate_strings", 'print ( "hello" "world" )', 5),
    ("v1_63", "benchmark_concatenate_strings", 'print ( "hello" + "world" )', 6),
    ("v1_63", "benchmark_basic_loop", "print ( 9 + 6 )", 6),
    ("v1_63", AVG, "print ( 3 * 5 / 1 )", 8),
    ("v1_63", "benchmark_list_operations", "print ( 8 )", 4),
    ("abstract_53", ADD, "OUTPUT_OP ( 8 )", 4),
    ("abstract_53", "benchmark_basic_loop", "OUTPUT_OP ( 9 + 6 )", 6),
    ("abstract_53", AVG, "OUTPUT_OP ( 3 * 5 / 1 )", 8),
    ("abstract_53", "benchmark_list_operations", "OUTPUT_OP ( 8 )", 4),
]


@pytest.mark.parametrize("indent_mode", ["structural", "literal"])
def test_scripted_solutions_score_one(indent_mode: str) -> None:
    episodes = []
    for vocab, task_name, tokens, n in SOLUTIONS:
        tok = Tokenizer(vocab, indent_mode=indent_mode)  # type: ignore[arg-type]
        ids = [tok.vocab.token_to_id[t] for t in tokens.split(" ")]
        assert len(ids) == n
        code = tok.decode([*ids, tok.eos_id])  # the policy emits EOS last
        assert "OUTPUT_OP" not in code and is_safe(code)
        episodes.append((load_task(task_name), code))
    with Executor(timeout=5.0, workers=2) as ex:
        results = ex.run_many([code for _, code in episodes])
    for (task, code), result in zip(episodes, results, strict=True):
        assert result.status == "success", (code, result)
        assert score_exact(code, result, task) == 1.0, (task.name, code, result.stdout)
        assert score_shaped(code, result, task) == 1.0, (task.name, code, result.stdout)


def _semantic_task(language: str, structures: list[str] | None = None):  # noqa: ANN202
    """A task whose description words never occur in the test programs."""
    criteria = {"expected_output": "1"}
    if structures is not None:
        criteria["required_structures"] = structures  # type: ignore[assignment]
    return task_from_dict({"name": "s", "description": "zzz qqq", "target_language": language,
                           "success_criteria": criteria})  # fmt: skip


def test_semantic_tree_part_is_python_only() -> None:
    """altlas.md §5.5: def/if/for/while score only when the task's target language is Python."""
    code = "def f ( ) :\n    for x in y :\n        if x :\n            while x :\n" \
           "                pass"
    assert shaped_breakdown(code, res("success", "1"), _semantic_task("python")).semantic == \
        pytest.approx(0.1)  # function + control flow, 0.05 each
    for structures in (None, ["function", "control_flow"]):
        b = shaped_breakdown(code, res("success", "1"), _semantic_task("javascript", structures))
        assert b.semantic == 0.0 and b.syntax == 0.1


@pytest.mark.parametrize("code", [
    "async def f ( ) :\n    pass",
    "async def f ( ) :\n    async for x in y :\n        pass",
    "with a :\n    try :\n        pass\n    except E :\n        pass",
    "x = [ i for i in y if i ]",  # a comprehension is not a For/If statement
])  # fmt: skip
def test_semantic_counts_only_def_class_if_for_while(code: str) -> None:
    """Async forms (AsyncFunctionDef, AsyncFor) and other nodes earn nothing."""
    for structures in (None, ["function", "class", "control_flow"]):
        b = shaped_breakdown(code, res("success", "1"), _semantic_task("python", structures))
        assert b.syntax == 0.25 and b.semantic == 0.0, structures
