"""The ``dw`` entry point: global options, the command groups, and errors as exit codes."""

from __future__ import annotations

import sys

import typer

from . import admin, operator, render, workflows
from .http import EXIT_USAGE, CliError
from .settings import Settings, SettingsError, resolve

app = typer.Typer(help="Operate a durable workflow server over its HTTP API.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(workflows.app, name="workflow")
app.add_typer(operator.activities, name="activity")
app.add_typer(admin.schedules, name="schedule")
app.add_typer(admin.namespaces, name="namespace")
operator.register_build_ids(admin.task_queues)
app.add_typer(admin.task_queues, name="task-queue")
app.add_typer(admin.cluster, name="cluster")


@app.callback()
def options(ctx: typer.Context,
            server: str = typer.Option(None, "--server", "-s", help="server URL (DW_SERVER; default http://127.0.0.1:8080)"),
            namespace: str = typer.Option(None, "--namespace", "-n", help="namespace (DW_NAMESPACE; default 'default')"),
            token: str = typer.Option(None, "--token", help="bearer token (DW_TOKEN)"),
            signature_key: str = typer.Option(None, "--signature-key", help="HMAC signing key (DW_SIGNATURE_KEY)"),
            config: str = typer.Option(None, "--config", help="config file (DW_CONFIG; default ~/.config/dw/config.toml)"),
            profile: str = typer.Option(None, "--profile", help="a [profiles.NAME] section of the config file"),
            output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    if output not in ("table", "json"):
        raise CliError("--output is table or json", EXIT_USAGE)
    flags = {"server": server, "namespace": namespace, "token": token, "signature_key": signature_key}
    try:
        settings: Settings = resolve(flags, config, profile, output)
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    ctx.obj = {"settings": settings}


def main(argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name="dw", standalone_mode=False)
    except CliError as exc:
        render.err.print(f"[red]error:[/red] {exc}")
        return exc.code
    except typer.Abort:
        return 1
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
