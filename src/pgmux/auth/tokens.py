"""Splits auth_hba_file and auth_ident_file lines into tokens the way PgBouncer reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    text: str
    kind: str  # "word" (unquoted), "quoted" or ","

    def keyword(self, word: str) -> bool:
        """Keywords count only unquoted: "all" in double quotes is a name."""
        return self.kind == "word" and self.text == word


def tokenize(line: str) -> list[Token]:
    """Whitespace separates tokens, ``#`` starts a comment, ``,`` is a token of its own and
    "..." is one quoted token with "" standing for a double quote. Raises ValueError for
    an unterminated quote."""
    tokens: list[Token] = []
    pos, end = 0, len(line)
    while pos < end:
        ch = line[pos]
        if ch.isspace():
            pos += 1
        elif ch == "#":
            break
        elif ch == ",":
            tokens.append(Token(",", ","))
            pos += 1
        elif ch == '"':
            text, pos = _quoted(line, pos)
            tokens.append(Token(text, "quoted"))
        else:
            start = pos
            pos += 1
            while pos < end and not line[pos].isspace() and line[pos] not in ',#"':
                pos += 1
            tokens.append(Token(line[start:pos], "word"))
    return tokens


def _quoted(line: str, start: int) -> tuple[str, int]:
    chars: list[str] = []
    pos = start + 1
    while pos < len(line):
        if line[pos] == '"':
            if line[pos + 1 : pos + 2] == '"':
                chars.append('"')
                pos += 2
                continue
            return "".join(chars), pos + 1
        chars.append(line[pos])
        pos += 1
    raise ValueError("unterminated quoted name")
