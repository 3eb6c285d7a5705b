"""chunk_sections, with simple deterministic
counters (the real BERT tokenizer is exercised in test_corpus_parsing)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from documents.chunking import (
    MAX_CHARS_PER_TOKEN,
    ChunkDraft,
    chunk_sections,
)
from documents.embeddings.base import estimate_tokens
from documents.parsers.base import Section

pytestmark = pytest.mark.unit

CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def word_count(text: str) -> int:
    """Whitespace-separated words, with every CJK character a word of its
    own (additive over whitespace, like WordPiece)."""
    return len(CJK_CHAR.sub(" x ", text).split())


class RecordingCounter:
    def __init__(self, counter=word_count) -> None:
        self.counter = counter
        self.lengths: list[int] = []

    def __call__(self, text: str) -> int:
        self.lengths.append(len(text))
        return self.counter(text)


def chunk(sections, *, max_tokens=20, overlap_tokens=0, count_tokens=word_count) -> list[ChunkDraft]:
    return list(
        chunk_sections(sections, max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count_tokens)
    )


def prose(sentences: int, start: int = 0) -> str:
    return " ".join(f"Sentence number {index} says something plain." for index in range(start, start + sentences))


def words_of(chunks: list[ChunkDraft]) -> list[str]:
    return [word for draft in chunks for word in draft.content.split()]


def test_chunk_draft_is_frozen():
    draft = ChunkDraft(position=0, content="x", structure={}, token_count=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.content = "y"


def test_chunks_never_exceed_max_tokens_as_measured_by_the_counter():
    sections = [
        Section(text=prose(40), structure={"page": 1}),
        Section(text="word " * 500, structure={"page": 2}),
        Section(text="x" * 5_000, structure={"page": 3}),
        Section(text="\n".join(f"line {index} of code" for index in range(100)), structure={"page": 4}, atomic=True),
        Section(text="汉字" * 500, structure={"page": 5}),
    ]
    for max_tokens in (5, 17, 64):
        for overlap in (0, max_tokens // 3):
            for draft in chunk(sections, max_tokens=max_tokens, overlap_tokens=overlap):
                assert draft.token_count == word_count(draft.content) <= max_tokens


def test_positions_are_consecutive_in_reading_order():
    sections = [Section(text=prose(30, start=(page - 1) * 30), structure={"page": page}) for page in range(1, 4)]
    chunks = chunk(sections, max_tokens=25)
    assert [draft.position for draft in chunks] == list(range(len(chunks)))
    assert [draft.structure["page"] for draft in chunks] == sorted(draft.structure["page"] for draft in chunks)
    numbers = [int(number) for number in re.findall(r"number (\d+)", " ".join(draft.content for draft in chunks))]
    assert numbers == list(range(90))


def test_all_text_is_kept_without_overlap():
    text = prose(50)
    assert " ".join(words_of(chunk([Section(text=text, structure={})], max_tokens=23))) == " ".join(text.split())


def test_no_chunk_is_empty_or_whitespace_only():
    sections = [
        Section(text="   \n\n  ", structure={"page": 1}),
        Section(text="", structure={"page": 1}),
        Section(text="\n\n\nreal text\n\n\n", structure={"page": 2}),
        Section(text="  \n ", structure={"page": 3}, atomic=True),
    ]
    chunks = chunk(sections)
    assert [draft.content for draft in chunks] == ["real text"]


def test_consecutive_sections_with_equal_structure_are_packed_together():
    structure = {"title": "T", "heading_path": ["A"], "heading_level": 1}
    sections = [Section(text=f"Paragraph {index}.", structure=structure) for index in range(5)]
    chunks = chunk(sections, max_tokens=50)
    assert len(chunks) == 1
    assert chunks[0].content == "\n\n".join(f"Paragraph {index}." for index in range(5))


def test_sections_with_different_structure_never_share_a_chunk():
    sections = [
        Section(text="Under heading A.", structure={"heading_path": ["A"]}),
        Section(text="Under heading B.", structure={"heading_path": ["B"]}),
        Section(text="Back under A, but after B.", structure={"heading_path": ["A"]}),
    ]
    chunks = chunk(sections, max_tokens=100, overlap_tokens=5)
    assert [(draft.content, draft.structure) for draft in chunks] == [
        ("Under heading A.", {"heading_path": ["A"]}),
        ("Under heading B.", {"heading_path": ["B"]}),
        ("Back under A, but after B.", {"heading_path": ["A"]}),
    ]


def test_each_chunk_carries_its_own_copy_of_the_structure():
    structure = {"page": 1}
    chunks = chunk([Section(text=prose(20), structure=structure)], max_tokens=10)
    assert len(chunks) > 1
    chunks[0].structure["page"] = 99
    assert structure == {"page": 1} and chunks[1].structure == {"page": 1}


def test_overlap_repeats_the_tail_of_the_previous_chunk_within_a_section():
    chunks = chunk([Section(text=prose(30), structure={"page": 1})], max_tokens=30, overlap_tokens=6)
    assert len(chunks) > 2
    for previous, current in zip(chunks, chunks[1:], strict=False):
        previous_words, current_words = previous.content.split(), current.content.split()
        shared = next(
            size
            for size in range(min(len(previous_words), 6), -1, -1)
            if previous_words[-size:] == current_words[:size]
        )
        assert 1 <= shared <= 6


def test_overlap_does_not_cross_a_structure_boundary():
    sections = [Section(text=prose(10), structure={"page": 1}), Section(text="Fresh page.", structure={"page": 2})]
    chunks = chunk(sections, max_tokens=15, overlap_tokens=5)
    assert chunks[-1].content == "Fresh page."


def test_overlap_starts_at_a_word_boundary():
    text = " ".join(f"w{index:03d}" for index in range(200))
    chunks = chunk([Section(text=text, structure={})], max_tokens=20, overlap_tokens=5)
    tokens = set(text.split())
    for draft in chunks:
        assert set(draft.content.split()) <= tokens


def test_atomic_section_that_fits_stays_whole_even_with_overlap():
    code = "def f():\n    x = 1\n\n    return x  # twelve words in this code block"
    sections = [
        Section(text=prose(3), structure={"heading_path": ["A"]}),
        Section(text=code, structure={"heading_path": ["A"]}, atomic=True),
        Section(text=prose(3, start=3), structure={"heading_path": ["A"]}),
    ]
    chunks = chunk(sections, max_tokens=word_count(code) + 2, overlap_tokens=8)
    assert sum(code in draft.content for draft in chunks) == 1
    assert all(draft.token_count <= word_count(code) + 2 for draft in chunks)


def test_oversized_atomic_section_is_split_by_whole_lines():
    lines = [f"| row {index} | value {index} |" for index in range(40)]
    chunks = chunk([Section(text="\n".join(lines), structure={}, atomic=True)], max_tokens=30)
    assert len(chunks) > 1
    produced = [line for draft in chunks for line in draft.content.split("\n")]
    assert produced == lines


def test_long_paragraph_is_cut_at_sentence_ends():
    chunks = chunk([Section(text=prose(40), structure={})], max_tokens=20)
    assert len(chunks) > 1
    assert all(draft.content.endswith(".") for draft in chunks)


def test_paragraph_boundaries_are_preferred_over_sentences():
    paragraphs = [prose(2, start=index * 2) for index in range(6)]
    chunks = chunk([Section(text="\n\n".join(paragraphs), structure={})], max_tokens=word_count(paragraphs[0]) * 2)
    assert [draft.content for draft in chunks] == ["\n\n".join(paragraphs[index : index + 2]) for index in (0, 2, 4)]


def test_cjk_text_is_cut_at_cjk_sentence_punctuation():
    sentences = ["这是第一句话。", "这是第二句话！", "这是第三句话？", "这是第四句话。"]
    chunks = chunk([Section(text="".join(sentences), structure={})], max_tokens=14)
    assert [draft.content for draft in chunks] == ["".join(sentences[:2]), "".join(sentences[2:])]


def test_cjk_text_without_punctuation_is_cut_by_characters():
    text = "汉字" * 300
    chunks = chunk([Section(text=text, structure={})], max_tokens=50)
    assert "".join(draft.content for draft in chunks) == text
    assert all(draft.token_count <= 50 for draft in chunks)


def test_cjk_overlap_falls_back_to_characters():
    text = "汉字" * 300
    chunks = chunk([Section(text=text, structure={})], max_tokens=50, overlap_tokens=10)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert any(current.content.startswith(previous.content[-size:]) for size in range(1, 11))


def test_text_without_spaces_is_cut_by_characters_within_the_character_cap():
    token = "x" * 300_000
    chunks = chunk([Section(text=token, structure={})], max_tokens=254, count_tokens=lambda text: 1)
    assert "".join(draft.content for draft in chunks) == token
    assert max(len(draft.content) for draft in chunks) <= MAX_CHARS_PER_TOKEN * 254


def test_combining_marks_stay_with_their_letter_and_zalgo_text_still_splits():
    accented = "e\u0301" * 200
    chunks = chunk([Section(text=accented, structure={})], max_tokens=15, count_tokens=len)
    assert all(draft.content[0] != "\u0301" for draft in chunks)
    zalgo = "a" + "\u0301" * 5_000
    chunks = chunk([Section(text=zalgo, structure={})], max_tokens=50, count_tokens=len)
    assert "".join(draft.content for draft in chunks) == zalgo


def test_counter_is_only_called_on_small_pieces_of_a_huge_paragraph():
    counter = RecordingCounter()
    text = prose(20_000) + " " + "y" * 100_000
    chunks = chunk([Section(text=text, structure={})], max_tokens=254, overlap_tokens=32, count_tokens=counter)
    assert max(counter.lengths) <= MAX_CHARS_PER_TOKEN * 254
    # Linear: about one call per window of text plus a few per chunk.
    assert len(counter.lengths) < len(text) / 254 * 3 + len(chunks) * 12


def test_a_counter_that_is_not_additive_is_still_respected():
    # Counts characters, so the separators between units add tokens that no
    # unit's own count includes.
    def characters(text: str) -> int:
        return len(text)

    chunks = chunk([Section(text=prose(30), structure={})], max_tokens=60, overlap_tokens=10, count_tokens=characters)
    assert all(draft.token_count == len(draft.content) <= 60 for draft in chunks)
    assert all(draft.content.strip() for draft in chunks)


def test_invalid_budgets_are_rejected():
    with pytest.raises(ValueError):
        chunk([], max_tokens=0)
    with pytest.raises(ValueError):
        chunk([], max_tokens=10, overlap_tokens=10)
    with pytest.raises(ValueError):
        chunk([], max_tokens=10, overlap_tokens=-1)


def test_no_sections_give_no_chunks():
    assert chunk([]) == []


# --- tables ------------------------------------------------------------------


def table(rows: int, *, structure=None, start: int = 0) -> Section:
    body = "\n".join(f"| r{index} | v{index} |" for index in range(start, start + rows))
    return Section(
        text=body, structure=structure or {"sheet": "S"}, atomic=True, table_header="| key | value |\n| --- | --- |"
    )


HEADER = "| key | value |\n| --- | --- |"


def test_every_chunk_of_a_long_table_starts_with_its_header_row():
    chunks = chunk([table(40)], max_tokens=30)
    assert len(chunks) > 3
    assert all(draft.content.startswith(HEADER + "\n| r") for draft in chunks)
    assert all(draft.token_count <= 30 for draft in chunks)


def test_table_rows_are_never_split_and_none_is_lost_or_repeated():
    chunks = chunk([table(40)], max_tokens=30, overlap_tokens=5)
    rows = [line for draft in chunks for line in draft.content.split("\n") if line.startswith("| r")]
    assert rows == [f"| r{index} | v{index} |" for index in range(40)]


def test_consecutive_sections_of_one_table_continue_it_under_one_header():
    chunks = chunk([table(3), table(3, start=3)], max_tokens=60)
    assert [draft.content for draft in chunks] == [
        HEADER + "\n" + "\n".join(f"| r{index} | v{index} |" for index in range(6))
    ]


def test_a_table_after_text_carries_its_header_and_so_does_its_continuation():
    sections = [Section(text="Readings taken at dawn.", structure={"sheet": "S"}), table(12)]
    chunks = chunk(sections, max_tokens=30)
    assert chunks[0].content.startswith("Readings taken at dawn.\n\n" + HEADER + "\n| r0 |")
    assert all(draft.content.startswith(HEADER) for draft in chunks[1:])


def test_text_after_a_table_does_not_get_the_header():
    sections = [table(12), Section(text=" ".join(["after"] * 25), structure={"sheet": "S"})]
    chunks = chunk(sections, max_tokens=30)
    assert chunks[-1].content == " ".join(["after"] * 25)
    assert all(draft.content.startswith(HEADER) for draft in chunks[:-1])


def test_a_header_too_big_to_repeat_is_cut_like_any_atomic_block():
    wide = "| " + " | ".join(f"column{index}" for index in range(20)) + " |"
    section = Section(text="| a | b |\n| c | d |", structure={}, atomic=True, table_header=wide + "\n| --- |")
    chunks = chunk([section], max_tokens=30)
    assert all(draft.token_count <= 30 for draft in chunks)
    assert "\n".join(draft.content for draft in chunks).count("column0") == 1


def test_a_header_only_table_is_kept():
    section = Section(text="", structure={}, atomic=True, table_header=HEADER)
    assert [draft.content for draft in chunk([section])] == [HEADER]


def test_table_chunks_respect_every_cap_whatever_the_budget_and_counter():
    wide_rows = "\n".join(f"| r{index} | " + "cell text " * (index % 7) + "|" for index in range(60))
    sections = [
        Section(text="Intro " * 30, structure={"sheet": "S"}),
        table(25),
        Section(text=wide_rows, structure={"sheet": "S"}, atomic=True, table_header=HEADER),
        Section(text="after " * 40, structure={"sheet": "S"}),
    ]

    def characters(text: str) -> int:
        return len(text)

    for count_tokens in (word_count, estimate_tokens, characters):
        for max_tokens in (12, 25, 64, 254):
            for overlap in (0, max_tokens // 4):
                chunks = chunk(sections, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=count_tokens)
                for draft in chunks:
                    assert draft.token_count == count_tokens(draft.content) <= max_tokens
                    assert len(draft.content) <= MAX_CHARS_PER_TOKEN * max_tokens
                    assert draft.content.strip()


# --- Offsets in the extracted text ------------------------------------------------


def _extracted(sections) -> str:
    from documents.chunking import SECTION_SEPARATOR

    return SECTION_SEPARATOR.join(section.text for section in sections)


def _same_but_whitespace(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


@pytest.mark.parametrize("overlap", [0, 5])
def test_each_chunk_has_its_offsets_in_the_extracted_text(overlap):
    sections = [
        Section("# Title\n\n\n\n" + prose(30), {"heading_path": ["Title"]}),
        Section("Code   line one\n   line two", {"heading_path": ["Title"]}, atomic=True),
        Section("第二部分说明异步处理。" * 60, {"heading_path": ["二"]}),
        Section(prose(20, start=100), {"page": 3}),
    ]
    text = _extracted(sections)
    drafts = chunk(sections, max_tokens=25, overlap_tokens=overlap)
    starts = [draft.start for draft in drafts]
    assert None not in starts and starts == sorted(starts)
    for draft in drafts:
        assert _same_but_whitespace(text[draft.start : draft.end], draft.content), draft
        assert not text[draft.start].isspace() and not text[draft.end - 1].isspace()


def test_repeated_text_is_placed_in_reading_order():
    sections = [Section("Same words again and again. " * 50, {})]
    drafts = chunk(sections, max_tokens=10)
    starts = [draft.start for draft in drafts]
    assert len(set(starts)) == len(starts) and starts == sorted(starts)
    assert drafts[-1].end == len(sections[0].text.rstrip())


def test_chunks_of_a_table_are_placed_on_their_own_rows_not_on_the_repeated_header():
    from documents.chunking import SECTION_SEPARATOR

    sections = [Section(text="Readings taken at dawn.", structure={"sheet": "S"}), table(30)]
    # The extracted text holds the header once, where the table opens.
    text = sections[0].text + SECTION_SEPARATOR + HEADER + "\n" + sections[1].text
    drafts = chunk(sections, max_tokens=30)
    assert len(drafts) > 2
    assert HEADER in drafts[0].content
    for index, draft in enumerate(drafts):
        own = draft.content if index == 0 else draft.content.removeprefix(HEADER)
        assert _same_but_whitespace(text[draft.start : draft.end], own), draft
    assert [draft.start for draft in drafts] == sorted(draft.start for draft in drafts)
