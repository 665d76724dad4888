# scim2-filter-parser 0.7: the syntax tree its grammar (parser.py) builds. The library's
# own annotations are suggestions ("don't have any effect"); these are what the grammar
# actually produces.

class AST: ...

class Filter(AST):
    # `(…)` and `not (…)` wrap a Filter; `attr[…]` is a Filter whose namespace is `attr`.
    expr: Filter | LogExpr | AttrExpr
    negated: bool
    namespace: AttrPath | None
    def __init__(self, expr: Filter | LogExpr | AttrExpr, negated: bool,
                 namespace: AttrPath | None) -> None: ...

class LogExpr(AST):
    op: str  # the AND / OR token's value
    expr1: Filter
    expr2: Filter
    def __init__(self, op: str, expr1: Filter, expr2: Filter) -> None: ...

class SubAttr(AST):
    value: str
    def __init__(self, value: str) -> None: ...

class AttrPath(AST):
    # A Filter for `attr[…].sub` (the library moves `.sub` onto that Filter's namespace).
    attr_name: str | Filter
    sub_attr: SubAttr | None
    uri: str | None
    def __init__(self, attr_name: str | Filter, sub_attr: SubAttr | None,
                 uri: str | None) -> None: ...

class CompValue(AST):
    value: str | int | float | bool | None  # the comparison token's value
    def __init__(self, value: str | int | float | bool | None) -> None: ...

class AttrExpr(AST):
    value: str  # the operator token's value
    attr_path: AttrPath
    comp_value: CompValue | None  # None for `pr`
    def __init__(self, value: str, attr_path: AttrPath, comp_value: CompValue | None
                 ) -> None: ...
