"""Two gloo processes on CPU take the same meta-step as one process on the same tasks."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mamlkit import training
from mamlkit.checkpoint import load_checkpoint
from mamlkit.config import Config

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, config, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run = training.meta_train(config, out if rank == 0 else None, progress=False)
        state = {k: v.detach() for k, v in run.model.state_dict().items()}
        if run.inner_state is not None:
            state.update({f"adam.{k}": v for k, v in run.inner_state.exp_avg_sq.items()}, step=run.inner_state.step)
        torch.save(state, f"{out}.rank{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("algo", ["maml", "reptile", "reptile-kept-adam"])
def test_two_processes_equal_one(tmp_path, algo):
    """Reptile with its inner Adam state kept (batched: every task starts from it, then the tasks' mean)
    too: the processes average their states, so both hold the single process's state."""
    kept = dict(algo="reptile", inner_optimizer="adam", inner_lr=0.01, keep_inner_state=True)
    config = Config(iterations=3, meta_batch_size=6, val_every=3, val_tasks=4, checkpoint_every=3,
                    seed=5, batched=True, **(kept if algo == "reptile-kept-adam" else {"algo": algo}))
    single = training.meta_train(config, progress=False)
    out = str(tmp_path / "dist.pt")
    mp.spawn(_worker, args=(2, free_port(), config, out), nprocs=2, join=True)
    states = [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2)]
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(states[0][k], v, rtol=1e-5, atol=1e-6)
        assert torch.equal(states[0][k], states[1][k])  # every process holds the same parameters
    if single.inner_state is not None:
        assert states[0]["step"] == states[1]["step"] == single.inner_state.step == 3 * single.config.inner_steps
        for k, v in single.inner_state.exp_avg_sq.items():
            torch.testing.assert_close(states[0][f"adam.{k}"], v, rtol=1e-5, atol=1e-9)
            assert torch.equal(states[0][f"adam.{k}"], states[1][f"adam.{k}"])
    assert load_checkpoint(out)["iteration"] == 3  # written by rank 0
