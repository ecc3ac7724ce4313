"""Options and helpers shared by several commands (provider, pixel limit, contract for foreign ONNX files)."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.images import DEFAULT_MAX_PIXELS

DEFAULT_ONNX = Path("exports/model.onnx")
REPORTS_DIR = Path("reports")


def report_folder(name: str, key: str | None = None) -> Path:
    """The one naming rule of the commands' default output folders: ``reports/<name>``, or with a content hash
    ``reports/<name>-<first 8 hex>`` so that two models (or sets of models) never share a folder."""
    return REPORTS_DIR / (f"{name}-{key[:8]}" if key else name)
PROVIDERS = click.Choice(["auto", "cpu", "cuda", "tensorrt"])
POSITIVE_INT = click.IntRange(min=1)


def onnx_option(help: str | None = None, default: Path | None = DEFAULT_ONNX):
    """``--onnx FILE``: the one declaration every command that reads an ONNX file uses (parameter ``onnx_path``)."""
    return click.option("--onnx", "onnx_path", type=click.Path(path_type=Path, dir_okay=False), default=default,
                        show_default=default is not None, help=help or "The skinonnx ONNX model.")


def runs_dir_option(f):
    """``--runs-dir``: where runs live, for every command that finds a run (train writes there, the others read)."""
    from ..training.runs import DEFAULT_RUNS_DIR

    return click.option("--runs-dir", type=click.Path(path_type=Path, file_okay=False), default=Path(DEFAULT_RUNS_DIR),
                        show_default=True, help="Folder holding the run folders (as given to `train --runs-dir`).")(f)


def renamed_option(old: str, new: str, name: str, **kwargs):
    """``old``, the spelling of ``new`` before it was renamed: hidden, kept one release, fills parameter ``name``."""
    def fill(ctx: click.Context, _param: click.Parameter, value) -> None:
        if value is not None:
            click.echo(f"warning: {old} is renamed {new}; {old} goes in the next release", err=True)
            ctx.default_map = {**(ctx.default_map or {}), name: value}  # what the new option takes when not given

    return click.option(old, f"_{old.strip('-').replace('-', '_')}_renamed", hidden=True, expose_value=False,
                        callback=fill, **kwargs)


def require_extra(extra: str, purpose: str, *modules: str) -> None:
    """An optional part that is not installed: one line naming the extra to install, not an ImportError."""
    from importlib.util import find_spec

    from ..errors import SkinOnnxError

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise SkinOnnxError(f"{purpose} needs {', '.join(missing)}: pip install 'skinonnx[{extra}]'")


def confidence_interval_options(command):
    """--bootstrap, --ci-seed, --confidence, --no-ci: the one declaration `test` and `compare` share; the three
    that tune the intervals are refused with --no-ci (they would do nothing)."""
    import functools

    from click.core import ParameterSource

    @functools.wraps(command)
    def checked(*args, **kwargs):
        ctx = click.get_current_context()
        flags = {"n_bootstrap": "--bootstrap", "ci_seed": "--ci-seed", "confidence": "--confidence"}
        given = [flag for name, flag in flags.items() if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]
        if kwargs.get("no_ci") and given:
            raise click.UsageError(f"{', '.join(given)} tune the confidence intervals, which --no-ci turns off: "
                                   "give one or the other", ctx)
        return command(*args, **kwargs)

    f = checked
    f = click.option("--no-ci", is_flag=True, help="Point estimates only (no bootstrap).")(f)
    f = click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), default=0.95, show_default=True,
                     help="Confidence level of the intervals.")(f)
    f = click.option("--ci-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")(f)
    return click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=10), default=1000, show_default=True,
                        help="Stratified bootstrap resamples for the confidence intervals (and, in `compare`, the "
                             "paired AUC differences).")(f)


def echo(msg: str) -> None:
    click.echo(msg)


def provider_option(default: str = "auto"):
    return click.option("--provider", type=PROVIDERS, default=default, show_default=True,
                        help="ONNX Runtime execution provider; cuda/tensorrt never fall back to CPU silently.")


def max_pixels_option(f):
    return click.option("--max-pixels", type=POSITIVE_INT, default=DEFAULT_MAX_PIXELS, show_default=True,
                        help="Refuse images with more pixels than this (decompression-bomb guard).")(f)


def contract_options(f):
    """Options for ONNX files without skinonnx metadata (all three of size/mean/std are needed)."""
    f = click.option("--classes", default=None, help="Comma-separated class names, for ONNX files without metadata.")(f)
    f = click.option("--std", default=None, help="Three comma-separated values, for ONNX files without metadata.")(f)
    f = click.option("--mean", default=None, help="Three comma-separated values, for ONNX files without metadata.")(f)
    f = click.option("--image-size", type=click.IntRange(16, 4096), default=None,
                     help="Input size, for ONNX files without skinonnx metadata.")(f)
    return f


def contract_from_options(image_size: int | None, mean: str | None, std: str | None, classes: str | None):
    if image_size is None and mean is None and std is None:
        return None
    if image_size is None or mean is None or std is None:
        raise click.UsageError("--image-size, --mean and --std must be given together")
    from ..data.preprocessing import Preprocessing
    from ..deploy.contract import ModelContract

    def triple(text: str, name: str) -> tuple[float, float, float]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise click.BadParameter(f"expected three numbers, got '{text}'", param_hint=name) from None
        if len(values) != 3:
            raise click.BadParameter(f"expected three numbers, got '{text}'", param_hint=name)
        if any(abs(v) > 1 for v in values):  # pixels are divided by 255 before (x - mean) / std
            scaled = ",".join(f"{v / 255:.3f}" for v in values)
            raise click.BadParameter(f"'{text}' is on the 0-255 scale; skinonnx scales pixels to 0-1 first, so "
                                     f"pass {name} {scaled}", param_hint=name)
        return values  # type: ignore[return-value]

    names = tuple(c.strip() for c in (classes or "benign,malignant").split(","))
    if len(names) != 2:
        raise click.BadParameter("expected two class names", param_hint="--classes")
    try:
        prep = Preprocessing.for_size(image_size, mean=triple(mean, "--mean"), std=triple(std, "--std"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    pos = names.index("malignant") if "malignant" in names else 1
    return ModelContract(classes=names, positive_index=pos, preprocessing=prep)


def program_name() -> str:
    """How the user started us, for commands we print: `skinonnx`, `python cli.py`, `python -m ...`."""
    ctx = click.get_current_context(silent=True)
    name = (ctx.find_root().info_name if ctx is not None else None) or "skinonnx"
    return f"python {name}" if name.endswith(".py") else name


def checkpoint_option(f):
    return click.option("--checkpoint", default=None, metavar="FILE|RUN",
                        help="A checkpoint file, or a run (folder or name under runs/) for its weights/best.pt "
                             "(default: the newest run's).")(f)


def resolve_checkpoint_option(spec: str | None, runs_dir: Path | None = None, *, finished_only: bool = False) -> Path:
    """--checkpoint as given, or the newest run's best.pt (under --runs-dir; ``finished_only``: the newest finished
    run, as `export` asks); says which run it took when it chose. Checked before a command imports torch."""
    from ..errors import CheckpointError
    from ..training.runs import DEFAULT_RUNS_DIR, resolve_checkpoint

    path, note = resolve_checkpoint(spec, runs_dir or DEFAULT_RUNS_DIR, finished_only=finished_only)
    if not path.is_file():  # said here, before a command imports torch to load it
        raise CheckpointError(f"checkpoint not found: {path} (run `skinonnx train` first, or pass --checkpoint)")
    if note:
        click.echo(note, err=True)
    return path


def data_from_metadata(data: str | None, metadata: dict[str, str]) -> str:
    """--data, else the training data the model's metadata records (the rule lives in data/training_data.py)."""
    from ..data.training_data import model_data

    ctx = click.get_current_context(silent=True)
    return model_data(data, metadata.get("training_data"), needed_for=f"`{ctx.info_name}`" if ctx else "this command")


def require_onnx(onnx_path: Path) -> None:
    """A missing model names the command that creates it (`test` or `quantize` before `export`)."""
    from ..errors import ModelFileError

    if not onnx_path.exists():
        made_by = f"{program_name()} export" + ("" if onnx_path == DEFAULT_ONNX else f" --output {onnx_path}")
        raise ModelFileError(f"ONNX model not found: {onnx_path}. Create it with: {made_by} (exports the newest "
                             "run), or pass --onnx FILE")
def threads_option(f):
    return click.option("--threads", type=POSITIVE_INT, default=None,
                        help="CPU threads for the model (default: the physical cores this process may use; "
                             "lower it when other jobs share the CPU).")(f)


def save_optimized_option(f):
    return click.option(
        "--save-optimized", type=click.Path(path_type=Path), default=None,
        help="Also write the graph ONNX Runtime optimised (fusions, constant folding, CPU layouts) to this "
             "path, e.g. to inspect it in Netron. It is tied to this machine kind and onnxruntime version.")(f)


def open_classifier(onnx_path: Path, provider: str, contract_opts: tuple, save_optimized: Path | None = None,
                    threads: int | None = None):
    from ..cpus import physical_cores
    from ..deploy.runtime import OnnxClassifier

    contract = contract_from_options(*contract_opts)
    require_onnx(onnx_path)
    if save_optimized is None:
        classifier = OnnxClassifier(onnx_path, provider, contract=contract, threads=threads)
    else:
        from ..atomic import atomic_path

        if save_optimized.resolve() == onnx_path.resolve():
            raise click.BadParameter("must differ from the model path", param_hint="--save-optimized")
        with atomic_path(save_optimized) as tmp:
            classifier = OnnxClassifier(onnx_path, provider, contract=contract, optimized_model_path=tmp,
                                        threads=threads)
        click.echo(f"optimised graph saved to {save_optimized}", err=True)
    cpu_threads = (f" ({threads or physical_cores()} intra-op threads, spinning off)"
                   if classifier.provider == "CPUExecutionProvider" else "")
    click.echo(f"model {onnx_path} on ONNX Runtime {classifier.provider}{cpu_threads}", err=True)
    return classifier


def onnx_runtime_options(f):
    """What `test` and `predict` share: provider, threads, optimised-graph dump, pixel limit, contract, --quiet."""
    f = click.option("--quiet", is_flag=True)(f)
    for option in (contract_options, max_pixels_option, save_optimized_option, threads_option, provider_option()):
        f = option(f)
    return f


def exit_zero_option(f):
    """``--exit-zero``: `audit` and `monitor` report what they found and exit 0 (as linters do); see gate_exit."""
    return click.option("--exit-zero", is_flag=True,
                        help="Exit 0 even when something is found: report only, do not fail a pipeline.")(f)


def exit_codes_epilog(found: str) -> str:
    """The exit codes of a command that gates a pipeline, for its --help (one wording for audit and monitor)."""
    return (f"\b\nExit status:\n  0  nothing found\n  1  {found} (0 with --exit-zero);\n     or an error "
            "(an `Error:` line)\n  2  a usage error (bad option or argument)")


def gate_exit(found: list[str], exit_zero: bool) -> None:
    """Exit 1 after the report when ``found`` names something (leakage, drift...), unless --exit-zero."""
    if not found:
        return
    if exit_zero:
        click.echo(f"found {'; '.join(found)} (--exit-zero: exit status 0)", err=True)
        return
    click.echo(f"found {'; '.join(found)}: exit status 1 (--exit-zero to report only)", err=True)
    raise SystemExit(1)
