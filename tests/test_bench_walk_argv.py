"""bench/walk_argv.py's walk, on tiny packages written for each test: what it follows, what it counts."""

import importlib.util
import textwrap
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "walk_argv", Path(__file__).resolve().parents[1] / "bench" / "walk_argv.py"
)
walk_argv = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(walk_argv)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "code" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def walk(root: Path, start: str = "code/app.py:main:argv", **rules: bool) -> list[str]:
    return walk_argv.walk(walk_argv.Repo(root, walk_argv.Rules(**rules)), start)


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """argv goes main -> pkg.a.f -> pkg.b.g (a relative import) and back; pkg.a.h gets no argv."""
    return write(
        tmp_path,
        {
            "app.py": """
                from pkg import a

                def main(argv):
                    args = list(argv)
                    a.f(args.copy())
                    a.h(3)
                    a.f(args.copy())
            """,
            "pkg/__init__.py": "",
            "pkg/a.py": """
                from .b import g

                def f(x):
                    y = x[0]
                    g(y)

                def h(n):
                    g(n)
            """,
            "pkg/b.py": """
                def g(y):
                    return y
            """,
        },
    )


def test_a_parameter_goes_down_two_modules_and_back(chain: Path) -> None:
    rooms = walk(chain)
    assert rooms == ["app", "pkg.a", "pkg.b", "app"]  # back in app directly: pkg.a makes no call after g
    assert walk_argv.figures(rooms) == (4, 3, 1)


def test_a_merge_counts_two_modules_as_one_room(chain: Path, capsys: pytest.CaptureFixture) -> None:
    rooms = walk(chain, pass_through=True)
    assert walk_argv.merged(rooms, {"pkg.b": "pkg.a"}) == ["app", "pkg.a", "app"]
    assert walk_argv.merged(rooms, {"pkg.a": "app"}) == ["app", "pkg.b", "app"]
    assert (
        walk_argv.main(["code/app.py:main:argv", "--root", str(chain), "--pass-through", "--merge", "pkg.b=pkg.a"]) == 0
    )
    assert "code/app.py:main:argv: 3 stays in 2 rooms, 1 returns" in capsys.readouterr().out


def test_coming_back_through_a_caller_and_revisits_count_as_asked(chain: Path) -> None:
    rooms = walk(chain, pass_through=True)
    assert rooms == ["app", "pkg.a", "pkg.b", "pkg.a", "app"]
    assert walk_argv.figures(rooms) == (5, 3, 2)
    # the second a.f(...) is memoised: with revisits it is a visit to pkg.a and back, without it nothing
    assert walk(chain, pass_through=True, revisits=True)[-3:] == ["app", "pkg.a", "app"]
    assert walk_argv.figures(walk(chain, pass_through=True, revisits=True)) == (7, 3, 4)


def test_a_call_without_a_tainted_argument_is_not_followed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app.py": """
                import other

                def main(argv):
                    other.f([1, 2])
                    return len(argv)
            """,
            "other.py": "def f(x):\n    return x\n",
        },
    )
    assert walk(tmp_path) == ["app"]
    assert walk_argv.figures(walk(tmp_path)) == (1, 1, 0)


def test_classes_methods_of_tainted_objects_and_their_bases(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app.py": """
                from lib.job import Job

                def main(argv):
                    job = Job(argv)
                    job.run()
            """,
            "lib/__init__.py": "",
            "lib/base.py": """
                from lib import util

                class Base:
                    def run(self):
                        util.use(self.options)
            """,
            "lib/job.py": """
                from lib.base import Base

                class Job(Base):
                    def __init__(self, options):
                        self.options = options
            """,
            "lib/util.py": "def use(x):\n    return x\n",
        },
    )
    # without --classes Job(argv) is not entered; job is tainted (a call with argv), so job.run() is: Base.run
    assert walk(tmp_path) == ["app", "lib.base", "lib.util", "app"]
    assert walk(tmp_path, classes=True) == ["app", "lib.job", "app", "lib.base", "lib.util", "app"]
    assert walk(tmp_path, receivers=False) == ["app"]


def test_lines_per_package(chain: Path) -> None:
    assert walk_argv.package_lines(chain) == {"code/*.py": 8, "code/pkg": 12}  # a.py 9 lines, b.py 3, __init__.py none


def test_the_merges_that_meet_a_target_are_searched_within_the_limits(
    chain: Path, capsys: pytest.CaptureFixture
) -> None:
    walks = {"start": walk(chain, pass_through=True)}  # app -> pkg.a -> pkg.b -> pkg.a -> app: 5 stays, 2 returns
    lines = walk_argv.Repo(chain).lines
    assert lines == {"app": 8, "pkg": 0, "pkg.a": 9, "pkg.b": 3}
    assert walk_argv.search_merges(walks, {"start": (5, 2)}, lines) == []  # met already
    # the smaller of the two merges that meet 3 stays: pkg.a with pkg.b (12 lines), not with app (17)
    assert walk_argv.search_merges(walks, {"start": (3, 1)}, lines) == [
        ("pkg.a+pkg.b", 12, {"start": ["app", "pkg.a+pkg.b", "app"]})
    ]
    assert walk_argv.search_merges(walks, {"start": (3, 1)}, lines, most_lines=11) == []  # no merge that small
    [(room, size, after)] = walk_argv.search_merges(walks, {"start": (3, 1)}, lines, kept=["pkg.b"])
    assert (room, size, after["start"]) == ("app+pkg.a", 17, ["app+pkg.a", "pkg.b", "app+pkg.a"])
    argv = ["code/app.py:main:argv", "--root", str(chain), "--pass-through", "--target", "1/0"]
    assert walk_argv.main(argv) == 0
    out = capsys.readouterr().out
    assert "  merge pkg.a+pkg.b (12 lines): 3/1\n" in out and "  merge app+pkg.a+pkg.b (20 lines): 1/0\n" in out
    assert "  met after 2 merge(s)" in out
    assert walk_argv.main([*argv, "--keep", "pkg.b"]) == 0
    assert "  not met after 1 merge(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        walk_argv.main([*argv, "--target", "1/0"])  # two targets for one start
    with pytest.raises(SystemExit):
        walk_argv.main(["code/app.py:main:argv", "--root", str(chain), "--target", "3"])
