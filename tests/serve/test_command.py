"""``effnet serve`` as a user runs it: options, one-line errors, a real process and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from effnet.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--max-batch", "--max-wait-ms", "--instances", "--api-key", "--queue-size", "--max-body-mb",
                   "--max-pixels", "--max-request-pixels", "--read-timeout", "--engine", "--device", "--threads",
                   "--host"):
        assert option in text
    assert "--workers" not in text.replace("eval's --workers", "")  # the old name parses, hidden
    flat = " ".join(text.split())
    assert "(default: 127.0.0.1)" in flat and "(default: 16)" in flat  # from the CLI's formatter
    assert "(default: (default" not in flat and flat.count("(default: 127.0.0.1)") == 1


def test_api_key_from_the_environment_never_shows_in_help(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFNET_API_KEY", "do-not-print-me")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "do-not-print-me" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--queue-size", "8", "--max-images", "16"], "lower --max-images or raise --queue-size"),
    (["--queue-size", "8", "--model", "efficientnet_z9", "--port", "0"], "unknown model"),  # got to loading
    (["--read-timeout", "0"], "--read-timeout must be more than 0"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--model", "lite0", "--model", "lite1", "--weights", "some.safetensors"], "single model"),
    (["--engine", "onnxruntime"], "needs an exported model"),
    (["--model", "efficientnet_z9", "--port", "0"], "unknown model 'efficientnet_z9'"),
])
def test_usage_errors_are_one_line_with_exit_2(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("effnet: error:") and message in err[-1]


def test_threads_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--threads", "0"])
    assert done.value.code == 2
    assert "argument --threads: expected an integer >= 1, not '0'" in capsys.readouterr().err


def test_an_engine_refuses_an_option_it_cannot_take(tmp_path: Path, tiny_classifier: Callable[..., Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    onnx_file = str(tiny_classifier(tmp_path / "tiny.onnx"))
    assert main(["serve", "--weights", onnx_file, "--device", "cuda", "--port", "0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "effnet: error: --device cuda: the onnxruntime engine runs on the CPU only (--engine torch runs on a GPU)")


class Loaded(Exception):
    """Raised by the stand-in Predictor: loading was reached, with these arguments."""


@pytest.mark.parametrize("argv, engine, options", [
    ([], "auto", {"device": None, "threads": None}),
    (["--device", "cpu", "--threads", "3", "--instances", "2"], "auto", {"device": "cpu", "threads": 3}),
    (["--instances", "2"], "auto", {"device": None, "threads": max(1, len(os.sched_getaffinity(0)) // 2)}),
    (["--workers", "2"], "auto", {"device": None, "threads": max(1, len(os.sched_getaffinity(0)) // 2)}),
    (["--weights", "m.onnx", "--backend", "onnx"], "onnxruntime", {"device": None, "threads": None}),
])
def test_engine_options_reach_the_predictor(argv: list[str], engine: str, options: dict,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--engine/--device/--threads go to the engine through Predictor, for any engine; with
    several instances and no --threads, each forward pass gets its share of the cores (--workers is
    the old name of --instances and still works)."""
    from effnet.serve import command

    def record(model: str | None, weights: str, **given: object) -> None:
        raise Loaded(model, weights, given)

    monkeypatch.setattr(command, "Predictor", record)
    with pytest.raises(Loaded) as loaded:
        main(["serve", "--port", "0", *argv])
    model, weights, given = loaded.value.args
    assert given == {"engine": engine, "precision": None, **options}


def test_busy_port_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_loading_line_names_the_weights_file_it_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "mine.safetensors"
    assert main(["serve", "--weights", str(missing), "--port", "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"effnet serve: loading {missing} (auto)"  # not "the default model"
    assert err[-1] == f"effnet: error: {missing}: weights file not found"


def wait_ready(url: str) -> None:
    """The port listens once the model has been warmed up; until then connections are refused."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.ConnectError:
            pass
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.1)


def test_served_by_a_real_process_and_stopped_by_sigterm() -> None:
    env = {**os.environ, "EFFNET_API_KEY": "k-123"}
    command = [sys.executable, "-m", "effnet", "serve", "--port", "0", "--max-wait-ms", "2", "--log-level", "info"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        url = None
        lines = []
        while url is None:
            line = process.stderr.readline()
            assert line, f"server exited early: {''.join(lines)}"
            lines.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found and found.group(1)
        wait_ready(url)
        image = (ROOT / "examples/images/espresso.jpg").read_bytes()
        assert httpx.post(f"{url}/v1/predict", content=image, timeout=60).status_code == 401
        reply = httpx.post(f"{url}/v1/predict", content=image, headers={"X-API-Key": "k-123"}, timeout=60)
        assert reply.json()["results"][0]["predictions"][0]["label"] == "espresso"
        process.send_signal(signal.SIGTERM)
        # a graceful stop is the planned end, not a failure (uvicorn alone would die of the signal: 143)
        assert process.wait(60) == 0
        log = process.stderr.read()
        assert "ready: efficientnet_lite0" in "".join(lines) + log and "Application shutdown complete" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    """The listening socket must say it is TCP: asyncio sets TCP_NODELAY only on sockets whose
    protocol is IPPROTO_TCP, and ``socket.socket(AF_INET, SOCK_STREAM)`` says 0. Without it
    uvicorn's body write waited for the client's delayed ACK of the headers (40 ms per answer)."""
    import asyncio

    from effnet.serve.command import _bind

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            option = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen.set_result(option)
            writer.close()

        server = await asyncio.start_server(connected, sock=_bind("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        option = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return option

    assert asyncio.run(accepted_nodelay()) != 0
