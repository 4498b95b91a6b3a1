"""`lutbuild`: a thin click layer; each command parses arguments and calls one library function.

    lutbuild spaces
    lutbuild devices [--device HOST:PORT ...]
    lutbuild build  --space mbv3-tiny --device local --runtime tflite --db lut.sqlite [--plan sparse]
    lutbuild build  --space mbv3-tiny --device SERIAL [--device HOST:PORT ...] --runtime tflite \
                    --db lut.sqlite --benchmark-binary benchmark_model [--transport auto] [--adb-key KEY]
    lutbuild verify --space mbv3-tiny --device local --runtime tflite --db lut.sqlite --samples 50 \
                    --json verify.json --plot verify.png
    lutbuild show   --db lut.sqlite
    lutbuild build  ... --quantize int8 | --delegate gpu [--gpu-precision-loss]   (INT8 / GPU slices)
    lutbuild merge  A.sqlite B.sqlite --into C.sqlite [--on-conflict prefer-measured|fail]
    lutbuild profile MODEL --device local [--op-profile] [--json F] [--plot F.png]
    lutbuild predict MODEL --db lut.sqlite --device ID --runtime tflite [--input-shape 1,3,224,224]
                    [--measure-missing] [--no-composition] [--json F]
    lutbuild calibrate MODEL [MODEL ...] --db lut.sqlite --device local --runtime tflite [--rounds 3]

`build` runs one engine (`build.build_lut`: one worker per device, one writer). With
`--device local` alone a failure of the device is raised as from a plain loop; phones, and
several `--device`s at once, are named in messages, and a device that fails mid-build stops
with one line naming it while the others finish, and the exit code is 1.

Errors a user can cause (unknown space, plan or runtime, a file that is not a LUT or has a
newer schema, a missing slice, a bad option) print one line on stderr and exit with code 1,
leaving the LUT file as it was; anything else is a bug and stays a traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from device_agents.adb_devices import list_devices
from device_agents.adb_transport import TRANSPORTS
from lut_db.coverage import format_table
from lut_db.merge import CONFLICT_POLICIES, PREFER_MEASURED, merge_luts
from lut_db.reader import STATISTICS
from search.spaces import list_spaces

from .agents import LOCAL, RUNNERS, close_agents, default_workdir, name_device, open_agent, open_agents
from .build import BuildOptions, MultiBuildReport, build_lut
from .cli_runner import CliGroup
from .cli_types import FiniteFloat
from .plan import PLANS
from .block_plan import GRANULARITIES
from .composition_run import CalibrateOptions, calibrate_composition
from .plots import plot_verify
from .model_graph import parse_input_shape
from .predict_model import AUTO, AUTO_COLD_BYTES, PredictOptions, predict_model
from .plot_ops import plot_op_profile
from .profile_model import ProfileOptions, check_request, format_profile, profile_model
from .runtimes import ALONE, COLD, CONTEXTS, DEFAULT_CACHE_DIR, DTYPES, ORT_OPT_LEVELS, RUNTIMES, TFLITE_DELEGATES
from .show import show_lut
from .spaces import resolve_space
from .verify import VerifyOptions, verify_lut
from .verify_report import format_report

PROG = "lutbuild"


@click.group(cls=CliGroup, prog=PROG)
def cli() -> None:
    """Build and check an on-device latency lookup table (LUT) for a search space."""


def _space_option(f):
    return click.option("--space", required=True, help="search space name (see `lutbuild spaces`)")(f)


def _phone_options(f):
    """Options of the ADB agent (docs/phone.md); `--device local` refuses them."""
    for option in reversed([
        click.option("--benchmark-binary", "binary", type=click.Path(dir_okay=False, path_type=Path),
                     help="phones: the Android benchmark_model (tflite) / onnxruntime_perf_test (onnx) to push; "
                          "without it the Python runner runs on the phone"),
        click.option("--runner", type=click.Choice(RUNNERS), default=None,
                     help="phones: 'tool' (needs --benchmark-binary) or 'python' (runner.py, needs python3 and "
                          "the runtime on the phone) [default: tool when --benchmark-binary is given]"),
        click.option("--transport", type=click.Choice(TRANSPORTS), default="auto", show_default=True,
                     help="phones: adb-shell (no adb binary needed), adb-server (a running adb server), or auto"),
        click.option("--adb-key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="phones: private ADB key [default: ~/.android/adbkey, created on first use]"),
        click.option("--auth-timeout", "auth_timeout_s", type=FiniteFloat(min=0.1), default=None,
                     hidden=True, help="seconds to wait for the phone to accept the key (tests)"),
    ]):
        f = option(f)
    return f


def _agent_kwargs(binary, runner, transport, key_path, auth_timeout_s, cache_dir) -> dict:
    """`profiler.agents.open_agent` keyword arguments of the phone options."""
    return dict(binary=binary, runner=runner, transport=transport, key_path=key_path,
                auth_timeout_s=auth_timeout_s, workdir=default_workdir(cache_dir))


def _any_model_options(f):
    """Options `predict` and `calibrate` share: the slice a user's model is read in, and the run's files."""
    for option in reversed([
        click.option("--runtime", type=click.Choice(RUNTIMES), required=True, help="the LUT slice's runtime"),
        click.option("--input-shape", "input_shape", help="input shape N,C,H,W: needed for a PyTorch factory and "
                     "for an ONNX file with dynamic dimensions"),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                     help="the slice's threads"),
        click.option("--delegate", type=click.Choice(["xnnpack", "none"]), default="xnnpack", show_default=True,
                     help="TFLite delegate of the slice; ignored for ONNX"),
        click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
                     help="export worker processes"),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CACHE_DIR,
                     show_default=True, help="exported model files (shared by every LUT)"),
        click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
                     help="write the report here"),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]):
        f = option(f)
    return f


def _common(f):
    for option in reversed([
        _space_option,
        click.option("--runtime", type=click.Choice(RUNTIMES), required=True, help="runtime to measure with"),
        click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True,
                     help="LUT file (SQLite)"),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                     help="runtime threads (1 = what LUTs compare across)"),
        click.option("--delegate", type=click.Choice(TFLITE_DELEGATES), default="xnnpack", show_default=True,
                     help="TFLite: XNNPACK, the builtin kernels, or a phone's GPU delegate (benchmark_model "
                          "--use_gpu=true); each a separate LUT slice; ignored for ONNX"),
        click.option("--gpu-precision-loss", is_flag=True,
                     help="--delegate gpu: allow fp16 arithmetic (slice option gpu_precision_loss=true)"),
        click.option("--quantize", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="int8: full-integer TFLite / QDQ ONNX models, a separate LUT slice (dtype=int8)"),
        click.option("--ort-opt", type=click.Choice(tuple(ORT_OPT_LEVELS)), default="all", show_default=True,
                     help="ONNX: graph optimization level (all = ORT_ENABLE_ALL; extended/basic keep NCHW, "
                          "a separate LUT slice ort_opt=...); refused for TFLite"),
        click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
                     help="export worker processes"),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CACHE_DIR,
                     show_default=True, help="exported model files (shared by every LUT)"),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]):
        f = option(f)
    return f


@cli.command()
def spaces() -> None:
    """List the search spaces and how many LUT keys each needs."""
    for space in list_spaces():
        click.echo(f"{space.describe()}; {len(space.all_layer_configs())} LUT keys")


@cli.command()
@click.option("--device", "devices", multiple=True, metavar="HOST:PORT",
              help="also query this phone over TCP (repeatable); phones on an adb server are listed anyway")
@click.option("--adb-key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="private ADB key [default: ~/.android/adbkey]")
@click.option("--auth-timeout", "auth_timeout_s", type=FiniteFloat(min=0.1), default=5.0, hidden=True,
              help="seconds to wait for a phone to accept the key")
def devices(devices, key_path, auth_timeout_s) -> None:
    """List the phones seen (adb server + --device): serial, model, SoC, Android, authorized?"""
    listings = list_devices(devices, key_path=key_path, auth_timeout_s=auth_timeout_s)
    if not listings:
        click.echo("no phones found: none on a running adb server (`adb devices`), and no --device HOST:PORT given; "
                   "see docs/phone.md")
        return
    click.echo(format_table(listings, ["serial", "state", "authorized", "model", "soc", "android", "abi", "via"]))
    for item in listings:
        if item.note:
            click.echo(name_device(item.serial, item.note))


@cli.command()
@_common
@click.option("--device", "devices", multiple=True, default=(LOCAL,), show_default=True,
              help="'local' (this host) or a phone: ADB serial or host:port; repeat it to fill one LUT from "
                   "several phones at once (one worker each)")
@_phone_options
@click.option("--plan", type=click.Choice(PLANS), default="full", show_default=True,
              help="full: measure every key; sparse: a channel grid, the rest interpolated")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="models per benchmark process and per committed transaction")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="interleaved passes over each batch")
@click.option("--limit", type=click.IntRange(min=0), default=None, hidden=True,
              help="measure at most this many keys in this run (tests)")
@click.option("--context", type=click.Choice(CONTEXTS), default=ALONE, show_default=True,
              help="ONNX at --ort-opt all: nchwc = each row timed between NCHWc-keeping neighbours, less "
                   "their cost (a separate LUT slice context=nchwc); refused for TFLite")
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="layer", show_default=True,
              help="layer: one row per layer; block: one row per whole ir/ds block (stem and head stay layers)")
@click.option("--passes", type=click.IntRange(min=1), default=1, show_default=True,
              help="measure every key this many times in separate batches (after the whole plan) and keep "
                   "each key's row with the lowest p10: the host's fast state (docs/lut.md \"INT8 slices\")")
def build(space, runtime, db, threads, delegate, gpu_precision_loss, quantize, ort_opt, jobs, cache_dir, quiet, devices,
          binary, runner, transport, key_path, auth_timeout_s, plan, batch_size, repeats, limit, context,
          granularity, passes) -> None:
    """Measure the layer keys of a space on one or more devices and store them in the LUT (resumes)."""
    space = resolve_space(space)  # an unknown name fails before the device or the file is touched
    options = BuildOptions(plan=plan, jobs=jobs, threads=threads, delegate=delegate, dtype=quantize,
                           gpu_precision_loss=gpu_precision_loss, batch_size=batch_size, repeats=repeats, limit=limit,
                           cache_dir=cache_dir, ort_opt=ort_opt, granularity=granularity, context=context,
                           passes=passes)
    devices = devices or (LOCAL,)
    # Every device connected (and authorized) before the LUT file is touched; any failure: one line, exit 1.
    agents = open_agents(devices, runtime,
                         **_agent_kwargs(binary, runner, transport, key_path, auth_timeout_s, cache_dir))
    try:
        # `--device local` alone: one agent (its failure raised); phones: the list (named, reported)
        target = agents[0] if list(devices) == [LOCAL] else agents
        report = build_lut(space, target, db, runtime, options, progress=not quiet)
    finally:
        close_agents(agents)
    click.echo(report.summary())
    failures = report.failures if isinstance(report, MultiBuildReport) else []
    for line in failures:
        click.echo(f"{PROG}: error: {line}", err=True)
    if failures:
        sys.exit(1)  # the measured batches are kept: the same command again finishes the stopped device(s)


@cli.command()
@_common
@click.option("--device", default=LOCAL, show_default=True,
              help="'local' (this host) or a phone: ADB serial or host:port")
@_phone_options
@click.option("--samples", type=click.IntRange(min=2), default=50, show_default=True,
              help="sub-networks to measure (largest and smallest included)")
@click.option("--seed", type=int, default=0, show_default=True, help="sampling seed")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="benchmark processes per network (median of medians)")
@click.option("--interpolate", is_flag=True, help="estimate LUT keys that are missing (and say how many)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the report here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write a predicted-vs-measured PNG here")
@click.option("--op-profile", is_flag=True,
              help="also profile each network per operator: every layer's time inside it next to its LUT row")
@click.option("--same-batch", is_flag=True,
              help="also time each network's own LUT layer files in its batches: the LUT's additivity "
                   "with the host's drift since the build taken out")
@click.option("--context", type=click.Choice(CONTEXTS), default=ALONE, show_default=True,
              help="ONNX at --ort-opt all: nchwc = each row timed between NCHWc-keeping neighbours, less "
                   "their cost (a separate LUT slice context=nchwc); refused for TFLite")
def verify(space, runtime, db, threads, delegate, gpu_precision_loss, quantize, ort_opt, jobs, cache_dir, quiet, device,
           binary, runner, transport, key_path, auth_timeout_s, samples, seed, rounds, interpolate, json_path,
           plot_path, op_profile, same_batch, context) -> None:
    """Measure sampled whole networks on one device and compare with the LUT (and a MAC proxy)."""
    space = resolve_space(space)
    agent = open_agent(device, runtime,
                       **_agent_kwargs(binary, runner, transport, key_path, auth_timeout_s, cache_dir))
    try:
        options = VerifyOptions(samples=samples, seed=seed, threads=threads, delegate=delegate, dtype=quantize,
                                gpu_precision_loss=gpu_precision_loss, rounds=rounds,
                                jobs=jobs, cache_dir=cache_dir, interpolate=interpolate, op_profile=op_profile,
                                ort_opt=ort_opt, same_batch=same_batch, context=context)
        report = verify_lut(space, agent, db, runtime, options, progress=not quiet)
    finally:
        agent.close()
    click.echo(format_report(report))
    _write_json(json_path, report.to_json_dict())
    if plot_path:
        plot_verify(report, plot_path)


@cli.command()
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True, help="LUT file")
def show(db) -> None:
    """Print the devices, slices, calibration and per-space coverage of a LUT."""
    click.echo(show_lut(db))


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--into", "into", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="LUT file to merge into (created when absent; an existing one keeps its rows)")
@click.option("--on-conflict", type=click.Choice(CONFLICT_POLICIES), default=PREFER_MEASURED, show_default=True,
              help="two different rows of one key and slice: keep the measured, then the newer one; or refuse")
def merge(sources, into, on_conflict) -> None:
    """Combine LUTs filled on different hosts or phone farms into one, in one transaction."""
    click.echo(merge_luts(sources, into, on_conflict).summary())


@cli.command()
@click.argument("model")
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True, help="LUT file (SQLite)")
@click.option("--device", default=LOCAL, show_default=True,
              help="a device id of the LUT, or 'local' / a phone (ADB serial or host:port) to ask for its id")
@_any_model_options
@click.option("--measure-missing", is_flag=True, help="measure the keys the LUT lacks on --device (stored in the "
              "LUT, resumable), then predict")
@click.option("--statistic", type=click.Choice(STATISTICS), default="median", show_default=True,
              help="the row statistic summed: p10 = the device's fast state (docs/predict.md)")
@click.option("--passes", type=click.IntRange(min=1), default=1, show_default=True,
              help="--measure-missing: measure each key this many times, keep its lowest-p10 row (as build)")
@click.option("--context", type=click.Choice([AUTO, ALONE, COLD]), default=AUTO, show_default=True,
              help="the slice's layer context: cold = weights-cold rows (TFLite); auto = cold for a TFLite model "
                   f"with >= {AUTO_COLD_BYTES / 2**20:g} MiB of weights, else alone (docs/predict.md)")
@click.option("--no-composition", "no_composition", is_flag=True,
              help="the LUT sum alone: do not apply the slice's composition calibration (lutbuild calibrate)")
@_phone_options
def predict(model, db, device, runtime, input_shape, measure_missing, threads, delegate, jobs, cache_dir, json_path,
            quiet, statistic, passes, context, no_composition, binary, runner, transport, key_path,
            auth_timeout_s) -> None:
    """Predict the latency of any model (.onnx, .tflite, package.module:factory) from the LUT, layer by layer."""
    options = PredictOptions(device=device, runtime=runtime, threads=threads, delegate=delegate,
                             input_shape=parse_input_shape(input_shape), measure_missing=measure_missing, jobs=jobs,
                             cache_dir=cache_dir, progress=not quiet, statistic=statistic, passes=passes,
                             context=context, composition=not no_composition,
                             agent_kwargs=_agent_kwargs(binary, runner, transport, key_path, auth_timeout_s, cache_dir))
    report = predict_model(model, db, options)
    click.echo(report.format())
    _write_json(json_path, report.to_json_dict())


@cli.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="LUT file (SQLite) whose rows the models' predictions read")
@click.option("--device", default=LOCAL, show_default=True,
              help="'local' (this host) or a phone: ADB serial or host:port")
@_any_model_options
@click.option("--context", type=click.Choice([AUTO, ALONE, COLD]), default=AUTO, show_default=True,
              help="the slice each model is calibrated in: the one predict reads (auto: by the model's weights)")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="benchmark processes per model, each timing it beside its layer files")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="interleaved passes per process (as in a LUT build)")
@_phone_options
def calibrate(models, db, device, runtime, input_shape, threads, delegate, context, rounds, repeats, jobs, cache_dir,
              json_path, quiet, binary, runner, transport, key_path, auth_timeout_s) -> None:
    """Learn how much slower whole models run than their LUT rows add up to (predict applies it to other models)."""
    options = CalibrateOptions(device=device, runtime=runtime, threads=threads, delegate=delegate,
                               input_shape=parse_input_shape(input_shape), context=context, rounds=rounds,
                               repeats=repeats, jobs=jobs, cache_dir=cache_dir, progress=not quiet,
                               agent_kwargs=_agent_kwargs(binary, runner, transport, key_path, auth_timeout_s,
                                                          cache_dir))
    report = calibrate_composition(list(models), db, options)
    click.echo(report.format())
    _write_json(json_path, report.to_json_dict())


def _write_json(path: Path | None, data: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", default=LOCAL, show_default=True,
              help="'local' (this host) or a phone: ADB serial or host:port")
@_phone_options
@click.option("--runtime", type=click.Choice(RUNTIMES), default=None,
              help="runtime to measure with [default: from the file's suffix, .tflite or .onnx]")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="runtime threads (1 = what LUTs compare across)")
@click.option("--delegate", type=click.Choice(["xnnpack", "none"]), default="xnnpack", show_default=True,
              help="TFLite: XNNPACK or the builtin kernels; ignored for ONNX")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="interleaved passes (as in a LUT build)")
@click.option("--op-profile", is_flag=True,
              help="also time each operator (ONNX Runtime's profiler; benchmark_model on a phone)")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True,
              help="operators shown (and plotted); --json has them all")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the report here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="with --op-profile: write a bar chart PNG of the top operators here")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CACHE_DIR,
              show_default=True, help="phones: the work folder for pulled results lives under it")
@click.option("--quiet", is_flag=True, help="no progress bar")
def profile(model, device, binary, runner, transport, key_path, auth_timeout_s, runtime, threads, delegate, repeats,
            op_profile, top, json_path, plot_path, cache_dir, quiet) -> None:
    """Time your own .tflite / .onnx model on a device with the LUT's protocol (and, optionally, per operator)."""
    if plot_path and not op_profile:
        raise click.UsageError("--plot draws the operator profile: add --op-profile")
    options = ProfileOptions(runtime=runtime, threads=threads, delegate=delegate, repeats=repeats,
                             op_profile=op_profile)
    runtime, _ = check_request(model, options)  # a bad file or option: one line, before the device is opened
    agent = open_agent(device, runtime,
                       **_agent_kwargs(binary, runner, transport, key_path, auth_timeout_s, cache_dir))
    try:
        report = profile_model(model, agent, options, progress=not quiet)
    finally:
        agent.close()
    click.echo(format_profile(report, top))
    _write_json(json_path, report.to_json_dict())
    if plot_path and report.op_profile is not None:
        plot_op_profile(report, plot_path, top)
    elif plot_path:
        click.echo(f"no plot written to {plot_path}: there is no operator profile")


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv)


if __name__ == "__main__":
    main()
