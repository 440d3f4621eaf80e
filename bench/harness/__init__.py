"""The load benchmark's parts, used by ``bench/run.py`` and ``bench/compare.py``.

base        paths, sizes, logging, the one error that stops a run
sampling    /proc: a process's CPU and RSS, each core's busy time
processes   the servers under test (prroom, plain stack, Node peer, external), redis-server
loadgen     the loadgen.js processes, kept in step at their barriers
scenarios   the five scenarios of the standard benchmark, and their cost figures
standard    the standard benchmark's runs: every server in turn, disturbed runs again
stats       medians, which side was the limit, what makes a figure suspect
report      the tables on stdout and the JSON file
cluster     standalone vs clustered prroom processes on one private Redis
cluster_report  the cluster benchmark's medians, tables and what they imply
ab          A/B comparison of two trees (bench/compare.py): run order, figures, p values
ab_runs     its trees (a directory or a temporary git worktree) and one run from either
"""
