"""What the figures were measured on: the CPU, the kernel, the Python build the server runs.

Ratios against the Node peer move between machines (an interpreter built without PGO/LTO, a
CPU generation, a kernel's syscall mitigations each move Python's costs and Node's by
different amounts), so every run records these beside the versions and prints them with the
table: a figure is read together with what it came from.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

# what /proc/cpuinfo and lscpu call the fields worth keeping; a generic model name (common
# on virtual machines) leaves family/model/stepping as the only name of the CPU generation
CPUINFO_KEYS = {"model name": "model", "cpu family": "family", "model": "model_number",
                "stepping": "stepping", "cpu MHz": "mhz", "cache size": "cache",
                "microcode": "microcode"}
LSCPU_KEYS = {"Hypervisor vendor": "hypervisor", "Virtualization type": "virtualization",
              "L2 cache": "l2", "L3 cache": "l3", "CPU max MHz": "max_mhz",
              "Vulnerability Spectre v2": "spectre_v2"}

# the server's interpreter describes itself: the same fields whichever python runs the bench
INTERPRETER_PROBE = (
    "import json, os, platform, sys, sysconfig\n"
    "args = sysconfig.get_config_var('CONFIG_ARGS') or ''\n"
    "print(json.dumps({'version': platform.python_version(),\n"
    "    'implementation': platform.python_implementation(),\n"
    "    'build': ' '.join(platform.python_build()), 'compiler': platform.python_compiler(),\n"
    "    'executable': sys.executable,\n"
    "    'pgo': '--enable-optimizations' in args, 'lto': '--with-lto' in args,\n"
    "    'shared': bool(sysconfig.get_config_var('Py_ENABLE_SHARED')),\n"
    "    'libpython_loaded': os.path.exists('/proc/self/maps') and\n"
    "        'libpython' in open('/proc/self/maps').read(),\n"
    "    'debug': hasattr(sys, 'gettotalrefcount')}))\n")


def cpu() -> Dict[str, Any]:
    """The CPU as /proc/cpuinfo (first processor) and lscpu describe it."""
    found: Dict[str, Any] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break   # the first processor is enough: the others are the same part
            key, _, value = line.partition(":")
            name = CPUINFO_KEYS.get(key.strip())
            if name:
                found[name] = value.strip()
    except OSError:
        pass
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        key, _, value = line.partition(":")
        name = LSCPU_KEYS.get(key.strip())
        if name:
            found[name] = value.strip()
        if key.strip() == "Model name" and "model" not in found:
            found["model"] = value.strip()
    return found


def interpreter(python: Optional[str]) -> Dict[str, Any]:
    """The build of ``python`` (the interpreter the server runs; default this one)."""
    command = [python or sys.executable, "-c", INTERPRETER_PROBE]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        answer: Dict[str, Any] = json.loads(done.stdout)
        return answer
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"version": platform.python_version(), "executable": python or sys.executable,
                "probe": "failed"}


def server_python(gunicorn: Optional[str]) -> Optional[str]:
    """The interpreter a gunicorn script runs under (its #! line), when it has one."""
    if not gunicorn:
        return None
    try:
        with open(gunicorn, "rb") as script:
            first = script.readline().decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    return words[0] if words else None


def describe(gunicorn: Optional[str] = None) -> Dict[str, Any]:
    """CPU, kernel and the server's Python build, for the JSON's meta."""
    return {"cpu": cpu(), "kernel": platform.release(), "kernel_build": platform.version(),
            "python": interpreter(server_python(gunicorn))}


def build_flags(python: Dict[str, Any]) -> str:
    """How the interpreter was built, as far as it can tell.

    ``--enable-optimizations`` and ``--with-lto`` show in its configure arguments when it
    was built from source with them; a distribution's build (Debian's, for one) profiles and
    links its own way and may show neither, so their absence alone proves nothing.  What a
    running interpreter does show is whether it runs from a shared libpython."""
    said = [name for name, key in (("PGO", "pgo"), ("LTO", "lto")) if python.get(key)]
    linked = python.get("libpython_loaded", python.get("shared"))
    return ", ".join([" and ".join(said) + " configured" if said else
                      "no PGO or LTO in its configure arguments"]
                     + ["shared libpython" if linked else "libpython linked in"])


def lines(described: Dict[str, Any]) -> List[str]:
    """The same, as the lines printed above the table."""
    c, p = described.get("cpu", {}), described.get("python", {})
    generation = "/".join(str(c[k]) for k in ("family", "model_number", "stepping") if k in c)
    chip = c.get("model", "unknown CPU") + (f" (family/model/stepping {generation})"
                                            if generation else "")
    clock = ", ".join(filter(None, [
        f"{float(c['mhz']):.0f} MHz" if c.get("mhz") else "",
        f"L2 {c['l2']}" if c.get("l2") else "", f"L3 {c['l3']}" if c.get("l3") else "",
        f"{c['hypervisor']} guest" if c.get("hypervisor") else ""]))
    built = ", ".join([build_flags(p)] + (["debug build"] if p.get("debug") else []))
    return [f"CPU: {chip}" + (f"; {clock}" if clock else ""),
            f"kernel: {described.get('kernel', '?')}"
            + (f"; Spectre v2: {c['spectre_v2']}" if c.get("spectre_v2") else ""),
            f"server Python: {p.get('implementation', '')} {p.get('version', '?')} "
            f"({p.get('compiler', '?')}; {built}) {p.get('executable', '')}"]
