"""Safety filter (altlas.md §5.2) and fingerprints / duplicate tracking (altlas.md §5.4)."""

from __future__ import annotations

import hashlib
import re

import pytest

from twinframe.tasks.altlas.fingerprint import (
    DuplicatePolicy,
    DuplicateTracker,
    fingerprint,
    normalise_for_fingerprint,
)
from twinframe.tasks.altlas.safety import REFERENCE_PATTERNS, check_safety, is_safe
from twinframe.tasks.altlas.vocab import Tokenizer


@pytest.mark.parametrize(
    "code",
    [
        "import os",
        "import  sys",
        "import subprocess",
        "x = __import__ ( 'os' )",
        "eval ( '1' )",
        "exec('1')",
        "open ( 'f' )",
        "file ( 'f' )",
        "socket ( )",
        "subprocess . run",
        "os.system('x')",
        "os . system ( 'x' )",
        "sys . exit ( )",
        "print(builtins.open('f'))",
    ],
)
def test_regex_rejects(code: str) -> None:
    result = check_safety(code)
    assert not result.safe and not result and result.reason.startswith("regex")


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("from math import sqrt", "import"),
        ("import math", "import"),
        ("compile ( 'x' , 'f' , 'exec' )", "compile"),
        ("input ( )", "input"),
        ("breakpoint ( )", "breakpoint"),
        ("globals ( )", "globals"),
        ("locals()", "locals"),
        ("vars ( )", "vars"),
        ("getattr ( 1 , 'real' )", "getattr"),
        ("setattr ( var_a , 'x' , 1 )", "setattr"),
        ("delattr ( var_a , 'x' )", "delattr"),
        ("x = ( ) . __class__", "__class__"),
        ("print ( var_a . __dict__ )", "__dict__"),
    ],
)
def test_ast_rejects(code: str, what: str) -> None:
    result = check_safety(code)
    assert not result.safe and result.reason.startswith("ast") and what in result.reason


@pytest.mark.parametrize(
    "code",
    [
        "",
        'print ( "hello" , "world" )',
        "print ( 5 + 3 )",
        "var_a = 5\nif var_a > 3 :\n    print ( var_a )",
        "pos . x",  # word boundary: not `os.`
        "osmosis = 1",
        "print ( 5 + 3",  # does not parse: the AST part is skipped
        "print ( <UNK> )",
    ],
)
def test_safe_programs(code: str) -> None:
    assert is_safe(code)


def test_reference_patterns_never_match_decoded_calls() -> None:
    """Decode puts a space before `(`, so the reference call patterns cannot fire on it."""
    tok = Tokenizer("v1_63", indent_mode="literal")
    code = tok.decode(tok.encode('print("x")'))
    assert code == 'print ( "x" )'
    assert not any(re.search(p, "eval ( 1 )") for p in REFERENCE_PATTERNS)
    assert not is_safe("eval ( 1 )")


# ------------------------------------------------------------------------------------------
# fingerprints
# ------------------------------------------------------------------------------------------


def test_fingerprint_normalisation() -> None:
    code = "  print ( 8 )  # comment\n\n\t\nvar_a = '#not a comment'\r\n   \n"
    assert normalise_for_fingerprint(code) == "print ( 8 )\nvar_a = '"
    expected = hashlib.md5(b"print ( 8 )\nvar_a = '").hexdigest()
    assert fingerprint(code) == expected
    assert fingerprint("print ( 8 )") == fingerprint("\n  print ( 8 )   \n\n")
    assert fingerprint("PRINT ( 8 )") != fingerprint("print ( 8 )")  # case kept
    assert fingerprint("") == hashlib.md5(b"").hexdigest()


def test_duplicate_tracker_skip_policy_in_index_order() -> None:
    tracker = DuplicateTracker("skip")
    batch = ["print ( 8 )", "print ( 7 )", "print ( 8 ) # again", "print ( 9 )"]
    assert tracker.observe_batch(batch) == [False, False, True, False]
    assert tracker.observe_batch(["print ( 9 )", "x"]) == [True, False]
    assert len(tracker) == 4 and fingerprint("x") in tracker
    restored = DuplicateTracker(DuplicatePolicy.SKIP, seen=tracker.to_list())
    assert restored.to_list() == tracker.to_list()
    assert restored.is_duplicate("print ( 7 )") and not restored.is_duplicate("print ( 6 )")


def test_duplicate_tracker_off_policy_records_but_never_skips() -> None:
    tracker = DuplicateTracker("OFF")
    assert tracker.observe_batch(["a", "a", "a"]) == [False, False, False]
    assert len(tracker) == 1
    assert tracker.observe("a") == (fingerprint("a"), True)
    with pytest.raises(ValueError):
        DuplicatePolicy.parse("penalise")
