"""``effnet bench``: latency and throughput per model, batch size, thread count and backend.

Parse the options, prepare one trial per configuration (``trials``, over the ``runners``),
time them in interleaved rounds, then print the table and write CSV, JSON and the plot
(``report``), with the machine in the header (``machine``). A backend that cannot run here
(no CUDA device, onnxruntime not installed) is skipped with a line saying why.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..._progress import progress, shown
from ...data.images import find_images
from ..._files import check_writable
from ...errors import EffnetError, UsageError
from ...models.variants import canonical_name, short_name
from ...options import add_options, check_json_destination, image_size, positive_int, positive_int_list, write_json
from ...weights.registry import reported_entry
from .machine import header_lines, machine_info
from .agreement import compares, top1_agreement
from .report import check_plot_path, json_document, plot, table_lines, write_csv
from .runners import (CALIBRATED_SOURCES, DEFAULT_RUNNERS, RUNNERS, Calibration, InputFiles, canonical_runners,
                      check_runners, load_network)
from .trials import Configuration, TimingSettings, Trial, with_speedups

DESCRIPTION = (
    "Benchmark inference latency (p50/p90/p99) and throughput for models x batch sizes x threads\n"
    "x backends, with the machine in the header; print a table, write CSV/JSON and a PNG plot."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    width = max(map(len, RUNNERS))
    parser.epilog = "backends:\n" + "\n".join(f"  {r.name:<{width}}  {r.summary}" for r in RUNNERS.values())
    parser.add_argument("--models", default="lite0,b0", metavar="NAME[,NAME...]", help="comma-separated variants")
    parser.add_argument("--batch-sizes", type=positive_int_list, default="1,16", metavar="N[,N...]",
                        help="comma-separated batch sizes")  # argparse converts a string default with the type
    parser.add_argument("--threads", type=positive_int_list, default=None, metavar="N[,N...]",
                        help="comma-separated CPU thread counts inside one forward pass, each timed "
                             "(default: the engine's own, one per core; the table shows the count)")
    parser.add_argument("--backends", default=",".join(DEFAULT_RUNNERS), metavar="NAME[,NAME...]",
                        help="comma-separated, from the list below")
    parser.add_argument("--size", type=image_size, metavar="PIXELS",
                        help="input size for every model (default: each model's eval size)")
    parser.add_argument("--budget", type=float, default=2.0, metavar="SECONDS", help="seconds of timing per configuration and round")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="time every configuration this many times, interleaved, and pool the samples: "
                             "spreads load from other processes evenly on a shared machine")
    parser.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed batches before timing, each round")
    parser.add_argument("--min-repeats", type=int, default=5, metavar="N", help="timed batches at least")
    parser.add_argument("--calib", metavar="DIR",
                        help="onnx-int8, openvino-int8: folder of calibration images (e.g. a few hundred of your own "
                             "photos)")
    parser.add_argument("--calib-images", type=positive_int, default=100, metavar="N",
                        help="onnx-int8, openvino-int8: calibration images to use from --calib")
    parser.add_argument("--photos", metavar="DIR",
                        help="photos on which the top-1 of every backend that runs a file (onnx, openvino, their "
                             "bf16/int8) is compared with torch fp32's: the 'top-1 agree' column (default: the "
                             "--calib images; photos not used for calibration are the fairer test)")
    parser.add_argument("--csv", metavar="PATH", help="write results as CSV ('-' for stdout)")
    add_options(parser, "json", json={"help": "write machine, config and results as JSON to PATH (a .json file) "
                                              "besides the table, or print them to stdout instead with '-' or no "
                                              "PATH"})
    parser.add_argument("--plot", metavar="PNG", help="write accuracy-vs-latency and throughput-vs-batch plots")
    add_options(parser, "no_progress", no_progress={
        "help": "no progress bar, and no step lines on stderr where a bar would not be drawn"})


def run(args: argparse.Namespace) -> int:
    models = [canonical_name(m) for m in args.models.split(",") if m.strip()]
    runners = canonical_runners([b.strip() for b in args.backends.split(",") if b.strip()])
    if not models or not runners:
        raise UsageError("--models and --backends must name at least one each")
    settings = check_settings(args)
    check_outputs(args)
    skipped = check_runners(runners)
    calibration = check_calibration(args, runners, skipped)
    photos = check_photos(args, runners)
    runnable = [r for r in runners if r not in skipped]
    configurations = []
    for configuration in (Configuration(m, r, n, t) for m in models for r in runnable for t in args.threads or [None]
                          for n in args.batch_sizes):
        reason = RUNNERS[configuration.runner].cannot_run(configuration.model)
        if reason:
            skipped[f"{configuration.runner} for {short_name(configuration.model)}"] = reason
        else:
            configurations.append(configuration)
    if not configurations:  # before the header: nothing half-printed for a run that cannot start
        raise EffnetError("nothing to measure: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    machine = machine_info()
    to_stdout = "-" in (args.csv, args.json)
    if not to_stdout:
        print("\n".join(header_lines(machine)))

    networks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="effnet-bench-") as folder:
        files = InputFiles(Path(folder), calibration)
        trials = time_rounds(configurations, args.rounds, settings, files, args.size, networks,
                             report=not args.no_progress)
        agreement = {} if photos is None else top1_agreement(
            [(c.model, c.runner) for c in configurations], networks, {t.configuration.model: t.size for t in trials},
            photos, files, threads=(args.threads or [None])[0])
    results = with_speedups([trial.result(agreement.get((trial.configuration.model, trial.configuration.runner)))
                             for trial in trials], runnable[0] if len(runnable) > 1 else None)

    skip_lines = [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    if not to_stdout:
        print("\n".join(table_lines(results) + skip_lines))
    elif skip_lines:
        print("\n".join(skip_lines), file=sys.stderr)
    if args.csv:
        write_csv(args.csv, results)
    if args.json:
        write_json(args.json, json_document(machine, dict(vars(args)), results, skipped))
    if args.plot:
        plot(args.plot, results, machine)
        if not to_stdout:
            print(f"plot written to {args.plot}")
    return 0


def check_settings(args: argparse.Namespace) -> TimingSettings:
    """The timing options, each refused with its name when out of range."""
    for option, value, least in (("--budget", args.budget, None), ("--warmup", args.warmup, 0),
                                 ("--min-repeats", args.min_repeats, 1), ("--rounds", args.rounds, 1)):
        if (value <= 0) if least is None else (value < least):
            raise UsageError(f"{option} must be {'> 0' if least is None else f'at least {least}'}, not {value:g}")
    return TimingSettings(budget=args.budget, warmup=args.warmup, min_repeats=args.min_repeats)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that cannot be written before minutes of timing, not after them."""
    check_json_destination(args.json)
    for path in (args.csv, args.json, args.plot):
        if path not in (None, "-"):
            check_writable(path)
    if args.plot:
        check_plot_path(args.plot)


def check_calibration(args: argparse.Namespace, runners: list[str], skipped: dict[str, str]) -> Calibration | None:
    """The int8 runners' calibration images, checked before any work (None when none runs)."""
    calibrated = [r for r in runners if RUNNERS[r].source in CALIBRATED_SOURCES and r not in skipped]
    if not calibrated:
        return None
    if not args.calib:
        raise UsageError(f"the {', '.join(calibrated)} backend{'s' * (len(calibrated) > 1)} need"
                         f"{'s' * (len(calibrated) == 1)} calibration images: --calib DIR")
    if not Path(args.calib).is_dir() or not find_images(args.calib):
        raise UsageError(f"--calib {args.calib}: no images there (.jpg, .png, ...); {', '.join(calibrated)} "
                         "calibrate on them")
    return Calibration(args.calib, args.calib_images)


def check_photos(args: argparse.Namespace, runners: list[str]) -> str | None:
    """The folder the top-1 agreement is measured on (--photos, else --calib), checked before
    any work; None when there is none or no runner is compared."""
    if args.photos and (not Path(args.photos).is_dir() or not find_images(args.photos)):
        raise UsageError(f"--photos {args.photos}: no images there (.jpg, .png, ...)")
    folder = args.photos or args.calib
    if folder is None or not any(compares(r) for r in runners):
        return None
    return folder


def time_rounds(configurations: list[Configuration], rounds: int, settings: TimingSettings, files: InputFiles,
                size: int | None, networks: dict[str, Any] | None = None, report: bool = True) -> list[Trial]:
    """Every configuration timed ``rounds`` times, interleaved; each is prepared (and its model
    loaded into ``networks``, once per model) when the first round reaches it.

    A bar on a terminal; elsewhere (logs, CI) one line per step on stderr instead; neither
    when ``report`` is false (``--no-progress``).
    """
    networks = {} if networks is None else networks
    trials: list[Trial] = []
    total = len(configurations) * rounds
    with progress(total=total, desc="benchmarking", unit="configuration", enabled=report) as bar:
        for round_index in range(rounds):
            for index, configuration in enumerate(configurations):
                step = f"round {round_index + 1}/{rounds}: {configuration.describe()}"
                bar.set_description_str(step)
                if report and not shown():
                    print(f"[{round_index * len(configurations) + index + 1}/{total}] {step}", file=sys.stderr,
                          flush=True)
                if round_index == 0:
                    model = configuration.model
                    if model not in networks:
                        networks[model] = load_network(model)
                    net, entry = networks[model], reported_entry(model)
                    trials.append(Trial.prepare(configuration, net, size or net.plan.eval_resolution, files,
                                                entry.top1 if entry else None))
                trials[index].add_round(settings)
                bar.update()
    return trials
