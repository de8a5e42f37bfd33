"""Sudoku task for HRM-ACT: seeded generator, data streams and curriculum (hrm.md §4, §5).

Pure Python/NumPy, shared unchanged by the torch and JAX training loops (it imports neither), so
both frameworks see bit-identical puzzles, exploration noise and curriculum decisions.

Encoding (hrm.md §5.1): a board is 81 ints in row-major order (cell k = 9r + c), 0 = blank, 1..9
digits.

What is here and the choices made:

* Generator (hrm.md §5.3), exact algorithm and RNG consumption: a bitmask backtracking fill in
  first-empty
  (= row-major) order with exactly one ``rng.permutation(9) + 1`` draw per invocation, then one
  ``rng.permutation(81)`` carve order, removed in two greedy phases (down to ``hi``, then down to
  ``lo``), each removal kept only when the puzzle still has exactly one solution.
  ``count_solutions`` uses the most-constrained-cell (MRV) heuristic; its answer (capped at
  ``limit``) does not depend on search order, so it matches the reference's first-empty search.
* Streams (hrm.md §4): every host stream is ``np.random.default_rng(entropy)`` with a domain tag in
  second
  place: init ``[seed, 1]``, noise of step t ``[seed, 2, t]``, curriculum ``[seed, 3]``, training
  puzzle ``[seed, 4, d_index, j]``, evaluation puzzle ``[eval_seed, 5, d_index, j]``. All entries
  must lie in [0, 2**32) (checked), otherwise ``SeedSequence`` would split them into words and
  streams could coincide.
* ``d_index`` always indexes the five-name list :data:`DIFFICULTIES` (0..4), also for the
  curriculum, whose four columns are easy..extreme (d_index 1..4).
* :class:`Curriculum` (hrm.md §5.5): the step protocol is ``begin_step()`` at the start of step t
  (increments ``steps_since_graduation``) and ``end_step(cell_acc)`` after the update and the
  replacements (pushes into the 300-entry FIFO, mean as ``sum(fifo) / 300`` in float64, graduates
  when mean >= 0.85 and steps_since_graduation >= 300). On graduation the stage is capped at 4 and
  ``steps_since_graduation`` is reset to 0 even when the stage was already 4 (spec wording).
  ``total_puzzles`` is only stored here; the batch manager increments it once per replacement.
* :class:`SudokuStream` (hrm.md §5.4): one curriculum ``random()`` per replacement, five
  per-difficulty
  counters, puzzles from their own (d_index, j) Generators. ``state_dict()`` holds the counters and
  the curriculum Generator's ``bit_generator.state`` (PCG64 state words are Python ints up to 128
  bits; ``load_state_dict`` also accepts them as decimal strings for storage that cannot hold them).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CLUE_RANGES",
    "CURRICULUM_DIFFICULTIES",
    "DIFFICULTIES",
    "FIFO_LENGTH",
    "GRADUATION_STEPS",
    "GRADUATION_THRESHOLD",
    "MAX_STAGE",
    "STAGE_PROBABILITIES",
    "Curriculum",
    "SudokuStream",
    "clue_count",
    "count_solutions",
    "curriculum_rng",
    "difficulty_index",
    "eval_batch",
    "eval_puzzle",
    "eval_puzzle_rng",
    "exploration_noise",
    "format_board",
    "generate",
    "init_rng",
    "is_valid_solution",
    "noise_rng",
    "pick_difficulty",
    "solve",
    "solved_board",
    "train_puzzle",
    "train_puzzle_rng",
    "validate_pair",
]

# ------------------------------------------------------------------------------------------------
# Constants (hrm.md §5.2, §5.5)

DIFFICULTIES: tuple[str, ...] = ("very_easy", "easy", "medium", "hard", "extreme")
"""The five difficulty names; ``d_index`` is the position in this tuple."""

CLUE_RANGES: dict[str, tuple[int, int]] = {
    "very_easy": (46, 50),
    "easy": (40, 45),
    "medium": (32, 39),
    "hard": (28, 31),
    "extreme": (17, 27),
}
"""(lo, hi) clue range per difficulty (hrm.md §5.2); the carver stops at ``lo`` when it can."""

CURRICULUM_DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard", "extreme")
"""Difficulties drawn by the curriculum, the columns of :data:`STAGE_PROBABILITIES`."""

STAGE_PROBABILITIES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.0, 0.0, 0.0),
    (0.7, 0.3, 0.0, 0.0),
    (0.5, 0.4, 0.1, 0.0),
    (0.3, 0.3, 0.3, 0.1),
    (0.1, 0.3, 0.4, 0.2),
)
"""Row = curriculum stage 0..4, columns = :data:`CURRICULUM_DIFFICULTIES` (hrm.md §5.5)."""

MAX_STAGE = len(STAGE_PROBABILITIES) - 1
FIFO_LENGTH = 300
GRADUATION_THRESHOLD = 0.85
GRADUATION_STEPS = 300

# Stream domain tags (hrm.md §4).
_TAG_INIT = 1
_TAG_NOISE = 2
_TAG_CURRICULUM = 3
_TAG_TRAIN = 4
_TAG_EVAL = 5

_CURRICULUM_D_INDEX: tuple[int, ...] = tuple(DIFFICULTIES.index(n) for n in CURRICULUM_DIFFICULTIES)

# ------------------------------------------------------------------------------------------------
# Precomputed tables for the bitmask search. Digit d has bit (d - 1).

_ROW: tuple[int, ...] = tuple(k // 9 for k in range(81))
_COL: tuple[int, ...] = tuple(k % 9 for k in range(81))
_BOX: tuple[int, ...] = tuple((k // 27) * 3 + (k % 9) // 3 for k in range(81))
_ALL = 0x1FF
_POPCOUNT: tuple[int, ...] = tuple(bin(m).count("1") for m in range(512))
# For each candidate mask: ((bit, digit), ...) in ascending digit order.
_BITS_OF: tuple[tuple[tuple[int, int], ...], ...] = tuple(
    tuple((1 << i, i + 1) for i in range(9) if m >> i & 1) for m in range(512)
)


# ------------------------------------------------------------------------------------------------
# Small helpers


def difficulty_index(difficulty: str | int) -> int:
    """Index of ``difficulty`` (name or index) in :data:`DIFFICULTIES`; raises on unknown values."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {DIFFICULTIES}")
        return DIFFICULTIES.index(difficulty)
    d = int(difficulty)
    if d != difficulty or not 0 <= d < len(DIFFICULTIES):
        raise ValueError(
            f"difficulty index must be in 0..{len(DIFFICULTIES) - 1}, got {difficulty}"
        )
    return d


def _as_cells(grid: Sequence[int] | np.ndarray) -> list[int]:
    """Validate a board (81 ints in 0..9, any shape with 81 elements) and return it as a list."""
    cells = np.asarray(grid).reshape(-1)
    if cells.size != 81:
        raise ValueError(f"a Sudoku board has 81 cells, got {cells.size}")
    out = [int(v) for v in cells.tolist()]
    if any(v < 0 or v > 9 for v in out):
        raise ValueError("cell values must be in 0..9 (0 = blank)")
    return out


def _masks(cells: list[int]) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """Row/col/box digit masks and the empty cells; None if the givens contradict each other."""
    rows = [0] * 9
    cols = [0] * 9
    boxes = [0] * 9
    empties: list[int] = []
    for k, v in enumerate(cells):
        if v == 0:
            empties.append(k)
            continue
        bit = 1 << (v - 1)
        r, c, b = _ROW[k], _COL[k], _BOX[k]
        if (rows[r] | cols[c] | boxes[b]) & bit:
            return None
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
    return rows, cols, boxes, empties


def _search(
    cells: list[int],
    rows: list[int],
    cols: list[int],
    boxes: list[int],
    empties: list[int],
    i: int,
    limit: int,
    capture: list[list[int]] | None,
) -> int:
    """Count completions of ``cells`` (up to ``limit``) with the MRV heuristic.

    ``empties[i:]`` are the cells still blank; the order of that tail is permuted in place (the
    set is preserved). When ``capture`` is given, the first complete grid found is appended to it.
    """
    n = len(empties)
    if i == n:
        if capture is not None and not capture:
            capture.append(list(cells))
        return 1
    best_j = i
    best_n = 10
    best_cand = 0
    for j in range(i, n):
        k = empties[j]
        cand = ~(rows[_ROW[k]] | cols[_COL[k]] | boxes[_BOX[k]]) & _ALL
        cnt = _POPCOUNT[cand]
        if cnt < best_n:
            best_n = cnt
            best_j = j
            best_cand = cand
            if cnt <= 1:
                break
    if best_n == 0:
        return 0
    k = empties[best_j]
    empties[best_j] = empties[i]
    empties[i] = k
    r, c, b = _ROW[k], _COL[k], _BOX[k]
    total = 0
    for bit, digit in _BITS_OF[best_cand]:
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        cells[k] = digit
        total += _search(cells, rows, cols, boxes, empties, i + 1, limit - total, capture)
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        cells[k] = 0
        if total >= limit:
            break
    return total


def _count(cells: list[int], limit: int) -> int:
    masks = _masks(cells)
    if masks is None:
        return 0
    rows, cols, boxes, empties = masks
    return _search(list(cells), rows, cols, boxes, empties, 0, limit, None)


def _has_other_completion(
    cells: list[int], rows: list[int], cols: list[int], boxes: list[int], empties: list[int],
    k: int, v: int,
) -> bool:
    """True iff ``cells`` (blank at k; masks and blank cells ``empties`` without k up to date)
    has a completion with a digit other than v at cell k. Leaves every argument as it was
    (``_search`` undoes its moves; the order of ``empties`` may change, not its contents)."""
    r, c, b = _ROW[k], _COL[k], _BOX[k]
    cand = ~(rows[r] | cols[c] | boxes[b]) & _ALL & ~(1 << (v - 1))
    found = False
    for bit, digit in _BITS_OF[cand]:
        rows[r] |= bit
        cols[c] |= bit
        boxes[b] |= bit
        cells[k] = digit
        found = _search(cells, rows, cols, boxes, empties, 0, 1, None) > 0
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        cells[k] = 0
        if found:
            break
    return found


# ------------------------------------------------------------------------------------------------
# Generator (hrm.md §5.3)


def count_solutions(grid: Sequence[int] | np.ndarray, limit: int = 2) -> int:
    """Number of solutions of ``grid`` (81 cells, 0 = blank), capped at ``limit``.

    Returns 0 for a grid whose givens contradict each other or that has no completion. The search
    stops as soon as ``limit`` solutions are found, so the result is ``min(#solutions, limit)``.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return _count(_as_cells(grid), int(limit))


def solve(grid: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """A solution of ``grid`` as int32[81] (the first one the MRV search finds), or None."""
    cells = _as_cells(grid)
    masks = _masks(cells)
    if masks is None:
        return None
    rows, cols, boxes, empties = masks
    capture: list[list[int]] = []
    _search(cells, rows, cols, boxes, empties, 0, 1, capture)
    return np.asarray(capture[0], dtype=np.int32) if capture else None


def _fill(rng: np.random.Generator) -> list[int]:
    """Random complete grid: first-empty backtracking, one ``permutation(9)`` per invocation."""
    grid = [0] * 81
    rows = [0] * 9
    cols = [0] * 9
    boxes = [0] * 9

    # Starting from an empty grid and filling in row-major order, the first empty cell of the
    # invocation at depth k is cell k.
    def rec(k: int) -> bool:
        if k == 81:
            return True
        perm = (rng.permutation(9) + 1).tolist()
        r, c, b = _ROW[k], _COL[k], _BOX[k]
        used = rows[r] | cols[c] | boxes[b]
        for d in perm:
            bit = 1 << (d - 1)
            if used & bit:
                continue
            grid[k] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            if rec(k + 1):
                return True
            grid[k] = 0
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
        return False

    if not rec(0):  # pragma: no cover - an empty grid always has a completion
        raise RuntimeError("fill failed")
    return grid


def generate(rng: np.random.Generator, difficulty: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Generate one puzzle with the exact algorithm of hrm.md §5.3.

    Consumes from ``rng``: the fill's ``permutation(9)`` draws, then one ``permutation(81)``.

    Returns:
        (puzzle, solution): int32[81] each; puzzle has 0 for blanks and a unique solution.
    """
    lo, hi = CLUE_RANGES[DIFFICULTIES[difficulty_index(difficulty)]]
    solution = _fill(rng)
    order = rng.permutation(81).tolist()
    puzzle = list(solution)
    clues = 81
    cursor = 0

    # Invariant: `puzzle` has exactly one solution, `solution`. Blanking cell k (value v) keeps
    # it unique iff no completion has a digit other than v at k (any second solution differs
    # from `solution` at k, else it would solve the puzzle before the removal), so one search
    # with k's candidates minus v, stopped at its first completion, decides what
    # `count_solutions(puzzle, 2) == 1` decides; the masks and blank cells are kept up to date
    # across removals instead of being rebuilt per try.
    rows, cols, boxes = [_ALL] * 9, [_ALL] * 9, [_ALL] * 9
    empties: list[int] = []

    def try_remove(k: int) -> bool:
        v = puzzle[k]
        bit = 1 << (v - 1)
        r, c, b = _ROW[k], _COL[k], _BOX[k]
        puzzle[k] = 0
        rows[r] ^= bit
        cols[c] ^= bit
        boxes[b] ^= bit
        if _has_other_completion(puzzle, rows, cols, boxes, empties, k, v):
            puzzle[k] = v
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            return False
        empties.append(k)
        return True

    # Phase 1: down to hi.
    while cursor < 81 and clues > hi:
        k = order[cursor]
        cursor += 1
        if try_remove(k):
            clues -= 1
    # Phase 2: continue the same order down to lo.
    if clues > lo:
        for j in range(cursor, 81):
            if clues <= lo:
                break
            if try_remove(order[j]):
                clues -= 1
    return np.asarray(puzzle, dtype=np.int32), np.asarray(solution, dtype=np.int32)


# ------------------------------------------------------------------------------------------------
# Validation helpers (hrm.md §5.3)


def clue_count(puzzle: Sequence[int] | np.ndarray) -> int:
    """Number of given (non-zero) cells."""
    return int(np.count_nonzero(np.asarray(puzzle)))


def is_valid_solution(grid: Sequence[int] | np.ndarray) -> bool:
    """True iff every row, column and box of ``grid`` is a permutation of 1..9."""
    g = np.asarray(grid).reshape(9, 9)
    want = np.arange(1, 10)
    boxes = g.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    return all(np.array_equal(np.sort(unit), want) for block in (g, g.T, boxes) for unit in block)


def validate_pair(
    puzzle: Sequence[int] | np.ndarray,
    solution: Sequence[int] | np.ndarray,
    difficulty: str | int | None = None,
) -> list[str]:
    """Problems with a generated (puzzle, solution) pair; empty list = valid.

    Checks: solution is a valid grid, puzzle agrees with it on the clues, the puzzle has exactly
    one solution and, if ``difficulty`` is given, the clue count lies in its range (hrm.md §5.2).
    """
    p = np.asarray(puzzle).reshape(-1)
    s = np.asarray(solution).reshape(-1)
    problems: list[str] = []
    if p.shape != (81,) or s.shape != (81,):
        return [f"bad shapes {p.shape}, {s.shape}"]
    if not is_valid_solution(s):
        problems.append("solution rows/cols/boxes are not permutations of 1..9")
    given = p != 0
    if not np.array_equal(p[given], s[given]):
        problems.append("puzzle disagrees with solution on a clue")
    n = count_solutions(p, 2)
    if n != 1:
        problems.append(f"puzzle has {'no' if n == 0 else 'several'} solutions")
    if difficulty is not None:
        name = DIFFICULTIES[difficulty_index(difficulty)]
        lo, hi = CLUE_RANGES[name]
        clues = int(given.sum())
        if not lo <= clues <= hi:
            problems.append(f"{clues} clues outside {name} range {lo}..{hi}")
    return problems


# ------------------------------------------------------------------------------------------------
# Streams (hrm.md §4)


def _check_entry(name: str, value: int) -> int:
    v = int(value)
    if v != value or not 0 <= v < 2**32:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")
    return v


def init_rng(seed: int) -> np.random.Generator:
    """Parameter-init Generator, entropy ``[seed, 1]``."""
    return np.random.default_rng([_check_entry("seed", seed), _TAG_INIT])


def noise_rng(seed: int, t: int) -> np.random.Generator:
    """Exploration-noise Generator of step t (t >= 1), entropy ``[seed, 2, t]``."""
    if int(t) < 1:
        raise ValueError(f"step t starts at 1, got {t}")
    return np.random.default_rng([_check_entry("seed", seed), _TAG_NOISE, _check_entry("t", t)])


def curriculum_rng(seed: int) -> np.random.Generator:
    """Curriculum-difficulty Generator (one per run), entropy ``[seed, 3]``."""
    return np.random.default_rng([_check_entry("seed", seed), _TAG_CURRICULUM])


def train_puzzle_rng(seed: int, d_index: int, j: int) -> np.random.Generator:
    """Generator of training puzzle j of difficulty d_index, entropy ``[seed, 4, d_index, j]``."""
    return np.random.default_rng(
        [_check_entry("seed", seed), _TAG_TRAIN, difficulty_index(d_index), _check_entry("j", j)]
    )


def eval_puzzle_rng(eval_seed: int, d_index: int, j: int) -> np.random.Generator:
    """Generator of evaluation puzzle j of difficulty d_index, ``[eval_seed, 5, d_index, j]``."""
    return np.random.default_rng(
        [
            _check_entry("eval_seed", eval_seed),
            _TAG_EVAL,
            difficulty_index(d_index),
            _check_entry("j", j),
        ]
    )


def train_puzzle(seed: int, d_index: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Training puzzle j of difficulty d_index: (puzzle, solution), int32[81] each."""
    return generate(train_puzzle_rng(seed, d_index, j), d_index)


def eval_puzzle(eval_seed: int, d_index: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation puzzle j of difficulty d_index: (puzzle, solution), int32[81] each."""
    return generate(eval_puzzle_rng(eval_seed, d_index, j), d_index)


def eval_batch(eval_seed: int, difficulty: str | int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation puzzles j = 0..n-1 of one difficulty: (puzzles, solutions), int32[n, 81] each."""
    d = difficulty_index(difficulty)
    puzzles = np.zeros((n, 81), dtype=np.int32)
    solutions = np.zeros((n, 81), dtype=np.int32)
    for j in range(n):
        puzzles[j], solutions[j] = eval_puzzle(eval_seed, d, j)
    return puzzles, solutions


def exploration_noise(seed: int, t: int, batch: int, max_steps: int) -> dict[str, np.ndarray]:
    """Host exploration noise of step t (hrm.md §4, ``noise_source="host"``).

    Returns:
        ``explore_u``: float32[batch] in [0, 1); ``min_halt_draw``: int32[batch] in {2..max_steps}.
        Both are always drawn, in that order, from the step-t Generator.
    """
    if max_steps < 2:
        raise ValueError(f"max_steps must be >= 2, got {max_steps}")
    rng = noise_rng(seed, t)
    explore_u = rng.random(batch, dtype=np.float32)
    min_halt_draw = rng.integers(2, max_steps + 1, size=batch).astype(np.int32)
    return {"explore_u": explore_u, "min_halt_draw": min_halt_draw}


# ------------------------------------------------------------------------------------------------
# Curriculum (hrm.md §5.5)


def pick_difficulty(u: float, stage: int) -> int:
    """d_index (into :data:`DIFFICULTIES`) chosen by uniform draw ``u`` at curriculum ``stage``.

    Cumulative probabilities are summed left to right in Python float64; the first difficulty
    whose cumulative probability exceeds ``u`` wins. If none does (round-off: stage 3 sums to
    0.9999999999999999), the last difficulty with non-zero probability is taken.
    """
    if not 0 <= stage <= MAX_STAGE:
        raise ValueError(f"stage must be in 0..{MAX_STAGE}, got {stage}")
    row = STAGE_PROBABILITIES[stage]
    cum = 0.0
    for col, p in enumerate(row):
        cum += p
        if cum > u:
            return _CURRICULUM_D_INDEX[col]
    last = max(col for col, p in enumerate(row) if p > 0.0)
    return _CURRICULUM_D_INDEX[last]


def _zero_fifo() -> deque[float]:
    return deque([0.0] * FIFO_LENGTH, maxlen=FIFO_LENGTH)


@dataclass
class Curriculum:
    """Curriculum state (hrm.md §5.5). Per training step t call :meth:`begin_step` first, then
    :meth:`end_step` with step t's ``cell_acc_with_givens`` after the update and replacements.

    ``total_puzzles`` is kept here for the train state; the batch manager increments it once per
    replacement (the initial fill counts).
    """

    stage: int = 0
    steps_since_graduation: int = 0
    fifo: deque[float] = field(default_factory=_zero_fifo)
    total_puzzles: int = 0

    pick_difficulty = staticmethod(pick_difficulty)

    def begin_step(self) -> None:
        """Start of a step: steps_since_graduation += 1."""
        self.steps_since_graduation += 1

    @property
    def rolling_acc(self) -> float:
        """FIFO mean, ``sum(fifo) / 300`` in float64 (oldest entry first)."""
        return sum(self.fifo) / FIFO_LENGTH

    def end_step(self, cell_acc: float) -> bool:
        """Push ``cell_acc`` (as a Python float) and graduate if due; returns True on graduation.

        Graduation: rolling mean >= 0.85 and steps_since_graduation >= 300 -> stage + 1 (capped at
        4) and steps_since_graduation = 0 (also when already at stage 4). The FIFO is not reset.
        """
        self.fifo.append(float(cell_acc))
        if (
            self.rolling_acc >= GRADUATION_THRESHOLD
            and self.steps_since_graduation >= GRADUATION_STEPS
        ):
            old = self.stage
            self.stage = min(self.stage + 1, MAX_STAGE)
            self.steps_since_graduation = 0
            logger.info("curriculum graduation: stage %d -> %d", old, self.stage)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "stage": self.stage,
            "steps_since_graduation": self.steps_since_graduation,
            "fifo": list(self.fifo),
            "total_puzzles": self.total_puzzles,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""
        fifo = [float(x) for x in state["fifo"]]
        if len(fifo) != FIFO_LENGTH:
            raise ValueError(f"fifo must have {FIFO_LENGTH} entries, got {len(fifo)}")
        stage = int(state["stage"])
        if not 0 <= stage <= MAX_STAGE:
            raise ValueError(f"stage must be in 0..{MAX_STAGE}, got {stage}")
        self.stage = stage
        self.steps_since_graduation = int(state["steps_since_graduation"])
        self.fifo = deque(fifo, maxlen=FIFO_LENGTH)
        self.total_puzzles = int(state["total_puzzles"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Curriculum:
        cur = cls()
        cur.load_state_dict(state)
        return cur


# ------------------------------------------------------------------------------------------------
# Training data stream (hrm.md §5.4)


def _int_tree(x: Any) -> Any:
    """Convert decimal-string leaves back to ints (PCG64 state words may have been stringified)."""
    if isinstance(x, dict):
        return {k: (x[k] if k == "bit_generator" else _int_tree(x[k])) for k in x}
    if isinstance(x, str):
        return int(x)
    return x


class SudokuStream:
    """Deterministic training puzzle stream of one run (hrm.md §5.4).

    Per replacement: one ``random()`` from the curriculum Generator ``[seed, 3]`` picks the
    difficulty for the given stage, then puzzle j = counters[d] of that difficulty is generated from
    stream ``[seed, 4, d, j]`` and the counter advances.
    """

    eval_batch = staticmethod(eval_batch)

    def __init__(self, seed: int) -> None:
        self.seed = _check_entry("seed", seed)
        self.counters: list[int] = [0] * len(DIFFICULTIES)
        self.rng = curriculum_rng(self.seed)

    def next_id(self, stage: int) -> tuple[int, int]:
        """Draw the next (d_index, j) without generating the puzzle (for prefetching workers)."""
        d = pick_difficulty(float(self.rng.random()), stage)
        j = self.counters[d]
        self.counters[d] += 1
        return d, j

    def next_puzzle(self, stage: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Next training puzzle: (d_index, j, puzzle int32[81], solution int32[81])."""
        d, j = self.next_id(stage)
        puzzle, solution = train_puzzle(self.seed, d, j)
        return d, j, puzzle, solution

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: seed, counters and the curriculum ``bit_generator.state``."""
        return {
            "seed": self.seed,
            "counters": list(self.counters),
            "rng_state": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore exactly; the stored seed must match this stream's seed."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state is for seed {state['seed']}, stream has seed {self.seed}")
        counters = [int(c) for c in state["counters"]]
        if len(counters) != len(DIFFICULTIES) or min(counters) < 0:
            raise ValueError(f"bad counters {counters}")
        rng = curriculum_rng(self.seed)
        rng.bit_generator.state = _int_tree(state["rng_state"])
        self.counters = counters
        self.rng = rng


# ------------------------------------------------------------------------------------------------
# Boards


def solved_board(puzzle: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Predicted board with the given cells copied from the puzzle (hrm.md §2.6).

    Args:
        puzzle: int[..., 81], 0 = blank.
        pred: int[..., 81], predicted digits (e.g. argmax of the logits).
    Returns:
        int32[..., 81].
    """
    puzzle = np.asarray(puzzle)
    return np.where(puzzle != 0, puzzle, np.asarray(pred)).astype(np.int32)


def format_board(cells81: Sequence[int] | np.ndarray) -> str:
    """9x9 text rendering with '.' for blanks and box separators (no trailing newline)."""
    cells = _as_cells(cells81)
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        row = cells[9 * r : 9 * r + 9]
        chunks = [" ".join(str(v) if v else "." for v in row[i : i + 3]) for i in (0, 3, 6)]
        lines.append(" | ".join(chunks))
    return "\n".join(lines)
