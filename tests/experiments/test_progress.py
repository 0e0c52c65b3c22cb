"""Progress bars: tqdm's redraw rate on a terminal, a periodic line when stderr is a file or pipe."""

from __future__ import annotations

import io

from erasablemask.experiments.progress import PERIODIC_LINE_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(stream: io.StringIO) -> int:
    """Lines written (off a terminal every redraw is one line, without carriage returns)."""
    assert "\r" not in stream.getvalue(), "a carriage return in non-terminal output"
    return stream.getvalue().count("\n")


def test_a_bar_written_to_a_file_redraws_only_at_start_and_end() -> None:
    stream = io.StringIO()
    bar = progress_bar(total=500, file=stream, desc="steps")
    for i in range(500):
        bar.update(1)
        bar.set_postfix({"loss": f"{1 / (i + 1):.3g}"}, refresh=False)
    bar.close()
    assert bar.mininterval == PERIODIC_LINE_S
    assert _redraws(stream) <= 3, stream.getvalue()
    assert "500/500" in stream.getvalue()


def test_a_bar_on_a_terminal_keeps_tqdms_redraw_rate() -> None:
    stream = _Terminal()
    bar = progress_bar(total=10, file=stream)
    assert bar.mininterval == 0.1
    bar.close()


def test_an_explicit_mininterval_wins() -> None:
    bar = progress_bar(total=10, file=io.StringIO(), mininterval=0.5)
    assert bar.mininterval == 0.5
    bar.close()
