# sly 0.5: the token its parsers consume (scim/filters.py builds its own).
from typing import Any

class Token:
    type: str
    value: Any  # whatever the lexer (or our tokenizer) put there
    lineno: int
    index: int
    end: int
