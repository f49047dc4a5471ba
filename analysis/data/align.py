"""Alignment of subword tokens to code tokens, by character offsets.

A subword belongs to every code token its character span overlaps; special tokens
(offsets (0, 0)) and whitespace-only pieces belong to none. A model's subword hidden states
are averaged into code-token vectors over these groups (Anand et al. 2024 do the same).
"""
from __future__ import annotations

import bisect


def align_subwords(parsed, offsets) -> list[list[int]]:
    """For each code token of ``parsed``, the indices of the subwords overlapping it.

    ``offsets``: the tokenizer's ``offset_mapping`` for ``parsed.code``: one (start, end)
    character span per subword. A code token no subword reaches (input truncated) gets []."""
    starts = [t.start_char for t in parsed.tokens]
    groups: list[list[int]] = [[] for _ in parsed.tokens]
    for k, (s, e) in enumerate(offsets):
        s, e = int(s), int(e)
        if e <= s:
            continue
        i = max(bisect.bisect_right(starts, s) - 1, 0)
        while i < len(parsed.tokens) and parsed.tokens[i].start_char < e:
            tok = parsed.tokens[i]
            if tok.end_char > s:
                groups[i].append(k)
            i += 1
    return groups
