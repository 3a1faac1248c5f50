"""Splitting documents into overlapping chunks, by characters, by words ("tokens") or along
markdown structure (headings and paragraphs first, then words), as a collection's ``chunking``
configuration says."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from schemas.rag import Chunking

_HEADING = re.compile(r"^#{1,6}\s", re.MULTILINE)
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str


def chunk_text(text: str, chunking: Chunking, *, markdown: bool = False) -> list[Chunk]:
    """``text`` as chunks of at most ``chunking.size`` characters (words for ``tokens``) that
    overlap by ``chunking.overlap``; empty text gives no chunks."""
    if not text.strip():
        return []
    if chunking.strategy == "tokens":
        pieces = _by_words(text, chunking.size, chunking.overlap)
    elif chunking.strategy == "markdown" or markdown:
        pieces = _by_structure(text, chunking.size, chunking.overlap)
    else:
        pieces = _by_chars(text, chunking.size, chunking.overlap)
    return [Chunk(i, piece) for i, piece in enumerate(p for p in pieces if p.strip())]


def _by_chars(text: str, size: int, overlap: int) -> list[str]:
    text = text.strip()
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):  # end on a space when one is near, so words stay whole
            space = text.rfind(" ", start + size // 2, end)
            end = space if space > start else end
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return out


def _by_words(text: str, size: int, overlap: int) -> list[str]:
    words = text.split()
    step = max(1, size - overlap)
    return [" ".join(words[i : i + size]) for i in range(0, max(1, len(words) - overlap), step)]


def _by_structure(text: str, size: int, overlap: int) -> list[str]:
    """Sections (a heading and what follows) and paragraphs stay whole when they fit; consecutive
    small ones are packed together; one too long is cut by characters. A chunk that follows a cut
    starts with the last ``overlap`` characters of the one before."""
    blocks: list[str] = []
    for section in _split_keep(text, _HEADING):
        blocks += [p.strip() for p in _PARAGRAPH.split(section) if p.strip()]
    for i in range(len(blocks) - 2, -1, -1):  # a heading stays with the paragraph under it
        if _HEADING.match(blocks[i]) and "\n" not in blocks[i]:
            blocks[i : i + 2] = [f"{blocks[i]}\n\n{blocks[i + 1]}"]
    out: list[str] = []
    current = ""
    for block in blocks:
        if len(block) > size:
            if current:
                out.append(current)
                current = ""
            out += _by_chars(block, size, overlap)
            continue
        joined = f"{current}\n\n{block}" if current else block
        if len(joined) <= size:
            current = joined
            continue
        out.append(current)
        tail = _tail(current, overlap)
        current = f"{tail}\n\n{block}" if tail and len(tail) + len(block) + 2 <= size else block
    if current:
        out.append(current)
    return out


def _split_keep(text: str, pattern: re.Pattern[str]) -> list[str]:
    starts = [m.start() for m in pattern.finditer(text)]
    bounds = [0, *[s for s in starts if s > 0], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0:
        return ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return _SPACE.sub(" ", tail[space + 1 :] if 0 <= space < len(tail) - 1 else tail).strip()
