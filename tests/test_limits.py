"""core.limits.usable_cpus: the one count of the CPUs a process may use (J2K decoding, the
Screener's threads, --workers)."""


def test_usable_cpus_follows_the_affinity_and_the_cap(monkeypatch):
    import os

    from core.limits import usable_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, raising=False)
    assert usable_cpus() == 10 and usable_cpus(8) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cpus(8) == 1

    def unsupported(pid):
        raise AttributeError

    monkeypatch.setattr(os, "sched_getaffinity", unsupported, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert usable_cpus() == 1
