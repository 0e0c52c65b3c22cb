"""Local Ray start-up: one failed start (a loaded machine's time-out) is shut down and tried again."""

from __future__ import annotations

import pytest

from erasablemask.platform import ray_session


class _FakeRay:
    def __init__(self, failures: int) -> None:
        self.failures, self.inits, self.shutdowns = failures, 0, 0

    def init(self, **kwargs) -> None:
        self.inits += 1
        assert kwargs["num_cpus"] == 3
        if self.inits <= self.failures:
            raise TimeoutError("The current node timed out during startup")

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_failed_local_start_is_retried_once_and_said(capsys):
    ray = _FakeRay(failures=1)
    ray_session._start_local(ray, 3)
    assert (ray.inits, ray.shutdowns) == (2, 1)
    err = capsys.readouterr().err
    assert "starting local Ray failed (TimeoutError: The current node timed out" in err and "(2/2)" in err


def test_a_start_that_keeps_failing_raises_after_the_last_attempt():
    ray = _FakeRay(failures=5)
    with pytest.raises(TimeoutError, match="timed out during startup"):
        ray_session._start_local(ray, 3)
    assert ray.inits == ray.shutdowns == ray_session.LOCAL_START_ATTEMPTS


def test_a_first_start_that_works_is_not_repeated(capsys):
    ray = _FakeRay(failures=0)
    ray_session._start_local(ray, 3)
    assert (ray.inits, ray.shutdowns) == (1, 0) and capsys.readouterr().err == ""
