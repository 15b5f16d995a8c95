"""Process-group set-up from the environment, device choice and the CPU SyncBN fallback."""

import os

import pytest
import torch
from torch import nn

from benchmark.engine import distributed
from benchmark.engine.distributed import DistInfo, PeakMemory, convert_sync_bn, init_distributed, resolve_device
from benchmark.errors import NLBenchError


def test_no_environment_means_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.device.type) == (0, 1, None, "cpu")
    assert distributed.get_world_size() == 1
    t = torch.ones(3)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1, 1, 1]


def test_world_without_master_address_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(NLBenchError, match="MASTER_ADDR is not set"):
        init_distributed("cpu")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(NLBenchError, match="RANK: expected an integer"):
        init_distributed("cpu")


def test_device_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(NLBenchError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(NLBenchError, match="no CUDA device"):
            resolve_device("cuda")


def test_cpu_ranks_keep_plain_batchnorm_and_say_so():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    said = []
    out = convert_sync_bn(model, DistInfo(0, 2, 0, torch.device("cpu"), "gloo"), enabled=True, log=said.append)
    assert isinstance(out[1], nn.BatchNorm2d) and not isinstance(out[1], nn.SyncBatchNorm)
    assert len(said) == 1 and "plain BatchNorm" in said[0]


@pytest.mark.gpu
def test_cuda_ranks_use_syncbn():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    out = convert_sync_bn(model, DistInfo(0, 2, 0, torch.device("cuda", 0), "nccl"), enabled=True)
    assert isinstance(out[1], nn.SyncBatchNorm)


def test_cpu_peak_memory_can_be_reset():
    import mmap

    mem = PeakMemory(torch.device("cpu"))
    # An anonymous mapping is returned to the OS on close whatever malloc's settings (predict raises
    # glibc's mmap threshold in-process, so a freed tensor may stay resident).
    big = mmap.mmap(-1, 64 << 20)
    big.write(b"\x01" * (64 << 20))  # touched, so resident
    high = mem.peak_gb()
    big.close()
    # Where the kernel lets a process write its /proc/self/clear_refs (Linux), a reset must start a new
    # peak below the one the mapping made; elsewhere it says it cannot and the peak stays the process's.
    can_clear = os.access("/proc/self/clear_refs", os.W_OK)
    assert mem.reset() is can_clear
    if can_clear:
        assert mem.peak_gb() < high - 0.03
    else:
        assert mem.peak_gb() >= high
    assert mem.kind == "peak_rss"
