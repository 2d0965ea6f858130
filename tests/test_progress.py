"""certify.progress: bars only on an interactive stderr, never on stdout, and the items pass through."""
import io

import pytest

from certify import progress
from certify.progress import progress_bar, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch) -> _Terminal:
    """An interactive stderr. Patched inside the test body: pytest's own capture re-installs its streams
    between the setup and call phases, which would undo a patch made in a fixture."""
    stream = _Terminal()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    monkeypatch.delenv("CERTIFY_NO_PROGRESS", raising=False)
    return stream


def test_enabled_only_on_an_interactive_stderr(monkeypatch):
    _terminal(monkeypatch)
    assert progress_enabled()
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # a pipe or a file
    assert not progress_enabled()


@pytest.mark.parametrize("value", ["1", "yes", "0"])
def test_certify_no_progress_turns_bars_off(monkeypatch, value):
    """Set to any value (even "0"), the variable disables the bars."""
    _terminal(monkeypatch)
    monkeypatch.setenv("CERTIFY_NO_PROGRESS", value)
    assert not progress_enabled()


def test_the_bar_yields_every_item_in_order_and_writes_to_stderr_only(monkeypatch, capsys):
    terminal = _terminal(monkeypatch)
    items = list(progress_bar(iter(range(7)), desc="bounding", total=7, unit="ex"))
    assert items == list(range(7))
    written = terminal.getvalue()
    assert "bounding" in written and "7/7" in written and "ex" in written
    assert capsys.readouterr().out == ""


def test_a_disabled_bar_writes_nothing_but_still_yields(monkeypatch, capsys):
    terminal = _terminal(monkeypatch)
    monkeypatch.setenv("CERTIFY_NO_PROGRESS", "1")
    assert list(progress_bar(["a", "b"], desc="quiet")) == ["a", "b"]
    assert terminal.getvalue() == "" and capsys.readouterr() == ("", "")


def test_a_ctrl_c_swallowed_by_a_gc_callback_is_raised_at_the_next_progress_step(capsys):
    """Inside `interruptible`, a SIGINT whose KeyboardInterrupt Python swallows (raised in a gc callback, as
    hypothesis installs one) is raised again by the next progress-bar step, without an "Exception ignored"
    report; on exit the SIGINT handler and the unraisable hook are restored."""
    import gc
    import os
    import signal
    import sys

    import pytest

    from certify.progress import interruptible, progress_bar

    hook = sys.unraisablehook

    def callback(phase, info):
        if phase == "start":
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between these bytecodes, inside the callback
                pass

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            gc.callbacks.append(callback)
            try:
                gc.collect()  # the interrupt is swallowed here ...
            finally:
                gc.callbacks.remove(callback)
            steps.append("after the collection")
            for _ in progress_bar(range(3), desc="work"):  # ... and raised here
                steps.append("a step")
    assert steps == ["after the collection"]
    assert "Exception ignored" not in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and sys.unraisablehook is hook
    for _ in progress_bar(range(3), desc="after"):  # no interrupt left pending
        pass
