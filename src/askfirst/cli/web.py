"""Commands for the web app: serve it, build and serve the demo, and the accounts and
API tokens it signs people and services in with."""

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from askfirst import config
from askfirst.cli.common import (
    DB_DEFAULT,
    Db,
    KeyDir,
    PolicyFile,
    err,
    handles_errors,
    ledger_from,
    out,
)
from askfirst.errors import InputError

if TYPE_CHECKING:
    from askfirst.web.app import WebSettings

staff_app = typer.Typer(help="Staff accounts for the admin area.", no_args_is_help=True)
accounts_app = typer.Typer(help="Members' local sign-in accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for services.", no_args_is_help=True)

SecureCookies = Annotated[
    bool,
    typer.Option(
        config.SECURE_COOKIES.option,
        envvar=config.SECURE_COOKIES.env,
        help=config.SECURE_COOKIES.help,
    ),
]
Host = Annotated[str, typer.Option(help="Address to listen on.")]
# askfirst.accounts.SCOPES, written out: importing the accounts (and the ledger) to write
# --help would slow every command (tests/test_startup.py checks they agree).
SCOPES = ("decisions:read", "choices:write", "admin")
Port = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]


def _serve(settings: "WebSettings", host: str, port: int) -> None:
    import uvicorn

    from askfirst.web import create_app

    settings = dataclasses.replace(settings, send_notices=True)
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level="warning", server_header=False
    )


@handles_errors
def serve(
    db: Db = DB_DEFAULT,
    policy: PolicyFile = None,
    key_dir: KeyDir = Path(config.KEY_DIR.default or ""),
    secure_cookies: SecureCookies = True,
    host: Host = "127.0.0.1",
    port: Port = 8000,
) -> None:
    """Serve the web app (pages, staff console and /v1 API) on an existing ledger."""
    from askfirst.web.app import WebSettings

    settings = WebSettings(db, key_dir, policy, secure_cookies)
    out.print(f"askfirst on http://{host}:{port} (ledger {db})", markup=False)
    _serve(settings, host, port)


@handles_errors
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo platform.")] = Path(
        "askfirst-demo"
    ),
    port: Port = 8000,
    host: Host = "127.0.0.1",
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Build the demo and stop; do not serve it.")
    ] = False,
) -> None:
    """Build (or reuse) the demo platform in --dir, then serve it."""
    from askfirst import demo as demo_platform

    built = demo_platform.build(dir)
    base = f"http://{host}:{port}"
    demo_platform.summary(built, out.console, base)
    if no_serve:
        return
    if not no_open:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, [f"{base}/signin"]).start()
    from askfirst.web.app import WebSettings

    _serve(WebSettings(built.url, built.key_dir), host, port)


# ---- accounts, staff, tokens ------------------------------------------------------------


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Again", hide_input=True) != first:
        raise InputError("the two passwords differ")
    return str(first)


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@staff_app.command("create")
@handles_errors
def staff_create(
    username: Annotated[str, typer.Argument(help="The staff member's sign-in name.")],
    role: Annotated[
        str,
        typer.Option(
            help="reviewer (cases), policy-editor (notices and policy), auditor (reads "
            "everything, changes nothing) or admin (manages staff; records for subjects, "
            "models and tasks)."
        ),
    ],
    password_stdin: PasswordStdin = False,
    db: Db = DB_DEFAULT,
) -> None:
    """Create a staff account for the admin area, in one role."""
    from askfirst import accounts

    with ledger_from(db, None) as ledger:
        account = accounts.create_account(
            ledger, username, _password(password_stdin), kind="staff", role=role
        )
    out.print(f"staff account {account.username!r} ({account.role}) created", markup=False)


@accounts_app.command("create")
@handles_errors
def accounts_create(
    username: Annotated[str, typer.Argument(help="The member's sign-in name.")],
    subject: Annotated[str, typer.Option(help="The member's subject id.")],
    password_stdin: PasswordStdin = False,
    db: Db = DB_DEFAULT,
) -> None:
    """Create a member's local sign-in account (embedded mode)."""
    from askfirst import accounts

    with ledger_from(db, None) as ledger:
        account = accounts.create_account(
            ledger, username, _password(password_stdin), kind="member", subject=subject
        )
    out.print(f"member account {account.username!r} created for {subject}", markup=False)


@accounts_app.command("password")
@handles_errors
def accounts_password(
    username: Annotated[str, typer.Argument(help="The account's sign-in name.")],
    password_stdin: PasswordStdin = False,
    db: Db = DB_DEFAULT,
) -> None:
    """Set a new password for a member or staff account; every session it has ends."""
    from askfirst import accounts

    with ledger_from(db, None) as ledger:
        account = accounts.change_password(ledger, username, _password(password_stdin))
    out.print(f"password of {account.username!r} changed; its sessions have ended", markup=False)


@tokens_app.command("create")
@handles_errors
def tokens_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. the service's.")],
    scope: Annotated[list[str], typer.Option(help=f"Repeat for more: {', '.join(SCOPES)}.")],
    subject: Annotated[
        str | None, typer.Option(help="Bind the token to one subject; needed for choices:write.")
    ] = None,
    staff: Annotated[
        str | None,
        typer.Option(
            help="A staff member's own token: it acts as them, in their role (and the ledger "
            "names them for what it records)."
        ),
    ] = None,
    db: Db = DB_DEFAULT,
) -> None:
    """Create an API token. Its secret is printed once and stored only as a hash."""
    from askfirst import accounts

    with ledger_from(db, None) as ledger:
        token, secret = accounts.create_token(ledger, name, scope, subject=subject, staff=staff)
    err.print(
        f"token {token.name!r} ({' '.join(sorted(token.scopes))}) created; keep the "
        "secret below, it is not shown again",
        markup=False,
    )
    sys.stdout.write(secret + "\n")


@tokens_app.command("revoke")
@handles_errors
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    db: Db = DB_DEFAULT,
) -> None:
    """Revoke an API token at once."""
    from askfirst import accounts

    with ledger_from(db, None) as ledger:
        accounts.revoke_token(ledger, name)
    out.print(f"token {name!r} revoked", markup=False)
