"""How far a command-line parameter travels through code/: a static walk of the calls that pass it on.

    python bench/walk_argv.py                                  # inference.py's and main.py's argv, on this checkout
    python bench/walk_argv.py code/main.py:main:argv --verbose # one start, with its sequence of rooms
    python bench/walk_argv.py --root /path/to/other/checkout   # another checkout (a `git worktree` of an old commit)

Standard library only (`ast`; nothing of code/ is imported). The definitions:

- A walk starts at ``FILE:FUNCTION:PARAM`` (``FUNCTION`` may be ``Class.method``). Modules are named by their path
  under code/ (``code/infer/run.py``, imported as ``cdvd_tsp.infer.run``, is ``infer.run``); relative imports resolve
  inside their package.
- Taint, flow-insensitive (a fixed point over a function's body; nested ``def``, ``class`` and ``lambda`` bodies left
  out): the start parameter is tainted; a name bound (``=``, annotated, augmented, ``for``, ``with ... as``, ``:=``,
  comprehension targets, unpacking) from an expression that mentions a tainted name is tainted, so a call's result
  is when the call received a tainted argument; attributes and subscripts of a tainted name are tainted.
- A call is followed when it passes a tainted expression (positional, keyword, ``*``, ``**``, or the receiver of
  ``tainted.method(...)``) and its callee resolves to a function of code/: a ``def`` of the module, ``from X import f``
  (re-exports followed), ``import X as Y; Y.f``, ``X.Y.f``, ``Cls.method``, ``self.method`` and the methods of names
  bound to ``Cls(...)``, looked up through the bases defined in code/, and with ``--classes`` ``Cls(...)`` itself (its
  ``__init__``). The callee's parameters that receive a tainted argument are tainted (``self`` with a tainted
  receiver; ``*`` and ``**`` taint every parameter they may fill). Other calls are skipped.
- Each (function, tainted parameters) is expanded once per walk, depth first, call sites in evaluation order.
- Rooms are modules. The walk's sequence of rooms: the start's module; for each call followed, the caller's module (back
  in it) and then the callee's; the start's module at the end; consecutive repeats collapse. ``stays`` is the
  sequence's length, ``rooms`` its distinct modules, ``returns`` the stays in a room seen before (stays - rooms).

The rules' ambiguities are options (`Rules`), whose defaults were calibrated on commit 875e749, where the structure
tool this approximates measured inference.py's argv at 103 stays in 36 rooms (67 returns) and main.py's at 119 stays
in 33 rooms (86 returns); these defaults give 109 in 29 (80) and 117 in 29 (88) there. ``--revisits`` counts a call
into an already expanded function as a visit, ``--pass-through`` also counts coming back through a caller that makes
no further call, ``--per-function`` expands each function once whatever its tainted parameters. ``--merge
MODULE=INTO`` counts the walk as if MODULE's code were in INTO: what a merge of the two modules would save.
``--target STAYS/RETURNS`` (one per start) searches the merges that would bring the walks there (`search_merges`,
greedy), under ``--most-lines`` (no merged module larger) and ``--keep MODULE`` (never merged)::

    python bench/walk_argv.py --target 79/54 --target 84/56 --keep utils.committed --most-lines 630

It also prints the lines of Python of each package of code/ (the top-level modules together as ``code/*.py``).
"""

import argparse
import ast
import itertools
import sys
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_STARTS = ["code/inference.py:main:argv", "code/main.py:main:argv"]
FuncDef = ast.FunctionDef | ast.AsyncFunctionDef
COMPREHENSIONS = ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp


@dataclass(frozen=True)
class Rules:
    """The walk's variants; the defaults are the calibrated ones (module docstring)."""

    classes: bool = False  # Cls(tainted) enters Cls.__init__
    receivers: bool = True  # tainted.method(...) enters the method, its self tainted
    revisits: bool = False  # a call into an already expanded function still enters its room and comes back
    per_function: bool = False  # a function is expanded once, whatever its tainted parameters
    pass_through: bool = False  # coming back through a caller that makes no further call is a stay there


@dataclass(frozen=True)
class Func:
    module: str
    node: FuncDef
    cls: ast.ClassDef | None = None  # the class it is a method of


@dataclass(frozen=True)
class Cls:
    module: str
    node: ast.ClassDef


@dataclass(frozen=True)
class Instance:
    cls: Cls


Target = str | Func | Cls | Instance | None  # a module's name, a function, a class, an object of a class


class Repo:
    """The modules of ``root``/code: their top-level definitions and imports (function-level ones included)."""

    def __init__(self, root: Path, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()
        self.defs: dict[str, dict[str, FuncDef | ast.ClassDef]] = {}
        self.imports: dict[str, dict[str, tuple[str, str | None]]] = {}
        self.lines: dict[str, int] = {}
        code = root / "code"
        for path in sorted(code.rglob("*.py")):
            parts = path.relative_to(code).with_suffix("").parts
            package = parts[:-1]  # what a relative import of level 1 names
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            source = path.read_bytes()
            tree = ast.parse(source, str(path))
            self.lines[name] = len(source.splitlines())  # counted as `package_lines` counts
            self.defs[name] = {n.name: n for n in tree.body if isinstance(n, FuncDef | ast.ClassDef)}
            self.imports[name] = imports = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):  # `import X.Y` binds X; `import X.Y as Z` binds Z to X.Y
                    for a in node.names:
                        imports[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None)
                elif isinstance(node, ast.ImportFrom):
                    base = [*package[: len(package) - node.level + 1]] if node.level else []
                    module = ".".join(base + ([node.module] if node.module else []))
                    imports.update({a.asname or a.name: (module, a.name) for a in node.names})

    def canonical(self, module: str) -> str:
        """``module`` by its path under code/: ``cdvd_tsp.infer.run`` (code/infer/run.py, made a module of the package
        cdvd_tsp by its ``__init__``) is ``infer.run``; the package's own modules keep their names."""
        inner = module.removeprefix("cdvd_tsp.")
        return inner if inner != module and module not in self.defs and inner in self.defs else module

    def lookup(self, module: str, name: str | None, depth: int = 0) -> Target:
        """What ``name`` is in ``module`` (the module itself for None), if it is defined in code/."""
        module = self.canonical(module)
        found = module if name is None else self.canonical(f"{module}.{name}")
        if name is None or found in self.defs:
            return found if found in self.defs else None
        node = self.defs.get(module, {}).get(name)
        if isinstance(node, ast.ClassDef):
            return Cls(module, node)
        if node is not None:
            return Func(module, node)
        if name in self.imports.get(module, {}) and depth < 20:
            return self.lookup(*self.imports[module][name], depth + 1)
        return None

    def method(self, cls: Cls, name: str, depth: int = 0) -> Func | None:
        """``name`` looked up in ``cls`` and then its bases defined in code/, depth first."""
        for node in cls.node.body:
            if isinstance(node, FuncDef) and node.name == name:
                return Func(cls.module, node, cls.node)
        for base in cls.node.bases:
            found = self.resolve(base, cls.module, {})
            if isinstance(found, Cls) and depth < 20 and (hit := self.method(found, name, depth + 1)):
                return hit
        return None

    def resolve(self, expr: ast.expr, module: str, local: dict[str, Target]) -> Target:
        if isinstance(expr, ast.Name):
            return local[expr.id] if expr.id in local else self.lookup(module, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.resolve(expr.value, module, local)
            if isinstance(base, str):
                return self.lookup(base, expr.attr)
            if isinstance(base, Cls | Instance):
                return self.method(base if isinstance(base, Cls) else base.cls, expr.attr)
        return None

    def locals_of(self, func: Func, nodes: list[ast.AST]) -> dict[str, Target]:
        """The names a function binds to a known object: ``self`` (``cls`` of a classmethod), ``x = Cls(...)``."""
        local: dict[str, Target] = {}
        params = func.node.args.posonlyargs + func.node.args.args
        decorators = {d.id for d in func.node.decorator_list if isinstance(d, ast.Name)}
        if func.cls is not None and params and "staticmethod" not in decorators:
            cls = Cls(func.module, func.cls)
            local[params[0].arg] = cls if "classmethod" in decorators else Instance(cls)
        for node in nodes:
            for target, value in bindings(node):
                if isinstance(target, ast.Name) and isinstance(value, ast.Call):
                    kind = self.resolve(value.func, func.module, local)
                    if isinstance(kind, Cls):
                        local[target.id] = Instance(kind)
        return local


def own_nodes(node: ast.AST) -> list[ast.AST]:
    """The nodes under ``node`` and itself in evaluation order (children first; a binding after its value, before
    its body), nested functions, classes and lambdas left out."""
    own = [c for c in ast.iter_child_nodes(node) if not isinstance(c, FuncDef | ast.ClassDef | ast.Lambda)]
    if isinstance(node, COMPREHENSIONS):  # the loops first, then the element
        own = [*node.generators, *(c for c in own if c not in node.generators)]
    first = [node.iter] if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension) else []
    first = [node.context_expr] if isinstance(node, ast.withitem) else first
    if not first:
        return [n for c in own for n in own_nodes(c)] + [node]
    rest = [c for c in own if c not in first]
    return [n for c in first for n in own_nodes(c)] + [node] + [n for c in rest for n in own_nodes(c)]


def bindings(node: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) of what a node binds."""
    if isinstance(node, ast.Assign):
        return [(t, node.value) for t in node.targets]
    if isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr) and node.value is not None:
        return [(node.target, node.value)]
    if isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
        return [(node.target, node.iter)]
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return [(node.optional_vars, node.context_expr)]
    return []


def mentions(expr: ast.AST, tainted: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in tainted for n in ast.walk(expr))


def tainted_names(nodes: list[ast.AST], params: frozenset[str]) -> set[str]:
    """The names of a function's body tainted by ``params``: a fixed point over its bindings."""
    tainted, before = set(params), -1
    while len(tainted) != before:
        before = len(tainted)
        for node in nodes:
            for target, value in bindings(node):
                if not isinstance(target, ast.Attribute | ast.Subscript) and mentions(value, tainted):
                    tainted.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return tainted


def passed_params(callee: Func, call: ast.Call, tainted: set[str], bound: bool, receiver: bool) -> frozenset[str]:
    """The callee's parameters that receive a tainted argument (``self`` for a tainted receiver)."""
    a = callee.node.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    out = set(positional[:1]) if bound and receiver else set()
    positional = positional[1:] if bound else positional
    named = positional + [p.arg for p in a.kwonlyargs]
    rest = [p.arg for p in (a.vararg, a.kwarg) if p]
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred) and mentions(arg, tainted):
            out.update(positional[i:] + ([a.vararg.arg] if a.vararg else []))
        elif mentions(arg, tainted):
            out.update(positional[i : i + 1] or ([a.vararg.arg] if a.vararg else []))
    for kw in call.keywords:
        if mentions(kw.value, tainted):
            if kw.arg is None:
                out.update(named + rest)
            else:
                out.update([kw.arg] if kw.arg in named else [a.kwarg.arg] if a.kwarg else [])
    return frozenset(out)


class Walk:
    def __init__(self, repo: Repo) -> None:
        self.repo, self.rules = repo, repo.rules
        self.expanded: set[tuple[Func, frozenset[str]]] = set()
        self.rooms: list[str] = []

    def enter(self, module: str) -> None:
        if not self.rooms or self.rooms[-1] != module:
            self.rooms.append(module)

    def key(self, func: Func, params: frozenset[str]) -> tuple[Func, frozenset[str]]:
        return func, frozenset() if self.rules.per_function else params

    def visit(self, func: Func, params: frozenset[str]) -> None:
        self.enter(func.module)
        if self.key(func, params) in self.expanded:
            return
        self.expanded.add(self.key(func, params))
        nodes = [n for stmt in func.node.body for n in own_nodes(stmt)]
        tainted = tainted_names(nodes, params)
        local = self.repo.locals_of(func, nodes)
        for call in (n for n in nodes if isinstance(n, ast.Call)):
            callee = self.repo.resolve(call.func, func.module, local)
            on = call.func.value if isinstance(call.func, ast.Attribute) else None
            bound = on is not None and isinstance(self.repo.resolve(on, func.module, local), Instance)
            receiver = self.rules.receivers and on is not None and mentions(on, tainted)
            if isinstance(callee, Cls) and self.rules.classes:
                callee, bound, receiver = self.repo.method(callee, "__init__"), True, False
            if not isinstance(callee, Func):
                continue
            passed = passed_params(callee, call, tainted, bound, receiver)
            if not passed or (self.key(callee, passed) in self.expanded and not self.rules.revisits):
                continue
            self.enter(func.module)  # back in the caller for this call
            self.visit(callee, passed)
            if self.rules.pass_through:
                self.enter(func.module)


def walk(repo: Repo, start: str) -> list[str]:
    """The sequence of rooms of the walk from ``FILE:FUNCTION:PARAM``."""
    file, qualname, param = start.split(":")
    parts = Path(file).relative_to("code").with_suffix("").parts
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    found = repo.lookup(module, qualname.split(".")[0])
    if "." in qualname and isinstance(found, Cls):
        found = repo.method(found, qualname.split(".", 1)[1])
    if not isinstance(found, Func):
        raise SystemExit(f"{start}: no function {qualname} in {file}")
    w = Walk(repo)
    w.visit(found, frozenset([param]))
    w.enter(found.module)
    return w.rooms


def merged(rooms: list[str], merges: dict[str, str]) -> list[str]:
    """``rooms`` as if each module of ``merges`` were part of the one it maps to (what merging them would do to the
    walk): renamed, consecutive repeats collapsed."""
    renamed = [merges.get(room, room) for room in rooms]
    return [room for index, room in enumerate(renamed) if index == 0 or room != renamed[index - 1]]


def figures(rooms: list[str]) -> tuple[int, int, int]:
    """(stays, rooms, returns) of a sequence of rooms."""
    return len(rooms), len(set(rooms)), len(rooms) - len(set(rooms))


def over(walks: dict[str, list[str]], targets: dict[str, tuple[int, int]]) -> int:
    """How far the walks are above their targets: the stays and the returns over, summed."""
    total = 0
    for start, (most_stays, most_returns) in targets.items():
        stays, _, returns = figures(walks[start])
        total += max(0, stays - most_stays) + max(0, returns - most_returns)
    return total


def search_merges(
    walks: dict[str, list[str]],
    targets: dict[str, tuple[int, int]],
    lines: dict[str, int],
    most_lines: int | None = None,
    kept: Collection[str] = (),
) -> list[tuple[str, int, dict[str, list[str]]]]:
    """Merges that bring the walks to their targets (STAYS, RETURNS per start), found greedily: each step merges the
    two rooms whose merge lowers `over` most (of equals, the one making the smaller module), of at most
    ``most_lines`` lines together and neither of them one of the ``kept`` modules; it stops when the targets are
    met or no merge lowers it. Each step: the merged room (its modules joined by +), its lines, the
    walks after it."""
    steps: list[tuple[str, int, dict[str, list[str]]]] = []
    size = {room: lines.get(room, 0) for rooms in walks.values() for room in rooms if room not in kept}
    while now := over(walks, targets):
        candidates = [  # the merged room named "+" (no module's name): only the figures count here
            (over(merge_walks(walks, {first: "+", second: "+"}), targets), size[first] + size[second], first, second)
            for first, second in itertools.combinations(sorted(size), 2)
            if most_lines is None or size[first] + size[second] <= most_lines
        ]
        if not candidates or min(candidates)[0] >= now:
            break
        _, joined_lines, first, second = min(candidates)
        room = f"{first}+{second}"
        walks = merge_walks(walks, {first: room, second: room})
        size[room] = size.pop(first) + size.pop(second)
        steps.append((room, joined_lines, walks))
    return steps


def merge_walks(walks: dict[str, list[str]], merges: dict[str, str]) -> dict[str, list[str]]:
    return {start: merged(rooms, merges) for start, rooms in walks.items()}


def package_lines(root: Path) -> dict[str, int]:
    lines: Counter[str] = Counter()
    for path in sorted((root / "code").rglob("*.py")):
        parts = path.relative_to(root / "code").parts
        lines["code/*.py" if len(parts) == 1 else f"code/{parts[0]}"] += len(path.read_bytes().splitlines())
    return dict(sorted(lines.items()))


def target(text: str) -> tuple[int, int]:
    """``STAYS/RETURNS`` as two numbers."""
    try:
        stays, returns = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not STAYS/RETURNS (two whole numbers)") from None
    return stays, returns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("starts", nargs="*", default=DEFAULT_STARTS, help="FILE:FUNCTION:PARAM (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout")
    parser.add_argument("--verbose", action="store_true", help="print each walk's sequence of rooms")
    parser.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="MODULE=INTO",
        help="count MODULE's stays as INTO's (the figures a merge of the two would give); repeatable",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        type=target,
        metavar="STAYS/RETURNS",
        help="the most stays and returns for a start, in the starts' order; with them, the merges that would meet "
        "them are searched (`search_merges`) and printed",
    )
    parser.add_argument("--most-lines", type=int, help="with --target: no merge makes a module of more lines")
    parser.add_argument(
        "--keep", action="append", default=[], metavar="MODULE", help="with --target: MODULE is never merged"
    )
    for rule in fields(Rules):
        parser.add_argument(
            f"--{rule.name.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=rule.default,
            help="a variant of the rules (module docstring)",
        )
    args = parser.parse_args(argv)
    if len(args.target) > len(args.starts):
        parser.error(f"--target: {len(args.target)} given for {len(args.starts)} starts")
    repo = Repo(args.root, Rules(**{rule.name: getattr(args, rule.name) for rule in fields(Rules)}))
    merges = dict(pair.split("=", 1) for pair in args.merge)
    walks = {start: merged(walk(repo, start), merges) for start in args.starts}
    for start, rooms in walks.items():
        stays, distinct, returns = figures(rooms)
        print(f"{start}: {stays} stays in {distinct} rooms, {returns} returns")
        if args.verbose:
            print("  " + " -> ".join(rooms))
            again = Counter(room for i, room in enumerate(rooms) if room in rooms[:i])
            print("  returns per room: " + ", ".join(f"{room} {n}" for room, n in again.most_common()))
    if args.target:
        targets = dict(zip(args.starts, args.target, strict=False))
        print("targets: " + ", ".join(f"{start} {most[0]}/{most[1]}" for start, most in targets.items()))
        steps = search_merges(walks, targets, repo.lines, args.most_lines, args.keep)
        for room, size, after in steps:
            reached = ", ".join(f"{stays}/{returns}" for stays, _, returns in map(figures, after.values()))
            print(f"  merge {room} ({size} lines): {reached}")
        final = steps[-1][2] if steps else walks
        print(f"  {'met' if not over(final, targets) else 'not met'} after {len(steps)} merge(s)")
    lines = package_lines(args.root)
    for package, count in lines.items():
        print(f"{package}: {count} lines")
    print(f"total: {sum(lines.values())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
