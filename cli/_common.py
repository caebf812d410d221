"""What every command shares, written once: the shared options, the one mapping from
errors to messages and exit codes, tracing set-up, waiting for Ctrl-C.

Exit codes: 0 success, 1 the run failed, 2 invalid workflow or usage, 130 interrupted
(Ctrl-C or SIGTERM; a server stopped either way exits 0 once it has closed).
A user mistake prints one clear message, never a traceback; messages can quote a
model's reply or a file's text, so their control characters are escaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from concilium.app import Backend, Override
    from concilium.graphs.workflows import Workflow

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "api_key_option",
    "json_file_option",
    "load_named",
    "listen_options",
    "repeats_option",
    "backend_option",
    "echo_err",
    "echo_summary",
    "guard",
    "json_option",
    "otlp_option",
    "overrides_option",
    "state_option",
    "tracing",
    "until_signal",
]


def echo_err(message: str) -> None:
    """Print ``message`` on stderr with its control characters escaped."""
    from concilium._errors import escape_controls

    click.echo(escape_controls(message), err=True)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM (``kill``, systemd, docker stop) stops it the way
    Ctrl-C does, so a session still closes what it owns (the engine, servers, the
    state store) before the process ends; SIGTERM's default action ends it on the
    spot. The handler before is put back after (a command invoked in-process)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)  # asyncio.run's, or Python's default
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def guard(failed: str = "run failed", interrupted: str = "interrupted") -> Callable[[F], F]:
    """Map concilium errors to a message and an exit code: 2 for a user's mistake,
    1 for a run that failed (``failed: ...``), 130 for Ctrl-C or SIGTERM."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from concilium._errors import ConciliumError, UserError

            try:
                with _terminate_as_interrupt():
                    return fn(*args, **kwargs)
            except UserError as exc:
                echo_err(f"error: {exc}")
                sys.exit(2)
            except ConciliumError as exc:
                echo_err(f"{failed}: {exc}")
                sys.exit(1)
            except KeyboardInterrupt:
                echo_err(interrupted)
                sys.exit(130)

        return wrapper  # type: ignore[return-value]

    return decorate


# ------------------------------------------------------------------ shared options


def _parse_backend(ctx: click.Context, param: click.Parameter, value: str | None) -> Backend:
    from concilium._errors import UserError
    from concilium.app import Backend

    try:
        return Backend.parse(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None


def _parse_overrides(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[Override]:
    from concilium._errors import UserError
    from concilium.app import parse_override

    try:
        return [parse_override(v) for v in values]
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


backend_option = click.option(
    "--backend",
    "-b",
    callback=_parse_backend,
    help="sim (simulated server, a test double), local (embedded engine), or a URL.",
)
overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_overrides,
    help="Change a workflow field before it is built, e.g. workflow.samples=3 (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
otlp_option = click.option(
    "--otlp-endpoint",
    help="Send spans to this OTLP/HTTP collector (or set OTEL_EXPORTER_OTLP_ENDPOINT).",
)
api_key_option = click.option(
    "--api-key",
    envvar="CONCILIUM_API_KEY",
    help="Require this bearer token, 16+ characters off 127.0.0.1 (env CONCILIUM_API_KEY).",
)


def state_option(help: str) -> Callable[[F], F]:
    return click.option("--state", type=click.Path(dir_okay=False), help=help)


def listen_options(port: int, host_help: str = "Address to bind (any but 127.0.0.1 needs --api-key).") -> Callable[[F], F]:  # fmt: skip
    """``--host`` (127.0.0.1 by default, the one address that needs no key; the rule is
    ``concilium.serving.check_bind``, applied where the server binds) and ``--port``
    (``0``: a free one)."""

    def decorate(fn: F) -> F:
        fn = click.option("--port", default=port, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")(fn)  # fmt: skip
        return click.option("--host", default="127.0.0.1", show_default=True, help=host_help)(fn)

    return decorate


json_file_option = click.option(
    "--json", "json_file", type=click.Path(dir_okay=False), help="Also write the figures here."
)
repeats_option = click.option(
    "--repeats",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Median of this many.",
)


# ----------------------------------------------------------- served workflows


def load_named(targets: tuple[str, ...]) -> list[Workflow]:
    """Build each target once; two workflows with one name are refused (a served
    model or tool is named after its workflow)."""
    from concilium._errors import UserError
    from concilium.app import load

    workflows = [load(target) for target in targets]
    seen: dict[str, str] = {}
    for target, wf in zip(targets, workflows, strict=True):
        if wf.name in seen:
            raise UserError(
                f"two workflows are named {wf.name!r} ({seen[wf.name]} and {target}); "
                "give each a different name:"
            )
        seen[wf.name] = target
    return workflows


# --------------------------------------------------------------- eval summaries


def echo_summary(
    methods: Sequence[Any],
    as_json: bool,
    files: Sequence[tuple[str, Path]],
    notice: str | None = None,
    servers: Mapping[str, Any] | None = None,
) -> None:
    """An eval summary as ``eval``, ``merge`` and ``rescore`` print it: one JSON object
    with ``--json``; else the backend's notice, the table, then the files written.
    ``servers`` (an eval's: where its calls went, the servers' view) follows the table."""
    if as_json:
        shown: dict[str, Any] = {"methods": list(methods)}
        if servers is not None:
            shown["servers"] = dict(servers)
        click.echo(json.dumps(shown, ensure_ascii=False))
        return
    from concilium.evals import render_table

    if notice:
        click.echo(notice)
    click.echo(render_table(methods, servers))
    click.echo("")
    for label, path in files:
        click.echo(f"{label}: {path}")


# ----------------------------------------------------------------------- tracing


def _otlp_env() -> bool:
    """Whether the standard variables name an OTLP collector for traces."""
    names = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(os.environ.get(name) for name in names)


@contextlib.contextmanager
def tracing(otlp_endpoint: str | None = None, trace_file: str | None = None) -> Iterator[None]:
    """Export spans while the block runs (to a file, a collector, or the standard
    OTLP environment variables) and flush them at its end; nothing when none is set."""
    if not (trace_file or otlp_endpoint or _otlp_env()):
        yield
        return
    from concilium.agents import configure_tracing

    provider = configure_tracing(trace_file, otlp_endpoint=otlp_endpoint)
    try:
        yield
    finally:
        provider.shutdown()  # flush the spans still batched


async def until_signal() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
