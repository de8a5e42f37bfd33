"""AltLAS vocabularies and tokenizer (altlas.md §1).

Vocabularies come from the bundled ``data/altlas_vocab.json`` (``v0_46``, ``v1_63``,
``abstract_53``; id = list index) or from a reference-style ``vocab.json`` (token -> id).

Choices made where the spec is silent (all marked "our choice" in the code as well):

* Validation (altlas.md §1.1): tokens must be non-empty, distinct strings; ids exactly ``0..V-1``;
  the four
  specials present at ids 0..3 (``<PAD>`` = 0 is what the spec requires; the bundled vocabularies
  have all four at 0..3 and :meth:`Tokenizer.encode`/``decode`` rely only on their ids).
* ``Vocab.surface`` holds the per-token Python surface map; it is non-empty only for
  ``abstract_53`` (from ``python_surface_abstract_53``). Vocabularies loaded from a reference
  ``vocab.json`` get the surface map only when their hash equals the bundled ``abstract_53``.
* Structural indentation (altlas.md §1.4): tabs in the leading whitespace are expanded with
  ``str.expandtabs(4)`` (tab stops every 4 columns), every other leading whitespace character
  counts 1. "Leading whitespace" is the maximal prefix of characters with ``str.isspace()``.
* ``decode`` accepts any iterable of ints (numpy arrays included); ids outside ``0..V-1`` decode
  to ``<UNK>`` (altlas.md §1.3 "unknown id"). ``decode(..., surface=False)`` gives the raw token
  text (the
  abstract names) for logging; the default applies the surface map, as altlas.md §1.3 requires for
  what is
  executed.
* ``canonical`` uses the same tokeniser (literal scan of each stripped line) to split a line into
  tokens; it is only specified for programs without ``<UNK>`` and without a literal backslash-n,
  and for those lines the tokens' texts are exactly the matched substrings.
* The "warn once" for an ineffective structural mode is one ``logging`` warning per vocabulary
  hash per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from twinframe.errors import TwinframeError

logger = logging.getLogger(__name__)

__all__ = [
    "DEDENT",
    "INDENT",
    "INDENT_MODES",
    "NEWLINE_TOKEN",
    "SPECIAL_TOKENS",
    "VOCAB_NAMES",
    "IndentMode",
    "Tokenizer",
    "Vocab",
    "VocabError",
    "is_special_token",
    "load_vocab",
    "load_vocab_bundle",
    "normalise_text",
    "validate_tokens",
    "vocab_from_mapping",
    "vocab_sha256",
]

PAD, SOS, EOS, UNK = "<PAD>", "<SOS>", "<EOS>", "<UNK>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, SOS, EOS, UNK)
NEWLINE_TOKEN = "\\n"  # the two characters backslash + n; stands for a line break
INDENT, DEDENT = "INDENT", "DEDENT"
VOCAB_NAMES: tuple[str, ...] = ("v0_46", "v1_63", "abstract_53")
DEFAULT_VOCAB = "v1_63"
VOCAB_BUNDLE_FORMAT = "altlas-vocab/1"
INDENT_WIDTH = 4

IndentMode = Literal["literal", "structural"]
INDENT_MODES: tuple[str, ...] = ("literal", "structural")

_BUNDLE_FILE = "altlas_vocab.json"
_warned_lock = threading.Lock()
_warned_hashes: set[str] = set()


class VocabError(TwinframeError, ValueError):
    """A vocabulary file or token list is malformed."""


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


def vocab_sha256(tokens: Sequence[str]) -> str:
    """SHA-256 (hex) of ``json.dumps(tokens, ensure_ascii=False, separators=(",", ":"))``."""
    text = json.dumps(list(tokens), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_special_token(token: str) -> bool:
    """True for ``<…>`` tokens (start with ``<`` and end with ``>``, length ≥ 2)."""
    return len(token) >= 2 and token.startswith("<") and token.endswith(">")


def validate_tokens(tokens: Sequence[str]) -> None:
    """Raise :class:`VocabError` unless ``tokens`` is a valid id-ordered vocabulary."""
    if not tokens:
        raise VocabError("vocabulary is empty")
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok:
            raise VocabError(f"token {i} is not a non-empty string: {tok!r}")
    if len(set(tokens)) != len(tokens):
        dupes = sorted({t for t in tokens if tokens.count(t) > 1})
        raise VocabError(f"duplicate tokens: {dupes}")
    for i, special in enumerate(SPECIAL_TOKENS):
        if special not in tokens:
            raise VocabError(f"special token {special} missing")
        if tokens.index(special) != i:
            raise VocabError(f"special token {special} has id {tokens.index(special)}, need {i}")


@dataclass(frozen=True)
class Vocab:
    """An id-ordered vocabulary (``tokens[i]`` has id ``i``) plus its Python surface map."""

    name: str
    tokens: tuple[str, ...]
    surface: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        validate_tokens(self.tokens)
        unknown = sorted(set(self.surface) - set(self.tokens))
        if unknown:
            raise VocabError(f"surface map names tokens not in the vocabulary: {unknown}")
        object.__setattr__(self, "surface", MappingProxyType(dict(self.surface)))

    def __len__(self) -> int:
        return len(self.tokens)

    def __hash__(self) -> int:
        return hash((self.name, self.tokens))

    @property
    def size(self) -> int:
        """Number of tokens V."""
        return len(self.tokens)

    @cached_property
    def sha256(self) -> str:
        """Vocabulary hash (altlas.md §1.1), stored in every checkpoint."""
        return vocab_sha256(self.tokens)

    @cached_property
    def token_to_id(self) -> Mapping[str, int]:
        """Reverse lookup token -> id."""
        return MappingProxyType({t: i for i, t in enumerate(self.tokens)})

    def id_of(self, token: str) -> int | None:
        """Id of ``token`` or ``None`` when absent."""
        return self.token_to_id.get(token)

    @property
    def has_structural_indent(self) -> bool:
        """True when both INDENT and DEDENT exist (structural mode possible)."""
        return INDENT in self.token_to_id and DEDENT in self.token_to_id

    def to_mapping(self) -> dict[str, int]:
        """Reference ``vocab.json`` form: token -> id."""
        return {t: i for i, t in enumerate(self.tokens)}


def _bundle_path(path: str | Path | None) -> Any:
    if path is not None:
        return Path(path)
    return resources.files("twinframe.tasks.altlas").joinpath("data").joinpath(_BUNDLE_FILE)


def load_vocab_bundle(path: str | Path | None = None) -> dict[str, Any]:
    """Read the vocabulary bundle JSON (default: the packaged copy) and check its format tag."""
    data = json.loads(_bundle_path(path).read_text(encoding="utf-8"))
    if data.get("format") != VOCAB_BUNDLE_FORMAT:
        raise VocabError(f"unknown vocab bundle format {data.get('format')!r}")
    return data


def load_vocab(name: str = DEFAULT_VOCAB, path: str | Path | None = None) -> Vocab:
    """Load one named vocabulary from the bundle; checks the recorded size."""
    bundle = load_vocab_bundle(path)
    vocabs = bundle["vocabularies"]
    if name not in vocabs:
        raise VocabError(f"unknown vocabulary {name!r}; known: {sorted(vocabs)}")
    entry = vocabs[name]
    tokens = tuple(entry["tokens"])
    if "size" in entry and entry["size"] != len(tokens):
        raise VocabError(f"vocabulary {name}: size {entry['size']} != {len(tokens)} tokens")
    surface = bundle.get(f"python_surface_{name}", {})
    return Vocab(name=name, tokens=tokens, surface=surface)


def vocab_from_mapping(mapping: Mapping[str, int], name: str = "custom") -> Vocab:
    """Build a :class:`Vocab` from a reference ``vocab.json`` object (token -> id)."""
    ids = sorted(mapping.values())
    if any(not isinstance(i, int) or isinstance(i, bool) for i in ids):
        raise VocabError("vocab ids must be integers")
    if ids != list(range(len(ids))):
        raise VocabError("vocab ids must be exactly 0..V-1")
    tokens = [""] * len(ids)
    for tok, i in mapping.items():
        tokens[i] = tok
    surface: Mapping[str, str] = {}
    abstract = load_vocab("abstract_53")
    if vocab_sha256(tokens) == abstract.sha256:
        surface = abstract.surface
        name = abstract.name if name == "custom" else name
    return Vocab(name=name, tokens=tuple(tokens), surface=surface)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """altlas.md §1.2 step 1: unify line ends, ``rstrip`` lines, drop trailing empty lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _leading_width(line: str) -> int:
    """Width of the leading whitespace with tabs expanded to 4-column stops (our choice)."""
    stripped = line.lstrip()
    lead = line[: len(line) - len(stripped)]
    return len(lead.expandtabs(INDENT_WIDTH))


def _indent_events(lines: Sequence[str]) -> list[tuple[int, int, int]]:
    """Per line: (#INDENT, #DEDENT, stack depth after the line); blank lines give (0, 0, depth)."""
    stack = [0]
    events: list[tuple[int, int, int]] = []
    for line in lines:
        if not line:
            events.append((0, 0, len(stack) - 1))
            continue
        w = _leading_width(line)
        n_in = n_de = 0
        if w > stack[-1]:
            stack.append(w)
            n_in = 1
        elif w < stack[-1]:
            while stack[-1] > w:
                stack.pop()
                n_de += 1
            if w > stack[-1]:  # inconsistent dedent
                stack.append(w)
                n_in = 1
        events.append((n_in, n_de, len(stack) - 1))
    return events


class Tokenizer:
    """Greedy longest-match tokenizer with literal or structural INDENT/DEDENT (altlas.md
    §1.2–§1.4)."""

    def __init__(self, vocab: Vocab | str = DEFAULT_VOCAB, indent_mode: IndentMode = "structural"):
        if isinstance(vocab, str):
            vocab = load_vocab(vocab)
        if indent_mode not in INDENT_MODES:
            raise ValueError(f"indent_mode must be one of {INDENT_MODES}, got {indent_mode!r}")
        self.vocab = vocab
        self.requested_indent_mode: IndentMode = indent_mode
        self.indent_mode: IndentMode = indent_mode
        if indent_mode == "structural" and not vocab.has_structural_indent:
            self.indent_mode = "literal"
            _warn_once(vocab)
        ids = vocab.token_to_id
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = (ids[t] for t in SPECIAL_TOKENS)
        self.newline_id: int | None = ids.get(NEWLINE_TOKEN)
        self.indent_id: int | None = ids.get(INDENT)
        self.dedent_id: int | None = ids.get(DEDENT)
        self._candidates = self._build_candidates()
        self._texts = self._build_texts(surface=True)
        self._raw_texts = self._build_texts(surface=False)

    # -- construction helpers ---------------------------------------------------------------

    def _build_candidates(self) -> dict[str, tuple[tuple[str, int], ...]]:
        """Scanner candidates grouped by first character, longest first, ties by ascending id."""
        cands = [
            (tok, i)
            for i, tok in enumerate(self.vocab.tokens)
            if not is_special_token(tok) and tok not in (INDENT, DEDENT)
        ]
        cands.sort(key=lambda c: (-len(c[0]), c[1]))
        by_first: dict[str, list[tuple[str, int]]] = {}
        for tok, i in cands:
            by_first.setdefault(tok[0], []).append((tok, i))
        return {k: tuple(v) for k, v in by_first.items()}

    def _build_texts(self, surface: bool) -> tuple[str, ...]:
        if not surface:
            return self.vocab.tokens
        return tuple(self.vocab.surface.get(t, t) for t in self.vocab.tokens)

    # -- properties ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """V."""
        return self.vocab.size

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of PAD, SOS, EOS, UNK."""
        return frozenset((self.pad_id, self.sos_id, self.eos_id, self.unk_id))

    # -- encode -------------------------------------------------------------------------------

    def _scan(self, text: str, out: list[int]) -> None:
        """altlas.md §1.2 step 3 on ``text`` (no normalisation), appending ids to ``out``."""
        i, n = 0, len(text)
        newline = self.newline_id if self.newline_id is not None else self.unk_id
        while i < n:
            ch = text[i]
            if ch.isspace():
                if ch == "\n":
                    out.append(newline)
                i += 1
                continue
            for tok, tid in self._candidates.get(ch, ()):
                if text.startswith(tok, i):
                    out.append(tid)
                    i += len(tok)
                    break
            else:
                out.append(self.unk_id)
                i += 1

    def encode_body(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOS/EOS (normalised; structural rewrite if active)."""
        norm = normalise_text(text)
        out: list[int] = []
        if self.indent_mode == "literal":
            self._scan(norm, out)
            return out
        assert self.indent_id is not None and self.dedent_id is not None
        newline = self.newline_id if self.newline_id is not None else self.unk_id
        lines = norm.split("\n") if norm else []
        for k, (line, (n_in, n_de, _)) in enumerate(zip(lines, _indent_events(lines), strict=True)):
            if k:
                out.append(newline)
            out.extend([self.dedent_id] * n_de)
            out.extend([self.indent_id] * n_in)
            self._scan(line, out)
        return out

    def encode(self, text: str) -> list[int]:
        """``[SOS] + ids + [EOS]`` (altlas.md §1.2)."""
        return [self.sos_id, *self.encode_body(text), self.eos_id]

    # -- decode -------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], *, surface: bool = True) -> str:
        """Token ids -> text (altlas.md §1.3/§1.4); all ids are walked, PAD/SOS/EOS skipped."""
        texts = self._texts if surface else self._raw_texts
        skip = (self.pad_id, self.sos_id, self.eos_id)
        structural = self.indent_mode == "structural"
        parts: list[str] = []
        at_line_start = True
        level = 0
        size = len(texts)
        for raw in ids:
            tid = int(raw)
            if tid in skip:
                continue
            if tid == self.newline_id:
                parts.append("\n")
                at_line_start = True
                continue
            if structural and tid == self.indent_id:
                level += 1
                continue
            if structural and tid == self.dedent_id:
                level = max(0, level - 1)
                continue
            text = texts[tid] if 0 <= tid < size else UNK
            if at_line_start:
                if structural and level:
                    parts.append(" " * (INDENT_WIDTH * level))
            else:
                parts.append(" ")
            parts.append(text)
            at_line_start = False
        return "".join(parts)

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Raw token strings (``<UNK>`` for out-of-range ids); specials kept, for debugging."""
        size = self.vocab_size
        return [self.vocab.tokens[int(i)] if 0 <= int(i) < size else UNK for i in ids]

    # -- canonical form -------------------------------------------------------------------------

    def canonical(self, text: str) -> str:
        """altlas.md §1.4 canonical form: ``decode(encode(s))`` for ``<UNK>``-free programs
        (structural)."""
        norm = normalise_text(text)
        lines = norm.split("\n") if norm else []
        out_lines: list[str] = []
        for line, (_, _, depth) in zip(lines, _indent_events(lines), strict=True):
            if not line:
                out_lines.append("")
                continue
            ids: list[int] = []
            self._scan(line.lstrip(), ids)
            body = " ".join(self._raw_texts[i] for i in ids)
            out_lines.append(" " * (INDENT_WIDTH * depth) + body)
        return "\n".join(out_lines)


def _warn_once(vocab: Vocab) -> None:
    with _warned_lock:
        if vocab.sha256 in _warned_hashes:
            return
        _warned_hashes.add(vocab.sha256)
    logger.warning(
        "vocabulary %s has no INDENT/DEDENT: indent_mode 'structural' falls back to 'literal'",
        vocab.name,
    )
