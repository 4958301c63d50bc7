"""``jobcharts dashboard``: serve the web dashboard (``engine.web``) with uvicorn."""

from __future__ import annotations

import ipaddress

import click

from engine.cli.common import app_option, cli, db_option, open_engine
from engine.errors import MissingExtra

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
TOKEN_ENV = "JOBCHARTS_DASHBOARD_TOKEN"  # noqa: S105 (a variable name)


def loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@app_option(required=True)
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"A shared operator token (or ${TOKEN_ENV}): signing in with it enables actions; "
    "the sign-in asks for a name, which the jobs' histories record.",
)
@click.option(
    "--tokens-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Personal operator tokens, one 'name token' per line.",
)
@click.option("--read-only", is_flag=True, help="No actions at all, whoever signs in.")
@click.option(
    "--private",
    is_flag=True,
    help="Pages need a sign-in too (always so on an address beyond localhost).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name the dashboard answers to (repeatable; default: this machine's "
    "loopback names, or any name when --host listens beyond localhost).",
)
def dashboard(
    app: str,
    db: str | None,
    host: str,
    port: int,
    token: str | None,
    tokens_file: str | None,
    read_only: bool,
    private: bool,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve the web dashboard: live charts, job lists, job pages, safe actions."""
    from engine.web import HINT, Access, AccessError, create_app, read_tokens
    from engine.web.access import check_token

    tokens: dict[str, str | None] = {}
    try:
        if tokens_file:
            tokens.update(read_tokens(tokens_file))
        if token:
            check_token(token, "--token")
            tokens[token] = None
    except AccessError as error:
        raise click.UsageError(str(error)) from error
    local = loopback(host)
    if private and not tokens:
        raise click.UsageError("--private with no --token or --tokens-file: nobody could sign in")
    if not local and not tokens:
        raise click.UsageError(
            f"--host {host} listens beyond this machine: give --token or --tokens-file "
            "(every page then needs a sign-in)"
        )
    try:
        import uvicorn
    except ImportError as error:
        raise MissingExtra(HINT) from error
    engine = open_engine(app, db, existing=True)
    access = Access(tokens=tokens, read_only=read_only, private=private or not local)
    hosts = list(allowed_hosts) or ([*LOOPBACK_NAMES, host] if local else ["*"])
    web = create_app(engine, access=access, allowed_hosts=hosts)
    mode = "read-only" if read_only or not tokens else "actions need a sign-in"
    click.echo(f"jobcharts dashboard on http://{host}:{port}/ ({mode}); Ctrl-C stops it", err=True)
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
