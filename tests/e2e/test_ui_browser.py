"""The web UI in a real browser (Debian's chromium, driven by Playwright for Python) against the
whole local product: a control plane serving the built UI, the router, two simulated Ollama nodes
with their agents, Redis and the fine-tuning worker. Each test asserts on what a person sees, fails
on any console error or failed request, and saves a screenshot of every screen it visits."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect, sync_playwright

from tests.conftest import REQUIRE_SERVICES
from tests.fixtures.stack import ROOT, Stack, run_stack, stack_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUILT = ROOT / "web" / "dist" / "index.html"
#: Chromium as root on a machine without a network beyond loopback: no sandbox, no background traffic.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "no chromium here (apt-get install chromium)"
    if not BUILT.exists():
        return "the web UI is not built (make ui)"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = _missing()
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(missing)
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("ui-stack")
    env = stack_env(folder)
    started = run_stack("up", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        stack = Stack.read(folder, env)
        docs = [d for f in ("models.yaml", "routes.yaml") for d in yaml.safe_load_all((ROOT / "deploy/examples" / f).read_text())]
        applied = httpx.post(f"{stack.api}/api/v1/config:apply", json={"objects": docs}, headers=stack.auth, timeout=30)
        assert applied.status_code == 200, applied.text
        assert [n["node"] for n in stack.wait_for_nodes(2)] == ["sim-0", "sim-1"]
        yield stack
    finally:
        run_stack("down", env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Watch:
    """Console errors, page errors, failed requests and error answers the test did not expect."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.allowed: set[tuple[str, int]] = set()  # (path pattern, status) a test provokes on purpose
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(str(s) in message.text for _p, s in self.allowed):
            self.problems.append(f"console error: {message.text}")

    def _failed(self, request: Request) -> None:
        if request.failure != "net::ERR_ABORTED":  # a stream the page closed on leaving a screen
            self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        path = re.sub(r"^https?://[^/]+", "", response.url)
        if response.status >= 400 and not any(re.search(p, path) and s == response.status for p, s in self.allowed):
            self.problems.append(f"{response.status} from {response.request.method} {path}")

    def allow(self, path_pattern: str, status: int) -> None:
        self.allowed.add((path_pattern, status))


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=stack.api)
    page = context.new_page()
    watch = Watch(page)
    page.watch = watch  # type: ignore[attr-defined]
    yield page
    context.close()
    assert watch.problems == [], watch.problems


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each screen's screenshot goes: ui-screens/ in pytest's folder for this run."""
    folder = tmp_path_factory.getbasetemp() / "ui-screens"
    folder.mkdir(exist_ok=True)
    return folder


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sign_in(page: Page, stack: Stack) -> None:
    page.goto("/ui/")
    page.get_by_label("API token").fill(stack.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()


def test_sign_in_and_see_both_nodes(page: Page, stack: Stack, screens: Path) -> None:
    page.goto("/ui/")
    page.get_by_label("API token").fill("llmt_wrong")
    page.watch.allow(r"^/api/v1/status$", 401)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(re.compile("401 Unauthorized"))).to_be_visible()
    sign_in(page, stack)
    expect(page.get_by_test_id("node-count")).to_have_text("2 nodes, 2 ready")
    rows = page.get_by_test_id("nodes").locator("tbody tr")
    expect(rows).to_have_count(2)
    for node in ("sim-0", "sim-1"):
        row = page.locator(f"tr[data-node='{node}']")
        expect(row.get_by_text("ready", exact=True)).to_be_visible()
        expect(row.get_by_text("0.12.6")).to_be_visible()
        expect(row.get_by_text("llama3.1:8b")).to_be_visible()
    expect(page.get_by_test_id("revision")).to_have_text(re.compile(r"revision \d+"))
    expect(page.get_by_test_id("refreshed")).to_have_text(re.compile("refreshed"))
    shot(page, screens, "fleet")
    page.reload()  # the token stays for the tab (session storage)
    expect(page.get_by_test_id("node-count")).to_have_text("2 nodes, 2 ready")


def test_tune_a_model_and_watch_both_nodes_confirm(page: Page, stack: Stack, screens: Path) -> None:
    sign_in(page, stack)
    page.get_by_role("link", name="Models").click()
    card = page.locator("[data-model='llama3.1-8b']")
    expect(card.get_by_text("2/2 ready")).to_be_visible()
    card.get_by_role("button", name="Tune").click()
    form = page.get_by_test_id("tune-llama3.1-8b")
    form.get_by_label("temperature").fill("0.3")
    form.get_by_label("seed").fill("11")
    form.get_by_role("button", name="Apply to every node and wait").click()
    result = page.get_by_test_id("tune-result")
    expect(result).to_contain_text("every node applied it", timeout=30_000)
    expect(result.get_by_text("applied", exact=True)).to_have_count(2)
    expect(result.get_by_text("sim-0")).to_be_visible()
    expect(result.get_by_text("sim-1")).to_be_visible()
    shot(page, screens, "models")
    doc = httpx.get(f"{stack.api}/api/v1/config/models/llama3.1-8b", headers=stack.auth).json()
    assert doc["spec"]["options"]["temperature"] == 0.3 and doc["spec"]["options"]["seed"] == 11


def route_doc(stack: Stack, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{stack.api}/api/v1/config/routes/{name}", headers=stack.auth).json()
    return doc


def replace_editor_text(page: Page, text: str) -> None:
    """Select all in the YAML editor and insert the text as typed by a paste (no auto-indent)."""
    page.locator(".cm-content").first.click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def test_edit_a_route_in_yaml_save_hit_a_conflict_and_roll_back(page: Page, stack: Stack, screens: Path) -> None:
    sign_in(page, stack)
    page.get_by_role("link", name="Configuration").click()
    page.get_by_text("Routes", exact=True).click()
    expect(page.get_by_test_id("config-list").get_by_role("link", name="default-chat")).to_be_visible()
    shot(page, screens, "configuration")
    page.get_by_test_id("config-list").get_by_role("link", name="default-chat").click()
    expect(page.get_by_test_id("schema-check")).to_have_text(re.compile("valid against the Route schema"))
    shot(page, screens, "configuration-edit")

    start = route_doc(stack, "default-chat")
    mine = {k: v for k, v in start.items()}
    mine["metadata"] = {k: v for k, v in start["metadata"].items() if k != "revision"}
    mine["spec"] = {**start["spec"], "sticky_key": "header:x-team"}
    replace_editor_text(page, yaml.safe_dump({**mine, "spec": {**mine["spec"], "colour": "red"}}, sort_keys=False))
    expect(page.get_by_test_id("schema-check")).to_have_text(re.compile(r"spec\.colour: not a field here"))
    expect(page.get_by_role("button", name="Review changes")).to_be_disabled()  # the schema check holds it back
    replace_editor_text(page, yaml.safe_dump(mine, sort_keys=False))
    page.get_by_role("button", name="Review changes").click()
    diff = page.get_by_test_id("diff")
    expect(diff).to_contain_text("header:x-team")
    shot(page, screens, "configuration-diff")
    page.get_by_role("button", name=re.compile(r"Save \(If-Match revision \d+\)")).click()
    expect(page.get_by_text(re.compile(r"Saved routes/default-chat at revision \d+"))).to_be_visible()
    saved = route_doc(stack, "default-chat")
    assert saved["spec"]["sticky_key"] == "header:x-team" and saved["metadata"]["revision"] > start["metadata"]["revision"]

    # someone else changes the route meanwhile: the next save from the page is a 409 that shows them
    theirs = {**mine, "spec": {**mine["spec"], "fallbacks": []}}
    other = httpx.put(f"{stack.api}/api/v1/config/routes/default-chat", json=theirs, headers=stack.auth)
    assert other.status_code == 200, other.text
    replace_editor_text(page, yaml.safe_dump({**mine, "spec": {**mine["spec"], "sticky_key": "header:x-user"}}, sort_keys=False))
    page.get_by_role("button", name="Review changes").click()
    page.watch.allow(r"^/api/v1/config/routes/default-chat$", 409)  # type: ignore[attr-defined]
    page.get_by_role("button", name=re.compile(r"Save \(If-Match")).click()
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_contain_text(f"at revision {other.json()['metadata']['revision']}")
    expect(conflict).to_contain_text("Nothing of yours was saved")
    shot(page, screens, "configuration-conflict")
    assert route_doc(stack, "default-chat")["spec"]["sticky_key"] == "header:x-team"  # the 409 wrote nothing
    page.get_by_role("button", name="Discard mine, load theirs").click()
    expect(page.get_by_test_id("conflict")).to_have_count(0)

    # History: the two changes, newest first; undo the other writer's change (a dry-run diff first)
    page.get_by_role("link", name="History").click()
    page.get_by_label("filter by object").fill("routes/default-chat")
    rows = page.get_by_test_id("history").locator("tbody tr[data-change]")
    expect(rows).to_have_count(3)  # created, saved from the page, changed by the other writer
    expect(rows.first).to_have_attribute("data-change", f"routes/default-chat@{other.json()['metadata']['revision']}")
    rows.first.get_by_role("button", name="Diff").click()
    expect(page.get_by_test_id("history").locator(".cm-mergeView")).to_be_visible()
    shot(page, screens, "history")
    rows.first.get_by_role("button", name="Undo this object").click()
    expect(page.get_by_test_id("rollback-summary")).to_have_text("update routes/default-chat")
    expect(page.get_by_test_id("rollback-diff")).to_contain_text("fallbacks")
    page.get_by_role("button", name="Roll back", exact=True).click()
    expect(page.get_by_text(re.compile(r"Rolled back: 1 object\(s\) at revision \d+"))).to_be_visible()
    assert route_doc(stack, "default-chat")["spec"]["fallbacks"] == saved["spec"]["fallbacks"]


def test_key_playground_traffic_and_revocation(page: Page, stack: Stack, screens: Path) -> None:
    sign_in(page, stack)
    page.get_by_role("link", name="Keys and tokens").click()
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("ui-key")
    dialog.get_by_label("Tenant").fill("ui-team")
    dialog.get_by_label("Requests per minute").fill("600")
    dialog.get_by_role("button", name="Create").click()
    secret = page.get_by_test_id("secret").inner_text().strip()
    assert secret.startswith("llmk_")
    shot(page, screens, "keys-secret")
    page.get_by_role("button", name="I have stored it").click()
    row = page.locator("tr[data-key='ui-key']")
    expect(row).to_contain_text("ui-team")
    expect(row).to_contain_text("600 / ∞ / ∞")
    shot(page, screens, "keys")

    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Router API key").fill(secret)
    page.get_by_role("combobox", name="Model (an alias, Model name or tag)").fill("chat")
    page.get_by_label("Compare side by side with").check()
    page.get_by_role("combobox", name="second model").fill("qwen2.5-coder-7b")
    page.get_by_role("button", name="Send").click()
    first, second = page.get_by_test_id("answer-0"), page.get_by_test_id("answer-1")
    expect(first.get_by_test_id("decision")).to_contain_text("default-chat")
    expect(first.get_by_test_id("decision")).to_contain_text(re.compile(r"sim-[01]"))
    expect(first.get_by_test_id("decision")).to_contain_text(re.compile(r"\d+ tokens"), timeout=20_000)
    expect(first.get_by_test_id("answer-text")).not_to_be_empty()
    expect(second.get_by_test_id("decision")).to_contain_text("qwen2.5-coder-7b")
    expect(second.get_by_test_id("decision")).to_contain_text(re.compile(r"\d+ tokens"), timeout=20_000)
    shot(page, screens, "playground")

    page.get_by_role("link", name="Traffic").click()
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    expect(page.get_by_test_id("fleet-figures")).to_contain_text(re.compile(r"requests \(last 15m\)\s*[1-9]"), timeout=30_000)
    expect(page.get_by_test_id("traffic-models").locator("tr[data-model='qwen2.5-coder-7b']")).to_be_visible()
    expect(page.get_by_test_id("usage").locator("tr[data-group='ui-key']")).to_contain_text("2", timeout=20_000)
    expect(page.get_by_test_id("chart-latency").locator("svg .recharts-bar-rectangle").first).to_be_visible()
    shot(page, screens, "traffic")

    page.get_by_role("link", name="Keys and tokens").click()
    page.locator("tr[data-key='ui-key']").get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("Revoked key ui-key")).to_be_visible()
    page.get_by_role("link", name="Playground").click()  # the key is still in the tab's session storage
    page.get_by_label("Compare side by side with").uncheck()
    page.watch.allow(r"^/api/v1/playground/chat$", 401)  # type: ignore[attr-defined]
    deadline = 10
    for _ in range(deadline):  # the routers drop a revoked key within a second
        page.get_by_role("button", name="Send").click()
        error = page.get_by_test_id("answer-0").get_by_test_id("chat-error")
        try:
            expect(error).to_contain_text("401", timeout=3000)
            break
        except AssertionError:
            continue
    expect(page.get_by_test_id("chat-error")).to_contain_text("Refused by the router")
    expect(page.get_by_role("link", name="Playground")).to_be_visible()  # still signed in: a router 401 is not the session's
    shot(page, screens, "playground-revoked")


def choose(page: Page, label: str, option: str, scope: Page | Any = None) -> None:
    """Pick ``option`` in the Mantine select labelled ``label``."""
    (scope or page).get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_start_an_experiment_and_watch_its_results(page: Page, stack: Stack, screens: Path) -> None:
    sign_in(page, stack)
    page.get_by_role("link", name="Experiments").click()
    page.get_by_role("button", name="New experiment").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("ui-ab")
    choose(page, "Route", "default-chat", dialog)
    models = dialog.get_by_role("combobox", name="Model", exact=True)
    models.nth(0).click()
    page.get_by_role("option", name="llama3.1-8b", exact=True).click()
    models.nth(1).click()
    page.get_by_role("option", name="qwen2.5-coder-7b", exact=True).click()
    dialog.get_by_role("button", name="Start").click()
    expect(page.get_by_text(re.compile(r"Started ui-ab on route default-chat at revision \d+"))).to_be_visible()
    results = page.get_by_test_id("experiment-results")
    expect(results.get_by_test_id("variants")).to_be_visible()

    key = {"Authorization": f"Bearer {stack.router_key}"}
    for i in range(8):  # traffic on the route: the results follow it
        chat = {"model": "chat", "messages": [{"role": "user", "content": f"hi {i}"}], "options": {"num_predict": 4}}
        chat["stream"] = False
        answer = httpx.post(f"{stack.router}/api/chat", headers=key, timeout=30, json=chat)
        assert answer.status_code == 200, answer.text

    def total() -> int:
        return sum(int(results.get_by_test_id(f"requests-{v}").inner_text() or 0) for v in ("a", "b"))

    deadline = time.monotonic() + 30
    while total() < 8 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert total() == 8
    expect(results.get_by_test_id("verdicts")).to_contain_text("a")
    shot(page, screens, "experiments")
    results.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"Stopped ui-ab at revision \d+"))).to_be_visible()
    expect(page.get_by_test_id("experiments").locator("tr", has_text="ui-ab")).to_contain_text("stopped")


def test_submit_a_fine_tune_and_follow_its_log_to_success(page: Page, stack: Stack, screens: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "support.jsonl"
    dataset.write_text("".join(f'{{"prompt": "How do I reset my password {i}?", "response": "Open Settings, then Security."}}\n'
                               for i in range(6)))  # fmt: skip
    sign_in(page, stack)
    page.get_by_role("link", name="Fine-tuning").click()
    page.get_by_role("button", name="Submit a job").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[type=file]").set_input_files(str(dataset))
    choose(page, "Base model", "llama3.1-8b", dialog)
    dialog.get_by_label("Output model (a new Model object)").fill("ui-tuned")
    dialog.get_by_role("button", name="Submit").click()
    expect(page.get_by_text(re.compile(r"Job .+ queued \(6 rows\)"))).to_be_visible()
    detail = page.get_by_test_id("job-detail")
    expect(detail.get_by_test_id("job-state")).to_have_text("succeeded", timeout=60_000)
    expect(detail.get_by_test_id("job-log")).not_to_be_empty()
    expect(detail).to_contain_text(re.compile(r"Model ui-tuned registered at revision \d+"))
    expect(page.get_by_role("dialog")).to_have_count(0)
    shot(page, screens, "fine-tuning")
    assert httpx.get(f"{stack.api}/api/v1/config/models/ui-tuned", headers=stack.auth).status_code == 200


def test_rag_ingest_a_file_and_query_it(page: Page, stack: Stack, screens: Path, tmp_path: Path) -> None:
    examples = yaml.safe_load_all((ROOT / "deploy/examples/rag.yaml").read_text())
    docs = [d for d in examples if d["metadata"]["name"] != "support-kb"]  # the handbook: embedded in the control plane
    assert httpx.post(f"{stack.api}/api/v1/config:apply", json={"objects": docs}, headers=stack.auth).status_code == 200
    notes = tmp_path / "coffee.md"
    notes.write_text("# Office\n\nThe coffee machine is descaled every Friday by the facilities team.\n")
    sign_in(page, stack)
    page.get_by_role("link", name="RAG").click()
    page.locator("input[type=file]").set_input_files(str(notes))
    page.get_by_role("button", name="Ingest").click()
    expect(page.get_by_test_id("ingest-result")).to_contain_text("1 ingested", timeout=60_000)
    expect(page.get_by_test_id("rag-docs").locator("tr[data-doc='coffee.md']")).to_be_visible()
    page.get_by_label("Question").fill("when is the espresso maker cleaned?")
    page.get_by_role("button", name="Ask").click()
    sources = page.get_by_test_id("rag-sources")
    expect(sources.locator("tbody tr").first).to_contain_text("coffee.md")
    shot(page, screens, "rag")


SCREEN_PATHS = ["/ui/", "/ui/models", "/ui/config/models", "/ui/history", "/ui/experiments", "/ui/fine-tuning", "/ui/traffic",
                "/ui/keys", "/ui/playground", "/ui/rag"]  # fmt: skip


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["laptop", "wide"])
def test_every_screen_fits_the_window_shows_its_revision_and_focus(
    browser: Browser, stack: Stack, screens: Path, size: tuple[int, int]
) -> None:
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, base_url=stack.api)
    page = context.new_page()
    watch = Watch(page)
    try:
        sign_in(page, stack)
        for path in SCREEN_PATHS:
            page.goto(path)
            expect(page.get_by_test_id("revision").first).to_have_text(re.compile(r"revision \d+"))
            expect(page.get_by_test_id("refreshed").first).to_have_text(re.compile("refreshed"))
            sideways = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert sideways <= 0, f"{path} scrolls sideways by {sideways} px at {size[0]}x{size[1]}"
        shot(page, screens, f"playground-{size[0]}")
        page.goto("/ui/")
        page.locator("body").click(position={"x": 5, "y": size[1] - 5})
        for _ in range(4):  # keyboard only: the focused element draws a visible ring
            page.keyboard.press("Tab")
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), page.evaluate("document.activeElement.outerHTML.slice(0, 200)")
    finally:
        context.close()
    assert watch.problems == [], watch.problems
