"""The command line's own promises: one line per error, no traceback, the right exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effnet.cli import COMMANDS, SUMMARIES, HelpFormatter, main

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("command", ["models", "--help"])
def test_a_reader_that_leaves_early_gets_no_traceback(command: str) -> None:
    """``effnet models | head -1``: the pipe closes before effnet has printed everything."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-m", "effnet", command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # before the interpreter has even started: its first write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_file_system_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    from effnet.tasks import models

    def refuse(args):  # noqa: ANN001, ANN202 - stands in for any task writing where it may not
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.json"))

    monkeypatch.setattr(models, "run", refuse)
    code = main(["models"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"effnet: error: {tmp_path / 'out.json'}: permission denied\n"


def test_unknown_command_is_a_usage_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_defaults_are_written_by_the_help_formatter(command: str, capsys) -> None:
    """No help string spells out its own plain default ("(default: 32)"): the formatter appends
    it, so it cannot go stale when the default changes."""
    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    module.add_arguments(parser)
    written = [action.dest for action in parser._actions
               if action.help and f"(default: {action.default})" in action.help]
    assert written == []
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "images per forward pass (default: " in text  # appended by the formatter
    assert "(default: None)" not in text and "(default: False)" not in text


def _exit_code(argv: list[str]) -> int:
    """``main``'s exit code, whether argparse (SystemExit) or a task (a return) refused."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


@pytest.mark.parametrize("command", [
    ["predict", "photo.jpg"], ["eval", "val/"], ["export", "-o", "out.onnx"],
    ["quantize", "model.onnx", "--calib", "calib/", "-o", "out.onnx"], ["info"], ["bench"],
])
@pytest.mark.parametrize("size", ["100000", "-1"])
def test_size_means_one_range_in_every_command(command: list[str], size: str, capsys) -> None:
    """``--size`` is refused outside 8-4096 by every command alike, as one line, before any work:
    ``predict --size 100000`` used to try a 120 GB allocation and end in a traceback."""
    assert _exit_code([*command, "--size", size]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert "argument --size" in last and f"an integer from 8 to 4096, not '{size}'" in last


@pytest.mark.parametrize("command, option", [("convert", "--from"), ("export", "--format")])
def test_summaries_name_every_choice_the_command_offers(command: str, option: str) -> None:
    """``effnet --help`` and the command's own description name every source / format it takes
    (they said "Keras" and "ONNX" after PaddleClas, MindSpore, Triton and TFLite had come)."""
    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    choices = next(action.choices for action in parser._actions if option in action.option_strings)
    for text in (SUMMARIES[command], module.DESCRIPTION):
        assert [choice for choice in choices if choice not in text.lower()] == []


@pytest.mark.parametrize("command", [["models"], ["cache", "list"], ["predict", "photo.jpg"], ["eval", "val/"]])
def test_an_unwritable_json_destination_is_refused_before_the_work(command: list[str], unwritable_folder: Path,
                                                                   capsys) -> None:
    """``--json PATH`` in a folder nobody may write: refused up front (exit 2, nothing done),
    not after a whole evaluation has run and printed its summary."""
    destination = unwritable_folder / "results.json"
    assert main([*command, "--json", str(destination)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"effnet: error: cannot write {destination}: ")


@pytest.mark.parametrize("command", ["predict", "eval", "serve"])
def test_engine_help_names_every_engine_of_the_registry(command: str) -> None:
    """It listed auto, torch, onnxruntime and openvino and sent the reader to ``effnet bench --help``
    (which lists bench's backends, not engines) for the rest: litert was missing."""
    from effnet.runtime import ENGINES

    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    text = next(action.help for action in parser._actions if "--engine" in action.option_strings)
    assert [name for name in ENGINES if f"{name} (" not in text] == []
    assert ".tflite" in text and "bench" not in text


def test_an_image_over_the_pixel_limit_is_one_line_without_pillows_warning(tmp_path: Path) -> None:
    """A 108-megapixel PNG (over effnet's 100 M limit, under twice it): Pillow's
    DecompressionBombWarning (two lines with its source path) came before effnet's own error."""
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (12000, 9000)).save(big)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "effnet", "predict", "--engine", "torch", str(big)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"effnet: error: {big}: 12000x9000 = 108,000,000 pixels exceeds the limit of 100,000,000 "
        "(possible decompression bomb)", "effnet: 1 of 1 images failed"]


def test_help_command_shows_that_commands_help(capsys) -> None:
    """``effnet help predict`` printed the command list, as ``effnet help`` does."""
    with pytest.raises(SystemExit) as stop:
        main(["help", "predict"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: effnet predict")
    assert main(["help"]) == 0 and "commands:" in capsys.readouterr().out


#: Flags that several commands declare themselves (not through ``options.OPTIONS``), each with the
#: one meaning it has in all of them. A flag that two commands use for different things (serve's
#: --workers vs eval's, convert's --labels vs eval's, info's --format vs export's, before 0.4.1)
#: must get another name in one of them instead of a line here.
SAME_MEANING = {
    "--output": "the file or folder the command writes",
    "--size": "the square network input side in pixels (export also takes 'dynamic')",
    "--batch-size": "images per forward pass",
    "--calib": "a folder of calibration images",
    "--calib-images": "how many calibration images are used",
    "--max-batch": "most images in one batch (serve's batcher, Triton's max_batch_size)",
    "--models": "comma-separated variants",
    "--rounds": "timing rounds, interleaved",
    "--budget": "seconds of timing per configuration and round",
    "--threads": "CPU threads in one forward pass (bench: a list of them)",
    "--csv": "CSV to PATH, '-' for stdout",
    "--instances": "model instances running at once (serve: threads sharing the weights; Triton: its count)",
}


def test_a_flag_means_one_thing_in_every_command() -> None:
    from effnet.options import GROUPS, OPTIONS

    shared = {flag for option in [*OPTIONS.values(), *(o for g in GROUPS.values() for o in g.options.values())]
              for flag in option.flags}  # one Option each: one meaning, the help adjusted per command
    helps: dict[str, dict[str, str]] = {}
    for command, module_name in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue  # old names kept working, hidden from --help
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    helps.setdefault(flag, {})[command] = action.help or ""
    clashing = {flag: sorted(by_command) for flag, by_command in helps.items()
                if len(set(by_command.values())) > 1 and flag not in SAME_MEANING and flag not in shared}
    assert clashing == {}  # one shared Option, a line in SAME_MEANING, or another name
    assert {flag for flag in SAME_MEANING if len(helps.get(flag, {})) < 2} == set()  # no stale lines
