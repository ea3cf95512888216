"""The feedback harness of every exercise checker (``checks``, ``homework``, ``project``, ``characters``):
a checker prints ONE line, "✔ ..." or "✘ <what is wrong and a hint>", never a traceback, and returns
True/False. A check raises ``Fail(hint)``; ``diagnose`` turns one ``{hint: wrong_value}`` table of typical
mistakes into that hint.
"""

from __future__ import annotations

import functools

import torch

from .. import params as P

TOL = dict(rtol=1e-6, atol=1e-8)
# the marks of every checker and quiz: in DejaVu Sans and the usual system fonts, legible without an emoji font
# (tests/test_glyphs.py)
PASS, FAIL = "✔", "✘"


class Fail(Exception):
    """Raised inside a checker with the one-line hint to print."""


def checker(check):
    """Turn ``check(fn) -> success message`` (raising ``Fail(hint)``) into a one-line pass/fail."""
    @functools.wraps(check)
    def run(fn) -> bool:
        try:
            message = check(fn)
        except Fail as e:
            print(f"{FAIL} {e}")
            return False
        except Exception as e:  # a bug here must still read as one line
            print(f"{FAIL} could not check your answer: {type(e).__name__}: {first_line(e)}")
            return False
        print(f"{PASS} {message}")
        return True
    return run


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else "(no message)"


def call(fn, *args):
    """Run the learner's function; any exception becomes a one-line ``Fail``."""
    if not callable(fn):
        raise Fail(f"expected a function, got {type(fn).__name__}")
    try:
        return fn(*args)
    except NotImplementedError:
        raise Fail("not implemented yet: replace `raise NotImplementedError` with your code") from None
    except Exception as e:
        if "not have been used in the graph" in str(e):  # grad w.r.t. tensors the loss was not computed from
            raise Fail("the loss does not depend on the tensors you differentiate: differentiate w.r.t. `theta` "
                       "and run the model with the dict (params.forward / functional_call), not model(x) or "
                       "model.parameters()") from None
        on_tensor = "not Tensor" in str(e) or "Python scalars" in str(e)  # math.sin(tensor) and the like
        hint = " (use torch functions, e.g. torch.sin, on tensors)" if on_tensor else ""
        raise Fail(f"your function raised {type(e).__name__}: {first_line(e)}{hint}") from None


def close(a, b, **tol) -> bool:
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          **(tol or TOL))


def diagnose(result, wrong: dict, compare=close) -> None:
    """Fail with the hint of the first typical mistake ``result`` reproduces: ``wrong`` maps each hint to the
    value that mistake gives on the checker's inputs, in the order to test them. A value of ``None`` skips its
    entry (the mistake cannot be told apart from the right answer on these inputs)."""
    for hint, value in wrong.items():
        if value is not None and compare(result, value):
            raise Fail(hint)


def expect_tensor(result, like: torch.Tensor, what: str = "the result"):
    if not isinstance(result, torch.Tensor):
        raise Fail(f"{what} should be a torch.Tensor, got {type(result).__name__}")
    if result.shape != like.shape:
        raise Fail(f"{what} has shape {tuple(result.shape)}, expected {tuple(like.shape)}")
    return result


def expect_params(result, like: dict, what: str = "the result"):
    """A dict with the same names and shapes as ``like``; returns it flattened to one vector."""
    if not isinstance(result, dict):
        raise Fail(f"{what} should be a dict name -> tensor (like params), got {type(result).__name__}")
    if set(result) != set(like):
        raise Fail(f"{what} has names {sorted(result)}, expected {sorted(like)}")
    for name, v in like.items():
        expect_tensor(result[name], v, f"{what}[{name!r}]")
    return P.flatten({k: result[k] for k in like})


def expect_unchanged(params: dict, before: torch.Tensor) -> None:
    """The learner's function left ``params`` as they were (``before``: their flattened values)."""
    if not torch.equal(P.flatten(params).detach(), before):
        raise Fail("your function changed params in place: build and return a new dict instead")
