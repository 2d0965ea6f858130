"""certify.quiet.solver_output: C-level and Python output of a solve is captured, and every redirection is undone."""
import ctypes
import os
import sys
import warnings

import cvxpy as cp
import numpy as np
import pytest

from certify.quiet import solver_output


def _libc_printf(text: bytes) -> None:
    """printf from C (buffered by the C library, like a solver's banner)."""
    ctypes.CDLL(None).printf(b"%s", text)


def test_fd_level_and_python_output_is_captured_not_printed(capfd):
    with solver_output() as captured:
        os.write(1, b"fd1 banner\n")
        os.write(2, b"fd2 warning\n")
        _libc_printf(b"C printf line\n")
        print("python print")
        print("python stderr", file=sys.stderr)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    for line in ("fd1 banner", "fd2 warning", "C printf line", "python print", "python stderr"):
        assert line in captured.text
    print("after")
    os.write(2, b"after-fd2\n")
    out, err = capfd.readouterr()
    assert out == "after\n" and err == "after-fd2\n"


def test_everything_is_restored_after_an_exception(capfd):
    stdout, stderr = sys.stdout, sys.stderr
    fd_targets = [os.fstat(fd).st_ino for fd in (1, 2)]
    filters = list(warnings.filters)
    with pytest.raises(ZeroDivisionError):
        with solver_output():
            os.write(1, b"lost\n")
            1 / 0
    assert sys.stdout is stdout and sys.stderr is stderr
    assert [os.fstat(fd).st_ino for fd in (1, 2)] == fd_targets
    assert warnings.filters == filters
    os.write(1, b"kept\n")
    assert capfd.readouterr().out == "kept\n"


def test_warnings_raised_inside_are_silenced_and_only_there():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with solver_output():
            warnings.warn("solver noise", UserWarning)
        warnings.warn("after", UserWarning)
    assert [str(w.message) for w in seen] == ["after"]


def test_nested_blocks_restore_in_order(capfd):
    with solver_output() as outer:
        with solver_output() as inner:
            os.write(1, b"inner\n")
        os.write(1, b"outer\n")
    os.write(1, b"free\n")
    assert "inner" in inner.text and "inner" not in outer.text and "outer" in outer.text
    assert capfd.readouterr().out == "free\n"


def test_a_verbose_highs_solve_prints_nothing(capfd):
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= np.arange(3.0)])
    with solver_output() as captured:
        problem.solve(solver=cp.HIGHS, verbose=True)
    assert problem.status == cp.OPTIMAL and abs(problem.value - 3.0) < 1e-6
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert captured.text.strip()  # the verbose log went into the capture
