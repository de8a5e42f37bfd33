"""Pre-execution safety filter (altlas.md §5.2).

Advisory only: the sandbox (:mod:`.sandbox`) is the security boundary. A rejected program is not
executed, not fingerprinted and not learned from (w = 0).

Regex part: the reference list, with ``\\s*`` before ``(`` and ``\\b`` word boundaries.
AST part: reject ``Import``/``ImportFrom``, calls to the banned builtins, and attributes whose
name starts with ``__``; code that does not parse skips the AST part (it will fail in the sandbox
with a SyntaxError).

Choices made where the spec is silent:

* ``\\s*`` is also allowed before ``.`` in ``subprocess.``/``os.``/``sys.``, because decode puts
  a space before every token (``os . system`` would otherwise slip through).
* ``__import__`` keeps no word boundaries (it must not hide behind a prefix like ``x__import__``).
* A banned call is recognised both as a bare name (``open(...)``) and as an attribute
  (``builtins.open(...)``).
* Any exception from ``ast.parse`` (SyntaxError, ValueError for NUL bytes, RecursionError,
  MemoryError for absurd nesting) counts as "does not parse".
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = [
    "BANNED_CALLS",
    "UNSAFE_PATTERNS",
    "REFERENCE_PATTERNS",
    "SafetyResult",
    "check_safety",
    "is_safe",
]

REFERENCE_PATTERNS: tuple[str, ...] = (
    r"import\s+os",
    r"import\s+sys",
    r"import\s+subprocess",
    r"__import__",
    r"eval\(",
    r"exec\(",
    r"open\(",
    r"file\(",
    r"socket\(",
    r"subprocess\.",
    r"os\.",
    r"sys\.",
)
"""The reference (R1 = RH) regex list, kept for documentation and comparison tests."""

UNSAFE_PATTERNS: tuple[str, ...] = (
    r"\bimport\s+os\b",
    r"\bimport\s+sys\b",
    r"\bimport\s+subprocess\b",
    r"__import__",
    r"\beval\s*\(",
    r"\bexec\s*\(",
    r"\bopen\s*\(",
    r"\bfile\s*\(",
    r"\bsocket\s*\(",
    r"\bsubprocess\s*\.",
    r"\bos\s*\.",
    r"\bsys\s*\.",
)
_COMPILED = tuple(re.compile(p) for p in UNSAFE_PATTERNS)

BANNED_CALLS: frozenset[str] = frozenset(
    {
        "__import__",
        "eval",
        "exec",
        "compile",
        "open",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
    }
)


@dataclass(frozen=True)
class SafetyResult:
    """Verdict of the filter; ``reason`` names the first rule that fired."""

    safe: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.safe


def _regex_reason(code: str) -> str | None:
    for pattern, rx in zip(UNSAFE_PATTERNS, _COMPILED, strict=True):
        if rx.search(code):
            return f"regex {pattern}"
    return None


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _ast_reason(tree: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            return "ast import statement"
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            if name in BANNED_CALLS:
                return f"ast call to {name}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return f"ast dunder attribute {node.attr}"
    return None


def check_safety(code: str) -> SafetyResult:
    """Run the regex list, then (if the code parses) the AST check."""
    reason = _regex_reason(code)
    if reason is not None:
        return SafetyResult(False, reason)
    try:
        tree = ast.parse(code)
    except Exception:  # noqa: BLE001 - any parse failure means "skip the AST part"
        return SafetyResult(True)
    reason = _ast_reason(tree)
    return SafetyResult(reason is None, reason)


def is_safe(code: str) -> bool:
    """Boolean form of :func:`check_safety`."""
    return check_safety(code).safe
