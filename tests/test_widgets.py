"""Widget callbacks, plots and notebook helpers, driven from Python: set a control, check the
figure and the state changed accordingly."""

import ast
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mamlkit import evaluation, maml, models, reptile, tasks  # noqa: E402
from mamlkit import params as P  # noqa: E402
from mamlkit.checkpoint import save_checkpoint  # noqa: E402
from mamlkit.course import notebook, plots, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def line_data(ax):
    return [tuple(line.get_ydata()) for line in ax.get_lines()]


def test_task_explorer_redraws_for_new_amplitude():
    explorer = widgets.task_explorer()
    before, redraws = line_data(explorer.ax), explorer.redraws
    explorer.controls["amplitude"].value = 4.5
    assert explorer.redraws == redraws + 1
    assert float(explorer.state["task"].info[0]) == pytest.approx(4.5)
    assert line_data(explorer.ax) != before
    explorer.controls["shots"].value = 3
    assert len(explorer.state["task"].x_support) == 3


def test_adaptation_explorer_steps_selector_and_bad_settings():
    torch.manual_seed(0)
    models_ = {"maml": models.MLP(init="torch"), "pretrain": models.MLP(init="torch")}
    explorer = widgets.adaptation_explorer(models_, inner_lr=0.01, steps=0, max_steps=20)
    mse0 = dict(explorer.state["mse"])
    explorer.controls["inner_steps"].value = 10
    assert set(explorer.state["mse"]) == {"maml", "pretrain"}
    assert explorer.state["mse"]["maml"] != mse0["maml"]
    explorer.controls["algo"].value = "pretrain"
    assert set(explorer.state["mse"]) == {"pretrain"}
    assert any(line.get_color() == "grey" for line in explorer.ax.get_lines())
    assert not any(line.get_color() == "C0" for line in explorer.ax.get_lines())
    explorer.controls["inner_lr"].value = 1.0   # may diverge: must still draw, never raise
    explorer.controls["inner_steps"].value = 20
    assert "pretrain" in explorer.state["mse"]


def test_adaptation_explorer_matches_library():
    torch.manual_seed(0)
    model = models.MLP(init="torch")
    explorer = widgets.adaptation_explorer({"m": model}, inner_lr=0.05, steps=3)
    task = explorer.state["task"]
    adapted = maml.adapt(model, P.get_params(model), task.x_support, task.y_support, F.mse_loss, 0.05, 3)
    expected = F.mse_loss(P.forward(model, adapted, task.x_query), task.y_query).item()
    assert explorer.state["mse"]["m"] == pytest.approx(expected, rel=1e-5)


def test_meta_gradient_explorer_slopes_part_with_alpha():
    explorer = widgets.meta_gradient_explorer()
    explorer.controls["inner_lr"].value = 0.01
    small = abs(explorer.state["maml_slope"] - explorer.state["fomaml_slope"])
    explorer.controls["inner_lr"].value = 0.3
    large = abs(explorer.state["maml_slope"] - explorer.state["fomaml_slope"])
    assert large > 5 * small


def test_first_order_explorer_cosine():
    torch.manual_seed(0)
    model = models.MLP(init="torch")
    batch = tasks.sample_sine_tasks(4)
    explorer = widgets.first_order_explorer(model, batch, inner_lr=0.001)
    assert explorer.state["cosine"] > 0.99
    full, first, cosine = maml.gradient_agreement(model, P.detach(P.get_params(model), True), batch, 0.001, 1)
    assert cosine == pytest.approx(explorer.state["cosine"])
    explorer.controls["inner_steps"].value = 3
    assert explorer.state["cosine"] != pytest.approx(cosine, abs=1e-9)


def test_reptile_explorer_k1_is_joint_training():
    explorer = widgets.reptile_explorer()
    explorer.controls["inner_steps"].value = 1
    assert explorer.state["gap"] < 1e-5
    explorer.controls["inner_steps"].value = 5
    assert explorer.state["gap"] > 1e-3
    explorer.controls["outer_lr"].value = 0.0
    new = explorer.state["new"]
    assert float(new["weight"]) == pytest.approx(-1.5) and float(new["bias"]) == pytest.approx(1.5)


def test_joint_step_equals_reptile_with_one_step():
    torch.manual_seed(0)
    model = models.MLP(init="torch").double()
    theta = P.detach(P.get_params(model))
    batch = tasks.sample_sine_tasks(3, dtype=torch.float64)
    new = reptile.reptile_step(model, theta, batch, F.mse_loss, 0.01, 1, 0.5)
    torch.testing.assert_close(P.flatten(new), P.flatten(reptile.joint_step(model, theta, batch, 0.005)))


def test_explorer_reports_value_error_in_one_line():
    import ipywidgets

    def draw(ax, n):
        if n < 0:
            raise ValueError("n must be >= 0")
        ax.plot([0, n])
        return {"n": n}

    explorer = widgets.Explorer({"n": ipywidgets.IntSlider(value=1, min=-2, max=2)}, draw)
    explorer.controls["n"].value = -1
    assert "n must be >= 0" in explorer.message.value and "error" in explorer.state
    explorer.controls["n"].value = 2
    assert explorer.state == {"n": 2} and explorer.message.value == ""


def test_quiz_feedback_for_every_option():
    q = widgets.quiz("2 + 2?", right=("4", "two and two make four"),
                     wrong={"3": "that is 2 + 1", "22": "that is the digits side by side"})
    q.choice.value = "3"
    assert q.correct is False and q.feedback.value.startswith("✘") and "2 + 1" in q.feedback.value
    q.choice.value = "22"
    assert q.correct is False and "side by side" in q.feedback.value
    q.choice.value = "4"
    assert q.correct is True and q.feedback.value.startswith("✔") and "two and two" in q.feedback.value
    assert sorted(q.options) == ["22", "3", "4"] and q.answer == "4"


def test_quiz_order_is_shuffled_by_the_question_and_reproducible():
    wrong = {"b": "why b", "c": "why c", "d": "why d"}
    orders = {tuple(widgets.quiz(f"question {i}?", ("a", "why a"), wrong).options) for i in range(20)}
    assert len(orders) > 3  # different questions, different orders
    assert widgets.quiz("q?", ("a", "why a"), wrong).options == widgets.quiz("q?", ("a", "why a"), wrong).options
    positions = [widgets.quiz(f"question {i}?", ("a", "why a"), wrong).options.index("a") for i in range(40)]
    assert len(set(positions)) == 4


@pytest.mark.parametrize("right, wrong, message", [
    (("a", ""), {"b": "why b"}, "pair"),
    ("a", {"b": "why b"}, "pair"),
    (("a", "why a"), {}, "at least one"),
    (("a", "why a"), {"b": ""}, "needs its own feedback"),
    (("a", "why a"), {"a": "why not a"}, "also listed as a wrong option"),
])
def test_quiz_rejects_incomplete_questions(right, wrong, message):
    with pytest.raises(ValueError, match=message):
        widgets.quiz("?", right, wrong)


SOURCES = sorted((Path(__file__).resolve().parents[1] / "course-src").glob("[0-9][0-9]_*.py"))


def course_quizzes():
    """Every ``widgets.quiz(...)`` call in the notebook sources: (notebook, line, question, right, wrong node,
    whether it comes before the notebook's Summary)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        summary = text.splitlines().index("# ## Summary") + 1
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "widgets.quiz":
                arguments = dict(zip(["question", "right", "wrong"], node.args))
                arguments |= {k.arg: k.value for k in node.keywords}
                found.append((path.stem, node.lineno, arguments, node.lineno < summary))
    return found


def test_course_quizzes_answer_every_option_and_spread_the_right_one():
    quizzes = course_quizzes()
    assert len(quizzes) >= 30
    positions = []
    for stem, line, arguments, _ in quizzes:
        where = f"{stem}.py line {line}"
        assert isinstance(arguments["question"], ast.Constant), f"{where}: the question must be a plain string"
        right, wrong = arguments["right"], arguments["wrong"]
        assert isinstance(right, ast.Tuple) and len(right.elts) == 2, f"{where}: right=(answer, explanation)"
        assert isinstance(wrong, ast.Dict) and len(wrong.keys) >= 2, f"{where}: at least two wrong options"
        for value in wrong.values:  # each wrong option's own feedback, not one shared line
            assert isinstance(value, (ast.Constant, ast.JoinedStr)) and len(ast.unparse(value)) > 30, where
        assert len({ast.unparse(v) for v in wrong.values}) == len(wrong.values), f"{where}: feedback repeated"
        # the shuffle depends only on the question and the number of options: place a stand-in answer
        stand_in = widgets.quiz(arguments["question"].value, ("answer", "why"),
                                {f"wrong {i}": "why not" for i in range(len(wrong.keys))})
        positions.append(stand_in.options.index("answer"))
    counts = [positions.count(i) for i in range(max(positions) + 1)]
    assert max(counts) <= len(positions) / 2, f"the right answer sits too often in one place: {counts}"
    assert min(counts[:3]) >= len(positions) / 6, f"some position is (almost) never right: {counts}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_notebook_asks_for_a_prediction_before_a_cell(path):
    predictions = [arguments for stem, _, arguments, before_summary in course_quizzes()
                   if stem == path.stem and before_summary
                   and arguments["question"].value.startswith("Predict before you run")]
    assert predictions, f"{path.name}: no predict-before-you-run quiz ahead of the cell that shows the answer"
    for arguments in predictions:  # the explanation points to the cell that confirms it
        assert re.search(r"\bcells?\b", ast.unparse(arguments["right"].elts[1])), path.name


def test_meta_gradient_explorer_slopes_differ_by_one_minus_alpha_h():
    """03's open question: the MAML slope is (1 − αH) times FOMAML's, so they flip sign past α = 1/H."""
    explorer = widgets.meta_gradient_explorer()
    curvature = explorer.state["hessian"]
    for alpha in (0.05, 0.2, 0.25, 0.3):
        explorer.controls["inner_lr"].value = alpha
        maml_slope, fomaml_slope = explorer.state["maml_slope"], explorer.state["fomaml_slope"]
        assert maml_slope == pytest.approx((1 - alpha * curvature) * fomaml_slope, rel=1e-5, abs=1e-9)
        assert (maml_slope * fomaml_slope > 0) == (alpha < 1 / curvature)
    assert 0.01 < 1 / curvature < 0.3  # the slider crosses 1/H


def test_plots_return_axes_with_course_colours():
    torch.manual_seed(0)
    model = models.MLP(init="torch")
    test = tasks.sine_test_tasks(8)
    ax = plots.plot_adaptation(model, P.get_params(model), test[0], 0.01, (0, 1, 10), name="reptile")
    assert [line.get_color() for line in ax.get_lines()][-3:] == ["C2"] * 3
    result = evaluation.evaluate(model, P.get_params(model), test, F.mse_loss, evaluation.Protocol.sgd(0.01, 3))
    ax = plots.plot_eval({"maml": result, "pretrain": result})
    assert [line.get_color() for line in ax.get_lines()] == ["C0", "grey"]
    history = {"iteration": [1, 2], "train_loss": [1.0, 0.5], "val_metric": [float("nan"), 0.4]}
    assert plots.plot_learning_curve(history, name="fomaml").get_lines()[0].get_color() == "C1"
    lines = plots.plot_validation({"maml": history, "reptile": history}).get_lines()
    assert [line.get_color() for line in lines] == ["C0", "C2"] and list(lines[0].get_xdata()) == [2]  # NaNs skipped
    assert len(plots.plot_cost([1, 2], {"maml": [1, 2], "reptile": [1, 1]}, "ms").get_lines()) == 2
    assert len(plots.plot_tasks(test, n=3).get_lines()) == 6
    curve = {"minutes": [1.0, float("nan"), 3.0], "val": [0.8, 0.9, float("nan")],
             "test": [{"minutes": 3.0, "mean": 0.95, "ci95": 0.01}]}
    ax = plots.plot_time_to_accuracy(curve, targets=((20, 0.95),))
    assert list(ax.get_lines()[0].get_xdata()) == [1.0]  # NaN minutes or accuracies are skipped
    assert len(ax.containers) == 1 and "test" in ax.get_legend_handles_labels()[1][-1]


def test_setup_notebook_prints_versions(capsys):
    device = notebook.setup_notebook(seed=0)
    out = capsys.readouterr().out
    assert device.type in ("cpu", "cuda") and "torch" in out and "ipywidgets" in out and "device" in out


def test_measure_cost_memory_grows_only_for_second_order():
    torch.manual_seed(0)
    model = models.MLP(init="torch")
    theta = P.get_params(model)
    batch = tasks.sample_sine_tasks(2)

    def cost(first_order, k):
        def run():
            loss = maml.maml_loss(model, theta, batch, F.mse_loss, 0.01, k, first_order)
            torch.autograd.grad(loss, list(theta.values()))
        return notebook.measure_cost(run, repeats=1)[1]

    assert cost(False, 3) > 2 * cost(False, 1)
    assert cost(True, 3) == cost(True, 1)


def test_load_or_train_falls_back_and_caches(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "CHECKPOINT_DIR", tmp_path / "data")
    monkeypatch.setattr(notebook, "FALLBACK_DIR", tmp_path / "runs" / "fallback")
    (tmp_path / "data").mkdir()
    run = notebook.load_or_train("pretrain", iterations=3)
    assert run.iteration == 3 and "short stand-in" in capsys.readouterr().out
    assert (tmp_path / "runs" / "fallback" / "sinusoid-pretrain-3.pt").is_file()
    again = notebook.load_or_train("pretrain", iterations=3)
    torch.testing.assert_close(P.flatten(P.get_params(again.model)), P.flatten(P.get_params(run.model)))
    save_checkpoint(run.state(), tmp_path / "data" / "sinusoid-pretrain.pt")
    notebook.load_or_train("pretrain")
    assert "loaded" in capsys.readouterr().out


def test_plot_eval_survives_a_diverged_task():
    per_task = torch.tensor([[2.0, 0.5, 0.4], [2.2, 0.6, float("nan")], [1.8, 0.4, 0.3]])
    ax = plots.plot_eval({"maml": evaluation.EvalResult([0, 1, 2], per_task, "mse")})
    assert "1 task diverged" in ax.get_legend().get_texts()[0].get_text()
    low, high = ax.get_ylim()
    assert low == 0 and 2.0 < high < 4.0


def test_meta_loss_and_slope_match_the_closed_form():
    """y = w x, L(w) = mean((w x − y)²): w′ = w − α L′_s(w); MAML slope (1 − α H_s) L′_q(w′), FOMAML L′_q(w′)."""
    model = torch.nn.Linear(1, 1, bias=False).double()
    x, xq = torch.tensor([[[-2.0], [-1.0], [0.5]]], dtype=torch.float64), torch.tensor([[[1.0], [2.5]]]).double()
    task = tasks.Task(x, 1.5 * x + 0.3, xq, 1.5 * xq - 0.2)
    w, lr = 0.7, 0.1
    grad = lambda x, y, v: float(2 * (x * (v * x - y)).mean())
    adapted = w - lr * grad(x, task.y_support, w)
    h_s = float(2 * (x**2).mean())
    loss, slope = plots.meta_loss_and_slope(model, task, w, lr)
    _, fo_slope = plots.meta_loss_and_slope(model, task, w, lr, first_order=True)
    assert loss == pytest.approx(float(((adapted * xq - task.y_query) ** 2).mean()))
    assert slope == pytest.approx((1 - lr * h_s) * grad(xq, task.y_query, adapted))
    assert fo_slope == pytest.approx(grad(xq, task.y_query, adapted))


def test_reptile_against_joint_and_query_mse():
    model, batch = torch.nn.Linear(1, 1), widgets.line_tasks(3)
    theta = {"weight": torch.tensor([[-1.5]]), "bias": torch.tensor([1.5])}
    new, joint, gap = plots.reptile_against_joint(model, theta, batch, 0.1, 1, 0.5)
    assert gap < 1e-5
    torch.testing.assert_close(P.flatten(new), P.flatten(reptile.reptile_step(model, theta, batch, F.mse_loss,
                                                                              0.1, 1, 0.5)))
    new, joint, gap = plots.reptile_against_joint(model, theta, batch, 0.1, 5, 0.5)
    assert gap == pytest.approx(float(P.norm(P.sub(new, joint)))) and gap > 1e-3
    expected = F.mse_loss(P.forward(model, theta, batch[0].x_query), batch[0].y_query).item()
    assert plots.query_mse(model, theta, batch[0]) == pytest.approx(expected)


def test_live_run_trains_then_scores_paired_against_the_reference():
    from mamlkit.config import Config

    torch.manual_seed(0)
    reference, test = models.MLP(), tasks.sine_test_tasks(20)
    protocol = evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=2)
    live = widgets.LiveRun(Config(algo="maml", iterations=30, val_every=10, val_tasks=5), reference, test, protocol)
    assert live.button.description == "train 30 iterations now"
    live.button.click()  # what a learner does: the same as live.run()
    state = live.state
    assert live.run_.iteration == 30 and state["seconds"] > 0 and not live.button.disabled
    ours = evaluation.evaluate(live.run_.model, P.get_params(live.run_.model), test, F.mse_loss, protocol)
    assert torch.equal(state["ours"].per_task, ours.per_task)
    diff, ci = state["difference"]
    assert diff == pytest.approx((ours.per_task[:, 1] - state["reference"].per_task[:, 1]).double().mean().item())
    assert "30 iterations in" in live.message.value and f"{diff:+.3f} ± {ci:.3f}" in live.message.value


def test_live_run_bad_setting_reads_as_one_line():
    from mamlkit.config import Config

    live = widgets.LiveRun(Config(algo="reptile", iterations=5, compiled=True), models.MLP(), tasks.sine_test_tasks(5),
                           evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=1))
    assert "drop --compile" in live.state["error"] and live.message.value.startswith("⚠️")  # before any click
    assert "drop --compile" in live.run()["error"] and live.run_ is None


def test_live_run_says_when_torch_compile_cannot_build(monkeypatch):
    from mamlkit import training
    from mamlkit.config import Config

    def no_compiler(*args, **kwargs):
        raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")
    monkeypatch.setattr(training, "meta_train", no_compiler)
    live = widgets.LiveRun(Config(algo="maml", iterations=5, compiled=True), models.MLP(), tasks.sine_test_tasks(5),
                           evaluation.Protocol.sgd(inner_lr=0.01, inner_steps=1))
    assert "compiled=False" in live.run()["error"] and not live.button.disabled
