"""Omniglot: loader on a tiny synthetic archive (layout, md5 failure, cache reuse, offline error),
real-copy counts, the episode sampler, Conv4, and a short run that beats chance."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mamlkit.data import omniglot as O
from mamlkit.episodes import EpisodeSampler
from mamlkit.models import Conv4

# the local copy the root conftest.py found (../shared/data/omniglot), if any
SHARED = Path(os.environ.get("MAMLKIT_DATA", "/nonexistent")) / "omniglot"


def png(seed: int) -> bytes:
    pixels = np.random.RandomState(seed).rand(105, 105) > 0.1  # white page, ~10% ink
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path: Path, name: str, alphabets: dict, first_id: int) -> None:
    """A zip laid out as upstream: name/Alphabet/characterNN/IIII_DD.png, written in unsorted order."""
    with zipfile.ZipFile(path, "w") as z:
        cid = first_id
        for alphabet in reversed(list(alphabets)):  # filesystem order must not matter
            for c in reversed(range(1, alphabets[alphabet] + 1)):
                for d in range(1, 21):
                    z.writestr(f"{name}/{alphabet}/character{c:02d}/{cid:04d}_{d:02d}.png", png(cid * 100 + d))
                cid += 1


@pytest.fixture
def tiny(tmp_path):
    make_zip(tmp_path / "images_background.zip", "images_background", {"Beta": 2, "Alpha": 3}, 1)
    make_zip(tmp_path / "images_evaluation.zip", "images_evaluation", {"Gamma": 2}, 6)
    return tmp_path


def test_tiny_archive_layout_sorted_classes_and_cache_reuse(tiny):
    data = O.load_omniglot(tiny, download_missing=False)
    assert data.images.shape == (7, 20, 28, 28) and data.images.dtype == np.uint8
    assert list(data.characters) == sorted(data.characters)
    assert data.characters[0] == "images_background/Alpha/character01" and data.alphabets[-1] == "Gamma"
    assert 0 < data.images.mean() < 128  # ink is bright on a dark page after inversion
    assert (tiny / O.CACHE_NAME).is_file()
    for z in tiny.glob("*.zip"):
        z.unlink()  # a second load needs only the cache
    again = O.load_omniglot(tiny, download_missing=False)
    assert np.array_equal(again.images, data.images)


def test_extracted_folders_are_accepted(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("extracted")
    for z in tiny.glob("*.zip"):
        zipfile.ZipFile(z).extractall(folder)
    from_zips = O.load_omniglot(tiny, download_missing=False)
    from_folders = O.load_omniglot(folder, download_missing=False)
    assert np.array_equal(from_zips.images, from_folders.images)
    assert list(from_zips.characters) == list(from_folders.characters)


def test_download_checks_md5_and_removes_a_bad_file(tiny, tmp_path_factory):
    target = tmp_path_factory.mktemp("download")
    base_url = tiny.as_uri() + "/"
    good = O.md5sum(tiny / "images_background.zip")
    assert O.download("images_background", target, base_url, md5=good).is_file()
    with pytest.raises(O.OmniglotError, match="md5.*removed"):
        O.download("images_evaluation", target, base_url, md5="0" * 32)
    assert not (target / "images_evaluation.zip").exists()
    assert [p.name for p in target.iterdir()] == ["images_background.zip"]  # no temporary files


def test_offline_without_a_copy_names_urls_and_files(tmp_path):
    with pytest.raises(O.OmniglotError) as e:
        O.load_omniglot(tmp_path / "empty", base_url=(tmp_path / "nowhere").as_uri() + "/")
    message = str(e.value)
    assert O.BASE_URL + "images_background.zip" in message and "images_evaluation" in message
    assert str(tmp_path / "empty") in message
    with pytest.raises(O.OmniglotError, match="images_background"):
        O.load_omniglot(tmp_path, download_missing=False)


def test_corrupt_zip_is_a_clear_error_and_no_cache_is_written(tiny):
    (tiny / "images_background.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(O.OmniglotError, match="corrupt or truncated"):
        O.load_omniglot(tiny, download_missing=False)
    assert not list(tiny.glob("*.npz*"))


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMLKIT_DATA", str(tmp_path))
    assert O.default_data_dir() == tmp_path / "omniglot"


@pytest.fixture(scope="module")
def real():
    if not SHARED.is_dir():
        pytest.skip("the shared Omniglot copy is not on this machine")
    return O.load_omniglot(SHARED, download_missing=False)


def test_real_copy_counts_and_splits(real):
    assert real.images.shape == (1623, 20, 28, 28)
    assert len(set(real.alphabets)) == 50
    assert sum(c.startswith("images_background/") for c in real.characters) == 964
    maml_split = O.split_classes(real, "maml")
    assert [len(maml_split[k]) for k in ("train", "val", "test")] == [1100, 100, 423]
    assert len(np.unique(np.concatenate(list(maml_split.values())))) == 1623
    vinyals = O.split_classes(real, "vinyals")
    assert [len(vinyals[k]) for k in ("train", "val", "test")] == [1028, 172, 423]
    assert real.characters[vinyals["test"][0]] == "images_evaluation/Gurmukhi/character42"
    with pytest.raises(ValueError, match="split"):
        O.split_classes(real, "random")


def sampler(images, ways=5, shots=2, queries=3, **kw):
    return EpisodeSampler(images, np.arange(len(images)), ways, shots, queries, **kw)


def test_episodes_distinct_classes_and_drawings_and_seeded():
    # every drawing is unique: pixel (0, 0) encodes the class, (0, 1) the drawing
    images = np.zeros((12, 20, 28, 28), dtype=np.uint8)
    images[:, :, 0, 0] = np.arange(12)[:, None]
    images[:, :, 0, 1] = np.arange(20)[None, :]
    s = sampler(images, rotate=False)
    tasks = s.sample(50, torch.Generator().manual_seed(0))
    assert tasks.x_support.shape == (50, 10, 1, 28, 28) and tasks.x_query.shape == (50, 15, 1, 28, 28)
    x = torch.cat([tasks.x_support, tasks.x_query], 1)[:, :, 0] * 255  # (n, 25, 28, 28)
    y = torch.cat([tasks.y_support, tasks.y_query], 1)
    for t in range(50):
        cls = x[t, :, 0, 0].round().long()
        assert len(cls.unique()) == 5  # no class repeated
        for label in range(5):
            members = y[t] == label
            assert len(cls[members].unique()) == 1  # one label, one class
            assert len(x[t, members, 0, 1].unique()) == 5  # K + Q distinct drawings
    first_labels = x[:, 0, 0, 0]  # class that got label 0: shuffled across tasks
    assert len(first_labels.unique()) > 3
    again = s.sample(50, torch.Generator().manual_seed(0))
    assert torch.equal(again.x_support, tasks.x_support) and torch.equal(again.y_query, tasks.y_query)


def test_rotations_are_per_class_multiples_of_90_degrees():
    images = np.zeros((6, 20, 28, 28), dtype=np.uint8)
    images[:, :, 0, 0] = 255  # a marker in the top-left corner
    tasks = sampler(images, ways=3, shots=1, queries=1).sample(40, torch.Generator().manual_seed(1))
    corners = tasks.x_support[:, :, 0][:, :, [0, 0, -1, -1], [0, -1, -1, 0]]  # (n, ways, 4)
    assert torch.all(corners.sum(-1) == 1)
    turns = tasks.info[..., 1]
    assert set(turns.unique().tolist()) == {0, 1, 2, 3}
    expected = corners.argmax(-1)
    assert torch.equal(expected, torch.tensor([0, 3, 2, 1])[turns])  # rot90 moves top-left counter-clockwise


def test_bad_episode_settings():
    images = np.zeros((4, 20, 28, 28), dtype=np.uint8)
    with pytest.raises(ValueError, match="ways"):
        sampler(images, ways=5)
    with pytest.raises(ValueError, match="exceeds"):
        sampler(images, ways=2, shots=10, queries=11)


def test_conv4_shapes():
    model = Conv4(ways=5)
    assert model(torch.rand(7, 1, 28, 28)).shape == (7, 5)
    assert model[-1].in_features == 256
    assert Conv4(ways=20)(torch.rand(3, 1, 28, 28)).shape == (3, 20)


def test_short_omniglot_run_beats_chance(real, tmp_path):
    from mamlkit import training
    from mamlkit.config import Config

    config = Config(task="omniglot", algo="maml", data_dir=str(SHARED), iterations=60, meta_batch_size=4,
                    val_every=60, val_tasks=40, seed=0)
    run = training.meta_train(config, tmp_path / "o.pt", progress=False)
    accuracy = run.history["val_metric"][-1]
    assert accuracy > 0.35, accuracy  # chance is 0.2


@pytest.mark.parametrize("flag", [[], ["--fresh-inner-state"]])
def test_omniglot_reptile_keeps_its_inner_adam_state_unless_told(real, tmp_path, flag):
    from mamlkit.__main__ import main

    out = tmp_path / "r.pt"
    assert main(["train", "--task", "omniglot", "--algo", "reptile", "--data-dir", str(SHARED), "--iterations", "2",
                 "--val-tasks", "4", "--no-progress", "--device", "cpu", "--out", str(out), *flag]) == 0
    state = torch.load(out, weights_only=True)
    if flag:
        assert state["inner_state"] is None and not state["config"]["keep_inner_state"]
    else:  # 2 meta-batches of 5 tasks, 5 Adam steps each, one after another
        assert state["inner_state"]["step"] == 2 * 5 * 5 and state["config"]["keep_inner_state"]


def test_characters_explorer_and_accuracy_check(real, capsys):
    from mamlkit import runs
    from mamlkit.checkpoint import shipped_checkpoint
    from mamlkit.course import characters

    model, config = runs.load_model(shipped_checkpoint("maml", task="omniglot"))
    explorer = characters.characters_explorer(real, model, inner_lr=config.inner_lr)
    explorer.controls["steps"].value = 0
    before, redraws = explorer.state["accuracy"], explorer.redraws
    explorer.controls["steps"].value = 3
    assert explorer.redraws == redraws + 1
    assert explorer.state["accuracy"] > before  # adapting helps on new characters
    explorer.controls["alphabet"].value = explorer.controls["alphabet"].options[-1]
    assert explorer.state["task"].x_query.shape == (15, 1, 28, 28)

    assert characters.check_accuracy(lambda logits, labels: (logits.argmax(-1) == labels).float().mean())
    assert not characters.check_accuracy(lambda logits, labels: 100 * (logits.argmax(-1) == labels).float().mean())
    assert "percentage" in capsys.readouterr().out
    wrong_dim = lambda logits, labels: (logits.argmax(0)[: len(labels)] == labels).float().mean()  # noqa: E731
    assert not characters.check_accuracy(wrong_dim)
    assert not characters.check_accuracy(lambda logits, labels: 1 / 0)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and "ZeroDivisionError" in out[1]


def test_twenty_way_defaults_are_the_papers():
    from mamlkit.config import Config, eval_protocol

    for algo in ("maml", "fomaml"):
        wide, five = (Config(task="omniglot", algo=algo, ways=w).resolved() for w in (20, 5))
        assert (wide.inner_lr, wide.inner_steps, wide.meta_batch_size) == (0.1, 5, 16)  # MAML App. A.1
        assert (five.inner_lr, five.inner_steps, five.meta_batch_size) == (0.4, 1, 32)
        assert eval_protocol("omniglot", algo, 20) == dict(shots=1, inner_lr=0.1, inner_steps=5, inner_optimizer="sgd")
        assert eval_protocol("omniglot", algo, 5)["inner_steps"] == 3
    reptile = Config(task="omniglot", algo="reptile", ways=20).resolved()
    assert (reptile.inner_lr, reptile.inner_steps, reptile.inner_batch, reptile.iterations) == (0.0005, 10, 20, 200_000)
    assert eval_protocol("omniglot", "reptile", 20)["inner_lr"] == 0.0005
    assert Config(task="omniglot", algo="maml", ways=20, inner_steps=2).resolved().inner_steps == 2  # flags win
    assert Config(algo="maml", ways=20).resolved().inner_steps == 1  # sine tasks have no ways


def test_twenty_way_train_and_evaluate_from_the_cli(real, tmp_path, capsys):
    from mamlkit.__main__ import main
    from mamlkit.training import evaluate_checkpoint

    out = tmp_path / "w20.pt"
    assert main(["train", "--task", "omniglot", "--algo", "fomaml", "--ways", "20", "--data-dir", str(SHARED),
                 "--iterations", "1", "--meta-batch-size", "2", "--val-tasks", "2", "--no-progress", "--device", "cpu",
                 "--out", str(out)]) == 0
    config = torch.load(out, weights_only=True)["config"]
    assert (config["ways"], config["inner_lr"], config["inner_steps"]) == (20, 0.1, 5)
    row = evaluate_checkpoint(out, 2, "cpu", data_dir=SHARED)
    assert (row["protocol"]["inner_lr"], row["protocol"]["inner_steps"], row["scored"][-1]) == (0.1, 5, 5)
    assert 0 <= row["mean"][-1] <= 1 and row["ways"] == 20
    capsys.readouterr()
    assert main(["evaluate", str(out), "--tasks", "2", "--data-dir", str(SHARED), "--device", "cpu"]) == 0
    assert "20-way 1-shot, sgd lr 0.1" in capsys.readouterr().out


def test_one_alphabet_or_mixed_and_rotated_tasks():
    """08's tasks: five characters of one alphabet (the explorer's default, harder), or of any alphabets, upright
    or rotated (the benchmark's); the explorer offers both. A fake copy: no download needed."""
    from mamlkit.course import characters

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1623, 20, 28, 28), dtype=np.uint8)
    alphabets = np.array([f"alphabet{i % 50:02d}" for i in range(1623)])
    data = O.Omniglot(images, alphabets, np.array([f"c{i:04d}" for i in range(1623)]))
    name = characters.test_alphabets(data)[0]
    one = characters.alphabet_task(data, name, ways=5, shots=1, queries=2, seed=3)
    mixed = characters.alphabet_task(data, characters.MIXED, ways=5, shots=1, queries=2, seed=3)
    turned = characters.alphabet_task(data, characters.MIXED, ways=5, shots=1, queries=2, seed=3, rotate=True)

    def alphabets_of(task):
        return {alphabets[int(c)] for c in task.info[..., 0].flatten()}  # info: the characters' indices

    assert alphabets_of(one) == {name}
    assert len(alphabets_of(mixed)) > 1
    assert (one.info[..., 1] == 0).all() and (mixed.info[..., 1] == 0).all() and (turned.info[..., 1] != 0).any()

    explorer = characters.characters_explorer(data, Conv4(5), inner_lr=0.4)
    assert characters.MIXED in explorer.controls["alphabet"].options and "rotate" in explorer.controls
    explorer.controls["alphabet"].value = characters.MIXED
    explorer.controls["rotate"].value = True
    assert explorer.state["task"].x_query.shape == (15, 1, 28, 28)

