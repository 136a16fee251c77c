"""A lean driver for the tables Lark builds: the same contextual lexing and the same LALR(1)
shifts and reductions, calling the same callbacks, in one loop without Lark's per-token layers.

It parses correct text only. At the first character or token it cannot take it returns None and
the caller parses the text again with Lark itself, which raises the error with its usual details:
so a syntax error and its file:line:col are Lark's, whatever this driver does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lark import Lark
from lark.lexer import UnlessCallback
from lark.parse_tree_builder import ExpandSingleChild
from lark.parsers.lalr_analysis import Shift


class Tok:
    """A token as the callbacks see it: its terminal, its text and where it is. Cheaper to make
    than a `lark.Token`, which the driver would make ~20 of per rule."""

    __slots__ = ("column", "end_column", "end_line", "line", "type", "value")

    def __init__(
        self, type_: str, value: str, line: int, column: int, end_line: int, end_column: int
    ) -> None:
        self.type, self.value = type_, value
        self.line, self.column, self.end_line, self.end_column = line, column, end_line, end_column

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Tok({self.type!r}, {self.value!r})"


class _Lexer:
    """What one parser state may lex (Lark's contextual lexer for that state)."""

    __slots__ = ("ignore", "keywords", "newline", "patterns", "signature", "unless")

    def __init__(self, basic: Any) -> None:
        scanner = basic.scanner  # built on first use
        self.patterns = tuple(scanner._mres)
        self.ignore: frozenset[str] = basic.ignore_types
        self.newline: frozenset[str] = basic.newline_types
        if not all(isinstance(cb, UnlessCallback) for cb in basic.callback.values()):
            raise _Unsupported("a lexer callback other than a keyword")
        # NAME -> keyword: `type` lexed as NAME where TYPE is also accepted is TYPE
        self.unless: dict[str, Any] = dict(basic.callback)
        self.keywords: dict[tuple[str, str], str] = {}  # (terminal, text) -> terminal, memoised
        # what it lexes: two lexers of one signature cut any text into the same tokens
        self.signature = (
            tuple(p.pattern for p in self.patterns),
            self.ignore,
            self.newline,
            frozenset(self.unless),
        )

    def retype(self, type_: str, value: str) -> str:
        key = (type_, value)
        found = self.keywords.get(key)
        if found is None:
            found = self.unless[type_].scanner.fullmatch(value) or type_
            self.keywords[key] = found
        return found


class _Unsupported(Exception):
    """The Lark parser is built in a way this driver does not replicate."""


# (children taken, the callback, None for a `?rule` passing its one child on; the rule's name)
Reduction = tuple[int, Callable[[list[Any]], Any] | None, str]


def _reduction(rule: Any, callback: Any) -> Reduction:
    size = len(rule.expansion)
    if size == 1 and type(callback) is ExpandSingleChild:
        return (1, None, str(rule.origin.name))  # one child: the callback would return it
    return (size, callback, str(rule.origin.name))


class Driver:
    """Parses with `lark`'s tables and callbacks: `parse(text)` is what `lark.parse(text)` returns
    for text that parses, and None for text that does not."""

    def __init__(self, lark: Lark, start: str = "start") -> None:
        frontend = lark.parser
        table = frontend.parser._parse_table
        callbacks = frontend.parser.parser.callbacks
        self.start, self.end = table.start_states[start], table.end_states[start]
        _, self.accept = table.states[self.start][start]  # after all of it: only the end
        # state -> terminal or rule -> (True, next state) for a shift, (False, reduction) else
        # (plain strings: Lark names rules with its Tokens, whose == is slower)
        self.actions: dict[int, dict[str, tuple[bool, Any]]] = {
            state: {
                str(symbol): (True, arg)
                if action is Shift
                else (False, _reduction(arg, callbacks[arg]))
                for symbol, (action, arg) in row.items()
            }
            for state, row in table.states.items()
        }
        by_id: dict[int, _Lexer] = {}
        self.lexers: dict[int, _Lexer] = {}
        for state, basic in frontend.lexer.lexers.items():
            if id(basic) not in by_id:
                by_id[id(basic)] = _Lexer(basic)
            self.lexers[state] = by_id[id(basic)]
        if frontend.lexer_conf.postlex is not None or frontend.lexer_conf.callbacks:
            raise _Unsupported("a post-lexer or lexer callbacks")

    def resumable(self) -> bool:
        """Can a parse start at any top-level item of a text as if at its start? Yes when what
        follows an item is lexed as the start of a text is (the grammar is a list of items)."""
        row = self.actions[self.start]
        after = [a for symbol, (shift, a) in row.items() if shift and symbol.islower()]
        first = self.lexers[self.start].signature
        return all(self.lexers[s].signature == first for s in after if s != self.accept)

    def parse(  # noqa: C901 - the hot loop: lexing and parsing inline
        self, text: str, pos: int = 0, line: int = 1, line_start: int = 0
    ) -> Any:
        """`text` parsed from `pos`, which is on line `line`, a line starting at `line_start`."""
        actions, lexers, end_state = self.actions, self.lexers, self.end
        states: list[int] = [self.start]
        values: list[Any] = []
        n = len(text)
        while True:
            # ---- the next token, lexed as the state on top of the stack allows
            token: Tok | None = None
            lexer = lexers[states[-1]]
            while pos < n:
                for pattern in lexer.patterns:
                    m = pattern.match(text, pos)
                    if m is not None:
                        break
                else:
                    return None  # a character no terminal here takes: Lark reports it
                value, type_ = m.group(0), m.lastgroup
                assert type_ is not None
                start_line, column = line, pos - line_start + 1
                if type_ in lexer.newline:
                    breaks = value.count("\n")
                    if breaks:
                        line += breaks
                        line_start = pos + value.rindex("\n") + 1
                pos += len(value)
                if type_ in lexer.ignore:
                    continue
                if type_ in lexer.unless:
                    type_ = lexer.retype(type_, value)
                token = Tok(type_, value, start_line, column, line, pos - line_start + 1)
                break
            symbol = token.type if token is not None else "$END"
            # ---- reduce as often as the token asks, then shift it
            while True:
                action = actions[states[-1]].get(symbol)
                if action is None:
                    return None  # an unexpected token or end: Lark reports it
                if action[0]:
                    if token is None:
                        return None  # never: $END is not shifted
                    states.append(action[1])
                    values.append(token)
                    break
                size, callback, origin = action[1]
                if callback is None:  # `?rule` of one child: the same value, in a new state
                    del states[-1]
                else:
                    if size:
                        children = values[-size:]
                        del states[-size:]
                        del values[-size:]
                    else:
                        children = []
                    values.append(callback(children))
                states.append(actions[states[-1]][origin][1])
                if token is None and states[-1] == end_state:
                    return values[-1]


def driver(lark: Lark) -> Driver | None:
    """The driver for `lark`'s parser, or None when Lark is built in a way it does not copy."""
    try:
        return Driver(lark)
    except (_Unsupported, AttributeError, KeyError, TypeError):
        return None
