"""llmctl commands (typer + rich). Each error prints one line and exits non-zero."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from cli.client import ApiError, Client
from cli.context import resolve, save_file
from cli.documents import DocumentError, kind_plural, load
from cli.experiments import register as register_experiments
from cli.finetune import register as register_finetune
from cli.fleet import register as register_fleet
from cli.keys import duration_s
from cli.keys import register as register_keys
from cli.monitor import register as register_monitor
from cli.output import emit
from cli.rag import register as register_rag
from cli.route import register as register_route
from schemas.changes import ApplyAnswer, DiffAnswer, HistoryPage, RestoreAnswer
from schemas.health import Readiness, ServiceStatus, UnreadableStatus
from schemas.listing import ConfigHeads, InvalidStored
from schemas.token import TokenIssued, TokenList

app = typer.Typer(help="Operate the LLM Tuning Service through its REST API.", no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="Manage API tokens (admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")
out = Console()
err = Console(stderr=True)
T = TypeVar("T")

_state: dict[str, str | None] = {"url": None, "token": None}


@app.callback()
def main(
    url: str | None = typer.Option(None, "--url", help="Control plane URL (else LLMCTL_URL, else the config file)."),
    token: str | None = typer.Option(None, "--token", help="API token (else LLMCTL_TOKEN, else the config file)."),
) -> None:
    _state["url"], _state["token"] = url, token


def client() -> Client:
    return Client(resolve(_state["url"], _state["token"]))


def run(fn: Callable[[], T]) -> T:
    """Run a command body, turning known failures into one line on stderr and exit code 1."""
    try:
        return fn()
    except (ApiError, DocumentError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def show_diff(text: str) -> None:
    if text:
        out.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))


def summary(result: ApplyAnswer) -> None:
    verb = "would change" if result.dry_run else "changed"
    if not result.changes:
        out.print(f"no changes (revision {result.revision})")
        return
    for c in result.changes:
        out.print(f"{c.kind}/{c.name} {c.action}{'' if not result.dry_run else ' (dry run)'}")
    out.print(f"{verb} {len(result.changes)} object(s)" + ("" if result.dry_run else f" at revision {result.revision}"))


@app.command()
def apply(
    files: list[Path] = typer.Option(..., "-f", "--filename", help="YAML/JSON file or folder (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff, change nothing."),
    message: str = typer.Option("", "-m", "--message", help="Audit message."),
) -> None:
    """Create or update every object in the files as one revision."""

    def body() -> None:
        docs = load(files)
        answer = client().post("/api/v1/config:apply", {"objects": docs, "dry_run": dry_run, "message": message})
        result = ApplyAnswer.model_validate(answer)
        if dry_run:
            show_diff(result.diff)
        summary(result)

    run(body)


@app.command()
def get(kind: str, name: str, output: str = typer.Option("yaml", "-o", "--output", help="yaml or json")) -> None:
    """Print one object (or, when the store holds one that does not validate, its stored text)."""

    def body() -> None:
        try:
            doc = client().get(f"/api/v1/config/{kind_plural(kind)}/{name}")
        except ApiError as exc:
            stored = exc.problem.get("stored")
            if not isinstance(stored, dict):
                raise
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            err.print(f"what the store holds at {stored['key']} (revision {stored['revision']}):", highlight=False)
            typer.echo(stored["raw"])
            raise typer.Exit(1) from None
        emit(doc, output)

    run(body)


def show_invalid(items: list[InvalidStored]) -> None:
    """Stored objects that do not validate, and how to repair them."""
    if not items:
        return
    table = Table(title="stored objects that do not validate (processes keep their last good value)")
    for col in ("KIND", "NAME", "REVISION", "ERROR"):
        table.add_column(col)
    for bad in items:
        table.add_row(bad.kind, bad.name, str(bad.revision), escape(bad.error))
    out.print(table)
    out.print("repair: 'llmctl apply -f' a valid document or 'llmctl delete KIND NAME'", highlight=False)


#: Objects per listing request: llmctl pages through bigger listings.
PAGE = 500


@app.command("list")
def list_(
    kind: str | None = typer.Argument(None, help="Kind to list (all kinds when omitted)."),
    output: str = typer.Option("table", "-o", "--output", help="table, json or yaml"),
    name: str | None = typer.Option(None, "--name", help="Only names that contain this text."),
    selector: list[str] = typer.Option([], "--selector", "-l", help="label=value: only objects with this label."),
) -> None:
    """List objects."""

    def body() -> None:
        path = f"/api/v1/config/{kind_plural(kind)}" if kind else "/api/v1/config"
        c = client()
        params = {"limit": PAGE, "q": name, "selector": ",".join(selector) or None}
        pages = [c.get(path, **params)]
        while pages[-1].get("next"):
            pages.append(c.get(path, **params, **{"continue": pages[-1]["next"]}))
        if output != "table":
            emit([item for page in pages for item in page["items"]], output)
            return
        heads = [ConfigHeads.model_validate(page) for page in pages]
        table = Table(title=f"revision {heads[0].revision}")
        for col in ("KIND", "NAME", "REVISION", "LABELS"):
            table.add_column(col)
        for item in (item for page in heads for item in page.items):
            labels = ",".join(f"{k}={v}" for k, v in item.metadata.labels.items())
            table.add_row(item.kind, item.metadata.name, str(item.metadata.revision), labels)
        out.print(table)
        show_invalid(heads[0].invalid)

    run(body)


@app.command()
def delete(
    kind: str,
    name: str,
    if_match: int | None = typer.Option(None, "--if-match", help="Only delete if the object is at this revision."),
) -> None:
    """Delete one object."""

    def body() -> None:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        summary(ApplyAnswer.model_validate(client().delete(f"/api/v1/config/{kind_plural(kind)}/{name}", headers=headers)))

    run(body)


@app.command()
def history(
    kind: str | None = typer.Argument(None),
    name: str | None = typer.Argument(None),
    limit: int = typer.Option(20, "--limit"),
    output: str = typer.Option("table", "-o", "--output"),
    epoch: str | None = typer.Option(None, "--epoch", help="A store epoch (default: the current one), or 'all'."),
) -> None:
    """Show the change history (global, per kind or per object) of the store's current epoch;
    kind ``scaling``: the autoscaler's decisions (per model); ``quality``: the quality floor's."""

    def body() -> None:
        plural = kind if kind in (None, "scaling", "quality") else kind_plural(kind)
        page = HistoryPage.model_validate(client().get("/api/v1/history", kind=plural, name=name, limit=limit, epoch=epoch))
        if output != "table":
            emit([r.model_dump(mode="json") for r in page.items], output)
            return
        table = Table()
        for col in ("EPOCH", "REVISION", "TIME", "ACTOR", "ACTION", "OBJECT", "MESSAGE"):
            table.add_column(col)
        for r in page.items:
            when = r.at.isoformat(timespec="seconds")[:19]
            table.add_row(r.epoch, str(r.revision), when, r.actor, r.action, f"{r.kind}/{r.name}", r.message)
        out.print(table)

    run(body)


@app.command()
def diff(
    from_revision: int = typer.Argument(..., metavar="FROM"),
    to_revision: int | None = typer.Argument(None, metavar="[TO]"),
    epoch: str | None = typer.Option(None, "--epoch", help="The store epoch the revisions belong to (default: the current one)."),
) -> None:
    """Diff the configuration between two revisions (TO defaults to now)."""

    def body() -> None:
        revisions = {"from": from_revision, "to": to_revision, "epoch": epoch}
        answer = DiffAnswer.model_validate(client().get("/api/v1/diff", **revisions))
        show_diff(answer.diff) if answer.diff else out.print("no differences")

    run(body)


@app.command()
def rollback(
    revision: int,
    kind: str | None = typer.Argument(None),
    name: str | None = typer.Argument(None),
    dry_run: bool = typer.Option(False, "--dry-run"),
    message: str = typer.Option("", "-m", "--message"),
    epoch: str | None = typer.Option(None, "--epoch", help="The store epoch REVISION belongs to (default: the current one)."),
    force: bool = typer.Option(False, "--force", help="Allow a rollback that deletes most or all objects."),
) -> None:
    """Restore the whole configuration (or one object) as it was at REVISION, as a new revision."""

    def body() -> None:
        request = {
            "revision": revision,
            "kind": kind_plural(kind) if kind else None,
            "name": name,
            "dry_run": dry_run,
            "message": message,
            "epoch": epoch,
            "force": force,
        }
        result = ApplyAnswer.model_validate(client().post("/api/v1/rollback", request))
        if dry_run:
            show_diff(result.diff)
        summary(result)

    run(body)


@app.command()
def restore(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be written back, write nothing."),
    accept_current: bool = typer.Option(
        False, "--accept-current", help="Keep the store as it is (losing what the diff shows) and mark it whole."
    ),
) -> None:
    """Write the audit log's last committed configuration back to a store that lost it (etcd wiped,
    or restored from an older snapshot), as one new revision. Admin only."""

    def body() -> None:
        answer = client().post("/api/v1/restore", {"dry_run": dry_run, "accept_current": accept_current})
        result = RestoreAnswer.model_validate(answer)
        out.print(f"from the audit log: {result.source}", highlight=False)
        if dry_run or accept_current:
            show_diff(result.diff)
        if accept_current:
            verb = "would give up" if dry_run else "gave up"
            out.print(f"{verb} {len(result.changes)} object change(s); the store is kept as it is", highlight=False)
        else:
            summary(result)
        out.print(f"store epoch {result.store.epoch}: {result.store.state}", highlight=False)

    run(body)


@app.command()
def watch(
    kind: str | None = typer.Argument(None),
    count: int | None = typer.Option(None, "--count", help="Exit after this many changes."),
) -> None:
    """Stream configuration changes live."""

    def body() -> None:
        seen = 0
        for event, data in client().events("/api/v1/watch", kind=kind_plural(kind) if kind else None):
            if event == "hello":
                err.print(f"watching from revision {data['revision']}")
            elif event == "resync":
                out.print(f"resync at revision {data['revision']}")
            elif event == "change":
                out.print(f"{data['revision']} {data['type'].upper()} {data['kind']}/{data['name']}", highlight=False)
                seen += 1
                if count is not None and seen >= count:
                    return

    run(body)


@app.command()
def status() -> None:
    """Show the control plane's health, configuration revision and nodes."""

    def body() -> None:
        c = client()
        ready = Readiness.model_validate(c.readiness())
        checks = ", ".join(f"{k}: {v}" for k, v in ready.checks.items())
        out.print(f"control plane {c.url}: {'ready' if ready.ready else 'NOT READY'} ({checks})", highlight=False)
        data = ServiceStatus.model_validate(c.get("/api/v1/status"))
        out.print(f"configuration revision {data.revision}")
        table = Table(title="objects")
        table.add_column("KIND")
        table.add_column("COUNT")
        for kind, count in sorted(data.objects.items()):
            table.add_row(kind, str(count))
        out.print(table)
        show_invalid(data.invalid_objects)
        store = data.store
        if store.state == "behind":
            out.print(
                f"STORE BEHIND THE AUDIT LOG (epoch {store.epoch}): {store.reason}; "
                f"missing {len(store.missing or [])}, older {len(store.differ or [])}, "
                f"back from deletion {len(store.extra or [])} object(s); writes wait. "
                "Run: llmctl restore --dry-run, then llmctl restore",
                style="bold red", highlight=False,
            )
        elif store.held:
            out.print(f"configuration held at the last good revision: {store.held}", style="yellow", highlight=False)
        nodes = Table(title="nodes")
        for col in ("NODE", "OLLAMA", "APPLIED REVISION", "LOADED"):
            nodes.add_column(col)
        for n in data.nodes:
            if isinstance(n, UnreadableStatus):
                nodes.add_row(n.node, "?", "", n.error)
                continue
            loaded = ", ".join(m.name for m in n.loaded_models)
            nodes.add_row(n.node, "up" if n.ollama_reachable else "down", str(n.applied_revision), loaded)
        out.print(nodes if data.nodes else "nodes: none reporting yet")

    run(body)


@app.command()
def login(
    url: str = typer.Option(..., "--url"),
    token_file: str = typer.Option(
        "-", "--token-file", help="Read the token from this file, or from standard input with '-' (the default)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="The token itself (visible to other users in 'ps': prefer --token-file)."
    ),
    router_url: str | None = typer.Option(None, "--router-url", help="The router (default http://127.0.0.1:8701)."),
    router_key_file: Path | None = typer.Option(None, "--router-key-file", help="A file holding an API key for the router."),
) -> None:
    """Save a server URL and token (and the router's URL and API key) as the current context."""
    if token is None:
        try:
            token = (sys.stdin.read() if token_file == "-" else Path(token_file).read_text()).strip()
        except OSError as exc:
            out.print(f"error: cannot read the token: {exc}", style="red")
            raise typer.Exit(2) from exc
    if not token:
        out.print("error: no token given (pipe it in, or --token-file PATH)", style="red")
        raise typer.Exit(2)
    try:
        router_key = router_key_file.read_text().strip() if router_key_file is not None else None
    except OSError as exc:
        out.print(f"error: cannot read the router key: {exc}", style="red")
        raise typer.Exit(2) from exc
    path = save_file(url, token, router_url=router_url, router_key=router_key)
    out.print(f"saved context to {path}")


@token_app.command("create")
def token_create(
    name: str,
    role: str = typer.Option("viewer", "--role", help="viewer, operator or admin"),
    expires_in: str | None = typer.Option(None, "--expires-in", help="Refused after this long (e.g. 90d)."),
    output: str | None = typer.Option(None, "-o", "--output", help="json or yaml: the token object with its secret."),
) -> None:
    """Issue a token (printed once)."""

    def body() -> None:
        request: dict[str, Any] = {"name": name, "role": role}
        if expires_in is not None:
            request["expires_in_s"] = duration_s(expires_in)
        _issued(TokenIssued.model_validate(client().post("/api/v1/tokens", request)), output)

    run(body)


def _issued(token: TokenIssued, output: str | None) -> None:
    if output:
        emit(token.model_dump(mode="json"), output)
        return
    out.print(token.token, highlight=False, soft_wrap=True)
    err.print(f"token {token.id} '{token.name}' ({token.role}, {token.prefix}…); store it now, it is not shown again")


@token_app.command("list")
def token_list(output: str | None = typer.Option(None, "-o", "--output", help="json or yaml")) -> None:
    """List tokens (never their secrets)."""

    def body() -> None:
        tokens = TokenList.model_validate(client().get("/api/v1/tokens"))
        if output:
            emit(tokens.model_dump(mode="json"), output)
            return
        table = Table()
        for col in ("ID", "NAME", "ROLE", "PREFIX", "CREATED", "BY", "EXPIRES", "LAST USED", "REVOKED"):
            table.add_column(col)
        for t in tokens.items:
            when = [d.isoformat()[:19] if d else "-" for d in (t.created_at, t.expires_at, t.last_used_at)]
            table.add_row(str(t.id), t.name, t.role, t.prefix or "-", when[0], t.created_by, when[1], when[2],
                          "yes" if t.revoked else "")  # fmt: skip
        out.print(table)

    run(body)


@token_app.command("rotate")
def token_rotate(
    token_id: int,
    grace: str = typer.Option("1h", "--grace", help="How long the old secret keeps working (0 ends it now)."),
    output: str | None = typer.Option(None, "-o", "--output", help="json or yaml: the token object with its new secret."),
) -> None:
    """A new secret for a token (printed once); the old one works for --grace more."""
    run(lambda: _issued(TokenIssued.model_validate(
        client().post(f"/api/v1/tokens/{token_id}:rotate", {"grace_s": duration_s(grace)})), output))  # fmt: skip


@token_app.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke a token."""
    run(lambda: client().delete(f"/api/v1/tokens/{token_id}"))
    out.print(f"revoked token {token_id}")


register_fleet(app, client, run, out)
register_route(app, lambda: resolve(_state["url"], _state["token"]), run, out)
register_rag(app, client, run, out)
register_monitor(app, client, run, out)
register_experiments(app, client, run, out)
register_finetune(app, client, run, out)
register_keys(app, client, run, out)

if __name__ == "__main__":
    app()
