"""``octscreen screen --workers N``: N exams screened at a time, each in a worker process of the standard
library's ``ProcessPoolExecutor`` (no scheduler of our own; an archive beyond one machine goes to
``octscreen batch`` on Dask).

Each worker loads the model card once (its own ``Screener``, with ``threads`` or the cores divided by
N) and runs ``app.cmd_screen.screen_job`` on the exams it is given: the very code of the one-process
run, so the reports, rows and failures are the same. The parent keeps what it had: the plan (names,
report ids, pseudonyms; de-identification happened at the entry), the pixel hold and the results
tables. It reads an exam's pixels again where the hold gave them back, pickles the exam at once
(so they can go again) and keeps at most ``N + 1`` exams in flight, so memory stays bounded. Rows come
back in the plan's order, whichever exam finished first. Workers are started with ``spawn``: a fork
of a process that has started ONNX Runtime's or PyTorch's threads can hang.
"""

from __future__ import annotations

import logging
import pickle
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

from app.cmd_screen import _NoInstitutionFilter, failed_job, screen_job
from core.inference import Screener
from core.limits import usable_cpus
from core.modelcard import load_card

__all__ = ["screen_in_processes", "worker_threads"]

log = logging.getLogger(__name__)

_STATE: dict = {}  # in a worker: its card and screener


def worker_threads(threads: int | None, workers: int) -> int:
    """Inference threads per worker: ``threads`` when given, else this process's cores divided by the
    workers (at least 1)."""
    if threads:
        return int(threads)
    return max(1, usable_cpus() // workers)


def _init(card_path: str, backend: str, threads: int, quiet_institution: bool) -> None:
    """In each worker, once: its model (hashes checked again) and the run's logging choices."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if quiet_institution:  # the parent said it once for the run
        logging.getLogger("core.report").addFilter(_NoInstitutionFilter())
    card = load_card(card_path)
    _STATE.update(card=card, screener=Screener(card, backend=backend, threads=threads))


def _run(payload: bytes, settings):
    """In a worker: one pickled ``ExamJob`` screened and written; its ``JobResult``."""
    job = pickle.loads(payload)  # noqa: S301 (our own parent's ExamJob, never a user's file)
    return screen_job(job, _STATE["screener"], _STATE["card"], settings)


def screen_in_processes(jobs, hold, card, settings, backend: str, threads: int | None, workers: int, bar) -> list:
    """Every job screened by ``workers`` processes; the ``JobResult``s in the order of ``jobs``.
    ``hold`` is the run's ``core.screening.PixelHold``; ``bar`` a tqdm bar counting B-scans."""
    results: list = [None] * len(jobs)
    per_worker = worker_threads(threads, workers)
    log.info("%d worker processes, %d inference thread(s) each", workers, per_worker)
    pending: dict[Future, int] = {}
    queue = iter(range(len(jobs)))

    def n_bscans(i: int) -> int:
        return sum(v.n_bscans for v in jobs[i].volumes)

    def failed(i: int, why: object) -> None:
        results[i] = failed_job(jobs[i], why)
        bar.update(n_bscans(i))

    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init,
        initargs=(str(card.path), backend, per_worker, not settings.institution),
    ) as pool:

        def submit_next() -> bool:
            for i in queue:
                job = jobs[i]
                try:  # pixels given back while reading are read again, pickled, and go again at once
                    with hold.pixels(job.volumes):
                        payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as e:  # a file changed meanwhile: this exam fails, the others go on
                    failed(i, e)
                    continue
                try:
                    pending[pool.submit(_run, payload, settings)] = i
                except Exception as e:  # the pool broke (a worker died): the rest fail, named
                    failed(i, f"worker process: {e}")
                    continue
                return True
            return False

        for _ in range(workers + 1):
            if not submit_next():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                try:
                    results[i] = fut.result()
                except Exception as e:  # the worker died (out of memory, killed) or could not start
                    log.debug("worker failed", exc_info=True)
                    failed(i, f"worker process: {e}")
                else:
                    bar.update(n_bscans(i))
                submit_next()
    return results
