"""Notebook 08's baselines: the pretrained Conv4 (supervised on the training characters, head replaced) and its
head-only fine-tuning, on a fake Omniglot (no download)."""

import numpy as np
import pytest
import torch

from mamlkit.course import characters
from mamlkit.data import omniglot as O
from mamlkit.tasks import Task


def fake_omniglot(n=1300, drawings=1):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, drawings, 28, 28), dtype=np.uint8)
    return O.Omniglot(images, np.array([f"a{i % 10}" for i in range(n)]), np.array([f"c{i:04d}" for i in range(n)]))


def test_pretrain_save_and_load_replace_the_head(tmp_path):
    data = fake_omniglot()
    logs = []
    model, history = characters.pretrain_classifier(data, epochs=1, batch=512, log=logs.append)
    assert model.ways == 4 * 1100 and len(history) == 1 and np.isfinite(history[0]) and "epoch 1/1" in logs[-1]
    path = characters.save_pretrained(model, tmp_path / "pre.pt", history, "the command")
    record = torch.load(path, weights_only=True)
    assert record["command"] == "the command" and not any(k.startswith("13.") for k in record["body"])
    five = characters.load_pretrained(5, path)
    assert five.ways == 5 and (five[-1].weight == 0).all() and (five[-1].bias == 0).all()
    for name, value in record["body"].items():
        torch.testing.assert_close(five.state_dict()[name], value, msg=name)
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pretrained Conv4"):
        characters.load_pretrained(5, tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="data/README.md"):
        characters.load_pretrained(5, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="epochs"):
        characters.pretrain_classifier(data, epochs=0)


def test_pretraining_labels_are_character_and_rotation(monkeypatch):
    """Class 4c + r is character c turned r × 90°: check the labels the loss sees against the images."""
    data = fake_omniglot()
    train = O.split_classes(data, "maml")["train"]
    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, labels):
        seen.append(labels.clone())
        return real(logits, labels)

    import mamlkit.course.characters as C

    monkeypatch.setattr(C.F, "cross_entropy", spy)
    inputs = []
    monkeypatch.setattr(C.Conv4, "forward", lambda self, x: (inputs.append(x.clone()),
                                                              torch.nn.Sequential.forward(self, x))[1])
    characters.pretrain_classifier(data, epochs=1, batch=700, log=lambda _: None)
    labels, images = torch.cat(seen), torch.cat(inputs)[:, 0]
    assert sorted(set((labels // 4).tolist())) == list(range(1100)) and set((labels % 4).tolist()) == {0, 1, 2, 3}
    for label, image in list(zip(labels.tolist(), images))[:50]:
        c, r = divmod(label, 4)
        expected = torch.rot90(torch.as_tensor(data.images[train[c], 0]), r).float() / 255
        torch.testing.assert_close(image, expected)


def test_finetune_head_fits_the_support_and_leaves_the_body():
    torch.manual_seed(0)
    model = characters.Conv4(5)
    torch.nn.init.zeros_(model[-1].weight)
    torch.nn.init.zeros_(model[-1].bias)
    x = torch.rand(5, 1, 28, 28)
    task = Task(x, torch.arange(5), x, torch.arange(5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert characters.finetune_head(model, task, steps=100, lr=0.1) == 1.0  # five separable features: fitted
    assert characters.finetune_head(model, task, steps=0) == pytest.approx(0.2)  # zero head: all class 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"finetune_head changed {k}"


def test_shipped_pretrained_body_loads():
    model = characters.load_pretrained(5)
    record = torch.load(characters.PRETRAINED, weights_only=True)
    assert record["classes"] == 4400 and record["command"].startswith("python -m mamlkit.course.characters")
    assert model.ways == 5 and (model[-1].weight == 0).all()
