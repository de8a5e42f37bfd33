"""AltLAS tasks: vocabularies and tokenizer, task definitions, safety filter, sandbox, scorers.

altlas.md §1 and §5. Framework-independent (imports neither torch nor jax); the data files
``data/altlas_vocab.json`` and ``data/altlas_tasks.json`` ship as package data.
"""

from .fingerprint import DuplicatePolicy, DuplicateTracker, fingerprint, normalise_for_fingerprint
from .safety import SafetyResult, check_safety, is_safe
from .sandbox import (
    ExecutionResult,
    Executor,
    Result,
    SandboxLimits,
    SandboxUnavailable,
    code_sha256,
    run_program,
    sandbox_status,
)
from .scorers import (
    SCORERS,
    ShapedBreakdown,
    feedback_class,
    get_scorer,
    score_exact,
    score_shaped,
    shaped_breakdown,
)
from .tasks import (
    Constraints,
    SuccessCriteria,
    Task,
    TaskError,
    TaskNotFoundError,
    ValidPattern,
    list_tasks,
    load_task,
    load_task_bundle,
    task_from_dict,
)
from .vocab import (
    NEWLINE_TOKEN,
    SPECIAL_TOKENS,
    VOCAB_NAMES,
    Tokenizer,
    Vocab,
    VocabError,
    load_vocab,
    load_vocab_bundle,
    normalise_text,
    vocab_from_mapping,
    vocab_sha256,
)

__all__ = [
    "NEWLINE_TOKEN",
    "SCORERS",
    "SPECIAL_TOKENS",
    "VOCAB_NAMES",
    "Constraints",
    "DuplicatePolicy",
    "DuplicateTracker",
    "ExecutionResult",
    "Executor",
    "Result",
    "SafetyResult",
    "SandboxLimits",
    "SandboxUnavailable",
    "ShapedBreakdown",
    "SuccessCriteria",
    "Task",
    "TaskError",
    "TaskNotFoundError",
    "Tokenizer",
    "ValidPattern",
    "Vocab",
    "VocabError",
    "check_safety",
    "code_sha256",
    "feedback_class",
    "fingerprint",
    "get_scorer",
    "is_safe",
    "list_tasks",
    "load_task",
    "load_task_bundle",
    "load_vocab",
    "load_vocab_bundle",
    "normalise_for_fingerprint",
    "normalise_text",
    "run_program",
    "sandbox_status",
    "score_exact",
    "score_shaped",
    "shaped_breakdown",
    "task_from_dict",
    "vocab_from_mapping",
    "vocab_sha256",
]
