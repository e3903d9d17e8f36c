"""Which memory allocator a training process should run with. Standard library only, so the
workflow can ask without importing torch.

glibc's malloc returns the large activation buffers of a step to the kernel and faults them in
again at the next step; tcmalloc keeps them. Preloaded, it made a paper-scale CPU step 1.3-1.4x
faster (README, "Performance"); the demo's small buffers gain nothing. It changes no result.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def tcmalloc_path() -> str | None:
    """The tcmalloc library to preload, if installed: the environment's own (conda-forge
    `gperftools`) or the system's (Debian/Ubuntu `libtcmalloc-minimal4`); None otherwise."""
    for prefix in dict.fromkeys(p for p in (os.environ.get("CONDA_PREFIX"), sys.prefix) if p):
        for name in LIBRARIES:
            if (Path(prefix) / "lib" / name).is_file():
                return str(Path(prefix) / "lib" / name)
    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)  # a soname the dynamic loader resolves
        if found:
            return found
    return None


def preload_env(env: dict[str, str], library: str | None) -> dict[str, str]:
    """`env` with LD_PRELOAD holding `library` and no other tcmalloc; None = no tcmalloc."""
    kept = [entry for entry in env.get("LD_PRELOAD", "").split(":") if entry and "tcmalloc" not in entry]
    preload = ([library] if library else []) + kept
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def shell_prefix() -> str:
    """`LD_PRELOAD=<tcmalloc>[:$LD_PRELOAD] ` to put before a bash command, or "" without
    tcmalloc. Safe under `set -u` (an unset LD_PRELOAD adds nothing)."""
    library = tcmalloc_path()
    return f'LD_PRELOAD="{library}${{LD_PRELOAD:+:$LD_PRELOAD}}" ' if library else ""
