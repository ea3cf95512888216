"""The course's pictures (two loops, θ → θ′_i) and the notebook set-up's thread count."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mamlkit.course import notebook, plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_two_loops_diagram_names_both_loops():
    ax = plots.plot_two_loops()
    text = " ".join(t.get_text() for t in ax.texts)
    assert "inner loop: task-specific" in text and "outer loop: general" in text
    assert len(ax.patches) == 4  # two loop boxes, two arrows between them
    _, given = plt.subplots()
    assert plots.plot_two_loops(given) is given


def test_adaptation_picture_matches_autograd():
    pic = plots.adaptation_picture(inner_lr=0.5, n_tasks=4)
    theta = pic["theta"].clone().requires_grad_()

    def loss(c, a, w):
        return 0.5 * (w - c) @ a @ (w - c)

    adapted, meta = [], 0
    for c, a in zip(pic["centres"], pic["curvatures"]):
        grad = torch.autograd.grad(loss(c, a, theta), theta, create_graph=True)[0]
        phi = theta - 0.5 * grad
        adapted.append(phi)
        meta = meta + loss(c, a, phi) / 4
    torch.testing.assert_close(torch.stack(adapted).detach(), pic["adapted"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(meta, theta)[0], pic["meta_grad"], rtol=1e-12, atol=1e-12)


def test_theta_to_adapted_draws_one_arrow_per_task_and_the_outer_direction():
    pic = plots.adaptation_picture()
    ax = plots.plot_theta_to_adapted()
    arrows = [a for a in ax.texts if isinstance(a, matplotlib.text.Annotation)]
    assert len(arrows) == len(pic["adapted"]) + 1
    for arrow, phi in zip(arrows, pic["adapted"]):
        assert arrow.xy == pytest.approx(phi.tolist())
    direction = torch.tensor(arrows[-1].xy, dtype=torch.float64) - pic["theta"]
    cosine = direction @ -pic["meta_grad"] / (direction.norm() * pic["meta_grad"].norm())
    assert cosine == pytest.approx(1.0)


def test_setup_notebook_sets_the_thread_count(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        notebook.setup_notebook(seed=0)
        assert torch.get_num_threads() == notebook.NOTEBOOK_THREADS == 1
        assert "1 CPU thread" in capsys.readouterr().out
        monkeypatch.setenv("MAMLKIT_THREADS", "3")
        notebook.setup_notebook(seed=0)
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("MAMLKIT_THREADS", "many")
        with pytest.raises(ValueError, match="MAMLKIT_THREADS"):
            notebook.setup_notebook(seed=0)
    finally:
        torch.set_num_threads(before)
