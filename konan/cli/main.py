"""The `konan` command."""

from __future__ import annotations

import typer

from konan import __version__
from konan.cli import deployments, services
from konan.cli.admin import admin_app
from konan.cli.monitoring import monitoring_app
from konan.cli.registry import datasets_app, login, models_app
from konan.cli.up import up

app = typer.Typer(
    name="konan",
    help="Konan: from a trained model to a secured, monitored prediction API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(up)
app.command()(services.server)
app.command()(services.worker)
app.command()(services.monitor)
app.command()(services.agent)
app.command()(login)
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
for command in (
    deployments.deploy,
    deployments.predict,
    deployments.traffic,
    deployments.promote,
    deployments.rollback,
):
    app.command()(command)
app.add_typer(deployments.deployments_app, name="deployments")
app.add_typer(deployments.keys_app, name="keys")
app.add_typer(admin_app, name="admin")
app.add_typer(monitoring_app, name="monitoring")


@app.command()
def version() -> None:
    """Print Konan's version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
