"""Torch computations get their threads back after FAISS's one-thread setting (shared OpenMP)."""

import torch

import itaudit.index.vector  # noqa: F401  (sets FAISS's OpenMP threads at import)
from itaudit.threads import torch_threads, wanted


def test_torch_threads_sets_and_restores(monkeypatch):
    monkeypatch.setenv("ITAUDIT_TORCH_THREADS", "2")
    torch.set_num_threads(1)  # what FAISS's setting leaves torch with when they share the runtime
    with torch_threads() as n:
        assert n == 2
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1


def test_wanted_defaults_to_the_cpus_of_this_process(monkeypatch):
    import os

    monkeypatch.delenv("ITAUDIT_TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert wanted() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Ray worker with one CPU
    assert wanted() == 1
    monkeypatch.setenv("ITAUDIT_TORCH_THREADS", "3")
    assert wanted() == 3
