"""Split parsed sections into chunks that fit an embedding model's input.
Plain Python: sections in, chunk drafts out; no models, no Celery."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from documents.parsers.base import Section

TokenCounter = Callable[[str], int]

# Chunks are also capped at this many characters per token of budget, so
# text that a tokenizer squeezes into a few unknown-word tokens (a 300 KB
# string without spaces is one [UNK] to BERT) cannot become a giant chunk.
MAX_CHARS_PER_TOKEN = 16


# Sections are joined by this in the document's extracted text, the text
# chunk offsets point into.
SECTION_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ChunkDraft:
    position: int
    content: str
    structure: dict
    token_count: int
    # [start, end) of the chunk in the extracted text (the sections' text in
    # reading order, joined by SECTION_SEPARATOR); None where it could not be
    # placed.
    start: int | None = None
    end: int | None = None


def chunk_sections(
    sections: Iterable[Section],
    *,
    max_tokens: int,
    overlap_tokens: int,
    count_tokens: TokenCounter,
) -> Iterator[ChunkDraft]:
    """Chunks in reading order, positions 0, 1, 2, ...

    What callers can rely on:
    - `count_tokens(chunk.content) == chunk.token_count <= max_tokens` for
      every chunk, whatever the counter (each chunk is measured whole before
      it is yielded);
    - consecutive sections with equal `structure` are packed together;
      sections with different structure (another heading, page or chapter)
      never share a chunk, and every chunk carries its section's structure;
    - text is cut at paragraphs, then sentences (also 。！？), then lines,
      then words, then characters (text without spaces); atomic sections
      (code, tables) are only cut, by lines, when they alone exceed
      `max_tokens`;
    - tables (sections with a `table_header`) are cut between rows only, and
      a chunk that continues a table starts with the table's header row and
      delimiter line (unless the header alone takes over half the budget);
    - a chunk that continues the previous chunk's run of text starts with up
      to `overlap_tokens` of that chunk's tail, cut at a word boundary where
      there is one;
    - no chunk is empty or whitespace only;
    - chunks are at most `MAX_CHARS_PER_TOKEN * max_tokens` characters long.

    The counter is called on small pieces (at most `8 * max_tokens`
    characters while splitting), each piece once, plus a few calls per
    chunk, so megabyte-long paragraphs cost linear time."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be at least 0 and smaller than max_tokens")
    splitter = _Splitter(max_tokens=max_tokens, count_tokens=count_tokens)
    locator = _Locator()
    position = 0
    for structure, run in itertools.groupby(locator.follow(sections), key=lambda section: section.structure):
        packer = _Packer(max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count_tokens)
        units = itertools.chain.from_iterable(splitter.units(section) for section in run)
        for content, token_count, overlap, repeated_header in packer.pack(units):
            start, end = locator.place(content, overlap, repeated=repeated_header)
            yield ChunkDraft(
                position=position,
                content=content,
                structure=dict(structure),
                token_count=token_count,
                start=start,
                end=end,
            )
            position += 1


class _Locator:
    """Places chunks in the extracted text: the sections' text joined by a
    blank line, each table's header row before its first section. The
    chunker changes only
    whitespace (strips, collapses blank lines, joins pieces with one
    separator) and keeps every other character, in order; so counted
    without whitespace, the chunks' own text (without the overlap they
    repeat) tiles the extracted text exactly, and a chunk starts its
    overlap's length before where the previous one ended. A walker turns
    those counts into offsets; text before the previous chunk is dropped."""

    def __init__(self) -> None:
        self._text = ""
        self._base = 0  # offset of self._text[0] in the extracted text
        self._sections = 0
        self._cursor = 0  # characters other than whitespace placed so far
        # A point of the walk: (offset, non-whitespace characters before it).
        self._mark = (0, 0)

    def follow(self, sections: Iterable[Section]) -> Iterator[Section]:
        open_table_header = None
        for section in sections:
            if self._sections:
                self._text += SECTION_SEPARATOR
            self._text += section.text
            self._sections += 1
            # A table's header row stands once in the text, where the table
            # opens (as the splitter writes it); chunks that continue the
            # table repeat it (see `place`).
            header = section.table_header.strip("\n").rstrip() if section.table_header is not None else None
            if header is not None and header != open_table_header:
                self._text = self._text[: len(self._text) - len(section.text)] + f"{header}\n{section.text}"
            open_table_header = header
            yield section

    def place(self, content: str, overlap: str, *, repeated: str = "") -> tuple[int | None, int | None]:
        """Offsets of the chunk's own text: after the overlap it shares with
        the previous chunk, and without a table header it repeats (which
        stands earlier in the text, not here)."""
        size = _visible(content) - _visible(repeated)
        if not size:
            return None, None
        first = self._cursor - _visible(overlap)
        last = first + size - 1
        self._cursor = first + size
        start = self._offset_of(first)
        if start is None:
            return None, None
        self._mark = (start, first)
        end = self._offset_of(last)
        if end is None:
            return None, None
        drop = start - self._base
        if drop > 65536:
            self._text = self._text[drop:]
            self._base = start
        return start, end + 1

    def _offset_of(self, index: int) -> int | None:
        """Offset of the `index`-th character other than whitespace, walking
        from the mark (never backwards past it)."""
        offset, seen = self._mark
        local = offset - self._base
        while local < len(self._text):
            if not self._text[local].isspace():
                if seen == index:
                    return self._base + local
                seen += 1
            local += 1
        return None


def _visible(text: str) -> int:
    return sum(1 for character in text if not character.isspace())


# ---------------------------------------------------------------------------
# Splitting: sections into units that each fit in one chunk.


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    # Whitespace that separated this unit from the text before it.
    separator: str
    # (text, tokens) of the table header to put first when this unit (rows
    # of a table) opens a chunk.
    header: tuple[str, int] | None = None


_PARAGRAPHS, _SENTENCES, _LINES, _WORDS, _CHARACTERS = range(5)

_PARAGRAPH_BREAK = re.compile(r"\n(?:[ \t\f\v]*\n)+")
_EXTRA_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n){2,}")
# A sentence ends at terminal punctuation (plus closing quotes/brackets)
# followed by whitespace, or at CJK terminal punctuation, which needs none.
# The lookbehinds start a match only at the first mark of a run, so a long
# run of dots is scanned once instead of once per dot.
_SENTENCE_END = re.compile(
    r"(?<![.!?\u2026])[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s|$)"
    r"|(?<![\u3002\uff01\uff1f\uff1b])[\u3002\uff01\uff1f\uff1b]+[\u300d\u300f\u201d\u2019\uff09)]*"
)
_WORD = re.compile(r"\S+")


class _Splitter:
    def __init__(self, *, max_tokens: int, count_tokens: TokenCounter) -> None:
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        # Longer text is split before counting: no tokenizer call on a
        # megabyte string, and no quadratic re-counting while searching.
        self.count_limit = 8 * max_tokens
        # Small pieces (sentences, words) are counted in windows of about
        # this many characters rather than one by one.
        self.window_chars = max_tokens
        # The header of the table the previous section belonged to: the next
        # section with the same header continues that table.
        self.open_table_header: str | None = None

    def units(self, section: Section) -> Iterator[_Unit]:
        if section.table_header is not None:
            yield from self._table_units(section)
            return
        self.open_table_header = None
        if section.atomic:
            text = section.text.strip("\n").rstrip()
            if text.strip():
                yield from self._split(text, _LINES, "\n\n")
        else:
            text = _EXTRA_BLANK_LINES.sub("\n\n", section.text.strip())
            if text:
                yield from self._split(text, _PARAGRAPHS, "\n\n")

    def _table_units(self, section: Section) -> Iterator[_Unit]:
        """Body rows in units that leave room for the header; the table's
        first unit carries the header itself, the others carry it along to
        be repeated when they open a chunk."""
        header = section.table_header.strip("\n").rstrip()
        continuing = header == self.open_table_header
        self.open_table_header = header
        body = section.text.strip("\n").rstrip()
        header_tokens = self._count(header)
        if header_tokens is None or header_tokens > self.max_tokens // 2:
            # A header that big would crowd out the rows: the table is cut
            # like any atomic block.
            text = body if continuing else f"{header}\n{body}".rstrip()
            if text.strip():
                yield from self._split(text, _LINES, "\n" if continuing else "\n\n")
            return
        if not body.strip():
            if not continuing:
                yield _Unit(header, header_tokens, "\n\n")
            return
        rows = _Splitter(max_tokens=self.max_tokens - header_tokens, count_tokens=self.count_tokens)
        repeat = (header, header_tokens)
        for index, unit in enumerate(rows._split(body, _LINES, "\n")):
            if index == 0 and not continuing:
                text = f"{header}\n{unit.text}"
                tokens = self.count_tokens(text)
                if tokens <= self.max_tokens:
                    yield _Unit(text, tokens, "\n\n")
                    continue
                # A tokenizer that merges across the line break: the header
                # goes as a unit of its own.
                yield _Unit(header, header_tokens, "\n\n")
                yield _Unit(unit.text, unit.tokens, "\n", header=repeat)
            else:
                yield _Unit(unit.text, unit.tokens, unit.separator, header=repeat)

    def _count(self, text: str) -> int | None:
        if len(text) > self.count_limit:
            return None
        return self.count_tokens(text)

    def _split(self, text: str, level: int, separator: str, known_tokens: int | None = None) -> Iterator[_Unit]:
        tokens = known_tokens if known_tokens is not None else self._count(text)
        if tokens is not None and tokens <= self.max_tokens:
            yield _Unit(text, tokens, separator)
            return
        if level == _CHARACTERS:
            yield from self._split_characters(text, separator)
            return
        pieces = _pieces(text, level)
        if len(pieces) <= 1:
            yield from self._split(text, level + 1, separator, tokens)
            return
        pieces[0] = (pieces[0][0], separator)
        if level == _PARAGRAPHS:
            for piece, piece_separator in pieces:
                yield from self._split(piece, level + 1, piece_separator)
        else:
            for window in self._windows(pieces):
                yield from self._split_window(window, level)

    def _windows(self, pieces: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
        window: list[tuple[str, str]] = []
        size = 0
        for piece in pieces:
            length = len(piece[0]) + (len(piece[1]) if window else 0)
            if window and size + length > self.window_chars:
                yield window
                window, size = [], 0
            window.append(piece)
            size += length
        if window:
            yield window

    def _split_window(self, window: list[tuple[str, str]], level: int) -> Iterator[_Unit]:
        """Emit a window of same-level pieces as one unit if it fits, else
        halve it; a single piece that does not fit goes down a level."""
        separator = window[0][1]
        if len(window) == 1:
            yield from self._split(window[0][0], level + 1, separator)
            return
        text = _join(window)
        tokens = self._count(text)
        if tokens is not None and tokens <= self.max_tokens:
            yield _Unit(text, tokens, separator)
            return
        middle = len(window) // 2
        yield from self._split_window(window[:middle], level)
        yield from self._split_window(window[middle:], level)

    def _split_characters(self, text: str, separator: str) -> Iterator[_Unit]:
        start = 0
        while start < len(text):
            end = _character_boundary(text, min(len(text), start + self.window_chars))
            piece = text[start:end]
            tokens = self.count_tokens(piece)
            while tokens > self.max_tokens:
                if end - start <= 1:
                    raise ValueError(f"max_tokens={self.max_tokens} cannot hold the single character {piece!r}")
                half = start + max(1, (end - start) // 2)
                boundary = _character_boundary(text, half)
                end = boundary if boundary < end else half
                piece = text[start:end]
                tokens = self.count_tokens(piece)
            yield _Unit(piece, tokens, separator)
            separator = ""
            start = end


def _character_boundary(text: str, index: int) -> int:
    # Keep combining marks with their base character; a pile of marks (as in
    # "Zalgo" text) is cut anyway.
    limit = min(len(text), index + 8)
    while 0 < index < limit and unicodedata.combining(text[index]):
        index += 1
    return index


def _pieces(text: str, level: int) -> list[tuple[str, str]]:
    """(piece, separator before it) at one level; pieces are stripped and
    non-empty, and joining them with their separators gives back the text
    up to whitespace."""
    if level == _PARAGRAPHS:
        return [(part.strip(), "\n\n") for part in _PARAGRAPH_BREAK.split(text) if part.strip()]
    if level == _SENTENCES:
        ends = [match.end() for match in _SENTENCE_END.finditer(text)]
        return _cut(text, ends)
    if level == _LINES:
        pieces = []
        separator = ""
        for line in text.split("\n"):
            if line.strip():
                pieces.append((line.rstrip(), separator))
                separator = "\n"
            elif pieces:
                separator = "\n\n"
        return pieces
    pieces = []
    previous_end = None
    for match in _WORD.finditer(text):
        gap = "" if previous_end is None else text[previous_end : match.start()]
        pieces.append((match.group(), "\n" if "\n" in gap else (" " if gap else "")))
        previous_end = match.end()
    return pieces


def _cut(text: str, ends: list[int]) -> list[tuple[str, str]]:
    """Pieces of `text` ending at the given offsets (and at its end); the
    whitespace that leads a piece becomes its separator."""
    pieces = []
    start = 0
    for end in [*ends, len(text)]:
        raw = text[start:end]
        piece = raw.strip()
        if piece:
            leading = raw[: len(raw) - len(raw.lstrip())]
            pieces.append((piece, "\n" if "\n" in leading else (" " if leading else "")))
        start = end
    return pieces


def _join(units: Iterable[tuple[str, str]]) -> str:
    parts = []
    for index, (text, separator) in enumerate(units):
        if index:
            parts.append(separator)
        parts.append(text)
    return "".join(parts)


# ---------------------------------------------------------------------------
# Packing: units into chunks, with overlap.


class _Packer:
    def __init__(self, *, max_tokens: int, overlap_tokens: int, count_tokens: TokenCounter) -> None:
        self.max_tokens = max_tokens
        self.max_chars = MAX_CHARS_PER_TOKEN * max_tokens
        self.overlap_tokens = overlap_tokens
        self.count_tokens = count_tokens

    def pack(self, units: Iterable[_Unit]) -> Iterator[tuple[str, int, str, str]]:
        """(content, token count, the previous chunk's tail it opens with or
        "", the table header it repeats or "")."""
        source = iter(units)
        # Units handed back by `_measure`, to be placed before the source's.
        carried: deque[_Unit] = deque()
        pending: list[_Unit] = []
        # (text, tokens) of the previous chunk's tail that opens this one,
        # or of the header of the table this chunk continues.
        overlap: tuple[str, int] | None = None
        overlap_is_header = False
        tokens = chars = 0
        previous: str | None = None
        while True:
            unit = carried.popleft() if carried else next(source, None)
            if unit is not None and not pending:
                overlap_is_header = (
                    unit.header is not None and len(unit.header[0]) + 1 + len(unit.text) <= self.max_chars
                )
                overlap = unit.header if overlap_is_header else self._overlap(previous, unit)
                tokens, chars = (overlap[1], len(overlap[0])) if overlap else (0, 0)
            elif unit is None or tokens + unit.tokens > self.max_tokens or chars + len(unit.text) > self.max_chars:
                if not pending:
                    return
                content, token_count, given_back, used = self._measure(
                    overlap, pending, overlap_is_header=overlap_is_header
                )
                yield (content, token_count, "", used) if overlap_is_header else (content, token_count, used, "")
                previous = content
                carried.extendleft(reversed(given_back + ([unit] if unit is not None else [])))
                pending, overlap = [], None
                continue
            pending.append(unit)
            tokens += unit.tokens
            chars += len(unit.text) + len(unit.separator)

    def _measure(
        self, overlap: tuple[str, int] | None, units: list[_Unit], *, overlap_is_header: bool = False
    ) -> tuple[str, int, list[_Unit], str]:
        """The chunk's text and its real token count. Sums of per-unit counts
        are exact for word-level tokenizers (BERT) but not for BPE ones, so
        the whole chunk is counted; if it is over, the overlap is dropped and
        then units are given back until it fits (a repeated table header is
        kept longer: rows are given back first). A unit alone always fits:
        it was counted alone."""
        units = list(units)
        given_back: list[_Unit] = []
        while True:
            parts = ([(overlap[0], "")] if overlap else []) + [(unit.text, unit.separator) for unit in units]
            content = _join(parts)
            token_count = self.count_tokens(content)
            if token_count <= self.max_tokens or (overlap is None and len(units) == 1):
                return content, token_count, given_back, overlap[0] if overlap else ""
            if overlap is not None and (not overlap_is_header or len(units) == 1):
                overlap = None
            else:
                given_back.insert(0, units.pop())

    def _overlap(self, previous: str | None, unit: _Unit) -> tuple[str, int] | None:
        """Up to `overlap_tokens` from the end of the previous chunk, leaving
        room for `unit` (an atomic block that fits alone stays whole)."""
        if previous is None or not self.overlap_tokens:
            return None
        budget = min(self.overlap_tokens, self.max_tokens - unit.tokens)
        if budget <= 0:
            return None
        tail = _tail(previous, budget, self.count_tokens)
        if tail is None or len(tail[0]) + len(unit.separator) + len(unit.text) > self.max_chars:
            return None
        return tail


def _tail(text: str, budget: int, count_tokens: TokenCounter) -> tuple[str, int] | None:
    """The longest suffix of `text` that starts at a word and has at most
    `budget` tokens; a suffix of the last word when that alone is too long
    (CJK text has no spaces)."""
    # No suffix of budget tokens is longer than this in any real tokenizer;
    # the cap keeps the search cheap on long chunks.
    window_start = max(0, len(text) - 16 * budget - 64)
    starts = [match.start() for match in _WORD.finditer(text, window_start)]
    if window_start > 0 and starts and starts[0] == window_start:
        # The window may have cut a word in half.
        starts = starts[1:]
    best = _longest_fitting_suffix(text, starts, budget, count_tokens)
    if best is not None:
        return best
    last_word_start = starts[-1] if starts else window_start
    offsets = list(range(last_word_start, len(text)))
    return _longest_fitting_suffix(text, offsets, budget, count_tokens)


def _longest_fitting_suffix(
    text: str, starts: list[int], budget: int, count_tokens: TokenCounter
) -> tuple[str, int] | None:
    """Binary search for the earliest start whose suffix fits; suffixes get
    shorter (and cheaper) as the start moves right."""
    low, high = 0, len(starts) - 1
    best = None
    while low <= high:
        middle = (low + high) // 2
        suffix = text[starts[middle] :].strip()
        tokens = count_tokens(suffix) if suffix else 0
        if suffix and tokens <= budget:
            best = (suffix, tokens)
            high = middle - 1
        else:
            low = middle + 1
    return best
