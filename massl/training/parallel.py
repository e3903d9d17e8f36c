"""The runs of one `massl train` job, one after the other or side by side.

With `training.threads_per_run: n` a job given T threads (`--threads T`) trains T // n runs at a
time in worker processes of n torch threads each: a run's float order, and so its result, is the
same whichever T its job had (a convolution's weight gradient sums over the batch in an order
that depends on the threads sharing it). Otherwise, or on a GPU, the runs train one after the
other in this process with all T threads. Runs that start from the job's own autoencoder wait
for it. Workers are started once per job and train run after run, paying torch's start-up once;
they inherit the environment in which `massl train` pinned the CPU kernels (`training.cpu_isa`).
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from massl.device import pick_device, set_threads

log = logging.getLogger(__name__)

_tag = ""  # the run a worker is training, put in front of its log lines


def plan_workers(job_threads: int | None, threads_per_run: int | None, n_runs: int, device: str) -> int:
    """How many runs train at once: 1 unless runs have a fixed thread count that the job's
    threads hold more than once, on the CPU."""
    if threads_per_run is None or job_threads is None or pick_device(device).type != "cpu":
        return 1
    if job_threads < threads_per_run:
        log.warning("--threads %d is fewer than training.threads_per_run = %d: each run still takes %d threads",
                    job_threads, threads_per_run, threads_per_run)
    workers = max(1, min(n_runs, job_threads // threads_per_run))
    if workers * threads_per_run < job_threads:
        log.info("%d run(s) of %d torch thread(s) at a time use %d of the job's %d threads (training.threads_per_run)",
                 workers, threads_per_run, workers * threads_per_run, job_threads)
    return workers


def run_threads(job_threads: int | None, threads_per_run: int | None) -> int | None:
    """A run's torch threads: `training.threads_per_run` when set, else the job's."""
    return threads_per_run if threads_per_run is not None else job_threads


def train_all(specs: list, device: str, job_threads: int | None) -> None:
    """Train `specs` (massl.training.run.RunSpec, one dataset) as planned above."""
    from massl.training.run import train_run

    training = specs[0].training
    threads = run_threads(job_threads, training.threads_per_run)
    workers = plan_workers(job_threads, training.threads_per_run, len(specs), device)
    if workers == 1:
        set_threads(threads)
        for index, spec in enumerate(specs, 1):
            if len(specs) > 1:
                log.info("run %d/%d: %s", index, len(specs), spec.method.id)
            train_run(spec, device=device)
        return
    log.info("%d runs, %d at a time, %d torch thread(s) each", len(specs), workers, threads)
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch has threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(threads, logging.getLogger().level)) as pool:
        try:
            _schedule(pool, specs, device)
        except BaseException:
            _stop(pool)
            raise


def _schedule(pool: ProcessPoolExecutor, specs: list, device: str) -> None:
    """Submit every run whose autoencoder is not trained by this job or is done; on each finished
    run, the runs waiting for it. The first failure is raised."""
    autoencoders = {spec.out for spec in specs if spec.method.strategy == "autoencoder"}
    waiting = [spec for spec in specs if spec.autoencoder in autoencoders]
    running: dict[Future, object] = {}

    def submit(spec):
        running[pool.submit(_train_in_worker, spec, device)] = spec

    for spec in specs:
        if spec.autoencoder not in autoencoders:
            submit(spec)
    finished = 0
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            spec = running.pop(future)
            future.result()  # a run's error, raised here as in a job that trains one run at a time
            finished += 1
            log.info("run %d/%d finished: %s", finished, len(specs), spec.method.id)
            for ready in [s for s in waiting if s.autoencoder == spec.out]:
                waiting.remove(ready)
                submit(ready)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones (their checkpoints stay for a rerun)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public way before 3.14
        process.terminate()


def _start_worker(threads: int | None, level: int) -> None:
    import massl.allocator

    massl.allocator.apply()  # a spawned worker does not pass through `massl` main()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(tag)s%(message)s",
                        datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_add_tag)
    set_threads(threads)


def _add_tag(record: logging.LogRecord) -> bool:
    record.tag = _tag
    return True


def _train_in_worker(spec, device: str) -> None:
    global _tag
    from massl.training.run import train_run

    _tag = f"[{spec.method.id}] "
    try:
        train_run(spec, device=device)
    finally:
        _tag = ""
