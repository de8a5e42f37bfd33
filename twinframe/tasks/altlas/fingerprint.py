"""Program fingerprints and duplicate tracking (altlas.md §5.4, R1).

Fingerprint = MD5 hex of the UTF-8 code after deleting ``#.*$`` (MULTILINE; also inside string
literals, as R1), ``splitlines()``, ``strip()`` per line, dropping empty lines, joining with
``\\n``. It is computed on the executed (surface-mapped) code, after the safety filter.

Choices made where the spec is silent:

* :class:`DuplicateTracker` keeps an insertion-ordered set so that ``to_list()`` is
  deterministic (the persistence layer stores it in ``trainer_state.json``).
* With policy ``off`` the tracker still records fingerprints (distinct-program statistics) but
  never asks to skip.
* ``observe_batch`` checks episodes in index order, so the second copy inside one batch is the
  duplicate (altlas.md §5.4).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum

__all__ = [
    "DuplicatePolicy",
    "DuplicateTracker",
    "fingerprint",
    "normalise_for_fingerprint",
]

_COMMENT = re.compile(r"#.*$", re.MULTILINE)


class DuplicatePolicy(StrEnum):
    """What the runner does with a program whose fingerprint was seen before."""

    SKIP = "skip"
    OFF = "off"

    @classmethod
    def parse(cls, value: str | DuplicatePolicy) -> DuplicatePolicy:
        """Accept an enum member or its (case-insensitive) string value."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"DuplicatePolicy must be 'skip' or 'off', got {value!r}") from None


def normalise_for_fingerprint(code: str) -> str:
    """The text that is hashed: comments removed, lines stripped, blank lines dropped."""
    without_comments = _COMMENT.sub("", code)
    lines = (line.strip() for line in without_comments.splitlines())
    return "\n".join(line for line in lines if line)


def fingerprint(code: str) -> str:
    """MD5 hex digest of :func:`normalise_for_fingerprint` (UTF-8)."""
    data = normalise_for_fingerprint(code).encode("utf-8", errors="surrogatepass")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class DuplicateTracker:
    """Set of seen fingerprints with the runner's skip decision."""

    def __init__(
        self,
        policy: str | DuplicatePolicy = DuplicatePolicy.SKIP,
        seen: Iterable[str] = (),
    ) -> None:
        self.policy = DuplicatePolicy.parse(policy)
        self._seen: dict[str, None] = dict.fromkeys(seen)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, fp: object) -> bool:
        return fp in self._seen

    def is_duplicate(self, code: str) -> bool:
        """True if ``code``'s fingerprint was seen (does not record it)."""
        return fingerprint(code) in self._seen

    def observe(self, code: str) -> tuple[str, bool]:
        """Record ``code``; return (fingerprint, was it already seen)."""
        fp = fingerprint(code)
        dup = fp in self._seen
        if not dup:
            self._seen[fp] = None
        return fp, dup

    def should_skip(self, code: str) -> bool:
        """Record ``code`` and return True when the policy says to skip it (seen before)."""
        _, dup = self.observe(code)
        return dup and self.policy is DuplicatePolicy.SKIP

    def observe_batch(self, codes: Sequence[str]) -> list[bool]:
        """Per episode in index order: skip flag (duplicates of earlier runs or earlier indices)."""
        return [self.should_skip(code) for code in codes]

    def to_list(self) -> list[str]:
        """Fingerprints in insertion order (for persistence)."""
        return list(self._seen)

    def clear(self) -> None:
        """Forget every fingerprint."""
        self._seen.clear()
