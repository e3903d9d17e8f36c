"""Which memory allocator a massl process runs with: `MASSL_ALLOCATOR`. Standard library only,
so the workflow can ask without importing torch.

glibc's malloc serves blocks above its mmap threshold (128 KiB, growing to 32 MiB) with mmap
and returns them with munmap, and trims the top of its heap: a training step's activation
buffers go back to the kernel and are faulted in, zeroed, again at the next step. Keeping them
made a paper-scale CPU step 1.3-2.8x faster (README, "Performance"); the demo's small buffers
gain nothing. It changes no result (tests/test_allocator.py). The choices:

    auto          tcmalloc if installed, else glibc-tuned (the default)
    glibc-tuned   glibc's own malloc, told by mallopt at the start of `massl` (before torch
                  allocates) to keep freed memory: nothing to install
    tcmalloc      preloaded (LD_PRELOAD) into the workflow's and `massl bench`'s child
                  processes: Debian `libtcmalloc-minimal4` or conda-forge `gperftools`
    default       the platform's malloc as it is

Off glibc (macOS, musl) glibc-tuned is a no-op with a log line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from pathlib import Path

from massl.errors import ConfigError

log = logging.getLogger(__name__)

ENV = "MASSL_ALLOCATOR"
CHOICES = ("auto", "glibc-tuned", "tcmalloc", "default")
LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
# mallopt parameters (glibc malloc.h) and what glibc-tuned sets them to. One arena: the main
# one grows with brk, while a thread arena's heap caps at 64 MiB and mmaps above it.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
GLIBC_TUNED = (
    (M_MMAP_MAX, 0),                 # no block is served by mmap, so none is unmapped on free
    (M_TRIM_THRESHOLD, 2**31 - 1),   # never give the heap's top back to the kernel
    (M_TOP_PAD, 64 << 20),           # grow the heap 64 MiB at a time
    (M_ARENA_MAX, 1),
)

_active: str | None = None  # what this process runs with, once `apply` has run


def requested(env=os.environ) -> str:
    """The validated `MASSL_ALLOCATOR` choice ("auto" when unset or empty)."""
    value = env.get(ENV, "").strip() or "auto"
    if value not in CHOICES:
        raise ConfigError(f"environment variable {ENV}={value!r}: not an allocator; use one of {', '.join(CHOICES)}")
    return value


def is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


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


def resolve(choice: str) -> str:
    """The allocator `choice` stands for here: "auto" becomes "tcmalloc" when it is installed,
    else "glibc-tuned" (on glibc) or "default"; an explicit tcmalloc must be installed."""
    if choice not in CHOICES:
        raise ConfigError(f"allocator {choice!r}: use one of {', '.join(CHOICES)}")
    if choice == "auto":
        return "tcmalloc" if tcmalloc_path() else ("glibc-tuned" if is_glibc() else "default")
    if choice == "tcmalloc" and tcmalloc_path() is None:
        raise ConfigError(f"{ENV}=tcmalloc, but tcmalloc is not installed (Debian: apt-get install "
                          f"libtcmalloc-minimal4; conda: gperftools); unset {ENV} to use glibc-tuned")
    return choice


def tcmalloc_loaded() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def tune_glibc() -> bool:
    """Set GLIBC_TUNED with mallopt in this process; False (and a log line) off glibc."""
    if not is_glibc():
        log.info("allocator: glibc-tuned asked for, but this platform's C library is not glibc; "
                 "keeping its malloc as it is")
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    failed = [param for param, value in GLIBC_TUNED if mallopt(param, value) != 1]
    if failed:  # glibc refuses a value only when it is out of range: a change in glibc, not in the input
        log.warning("allocator: glibc refused mallopt parameter(s) %s", failed)
    return True


def apply(env=os.environ) -> str:
    """Give this process the allocator `MASSL_ALLOCATOR` asks for, as early as possible (the
    start of `massl` main(), before torch allocates), and return what it runs with: "tcmalloc"
    (preloaded by whoever started it), "glibc-tuned" or "default"."""
    global _active
    choice = requested(env)
    if tcmalloc_loaded():
        _active = "tcmalloc"
    elif choice == "default":
        _active = "default"
    else:
        if choice == "tcmalloc":
            log.warning("allocator: %s=tcmalloc, but this process was started without it "
                        "(LD_PRELOAD); tuning glibc's malloc instead", ENV)
        elif choice == "auto" and tcmalloc_path():
            log.info("allocator: tcmalloc is installed but not preloaded into this process; "
                     "tuning glibc's malloc instead")
        _active = "glibc-tuned" if tune_glibc() else "default"
    log.debug("allocator: %s", _active)
    return _active


def active() -> str:
    """What this process runs with: as `apply` set it, else "tcmalloc" if preloaded or "default"."""
    return _active or ("tcmalloc" if tcmalloc_loaded() else "default")


def preload_env(env: dict[str, str], library: str | None) -> dict[str, str]:
    """`env` with LD_PRELOAD holding `library` and no other tcmalloc; None = no tcmalloc."""
    kept = [entry for entry in env.get("LD_PRELOAD", "").split(":") if entry and "tcmalloc" not in entry]
    preload = ([library] if library else []) + kept
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def child_env(env: dict[str, str], choice: str) -> dict[str, str]:
    """The environment of a child process that is to run with allocator `choice`: its
    MASSL_ALLOCATOR set to the resolved choice, tcmalloc preloaded only when that is tcmalloc."""
    resolved = resolve(choice)
    env = preload_env(env, tcmalloc_path() if resolved == "tcmalloc" else None)
    return {**env, ENV: resolved}


def shell_prefix(env=os.environ) -> str:
    """`LD_PRELOAD=<tcmalloc>[:$LD_PRELOAD] ` to put before a bash command when MASSL_ALLOCATOR
    resolves to tcmalloc, else "" (glibc-tuned is applied by `massl` itself). Safe under
    `set -u` (an unset LD_PRELOAD adds nothing)."""
    if resolve(requested(env)) != "tcmalloc":
        return ""
    return f'LD_PRELOAD="{tcmalloc_path()}${{LD_PRELOAD:+:$LD_PRELOAD}}" '


def cli_allocator(args) -> int:
    """`massl allocator --shell-prefix`: the shell prefix alone (possibly empty, no trailing
    space); without the flag, the allocator MASSL_ALLOCATOR resolves to here."""
    if args.shell_prefix:
        prefix = shell_prefix().strip()
        sys.stdout.write(prefix + "\n" if prefix else "")
    else:
        sys.stdout.write(resolve(requested()) + "\n")
    return 0
