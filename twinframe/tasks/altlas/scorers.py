"""Host-side scorers (altlas.md §5.5): ``exact`` (R1, default) and ``shaped`` (RH).

Both map (code, execution result, task) to a reward in [0, 1]. They read the expected stdout
from ``expected_output``, else ``exact_output`` (:attr:`Task.expected_output`), whatever
``success_criteria.type`` says.

Choices made where the spec is silent:

* ``exact``: the "no expected output key" rule (0.05) is checked after the status rules, in the
  table's order (timeout 0.0, error 0.1, no key 0.05, then the comparisons).
* ``shaped``: ``SequenceMatcher(None, a, b)`` takes the actual text first, the expected/pattern
  text second (the table's order; the spec's test vectors hold with it).
* ``shaped``/syntax: a task whose language is not Python gets 0.1 without parsing.
* ``shaped``/semantic: the syntax-tree part applies only to Python tasks whose code parses, and
  counts only ``ast.FunctionDef``, ``ast.ClassDef`` and ``ast.If``/``ast.For``/``ast.While``
  (never the async forms ``AsyncFunctionDef``/``AsyncFor``, nor any other node).
  ``required_structures`` names ``function``, ``class``, ``control_flow``; other names never
  count.
* ``shaped``/output: the actual and expected text are stripped and, when not case-sensitive,
  lower-cased before comparison (ours; RH ignored the flag).
* ``ast.parse`` failures of any kind (SyntaxError, ValueError for NUL bytes, RecursionError,
  MemoryError) count as "does not parse".
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Protocol

from .tasks import Task

__all__ = [
    "EXECUTION_SCORES",
    "SCORERS",
    "ExecutionLike",
    "ShapedBreakdown",
    "feedback_class",
    "get_scorer",
    "score_exact",
    "score_shaped",
    "shaped_breakdown",
]


class ExecutionLike(Protocol):
    """What the scorers read from an execution result (e.g. ``sandbox.ExecutionResult``)."""

    @property
    def status(self) -> str: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


Scorer = Callable[[str, ExecutionLike, Task], float]


def _ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b).ratio()


# --------------------------------------------------------------------------------------------
# exact
# --------------------------------------------------------------------------------------------


def score_exact(code: str, result: ExecutionLike, task: Task) -> float:
    """R1 exact-output scorer (``code`` is unused; same signature as ``score_shaped``)."""
    del code
    if result.status == "timeout":
        return 0.0
    if result.status == "error":
        return 0.1
    expected = task.expected_output
    if expected is None:
        return 0.05
    a, e = result.stdout.strip(), expected.strip()
    if not task.success_criteria.case_sensitive:
        a, e = a.lower(), e.lower()
    if a == e:
        return 1.0
    if not a or not e:
        return 0.1
    return 0.1 + 0.8 * _ratio(a, e)


# --------------------------------------------------------------------------------------------
# shaped
# --------------------------------------------------------------------------------------------

_ERROR_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("syntax_error", ("SyntaxError", "IndentationError", "TabError")),
    ("name_error", ("NameError",)),
    ("type_error", ("TypeError",)),
    ("value_error", ("ValueError",)),
    ("index_error", ("IndexError",)),
    ("key_error", ("KeyError",)),
    ("attribute_error", ("AttributeError",)),
    ("import_error", ("ImportError", "ModuleNotFoundError")),
    ("zero_division_error", ("ZeroDivisionError",)),
    ("assertion_error", ("AssertionError",)),
)

EXECUTION_SCORES: dict[str, float] = {
    "execution_success": 0.8,
    "execution_success_no_output": 0.5,
    "syntax_error": 0.05,
    "name_error": 0.15,
    "type_error": 0.2,
    "value_error": 0.2,
    "index_error": 0.25,
    "key_error": 0.25,
    "attribute_error": 0.2,
    "import_error": 0.15,
    "zero_division_error": 0.3,
    "assertion_error": 0.4,
    "execution_timeout": 0.05,
    "generic_error": 0.15,
}

_COMPONENTS = ("syntax", "execution", "output", "structural", "constraints", "semantic")
_WEIGHTS_BASE = (0.10, 0.20, 0.35, 0.15, 0.10, 0.10)
_WEIGHTS_SUCCESS = (0.05, 0.20, 0.40, 0.20, 0.10, 0.10)
_WEIGHTS_ERROR = (0.10, 0.15, 0.35, 0.25, 0.10, 0.20)

_STOPWORDS = frozenset(
    {"the", "and", "for", "that", "with", "this", "from", "task", "generate", "code", "create",
     "write", "benchmark"}
)  # fmt: skip
_WORD = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b")


@dataclass(frozen=True)
class ShapedBreakdown:
    """Components of the shaped score and the final value."""

    feedback_class: str
    syntax: float
    execution: float
    output: float
    structural: float
    constraints: float
    semantic: float
    score: float

    def components(self) -> tuple[float, ...]:
        """(syntax, execution, output, structural, constraints, semantic)."""
        return tuple(getattr(self, name) for name in _COMPONENTS)


def feedback_class(result: ExecutionLike) -> str:
    """RH feedback class; errors are classified from stderr (case-insensitive)."""
    if result.status == "success":
        return "execution_success" if result.stdout.strip() else "execution_success_no_output"
    if result.status == "timeout":
        return "execution_timeout"
    stderr = result.stderr.lower()
    for name, needles in _ERROR_CLASSES:
        if any(n.lower() in stderr for n in needles):
            return name
    return "generic_error"


def _parse(code: str) -> ast.AST | None:
    try:
        return ast.parse(code)
    except Exception:  # noqa: BLE001 - any failure means "does not parse"
        return None


def _syntax_score(tree: ast.AST | None, task: Task) -> float:
    if not task.is_python:
        return 0.1
    return 0.25 if tree is not None else 0.05


def _output_score(result: ExecutionLike, task: Task) -> float:
    expected = task.expected_output
    if expected is None or not expected.strip():
        return 0.0
    a, e = result.stdout.strip(), expected.strip()
    if not task.success_criteria.case_sensitive:
        a, e = a.lower(), e.lower()
    if a == e:
        return 1.0
    r = _ratio(a, e)
    for threshold, score in ((0.9, 0.9), (0.8, 0.7), (0.6, 0.4), (0.4, 0.2)):
        if r > threshold:
            return score
    return 0.1


def _normalise_structure(text: str, case_sensitive: bool, whitespace_sensitive: bool) -> str:
    text = text.strip()
    if not case_sensitive:
        text = text.lower()
    if not whitespace_sensitive:
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return text


def _regex_matches(pattern: str, code: str) -> bool:
    try:
        return re.search(pattern, code, re.MULTILINE) is not None
    except re.error:
        return False


def _structural_score(code: str, task: Task) -> float:
    sc = task.success_criteria
    if not sc.valid_patterns:
        return 0.0
    norm = _normalise_structure(code, sc.case_sensitive, sc.whitespace_sensitive)
    patterns = [
        _normalise_structure(p, sc.case_sensitive, sc.whitespace_sensitive)
        for vp in sc.valid_patterns
        for p in vp.all_patterns()
    ]
    if norm in patterns:
        return 0.9
    best = max(_ratio(norm, p) for p in patterns)
    bonus = 0.2 if any(_regex_matches(p, code) for p in sc.structure_patterns) else 0.0
    return min(0.9, 0.2 + 0.5 * best + bonus)


def _constraints_score(code: str, task: Task) -> float:
    c = task.constraints
    if c is None:
        return 0.0
    score = 0.0
    if c.required_operators is not None and all(op in code for op in c.required_operators):
        score += 0.05
    if c.required_numbers is not None and all(str(n) in code for n in c.required_numbers):
        score += 0.05
    if c.required_keywords is not None and all(k in code for k in c.required_keywords):
        score += 0.05
    if c.max_tokens is not None and len(code.split()) <= c.max_tokens:
        score += 0.05
    return score


def _description_words(description: str) -> list[str]:
    return [w for w in _WORD.findall(description) if len(w) > 2 and w.lower() not in _STOPWORDS]


# The syntax-tree structures of the semantic component (altlas.md §5.5); async forms deliberately
# absent.
_STRUCTURES: dict[str, tuple[type[ast.AST], ...]] = {
    "function": (ast.FunctionDef,),
    "class": (ast.ClassDef,),
    "control_flow": (ast.If, ast.For, ast.While),
}


def _structures_found(tree: ast.AST) -> dict[str, bool]:
    """{structure name: whether the tree holds one of its node types}."""
    nodes = list(ast.walk(tree))
    return {name: any(isinstance(n, kinds) for n in nodes) for name, kinds in _STRUCTURES.items()}


def _semantic_score(code: str, tree: ast.AST | None, task: Task) -> float:
    sc = task.success_criteria
    count = sum(1 for w in _description_words(task.description) if w in code)
    score = min(0.2, 0.05 * count)
    if sc.function_name and f"def {sc.function_name}" in code:
        score += 0.2
    if sc.class_name and f"class {sc.class_name}" in code:
        score += 0.2
    if task.is_python and tree is not None:  # the syntax-tree part (altlas.md §5.5)
        found = _structures_found(tree)
        if sc.required_structures is not None:
            score += 0.1 * sum(1 for name in sc.required_structures if found.get(name, False))
        else:
            score += 0.05 * sum(found.values())
    return min(score, 0.5)


def _weights(fb_class: str) -> tuple[float, ...]:
    if fb_class.startswith("execution_success"):
        return _WEIGHTS_SUCCESS
    if "error" in fb_class:
        return _WEIGHTS_ERROR
    return _WEIGHTS_BASE


def shaped_breakdown(code: str, result: ExecutionLike, task: Task) -> ShapedBreakdown:
    """All shaped components and the final score."""
    fb = feedback_class(result)
    tree = _parse(code) if task.is_python else None  # no syntax tree for other languages
    comps = (
        _syntax_score(tree, task),
        EXECUTION_SCORES[fb],
        _output_score(result, task),
        _structural_score(code, task),
        _constraints_score(code, task),
        _semantic_score(code, tree, task),
    )
    if result.status == "success" and comps[2] > 0.9:
        final = 1.0
    else:
        final = max(0.05, sum(w * s for w, s in zip(_weights(fb), comps, strict=True)))
        if final > 0.4:
            final = min(1.0, 0.4 + 1.2 * (final - 0.4))
    return ShapedBreakdown(fb, *comps, score=final)


def score_shaped(code: str, result: ExecutionLike, task: Task) -> float:
    """RH shaped scorer (altlas.md §5.5)."""
    return shaped_breakdown(code, result, task).score


SCORERS: dict[str, Scorer] = {"exact": score_exact, "shaped": score_shaped}


def get_scorer(name: str) -> Scorer:
    """Scorer by config name (``Scorer.Scorer``: ``exact`` or ``shaped``)."""
    key = name.strip().lower()
    if key not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(SCORERS)}")
    return SCORERS[key]
