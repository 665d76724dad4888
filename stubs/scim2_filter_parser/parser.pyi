from collections.abc import Iterator

from sly.lex import Token

from scim2_filter_parser.ast import Filter

class SCIMParserError(Exception): ...

class SCIMParser:
    # sly's Parser.parse: the tree, or None when the token stream is empty.
    def parse(self, tokens: Iterator[Token]) -> Filter | None: ...
