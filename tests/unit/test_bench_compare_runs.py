"""bench/compare.py's runs, with stand-in trees whose bench/run.py is a few lines: what a
finished, a failed and an overlong run come back as, and which prroom a tree imports."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from harness.ab_runs import Tree, run_bench
from harness.base import BenchError

# a stand-in for bench/run.py: writes its --out and exits as told by its first argument;
# "hang" waits for SIGINT and records that it could stop its servers
RUN_PY = textwrap.dedent("""
    import json, sys, time
    out = sys.argv[sys.argv.index("--out") + 1]
    if sys.argv[1] == "hang":
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            open(out + ".stopped", "w").close()
            sys.exit(1)
    if sys.argv[1] == "fail":
        print("bench: the server would not start")
        sys.exit(3)
    json.dump({"summary": [], "runs": {}, "args": sys.argv[1:]}, open(out, "w"))
""")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A directory with a stand-in bench/run.py and a prroom package of its own."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.py").write_text(RUN_PY)
    (tmp_path / "prroom").mkdir()
    (tmp_path / "prroom" / "__init__.py").write_text("")
    return Tree("base", str(tmp_path))


def test_a_finished_run_gives_its_results_asked_with_one_run(tree: Tree,
                                                             tmp_path: Path) -> None:
    outcome = run_bench(tree, sys.executable, ["ok", "--quick"], tmp_path / "r.json", 30)
    assert outcome.document is not None
    assert outcome.document["args"] == ["ok", "--quick", "--runs", "1", "--out",
                                        str(tmp_path / "r.json")]


def test_a_failed_run_says_its_exit_code_and_last_words(tree: Tree, tmp_path: Path) -> None:
    outcome = run_bench(tree, sys.executable, ["fail"], tmp_path / "r.json", 30)
    assert outcome.document is None
    assert outcome.failure.startswith("exit 3: bench: the server would not start")


def test_an_overlong_run_is_interrupted_so_that_it_stops_its_servers(tree: Tree,
                                                                     tmp_path: Path) -> None:
    outcome = run_bench(tree, sys.executable, ["hang"], tmp_path / "r.json", 0.5)
    assert outcome.document is None and outcome.failure.startswith("stopped after")
    assert (tmp_path / "r.json.stopped").exists()


def test_a_tree_imports_its_own_prroom(tree: Tree) -> None:
    tree.check_import(sys.executable)   # raises when prroom would come from elsewhere
    assert tree.describe().endswith(f"at no git checkout ({tree.path})")


def test_a_tree_whose_prroom_is_not_its_own_is_refused(tree: Tree) -> None:
    (tree.path / "prroom" / "__init__.py").unlink()
    (tree.path / "prroom").rmdir()
    with pytest.raises(BenchError, match="prroom comes from"):
        tree.check_import(sys.executable)


def test_a_directory_without_the_benchmark_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no bench/run.py"):
        Tree("base", str(tmp_path))
    with pytest.raises(BenchError, match="neither a directory nor a git revision"):
        Tree("base", "no-such-revision-anywhere")
