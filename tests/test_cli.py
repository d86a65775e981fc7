"""The process edge (tagstream.cli): exit statuses, the error boundary, signals."""

from __future__ import annotations

import argparse
import io
import os
import signal
import threading

import pytest

from tagstream import cli
from tagstream.errors import ExitStatus, TagstreamError, UnavailableError


def _run(body, argv=(), *, long_running=False):
    out, err = io.StringIO(), io.StringIO()
    status = cli.run(
        cli.parser("prog", "test"), body, list(argv), stdout=out, stderr=err,
        long_running=long_running,
    )  # fmt: skip
    return status, out.getvalue(), err.getvalue()


def test_ok_and_help() -> None:
    status, _, _ = _run(lambda ctx: ExitStatus.OK)
    assert status == 0
    status, out, _ = _run(lambda ctx: ExitStatus.OK, ["--help"])
    assert status == 0 and "--traceback" in out and "--config" in out


def test_usage_error_from_argparse_is_usage_status() -> None:
    status, _, err = _run(lambda ctx: ExitStatus.OK, ["--nope"])
    assert status == ExitStatus.USAGE
    assert "unrecognized arguments" in err


def test_project_error_prints_one_line_and_its_status() -> None:
    def body(ctx: cli.Context) -> int:
        raise UnavailableError("song.mp3: no such file; check the path")

    status, _, err = _run(body)
    assert status == ExitStatus.UNAVAILABLE
    assert err == "error: song.mp3: no such file; check the path\n"


def test_unexpected_error_is_status_1_with_traceback_on_request() -> None:
    def body(ctx: cli.Context) -> int:
        raise RuntimeError("boom")

    status, _, err = _run(body)
    assert status == ExitStatus.ERROR
    assert err.startswith("error: RuntimeError: boom") and "Traceback" not in err
    status, _, err = _run(body, ["--traceback"])
    assert "Traceback" in err and status == ExitStatus.ERROR


def test_bad_setting_is_usage_status(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[inference]\nhop_seconds = inf\n")

    def body(ctx: cli.Context) -> int:
        ctx.load_config()
        return ExitStatus.OK

    status, _, err = _run(body, ["--config", str(path)])
    assert status == ExitStatus.USAGE
    assert err.startswith("error: inference.hop_seconds: expected a finite number")


@pytest.mark.parametrize(("long_running", "expected"), [(True, 0), (False, 130)])
def test_ctrl_c_rule(long_running: bool, expected: int) -> None:
    def body(ctx: cli.Context) -> int:
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(5)  # interrupted by the handler's KeyboardInterrupt
        raise AssertionError("not interrupted")

    status, _, err = _run(body, long_running=long_running)
    assert status == expected and err == ""


def test_sigterm_calls_registered_callbacks_instead_of_raising() -> None:
    stopped = threading.Event()

    def body(ctx: cli.Context) -> int:
        with ctx.on_stop(stopped.set):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stopped.wait(5)
        assert ctx.stop.is_set()
        return ExitStatus.OK

    assert _run(body, long_running=True)[0] == 0


PACKAGES = ("tagstream", "config", "model", "protocol", "streamer", "inference", "monitor",
            "tools", "training")  # fmt: skip


def test_every_project_error_derives_from_the_root() -> None:
    """No error class of the project stands outside TagstreamError (one boundary for all)."""
    import importlib
    import inspect
    import pkgutil

    outside = []
    for package in PACKAGES:
        names = [package] + [
            f"{package}.{info.name}"
            for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
            if info.name != "__main__"
        ]
        for name in names:
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == name
                    and not issubclass(value, TagstreamError)
                ):
                    outside.append(f"{name}.{attr}")
    assert outside == []


def test_setting_flags_take_type_and_choices_from_the_schema(tmp_path) -> None:
    def build() -> argparse.ArgumentParser:
        p = cli.parser("prog", "test")
        cli.setting_flag(p, "--hop-seconds", key="inference.hop_seconds", help="hop")
        cli.setting_flag(p, "--mode", key="inference.mode", help="mode")
        cli.setting_flag(p, "--endpoint", key="subscribe.endpoints", help="repeatable")
        cli.setting_flag(p, "--pad", key="tagging.pad_short", help="switch")
        return p

    seen = {}

    def body(ctx: cli.Context) -> int:
        seen["cfg"] = ctx.load_config()
        return ExitStatus.OK

    path = tmp_path / "c.toml"
    path.write_text("[inference]\nhop_seconds = 2.0\n")
    argv = ["--config", str(path), "--mode", "streaming", "--endpoint", "tcp://a:1",
            "--endpoint", "tcp://b:2", "--pad"]  # fmt: skip
    status = cli.run(build(), body, argv, stdout=io.StringIO(), stderr=io.StringIO())
    cfg = seen["cfg"]
    assert status == 0
    assert cfg.inference.hop_seconds == 2.0  # the file's value where no flag is given
    assert cfg.inference.mode == "streaming"
    assert cfg.subscribe.endpoints == ("tcp://a:1", "tcp://b:2")
    assert cfg.tagging.pad_short is True
    err = io.StringIO()
    status = cli.run(build(), body, ["--mode", "fast"], stdout=io.StringIO(), stderr=err)
    assert status == ExitStatus.USAGE and "invalid choice" in err.getvalue()
    err = io.StringIO()
    status = cli.run(build(), body, ["--hop-seconds", "inf"], stdout=io.StringIO(), stderr=err)
    assert status == ExitStatus.USAGE
    assert "inference.hop_seconds: expected a finite number" in err.getvalue()
