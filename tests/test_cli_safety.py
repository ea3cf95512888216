"""The command line keeps the user's work (issue 13): no silent overwrite, resume that honours its
flags, divergence caught, one run per checkpoint, signals that save, and every error one line."""

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mamlkit import atomic, checkpoint, runs, training
from mamlkit import outpath as outpath_module
from mamlkit.__main__ import main
from mamlkit.config import Config
from mamlkit.data import omniglot as O
from mamlkit.divergence import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--iterations", "20", "--meta-batch-size", "3", "--val-every", "10", "--checkpoint-every", "10",
         "--no-progress", "--device", "cpu"]
LONG = ["--iterations", "1000000", "--meta-batch-size", "3", "--val-every", "1000000", "--checkpoint-every",
        "1000000", "--val-tasks", "2", "--no-progress", "--device", "cpu"]
SHARED = Path(os.environ.get("MAMLKIT_DATA", "/nonexistent")) / "omniglot"


def env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def run_cli(*args, timeout=240, cwd=None, **extra_env):
    return subprocess.run([sys.executable, "-m", "mamlkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env(**extra_env))


def one_error_line(result) -> str:
    """The run failed with exactly one line on stderr, starting ``error:``, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 20-iteration sine MAML run (meta-batch 3), saved at iterations 10 and 20."""
    out = tmp_path_factory.mktemp("safety") / "sine.pt"
    assert main(["train", *SHORT, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(trained, tmp_path):
    out = tmp_path / "run.pt"
    out.write_bytes(trained.read_bytes())
    return out


def iteration(path) -> int:
    return torch.load(path, weights_only=True)["iteration"]


# 1. silent overwrite

def test_1_existing_checkpoint_is_not_overwritten_without_resume_or_overwrite(copy):
    before = copy.read_bytes()
    line = one_error_line(run_cli("train", *SHORT, "--out", copy))
    assert "already exists" in line and "--resume" in line and "--overwrite" in line
    assert copy.read_bytes() == before
    result = run_cli("train", *SHORT, "--seed", "1", "--out", copy, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert torch.load(copy, weights_only=True)["config"]["seed"] == 1


# 2. resume honours its flags

def test_2_resume_defaults_come_from_the_checkpoint_not_the_paper(tmp_path, monkeypatch):
    out = tmp_path / "half.pt"
    real_step = training.outer_step

    def crash_at_15(run, tasks, batched):
        if run.iteration == 15:
            raise KeyboardInterrupt
        return real_step(run, tasks, batched)

    monkeypatch.setattr(training, "outer_step", crash_at_15)
    with pytest.raises(KeyboardInterrupt):
        training.meta_train(Config(iterations=20, meta_batch_size=3, val_every=10, checkpoint_every=10), out,
                            progress=False)
    assert iteration(out) == 10
    result = run_cli("train", "--resume", "--out", out, "--no-progress", timeout=120)
    assert result.returncode == 0, result.stderr
    state = torch.load(out, weights_only=True)
    assert state["iteration"] == 20 and state["config"]["iterations"] == 20  # not the paper's 70,000
    assert state["config"]["meta_batch_size"] == 3


def test_2_resume_refuses_a_conflicting_setting_and_allows_the_free_ones(copy):
    before = copy.read_bytes()
    line = one_error_line(run_cli("train", "--resume", "--out", copy, "--task", "omniglot", "--algo", "reptile",
                                  "--ways", "20", "--iterations", "30"))
    assert "conflicts with" in line and "--resume" not in line.split("conflicts")[0].replace("--task", "")
    assert copy.read_bytes() == before
    line = one_error_line(run_cli("train", "--resume", "--out", copy, "--no-progress"))
    assert "already done 20 of its 20 iterations" in line and "--iterations" in line
    result = run_cli("train", "--resume", "--out", copy, "--iterations", "30", "--inner-lr", "0.005",
                     "--data-dir", copy.parent / "elsewhere", "--val-every", "5", "--no-progress", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: --inner-lr changes from 0.01 to 0.005")
    config = torch.load(copy, weights_only=True)["config"]
    assert (config["iterations"], config["inner_lr"], config["val_every"]) == (30, 0.005, 5)
    assert config["data_dir"] == str(copy.parent / "elsewhere") and config["algo"] == "maml"


def test_2_library_resume_refuses_a_different_run(copy):
    with pytest.raises(ValueError, match="algo"):
        training.meta_train(Config(algo="fomaml", iterations=30, meta_batch_size=3, val_every=10,
                                   checkpoint_every=10), copy, resume=True, progress=False)


# 3. evaluate reports each checkpoint in its own units

@pytest.mark.skipif(not (SHARED.is_dir() and (ROOT / "data" / "omniglot-maml.pt").is_file()),
                    reason="needs the Omniglot copy and the shipped checkpoints")
def test_3_evaluate_mixing_task_families_keeps_each_in_its_units():
    sine, omni = ROOT / "data" / "sinusoid-maml.pt", ROOT / "data" / "omniglot-maml.pt"
    alone = run_cli("evaluate", sine, "--tasks", "5", "--steps", "1", "--device", "cpu")
    mixed = run_cli("evaluate", omni, sine, "--tasks", "5", "--steps", "1", "--device", "cpu")
    assert alone.returncode == 0 and mixed.returncode == 0, mixed.stderr
    row = [line for line in alone.stdout.splitlines() if line.startswith(f"| {sine} |")]
    assert row and row[0] in mixed.stdout.splitlines()  # the sine MSE unscaled, beside the accuracy table
    assert "accuracy in %:" in mixed.stdout and "MSE:" in mixed.stdout


def test_3_tables_are_split_by_task_family(copy, capsys, monkeypatch):
    """Without Omniglot: a fake accuracy row for one checkpoint gets its own table and scale."""
    real = training.evaluate_checkpoint

    def fake(path, *args, **kw):
        row = real(path, *args, **kw)
        if str(path).endswith("acc.pt"):
            row.update(task="omniglot", metric="accuracy", ways=5, mean=[0.5] * len(row["mean"]))
        return row

    acc = copy.parent / "acc.pt"
    acc.write_bytes(copy.read_bytes())
    import mamlkit.__main__ as cli
    monkeypatch.setattr(cli, "evaluate_checkpoint", fake)
    assert main(["evaluate", str(acc), str(copy), "--tasks", "4", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "| 50.000 ±" in out and out.count("| checkpoint | algo |") == 2
    sine_row = [line for line in out.splitlines() if line.startswith(f"| {copy} |")][0]
    assert float(sine_row.split("|")[3].split("±")[0]) < 20  # an MSE, not ×100


# 4. unwritable --out found before the first iteration

@pytest.mark.parametrize("case", ["under-a-file", "existing-folder", "proc"])
def test_4_unwritable_out_is_refused_before_training(tmp_path, case):
    (tmp_path / "file").write_text("x")
    out = {"under-a-file": tmp_path / "file" / "run.pt", "existing-folder": tmp_path, "proc": "/proc/run.pt"}[case]
    start = time.monotonic()
    line = one_error_line(run_cli("train", *LONG, "--out", out, timeout=120))
    assert time.monotonic() - start < 100 and "--out" in line


def test_4_read_only_folder_is_refused_in_process(tmp_path, monkeypatch, capsys):
    """``os.access`` decides (root can write anywhere, so the permission is simulated here)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(outpath_module.os, "access", lambda p, m: False if Path(p) == folder else real(p, m))
    assert main(["train", *LONG, "--out", str(folder / "run.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write --out") and "not writable" in err and not list(folder.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_4_read_only_working_folder_with_the_default_out(tmp_path):
    tmp_path.chmod(0o555)
    try:
        line = one_error_line(run_cli("train", *LONG, cwd=tmp_path, timeout=120))
        assert "runs/" in line and "not writable" in line
    finally:
        tmp_path.chmod(0o755)


# 5. finite divergence

@pytest.mark.parametrize("flags", [["--inner-lr", "100"], ["--algo", "fomaml", "--outer-lr", "1"]])
def test_5_exploding_loss_stops_training_with_the_hint(tmp_path, flags):
    out = tmp_path / "div.pt"
    line = one_error_line(run_cli("train", *SHORT, *flags, "--out", out))
    assert "diverged at iteration 10" in line and "--inner-lr" in line and "no checkpoint was written" in line
    assert not out.exists()


# 6. never a non-finite checkpoint

@pytest.mark.parametrize("poison", ["weights", "adam"])
def test_6_a_blow_up_on_a_checkpoint_iteration_is_not_saved(tmp_path, monkeypatch, poison):
    out = tmp_path / "p.pt"
    real_step = training.outer_step

    def blow_up_at_20(run, tasks, batched):
        loss = real_step(run, tasks, batched)  # the pre-step loss stays finite
        if run.iteration == 19:
            if poison == "weights":
                next(run.model.parameters()).data.fill_(float("nan"))
            else:
                next(iter(run.optimizer.state.values()))["exp_avg_sq"].fill_(float("inf"))
        return loss

    monkeypatch.setattr(training, "outer_step", blow_up_at_20)
    with pytest.raises(TrainingDiverged, match="iteration 20.*non-finite"):
        training.meta_train(Config(iterations=30, meta_batch_size=3, val_every=10, checkpoint_every=10), out,
                            progress=False)
    state = torch.load(out, weights_only=True)
    assert state["iteration"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# 7. two runs, one --out; 8. signals save and print the resume command

def start_long_run(out, *extra):
    proc = subprocess.Popen([sys.executable, "-m", "mamlkit", "train", *LONG, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    lock = Path(f"{out}.lock")
    deadline = time.monotonic() + 120
    while not lock.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(3)  # into the training loop
    return proc


def test_7_a_second_run_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "busy.pt"
    first = start_long_run(out)
    try:
        line = one_error_line(run_cli("train", *SHORT, "--out", out))
        assert "another run" in line and str(first.pid) in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert not Path(f"{out}.lock").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_8_a_signal_saves_and_prints_the_exact_resume_command(tmp_path, sig):
    out = tmp_path / "long run.pt"  # a space: the command must quote it
    proc = start_long_run(out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {sig.name}" in lines[0], err
    command = lines[0].split("`")[1]
    assert command.startswith(f"python -m mamlkit train --resume --out '{out}'")
    done = iteration(out)
    assert done >= 1
    argv = [sys.executable, *shlex.split(command)[1:], "--iterations", str(done + 2)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert iteration(out) == done + 2


def test_8_an_immediate_interrupt_never_claims_a_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupt(run, tasks, batched):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "outer_step", interrupt)
    assert main(["train", *SHORT, "--out", str(tmp_path / "none.pt")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted; no checkpoint was written") and "intact" not in err


# 9. the Omniglot cache location

@pytest.fixture
def tiny(tmp_path):
    from test_omniglot import make_zip

    data = tmp_path / "data"
    data.mkdir()
    make_zip(data / "images_background.zip", "images_background", {"Alpha": 2}, 1)
    make_zip(data / "images_evaluation.zip", "images_evaluation", {"Gamma": 1}, 3)
    return data


def deny(monkeypatch, *folders):
    real = os.access
    denied = {Path(f).absolute() for f in folders}
    monkeypatch.setattr(O.os, "access", lambda p, m: False if Path(p).absolute() in denied else real(p, m))


def test_9_cache_goes_where_this_user_can_write(tiny, tmp_path, monkeypatch, capsys):
    cache_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    deny(monkeypatch, tiny)  # a shared folder owned by another user: readable, not writable
    data = O.load_omniglot(tiny, download_missing=False)
    assert not (tiny / O.CACHE_NAME).exists()
    assert list((cache_home / "mamlkit").glob("*.npz")) and "not writable" in capsys.readouterr().err
    for cached in (cache_home / "mamlkit").glob("*.npz"):
        cached.unlink()
    deny(monkeypatch, tiny, cache_home / "mamlkit")  # and no writable cache folder either: memory, and say so
    again = O.load_omniglot(tiny, download_missing=False)
    assert np.array_equal(again.images, data.images) and "kept in memory" in capsys.readouterr().err
    assert not cache_home.exists() or not list(cache_home.rglob("*.npz"))


def test_9_an_unwritable_data_folder_is_not_reported_as_a_download_failure(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    deny(monkeypatch, empty)
    with pytest.raises(O.OmniglotError, match="cannot write there to download"):
        O.load_omniglot(empty, base_url=(tmp_path / "nowhere").as_uri() + "/")


# 10. reachable inputs that used to end in a traceback

def broken(copy, how):
    state = torch.load(copy, weights_only=True)
    if how == "no-config":
        del state["config"]
    elif how == "wrong-shape":
        state["model"]["0.weight"] = torch.zeros(3, 3)
    elif how == "bad-rng":
        state["rng"]["tasks"] = torch.zeros(3, dtype=torch.uint8)
    elif how == "wrong-type":
        state["config"]["inner_lr"] = "fast"
    elif how == "iteration-type":
        state["iteration"] = "ten"
    torch.save(state, copy)
    return copy


@pytest.mark.parametrize("how", ["no-config", "wrong-shape", "bad-rng", "wrong-type", "iteration-type"])
def test_10_broken_checkpoint_content_is_one_line(copy, how):
    path = broken(copy, how)
    assert "broken" in one_error_line(run_cli("evaluate", path, "--tasks", "3"))
    assert "broken" in one_error_line(run_cli("train", "--resume", "--out", path, "--iterations", "30"))


@pytest.mark.parametrize("args", [["--device", "xyz"], ["--device", "mps"], ["--device", "meta"],
                                  ["--seed", "18446744073709551616"], ["--seed", "-1"]])
def test_10_bad_device_and_seed_are_one_line(copy, args):
    one_error_line(run_cli("evaluate", copy, "--tasks", "3", *args))
    one_error_line(run_cli("train", *SHORT[:-2], *args, "--out", copy.parent / "new.pt"))


def test_10_a_junk_png_in_a_valid_zip_is_named(tiny):
    import zipfile

    with zipfile.ZipFile(tiny / "images_background.zip", "a") as z:
        z.writestr("images_background/Alpha/character01/junk.png", b"not a png")
    with pytest.raises(O.OmniglotError, match="junk.png is not a readable PNG"):
        O.load_omniglot(tiny, download_missing=False)


def test_10_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, capsys):
    out = tmp_path / "full.pt"
    real_save = torch.save
    calls = []

    def disk_full_on_the_second_save(obj, f, *args, **kw):
        calls.append(f)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", disk_full_on_the_second_save)
    assert main(["train", *SHORT, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: could not write")
    assert "No space left on device" in err and "intact" in err
    assert iteration(out) == 10 and [p.name for p in tmp_path.iterdir()] == ["full.pt"]


# 11. evaluate's JSON, one task, zero steps

def test_11_json_is_strict_with_nan_as_null_and_a_diverged_count(copy):
    result = run_cli("evaluate", copy, "--tasks", "6", "--steps", "0", "3", "--inner-lr", "1e8", "--json")
    assert result.returncode == 0, result.stderr

    def no_constants(name):
        raise AssertionError(f"bare {name} in JSON")

    row = json.loads(result.stdout, parse_constant=no_constants)[0]
    assert row["steps"]["3"]["mean"] is None and row["steps"]["3"]["diverged"] > 0 and row["diverged"] > 0
    assert row["steps"]["0"]["mean"] is not None and "diverged" in row["note"]


def test_11_one_task_and_zero_steps(copy):
    result = run_cli("evaluate", copy, "--tasks", "1", "--steps", "0", "--json")
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
    row = json.loads(result.stdout)[0]
    assert row["steps"]["0"]["ci95"] is None and row["steps"]["0"]["mean"] is not None
    assert "no confidence interval" in row["note"] and row["protocol"]["inner_steps"] == 0
    table = run_cli("evaluate", copy, "--tasks", "1", "--steps", "0", "1")
    assert table.returncode == 0 and "Warning" not in table.stderr and "± n/a" in table.stdout


# 12. nonsense that used to be accepted

@pytest.mark.parametrize("args,message", [
    (["--inner-optimizer", "adam"], "Reptile's inner optimizer"),
    (["--max-minutes", "-1"], "--max-minutes must be a finite number"),
    (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
    (["--max-minutes", "inf"], "--max-minutes must be a finite number"),
])
def test_12_nonsense_is_refused(tmp_path, args, message):
    assert message in one_error_line(run_cli("train", *SHORT, *args, "--out", tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()


# 13. a checkpoint's configuration is bounded and its paths are not trusted

def test_13_huge_sizes_are_refused_before_allocating(copy):
    state = torch.load(copy, weights_only=True)
    state["config"]["hidden"] = [10**7, 10**7]
    torch.save(state, copy)
    assert "hidden must be" in one_error_line(run_cli("evaluate", copy, "--tasks", "2", timeout=60))


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the Omniglot copy")
def test_13_a_stored_data_dir_is_never_created(tmp_path):
    evil = tmp_path / "evil" / "omniglot"
    state = runs.new_run(Config(task="omniglot", data_dir=str(evil), iterations=10)).state()
    checkpoint.save_checkpoint(state, tmp_path / "crafted.pt")
    result = run_cli("evaluate", tmp_path / "crafted.pt", "--tasks", "2", "--steps", "0", "--device", "cpu",
                     MAMLKIT_DATA=str(SHARED.parent))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "evil").exists()


# 14. a stray WORLD_SIZE

def test_14_stray_world_size_does_not_affect_evaluate(copy):
    result = run_cli("evaluate", copy, "--tasks", "3", timeout=60, WORLD_SIZE="2")
    assert result.returncode == 0, result.stderr
    line = one_error_line(run_cli("train", *SHORT, "--out", copy.parent / "w.pt", timeout=60, WORLD_SIZE="2"))
    assert "torchrun" in line


# 15. durable writes, stale temporaries, failed downloads, read-only checkpoints

def test_15_atomic_write_fsyncs_the_file_and_its_folder_and_keeps_the_mode(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real(fd))
    target = tmp_path / "f.bin"
    atomic.atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"1"))
    assert str(tmp_path) in synced and any(s.endswith(".tmp") for s in synced)
    target.chmod(0o640)
    atomic.atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"2"))
    assert target.stat().st_mode & 0o777 == 0o640 and target.read_bytes() == b"2"


def test_15_stale_temporaries_of_the_checkpoint_are_removed(copy):
    stale = copy.parent / f"{copy.name}.k1ll3d.tmp"
    other = copy.parent / "other.pt.abc.tmp"
    stale.write_bytes(b"half")
    other.write_bytes(b"not ours")
    result = run_cli("train", "--resume", "--out", copy, "--iterations", "21", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and other.exists()


def test_15_a_failed_download_leaves_no_empty_folder(tmp_path):
    with pytest.raises(O.OmniglotError):
        O.load_omniglot(tmp_path / "new" / "omniglot", base_url=(tmp_path / "nowhere").as_uri() + "/")
    assert not (tmp_path / "new").exists()


def test_15_a_read_only_checkpoint_is_not_resumed_and_keeps_its_mode(copy):
    copy.chmod(0o444)
    before = copy.read_bytes()
    line = one_error_line(run_cli("train", "--resume", "--out", copy, "--iterations", "30"))
    assert "read-only" in line and "chmod u+w" in line
    assert copy.stat().st_mode & 0o777 == 0o444 and copy.read_bytes() == before
