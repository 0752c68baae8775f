"""YAML text -> Python data plus the line of every key and list item.

PyYAML's ``safe_load`` forgets where values came from and silently keeps the last of two
equal keys. The loader needs both: a pydantic error location such as
``('stacks', 'elastic-hybrid', 'roles', 'vision')`` must map to the line of that key, and a
model or stack declared twice must be reported, not quietly replaced. So the document is
composed into nodes first (which carry marks), walked once to record lines and duplicates,
and only then constructed into plain data with the same SafeLoader.

Composition is bounded, so a hostile or broken file is refused in milliseconds instead of
taking the process to a ``MemoryError``: a "billion laughs" file of 342 bytes, whose aliases
(``*name``) expand to 10^9 values, is refused at the line of the first value that grows past
``MAX_VALUES``, and nesting deeper than ``MAX_DEPTH`` at the line where it goes too deep.
Every later step (the line walk, ``${VAR}`` expansion, pydantic) visits the expanded data, so
the bound on composition bounds them all. A real config has a few thousand values at most.

A document is read with libyaml's parser (C) under this module's Python composer, which keeps
the bounds and the marks: 20 ms for the bundled config against 125 ms for the pure-Python
parser, paid by every ``config check``, ``plan`` and daemon start (docs/benchmarks.md,
"Start-up"). A document libyaml refuses, or that breaks a bound, is read again by the
pure-Python parser, whose problem and line are the ones reported: the words of an error do
not depend on whether PyYAML was built with libyaml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

FieldPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_VALUES = 100_000  # scalars, lists and mappings once aliases are expanded (bundled config: ~1,400)
MAX_DEPTH = 64  # nested lists and mappings (bundled config: 7)


@dataclass(frozen=True)
class DuplicateKey:
    """A key written twice in one mapping; YAML keeps the second value."""

    path: FieldPath
    key: str
    first_line: int
    line: int


@dataclass(frozen=True)
class YamlDocument:
    """Constructed data (None for an empty document) and where each part of it was written.

    ``lines`` maps a field path to the 1-based line of its key (mappings) or item (lists).
    """

    data: object
    lines: dict[FieldPath, int] = field(default_factory=dict)
    duplicates: list[DuplicateKey] = field(default_factory=list)

    def line_of(self, path: FieldPath) -> int:
        """The line of ``path``, or of its longest recorded prefix (1 when nothing matches).

        A prefix answers for paths that do not exist in the file: a missing field is reported at
        its parent's key, a pydantic union tag (``keep_alive.int``) at the field it belongs to.
        """
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with ``yaml.SafeLoader``.

    Raises ``yaml.YAMLError`` (syntax, several documents; a ``MarkedYAMLError`` carries the
    line), ``UnreadableValue`` for a value no safe constructor builds (an unknown ``!tag``), and
    may raise ``ValueError`` for a scalar the constructor rejects (an impossible date); the
    caller turns them all into problems.
    """
    if _FAST_LOADER is not None:
        try:
            return _parse_with(_FAST_LOADER(text))
        except (yaml.YAMLError, ValueError, TypeError, RecursionError):
            pass  # read again below: the pure-Python parser's words and marks are the ones reported
    return _parse_with(_BoundedLoader(text))


def _parse_with(loader: _Bounded) -> YamlDocument:
    starts: dict[int, FieldPath] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(data=None)
        lines: dict[FieldPath, int] = {(): root.start_mark.line + 1}
        duplicates: list[DuplicateKey] = []
        # The walk runs before construction: constructing flattens '<<' merges into the node,
        # and a merged key that the mapping overrides is not a duplicate.
        _walk(loader, root, (), lines, duplicates, active=set(), starts=starts)
        data = loader.construct_document(root)
    except yaml.constructor.ConstructorError as exc:
        # The constructor names the node's mark, not its place in the data: the walk recorded
        # where each value starts, so the problem can name the key (models.x.memory_gb).
        mark = exc.problem_mark
        path = starts.get(mark.index, ()) if mark is not None else ()
        raise UnreadableValue(str(exc.problem), mark, path) from exc
    finally:
        loader.dispose()
    return YamlDocument(data=data, lines=lines, duplicates=duplicates)


class TooLarge(yaml.MarkedYAMLError):
    """The document passes ``MAX_VALUES`` or ``MAX_DEPTH``; ``fix`` says what to change."""

    def __init__(self, problem: str, mark: yaml.Mark | None, fix: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class UnreadableValue(yaml.MarkedYAMLError):
    """A value that no safe constructor builds (``memory_gb: !mytag 3``), at ``path``."""

    def __init__(self, problem: str, mark: yaml.Mark | None, path: FieldPath) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.path = path


class _Bounded(Composer, SafeConstructor, Resolver):
    """A composer that refuses, at the offending line, a document whose aliases
    expand past ``MAX_VALUES`` values or whose nesting goes past ``MAX_DEPTH``.

    An alias is the anchored node itself, composed once, so each node's expanded size is known
    when it is composed: 1 plus its children's (aliases included, each counted in full). The
    first node over the bound is the innermost one, and composing stops there, naming the line
    of the alias that took it over. A subclass brings the parser (its events and marks)."""

    if TYPE_CHECKING:  # the parser's, found after this class in a subclass's MRO

        def check_event(self, *choices: Any) -> bool: ...
        def peek_event(self) -> Any: ...
        def dispose(self) -> None: ...

    def _bound(self) -> None:
        self._depth = 0
        self._sizes: dict[int, int] = {}
        self._last_alias: yaml.Mark | None = None  # composition is in file order: it tipped the count

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise TooLarge(
                    f"the values are nested more than {MAX_DEPTH} levels deep",
                    self._next_mark(),
                    "flatten the structure: a config nests 7 levels at most",
                )
            alias = self.check_event(yaml.AliasEvent)
            if alias:
                self._last_alias = self._next_mark()
            composed = super().compose_node(parent, index)
            assert composed is not None  # None only past the end of a stream, never inside a document
            node = composed
        finally:
            self._depth -= 1
        if not alias:  # an alias is a node composed before: its size is known
            self._sizes[id(node)] = size = 1 + sum(self._sizes.get(id(child), 1) for child in _children(node))
            if size > MAX_VALUES:
                raise TooLarge(
                    f"this value holds more than {MAX_VALUES:,} values once its aliases (*name) are expanded",
                    self._last_alias or node.start_mark,
                    "write the values out, or use fewer aliases of aliases",
                )
        return node

    def _next_mark(self) -> yaml.Mark | None:
        """Where the next event starts. Both parsers' marks carry ``line`` and ``index`` (libyaml's
        is its own class, untyped in the stubs; the pure-Python parser's is ``yaml.Mark``)."""
        event: yaml.Event = self.peek_event()
        return cast("yaml.Mark | None", event.start_mark)


class _BoundedLoader(_Bounded, yaml.SafeLoader):
    """The pure-Python parser under the bounded composer: yaml.SafeLoader's words and marks."""

    def __init__(self, text: str) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._bound()


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _CBoundedLoader(_Bounded, CParser):
        """libyaml's parser (its events, in C) under the bounded composer (Python, before
        CParser's own composer in the MRO, which knows no bounds)."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            Composer.__init__(self)
            self._bound()

    _FAST_LOADER: Callable[[str], _Bounded] | None = _CBoundedLoader
else:  # PyYAML built without libyaml: every document takes the pure-Python parser
    _FAST_LOADER = None


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
    elif isinstance(node, yaml.SequenceNode):
        yield from node.value


def _walk(
    loader: _Bounded,
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    duplicates: list[DuplicateKey],
    active: set[int],
    starts: dict[int, FieldPath],
) -> None:
    # ``active`` holds the nodes on the current branch: an alias that points back at an
    # ancestor makes data that contains itself, which no config needs and no walk finishes.
    # ``starts`` maps where each node starts in the text to its path (the first path wins for
    # an alias's node, which is where it is written).
    starts.setdefault(node.start_mark.index, path)
    if id(node) in active:
        raise yaml.MarkedYAMLError(
            problem="an alias refers to a node that contains it (a recursive structure)",
            problem_mark=node.start_mark,
        )
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            starts.setdefault(key_node.start_mark.index, path)  # a key's tag: its mapping's place
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first_seen:
                duplicates.append(DuplicateKey((*path, key), str(key), first_seen[key], line))
            else:
                first_seen[key] = line
            # YAML keeps the last value, so the lines of the last occurrence describe the data.
            lines[(*path, key)] = line
            _walk(loader, value_node, (*path, key), lines, duplicates, active, starts)
        # A key that '<<: *base' brings in is written where the anchor is: a problem of
        # stacks.b.roles.x points at that line, not at 'b:'. The mapping's own keys win.
        for key_node, value_node in _merged_pairs(node, active):
            key = loader.construct_object(key_node)
            if key not in first_seen:
                first_seen[key] = lines[(*path, key)] = key_node.start_mark.line + 1
                # A duplicate inside the anchor is reported once, at the anchor's own path.
                _walk(loader, value_node, (*path, key), lines, [], active, starts)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(loader, item, (*path, index), lines, duplicates, active, starts)
    active.discard(id(node))


def _merged_pairs(node: yaml.MappingNode, active: set[int]) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """The key/value pairs that '<<' merges into ``node``, in YAML's order of precedence: the
    earlier of several merged mappings first, each mapping's own keys before its merges."""
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode) or id(source) in active:
                continue  # not a mapping: the constructor refuses it; in ``active``: recursive
            for pair in source.value:
                if pair[0].tag != _MERGE_TAG and isinstance(pair[0], yaml.ScalarNode):
                    yield pair
            yield from _merged_pairs(source, active | {id(source)})
