"""Tests for twinframe.tasks.sudoku (hrm.md §4, §5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from twinframe.tasks import sudoku as S

# ------------------------------------------------------------------------------------------------
# An independent, deliberately naive implementation of hrm.md §5.3 (first-empty search everywhere,
# no
# bit masks), used to check the fast generator's output and RNG consumption.


def _naive_ok(g: list[int], k: int, d: int) -> bool:
    r, c = divmod(k, 9)
    br, bc = 3 * (r // 3), 3 * (c // 3)
    if d in g[9 * r : 9 * r + 9] or d in g[c::9]:
        return False
    return all(g[9 * (br + i) + bc + jj] != d for i in range(3) for jj in range(3))


def _naive_fill(rng: np.random.Generator, g: list[int]) -> bool:
    if 0 not in g:
        return True
    k = g.index(0)
    for d in (rng.permutation(9) + 1).tolist():
        if _naive_ok(g, k, d):
            g[k] = d
            if _naive_fill(rng, g):
                return True
            g[k] = 0
    return False


def _naive_count(g: list[int], limit: int) -> int:
    if 0 not in g:
        return 1
    k = g.index(0)
    total = 0
    for d in range(1, 10):
        if _naive_ok(g, k, d):
            g[k] = d
            total += _naive_count(g, limit - total)
            g[k] = 0
            if total >= limit:
                break
    return total


def _naive_generate(rng: np.random.Generator, difficulty: str) -> tuple[list[int], list[int]]:
    lo, hi = S.CLUE_RANGES[difficulty]
    sol = [0] * 81
    assert _naive_fill(rng, sol)
    order = rng.permutation(81).tolist()
    puz = list(sol)
    clues, cursor = 81, 0

    def try_remove(k: int) -> bool:
        v, puz[k] = puz[k], 0
        if _naive_count(puz, 2) != 1:
            puz[k] = v
            return False
        return True

    while cursor < 81 and clues > hi:
        cursor += 1
        clues -= try_remove(order[cursor - 1])
    if clues > lo:
        for j in range(cursor, 81):
            if clues <= lo:
                break
            clues -= try_remove(order[j])
    return puz, sol


@pytest.mark.parametrize(("difficulty", "j"), [("very_easy", 0), ("easy", 0), ("easy", 1)])
def test_generator_matches_naive_reference(difficulty: str, j: int) -> None:
    d = S.DIFFICULTIES.index(difficulty)
    want_p, want_s = _naive_generate(S.train_puzzle_rng(11, d, j), difficulty)
    got_p, got_s = S.train_puzzle(11, d, j)
    assert got_s.tolist() == want_s
    assert got_p.tolist() == want_p
    # Same RNG consumption: both leave their Generators in the same state.
    r1, r2 = S.train_puzzle_rng(11, d, j), S.train_puzzle_rng(11, d, j)
    S.generate(r1, difficulty)
    _naive_generate(r2, difficulty)
    assert r1.bit_generator.state == r2.bit_generator.state


def test_golden_puzzle_seed0_easy_j0() -> None:
    """Regression pin of the cross-framework data contract (seed 0, easy, j = 0)."""
    p, s = S.train_puzzle(0, 1, 0)
    assert "".join(map(str, p)) == (
        "700860910000573246004020008600000050000085009805097060200051300093006582457030601"
    )
    assert "".join(map(str, s)) == (
        "732864915918573246564129738649312857371685429825497163286951374193746582457238691"
    )


# ------------------------------------------------------------------------------------------------
# Validity and clue counts (hrm.md §5.2, §5.3)

_EXACT_CLUES = {"very_easy": 46, "easy": 40, "medium": 32, "hard": 28}


@pytest.mark.parametrize("difficulty", list(_EXACT_CLUES))
def test_generated_puzzles_valid_with_exact_clues(difficulty: str) -> None:
    d = S.difficulty_index(difficulty)
    for j in range(3):
        p, s = S.train_puzzle(5, d, j)
        assert p.dtype == np.int32 and s.dtype == np.int32
        assert p.shape == (81,) and s.shape == (81,)
        assert S.is_valid_solution(s)
        given = p != 0
        assert np.array_equal(p[given], s[given])
        assert S.count_solutions(p, 2) == 1
        assert S.clue_count(p) == _EXACT_CLUES[difficulty]
        assert S.validate_pair(p, s, difficulty) == []
        assert np.array_equal(S.solve(p), s)


def test_extreme_puzzles_valid() -> None:
    for j in range(2):
        p, s = S.eval_puzzle(0, 4, j)
        assert S.validate_pair(p, s, "extreme") == []
        assert 22 <= S.clue_count(p) <= 27


def test_validation_helpers_detect_errors() -> None:
    p, s = S.train_puzzle(1, 0, 0)
    bad = s.copy()
    bad[[0, 1]] = bad[[1, 0]]
    assert not S.is_valid_solution(bad)
    assert S.validate_pair(p, bad) != []
    k = int(np.flatnonzero(p)[0])
    wrong = p.copy()
    wrong[k] = wrong[k] % 9 + 1
    assert any("disagrees" in msg for msg in S.validate_pair(wrong, s))
    assert any("range" in msg for msg in S.validate_pair(p, s, "easy"))  # 46 clues is not easy


# ------------------------------------------------------------------------------------------------
# count_solutions / solve


def test_count_solutions_contradictory_grid_is_zero() -> None:
    g = np.zeros(81, dtype=np.int32)
    g[0] = g[5] = 7  # same row
    assert S.count_solutions(g, 2) == 0
    assert S.solve(g) is None
    # Consistent givens but no completion: cell 0 sees every digit.
    g = np.zeros(81, dtype=np.int32)
    g[1:9] = np.arange(1, 9)
    g[9 * 4] = 9  # column 0
    assert S.count_solutions(g, 2) == 0


def test_count_solutions_under_constrained() -> None:
    _, s = S.train_puzzle(2, 1, 0)
    assert S.count_solutions(s, 2) == 1
    g = s.copy()
    g[(s == 1) | (s == 2)] = 0  # swapping all 1s and 2s gives a second solution
    assert S.count_solutions(g, 2) == 2
    assert S.count_solutions(g, 1) == 1
    assert S.count_solutions(np.zeros(81, dtype=np.int32), 5) == 5
    assert S.is_valid_solution(S.solve(g))


def test_count_solutions_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        S.count_solutions([0] * 80, 2)
    with pytest.raises(ValueError):
        S.count_solutions([10] + [0] * 80, 2)


# ------------------------------------------------------------------------------------------------
# Determinism and streams (hrm.md §4)


def test_puzzles_deterministic_and_distinct() -> None:
    a = S.train_puzzle(3, 1, 4)
    b = S.train_puzzle(3, 1, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(S.train_puzzle(3, 1, 5)[1], a[1])
    assert not np.array_equal(S.train_puzzle(4, 1, 4)[1], a[1])
    assert not np.array_equal(S.eval_puzzle(3, 1, 4)[1], a[1])
    assert not np.array_equal(S.train_puzzle(3, 0, 4)[1], a[1])


def _pcg_state(rng: np.random.Generator) -> tuple[int, int]:
    st = rng.bit_generator.state["state"]
    return st["state"], st["inc"]


def test_stream_tags_do_not_collide() -> None:
    states: dict[tuple[int, int], str] = {}
    first_draws: set[float] = set()

    def add(name: str, rng: np.random.Generator) -> None:
        key = _pcg_state(rng)
        assert key not in states, f"{name} collides with {states.get(key)}"
        states[key] = name
        first_draws.add(float(rng.random()))

    for seed in (0, 1, 2):
        add(f"init{seed}", S.init_rng(seed))
        add(f"cur{seed}", S.curriculum_rng(seed))
        for t in (1, 2, 3):
            add(f"noise{seed},{t}", S.noise_rng(seed, t))
        for d in range(5):
            for j in (0, 1, 2):
                add(f"train{seed},{d},{j}", S.train_puzzle_rng(seed, d, j))
                add(f"eval{seed},{d},{j}", S.eval_puzzle_rng(seed, d, j))
    assert len(first_draws) == len(states)
    # The streams use the documented entropy lists.
    assert _pcg_state(S.init_rng(7)) == _pcg_state(np.random.default_rng([7, 1]))
    assert _pcg_state(S.noise_rng(7, 3)) == _pcg_state(np.random.default_rng([7, 2, 3]))
    assert _pcg_state(S.curriculum_rng(7)) == _pcg_state(np.random.default_rng([7, 3]))
    assert _pcg_state(S.train_puzzle_rng(7, 2, 9)) == _pcg_state(
        np.random.default_rng([7, 4, 2, 9])
    )
    assert _pcg_state(S.eval_puzzle_rng(7, 2, 9)) == _pcg_state(np.random.default_rng([7, 5, 2, 9]))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
def test_stream_entries_must_be_32bit(bad: float) -> None:
    with pytest.raises(ValueError):
        S.init_rng(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        S.train_puzzle_rng(0, 1, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        S.SudokuStream(bad)  # type: ignore[arg-type]


def test_exploration_noise() -> None:
    n = S.exploration_noise(5, 1, 2000, 4)
    u, m = n["explore_u"], n["min_halt_draw"]
    assert u.dtype == np.float32 and u.shape == (2000,)
    assert m.dtype == np.int32 and m.shape == (2000,)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert set(np.unique(m).tolist()) == {2, 3, 4}
    # Exact draw order of hrm.md §4.
    rng = np.random.default_rng([5, 2, 1])
    np.testing.assert_array_equal(u, rng.random(2000, dtype=np.float32))
    np.testing.assert_array_equal(m, rng.integers(2, 5, size=2000))
    again = S.exploration_noise(5, 1, 2000, 4)
    np.testing.assert_array_equal(again["explore_u"], u)
    assert not np.array_equal(S.exploration_noise(5, 2, 2000, 4)["explore_u"], u)
    assert set(np.unique(S.exploration_noise(0, 1, 500, 2)["min_halt_draw"]).tolist()) == {2}
    with pytest.raises(ValueError):
        S.exploration_noise(0, 1, 8, 1)
    with pytest.raises(ValueError):
        S.exploration_noise(0, 0, 8, 4)


# ------------------------------------------------------------------------------------------------
# Curriculum (hrm.md §5.5)


def test_pick_difficulty() -> None:
    easy, medium, hard, extreme = 1, 2, 3, 4
    umax = math.nextafter(1.0, 0.0)  # largest value random() can return
    for u in (0.0, 0.5, umax):
        assert S.pick_difficulty(u, 0) == easy
    assert S.pick_difficulty(0.6999, 1) == easy
    assert S.pick_difficulty(0.7, 1) == medium  # "exceeds" is strict
    assert S.pick_difficulty(0.95, 2) == hard
    assert S.pick_difficulty(0.85, 3) == hard
    assert S.pick_difficulty(0.95, 3) == extreme
    # Stage 3 sums to 0.9999999999999999 == umax: no entry exceeds it, fall back to the last
    # non-zero entry.
    assert 0.3 + 0.3 + 0.3 + 0.1 == umax
    assert S.pick_difficulty(umax, 3) == extreme
    assert S.pick_difficulty(0.0, 4) == easy
    assert S.pick_difficulty(umax, 4) == extreme
    assert S.Curriculum.pick_difficulty(0.75, 2) == medium
    with pytest.raises(ValueError):
        S.pick_difficulty(0.5, 5)


def _run(cur: S.Curriculum, accs: list[float]) -> list[int]:
    """Run steps with the given accuracies; return the step numbers (1-based) of graduations."""
    grads = []
    for t, acc in enumerate(accs, start=1):
        cur.begin_step()
        if cur.end_step(acc):
            grads.append(t)
    return grads


def test_curriculum_graduation_timing() -> None:
    cur = S.Curriculum()
    assert list(cur.fifo) == [0.0] * 300 and cur.rolling_acc == 0.0
    # Perfect accuracy: the FIFO mean reaches 0.85 at step 255, but graduation waits for 300.
    grads = _run(cur, [1.0] * 1300)
    assert grads == [300, 600, 900, 1200]
    assert cur.stage == 4  # capped
    assert cur.steps_since_graduation == 100


def test_curriculum_threshold() -> None:
    cur = S.Curriculum()
    assert _run(cur, [0.849] * 700) == []
    assert cur.stage == 0 and cur.steps_since_graduation == 700
    # FIFO is the last 300 values: 255 ones after 45 lows gives mean >= 0.85 exactly at 255.
    cur = S.Curriculum()
    cur.steps_since_graduation = 1000
    grads = _run(cur, [0.0] * 45 + [1.0] * 255)
    assert grads == [300]
    assert cur.rolling_acc == 0.85
    assert cur.fifo[-1] == 1.0 and len(cur.fifo) == 300


def test_curriculum_fifo_not_reset_and_state_roundtrip() -> None:
    cur = S.Curriculum()
    _run(cur, [1.0] * 310)
    assert cur.stage == 1 and cur.steps_since_graduation == 10
    assert cur.rolling_acc == 1.0
    cur.total_puzzles = 77
    state = json.loads(json.dumps(cur.state_dict()))
    other = S.Curriculum.from_state_dict(state)
    assert other == cur
    assert _run(other, [0.9] * 300) == _run(cur, [0.9] * 300) == [290]


# ------------------------------------------------------------------------------------------------
# Training stream (hrm.md §5.4)


def test_stream_draws() -> None:
    stream = S.SudokuStream(9)
    rng = np.random.default_rng([9, 3])
    ids = [stream.next_id(0) for _ in range(3)]
    assert ids == [(1, 0), (1, 1), (1, 2)]  # stage 0: easy only, counters advance
    for _ in range(3):
        rng.random()
    want = []
    counters = [0, 3, 0, 0, 0]
    for _ in range(50):
        d = S.pick_difficulty(float(rng.random()), 4)
        want.append((d, counters[d]))
        counters[d] += 1
    assert [stream.next_id(4) for _ in range(50)] == want
    assert stream.counters == counters
    d, j, p, s = stream.next_puzzle(0)
    assert (d, j) == (1, counters[1])
    np.testing.assert_array_equal(p, S.train_puzzle(9, d, j)[0])
    np.testing.assert_array_equal(s, S.train_puzzle(9, d, j)[1])


def test_stream_state_roundtrip() -> None:
    stream = S.SudokuStream(21)
    for stage in (0, 1, 2, 3):
        for _ in range(7):
            stream.next_id(stage)
    state = json.loads(json.dumps(stream.state_dict()))
    cont = [stream.next_id(4) for _ in range(40)] + [stream.next_id(1) for _ in range(5)]
    last = stream.next_puzzle(1)

    restored = S.SudokuStream(21)
    restored.load_state_dict(state)
    assert [restored.next_id(4) for _ in range(40)] + [
        restored.next_id(1) for _ in range(5)
    ] == cont
    again = restored.next_puzzle(1)
    assert again[:2] == last[:2]
    np.testing.assert_array_equal(again[2], last[2])

    # State words stored as strings (for storage without 128-bit ints) are accepted too.
    text_state = json.loads(json.dumps(state, default=str))
    inner = text_state["rng_state"]["state"]
    inner["state"], inner["inc"] = str(inner["state"]), str(inner["inc"])
    r2 = S.SudokuStream(21)
    r2.load_state_dict(text_state)
    assert [r2.next_id(4) for _ in range(40)] == cont[:40]

    with pytest.raises(ValueError):
        S.SudokuStream(22).load_state_dict(state)


def test_eval_batch() -> None:
    p, s = S.eval_batch(3, "very_easy", 3)
    assert p.shape == s.shape == (3, 81) and p.dtype == s.dtype == np.int32
    for j in range(3):
        pj, sj = S.eval_puzzle(3, 0, j)
        np.testing.assert_array_equal(p[j], pj)
        np.testing.assert_array_equal(s[j], sj)
    assert len({row.tobytes() for row in s}) == 3
    p2, _ = S.SudokuStream.eval_batch(3, 0, 2)
    np.testing.assert_array_equal(p2, p[:2])


# ------------------------------------------------------------------------------------------------
# Boards


def test_solved_board_copies_givens() -> None:
    p, s = S.train_puzzle(0, 0, 1)
    pred = np.where(p != 0, (p % 9) + 1, s)  # wrong on every given, right on every blank
    out = S.solved_board(p, pred)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, s)
    batch = S.solved_board(np.stack([p, p]), np.stack([pred, np.zeros_like(pred)]))
    assert batch.shape == (2, 81)
    np.testing.assert_array_equal(batch[1], p)


def test_format_board() -> None:
    p, _ = S.train_puzzle(0, 1, 0)
    text = S.format_board(p)
    lines = text.split("\n")
    assert len(lines) == 11
    assert lines[0] == "7 . . | 8 6 . | 9 1 ."
    assert lines[3] == "------+-------+------"
    assert text.count(".") == 81 - 40
    with pytest.raises(ValueError):
        S.format_board([0] * 80)


def test_module_imports_no_framework() -> None:
    """The task module is shared by both frameworks and must import neither."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(S))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"torch", "jax", "jaxlib", "flax", "optax"}
