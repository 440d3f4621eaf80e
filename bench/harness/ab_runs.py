"""The two code trees of an A/B comparison (``bench/compare.py``) and one benchmark run
from either: a tree is a directory as given, or a git worktree of a revision made for the
comparison and removed after it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .base import LOADGEN_DIR, REPO, BenchError, log
from .processes import stop_process

STOP_GRACE = 60.0   # seconds a run gets to stop its servers after SIGINT, then SIGKILL


def git(*args: str, cwd: Path = REPO) -> str:
    """A git command's output; BenchError with git's own words when it fails."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


class Tree:
    """A checkout of prroom that one side's runs import and start: ``spec`` names a
    directory, or a git revision checked out into a temporary worktree."""

    def __init__(self, side: str, spec: Optional[str]) -> None:
        self.side, self.spec = side, spec or "the working tree"
        self.temp: Optional[Path] = None
        if spec is None:
            self.path = REPO
        elif Path(spec).is_dir():
            self.path = Path(spec).resolve()
        else:
            try:
                commit = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
            except BenchError:
                raise BenchError(f"{side}: {spec} is neither a directory nor a git "
                                 "revision") from None
            self.temp = Path(tempfile.mkdtemp(prefix=f"prroom-compare-{side}-"))
            self.path = self.temp / "tree"
            log(f"{side}: git worktree of {spec} ({commit[:10]}) in {self.path}")
            git("worktree", "add", "--detach", str(self.path), commit)
        if not (self.path / "bench" / "run.py").is_file():
            self.remove()
            raise BenchError(f"{side}: no bench/run.py in {self.path}")
        try:
            self.commit = git("rev-parse", "--short", "HEAD", cwd=self.path) + (
                "+changes" if git("status", "--porcelain", "--", "prroom", cwd=self.path)
                else "")
        except BenchError:
            self.commit = "no git checkout"
        modules = self.path / "bench" / "loadgen" / "node_modules"
        if (modules.parent.is_dir() and not modules.exists() and not modules.is_symlink()
                and (LOADGEN_DIR / "node_modules").is_dir()):
            # the load generator's npm modules are shared rather than installed again
            modules.symlink_to((LOADGEN_DIR / "node_modules").resolve())

    def describe(self) -> str:
        """What the side measures, for the output."""
        return f"{self.spec} at {self.commit} ({self.path})"

    def environment(self) -> Dict[str, str]:
        """The run's environment: the tree's ``prroom`` first on the import path, so that it
        wins over the one the virtualenv has installed; the servers inherit it."""
        return {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(self.path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                if p])}

    def check_import(self, python: str) -> None:
        """That ``python`` with this environment imports the tree's own prroom."""
        done = subprocess.run([python, "-c", "import prroom; print(prroom.__file__)"],
                              env=self.environment(), cwd=self.path, capture_output=True,
                              text=True)
        where = Path(done.stdout.strip() or ".").resolve()
        if done.returncode or self.path.resolve() not in where.parents:
            raise BenchError(f"{self.side}: prroom comes from {where}, not from {self.path}: "
                             f"{done.stderr.strip()[-500:]}")

    def remove(self) -> None:
        """Remove the temporary worktree, if one was made."""
        if self.temp is None:
            return
        modules = self.path / "bench" / "loadgen" / "node_modules"
        if modules.is_symlink():
            modules.unlink()   # the link only, before git removes the rest
        try:
            git("worktree", "remove", "--force", str(self.path))
        except BenchError as error:
            log(f"{self.side}: {error}")
        shutil.rmtree(self.temp, ignore_errors=True)
        self.temp = None


def print_counts(trees: List[Tree], values: Dict[str, List[float]], indent: str = "  ") -> None:
    """Each tree's figures (``values`` by side), then branch / base of their lowest when a
    base was measured: the lowest count is the one least inflated by what timing adds."""
    for tree in trees:
        shown = ", ".join(f"{value:,.0f}" for value in values[tree.side])
        print(f"{indent}{tree.side:6} {tree.describe()}: {shown}")
    if "base" in values:
        print(f"{indent}branch / base: {min(values['branch']) / min(values['base']):.3f}")


def with_trees(name: str, base: Optional[str], branch: Optional[str],
               measure: Callable[[List[Tree]], None]) -> int:
    """Make the trees (``base`` if given, then ``branch``), ``measure`` them, remove them.

    The exit status: 0, or 1 with one line on stderr, named ``name``, when a measurement
    failed (:class:`BenchError`).
    """
    trees: List[Tree] = []
    try:
        if base:
            trees.append(Tree("base", base))
        trees.append(Tree("branch", branch))
        measure(trees)
    except BenchError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    finally:
        for tree in trees:
            tree.remove()
    return 0


class Outcome(NamedTuple):
    """One run: its results file's contents, or why there is none."""

    document: Optional[Dict[str, Any]]
    seconds: float
    failure: str


def interruptible() -> None:
    """In the child: SIGINT as Python's default (a KeyboardInterrupt, which stops the run's
    servers), even when we were started in the background with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(proc: "subprocess.Popen[bytes]") -> None:
    """SIGINT to a run (it stops its servers), SIGKILL if it has not ended STOP_GRACE
    seconds later."""
    stop_process(proc, STOP_GRACE, signal.SIGINT)


def run_bench(tree: Tree, python: str, bench_args: List[str], out: Path,
              timeout: float) -> Outcome:
    """``bench/run.py`` of ``tree`` once (``--runs 1 --out``), its output in ``out``'s .log;
    stopped after ``timeout`` seconds (SIGINT, so that it stops its servers)."""
    command = [python, str(tree.path / "bench" / "run.py"), *bench_args, "--runs", "1",
               "--out", str(out)]
    started = time.monotonic()
    with open(out.with_suffix(".log"), "w") as output:
        proc = subprocess.Popen(command, env=tree.environment(), stdout=output,
                                stderr=subprocess.STDOUT, preexec_fn=interruptible)
        try:
            code: Optional[int] = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            stop(proc)
        except BaseException:   # interrupted: the run stops its servers before we go on
            stop(proc)
            raise
    seconds = time.monotonic() - started
    if code is None:
        return Outcome(None, seconds, f"stopped after {timeout / 60:g} min (its output: "
                                      f"{out.with_suffix('.log')})")
    if code:
        lines = out.with_suffix(".log").read_text(errors="replace").strip().splitlines()
        return Outcome(None, seconds, f"exit {code}: {' '.join(lines[-1:])} (its output: "
                                      f"{out.with_suffix('.log')})")
    try:
        document: Dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError) as error:
        return Outcome(None, seconds, f"no results file: {error}")
    return Outcome(document, seconds, "")
