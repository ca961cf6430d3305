"""`docthink serve` in headless Chromium: the leaderboard sorts and filters, run pages show
lineage, recipe and notes, search finds runs; markup from the registry is text (no dialog
opens); only GET routes; bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from docthink.registry.leaderboard import build_leaderboard
from docthink.runs.registry import Registry
from tests.registry.conftest import XSS, XSS_IMG, free_port, serving
from tests.registry.history import RunSpec, history, record

pytest.importorskip("fastapi", reason="the web UI needs the 'web' extra (fastapi, jinja2, uvicorn)")


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    registry: Path
    runs: list[RunSpec]


def _hostile(path: Path) -> list[RunSpec]:
    runs = history(3, seed=7)
    for run in runs[10:20]:
        if run.kind == "train":
            run.recipe["model"] = XSS
        run.recipe = json.loads(json.dumps(run.recipe).replace(
            "/ckpt/m000001", "/ckpt/m000001" + XSS_IMG.replace('"', '\\"')))
        run.artifacts = [replace(a, path=a.path.replace("/ckpt/m000001", "/ckpt/m000001" + XSS_IMG))
                         for a in run.artifacts]
    runs[10].notes.append(f"evidence prompt {XSS} broke {XSS_IMG}")
    with Registry(path) as registry:
        record(registry, runs)
    return runs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real command, with its default host."""
    path = tmp_path_factory.mktemp("web") / "registry.sqlite"
    runs = _hostile(path)
    port = free_port()
    with serving(path, port) as url:
        yield Server(url, port, path, runs)


def _listening(port: int) -> list[str]:
    """Local addresses listening on `port` (IPv4 and IPv6), read from /proc/net."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_binds_only_loopback_by_default(server: Server) -> None:
    assert _listening(server.port) == ["0100007F"]  # 127.0.0.1, and nothing on 0.0.0.0 or ::


def test_only_get_routes(server: Server) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(server.url + "/runs", method=method, data=b"")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.url + "/runs/no-such-run", timeout=10)
    assert missing.value.code == 404


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_the_leaderboard_is_at_both_addresses(server: Server, tmp_path: Path) -> None:
    board = _body(server.url + "/")
    assert '<table id="board"' in board and _body(server.url + "/leaderboard") == board
    # an empty registry's board says what fills it
    empty = tmp_path / "empty.sqlite"
    Registry(empty).close()
    with serving(empty, free_port()) as url:
        page = _body(url + "/leaderboard")
    assert '<p id="empty">No checkpoints yet: a row is a model scored by `docthink eval run`' in page


def _texts(page: object, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.textContent.trim())")  # type: ignore[attr-defined]


def test_leaderboard_sorts_filters_and_links_lineage(server: Server, page: object) -> None:
    with Registry(server.registry) as registry:
        board = build_leaderboard(registry)
    page.goto(server.url + "/")  # type: ignore[attr-defined]
    headers = _texts(page, "#board thead th")
    checkpoint = headers.index("checkpoint")
    cells = f"#board tbody tr:not([hidden]) td:nth-child({checkpoint + 1})"
    assert _texts(page, cells) == [r.checkpoint for r in board.rows]  # ranked order
    assert sum(XSS_IMG in c for c in _texts(page, cells)) == 3
    assert page.locator("#board img").count() == 0  # type: ignore[attr-defined]
    col = headers.index("mmlongbench-doc tokens <cot>")
    page.click(f"#board thead th:nth-child({col + 1})")  # type: ignore[attr-defined]
    tokens = [float(t) for t in _texts(page, f"#board tbody tr td:nth-child({col + 1})")]
    assert tokens == sorted(tokens)
    base = next(r.recipe["base model"] for r in board.rows if r.recipe["base model"] != XSS)
    page.fill("input[data-filter=board]", base)  # type: ignore[attr-defined]
    shown = _texts(page, cells)
    assert shown and len(shown) == sum(base in r.recipe["base model"] for r in board.rows)
    # a row's lineage link opens the eval run's page at its lineage
    page.click("#board tbody tr:not([hidden]) td:last-child a")  # type: ignore[attr-defined]
    page.wait_for_url("**/runs/**#lineage")  # type: ignore[attr-defined]
    kinds = _texts(page, "#lineage ~ ul.tree li")
    assert any("merge" in k for k in kinds) and any("synth" in k for k in kinds)


def test_run_page_shows_recipe_notes_and_lineage_as_text(server: Server, page: object) -> None:
    synth = server.runs[10]
    page.goto(f"{server.url}/runs/{synth.id}")  # type: ignore[attr-defined]
    assert f"evidence prompt {XSS} broke {XSS_IMG}" in _texts(page, "p.note")[-1]
    recipe = dict(zip(_texts(page, "#recipe-table td:first-child"),
                      _texts(page, "#recipe-table td:last-child"), strict=True))
    assert recipe["trace.top_k"] == str(synth.recipe["trace"]["top_k"])  # type: ignore[index]
    # descendants: its export, and from there on to the evals; click through to the export
    page.click(f"a.id:text-is('{server.runs[11].id}')")  # type: ignore[attr-defined]
    page.wait_for_url(f"**/runs/{server.runs[11].id}")  # type: ignore[attr-defined]
    assert "export run" in page.text_content("h1")  # type: ignore[attr-defined]
    train = server.runs[12]
    page.goto(f"{server.url}/runs/{train.id}")  # type: ignore[attr-defined]
    assert XSS in recipe_value(page, "model")


def recipe_value(page: object, key: str) -> str:
    recipe = dict(zip(_texts(page, "#recipe-table td:first-child"),
                      _texts(page, "#recipe-table td:last-child"), strict=True))
    return recipe[key]


def test_search_box_finds_runs_and_shows_markup_as_text(server: Server, page: object) -> None:
    page.goto(server.url + "/runs")  # type: ignore[attr-defined]
    page.fill("nav input[name=q]", "evidence prompt broke")  # type: ignore[attr-defined]
    page.press("nav input[name=q]", "Enter")  # type: ignore[attr-defined]
    page.wait_for_url("**/search?q=*")  # type: ignore[attr-defined]
    first = page.locator("#hits li").first  # type: ignore[attr-defined]
    assert first.locator("a.id").text_content() == server.runs[10].id
    assert first.locator(".source").text_content() == "note"
    assert XSS in first.locator(".snippet").text_content()
    assert first.locator(".snippet mark").count() >= 2  # matched words highlighted
    # a paraphrase, found by meaning (when the embedding model is installed)
    query = "the grader replied in the wrong language"
    page.goto(f"{server.url}/search?q={urllib.request.quote(query)}")  # type: ignore[attr-defined]
    if page.locator("#notice").count():  # type: ignore[attr-defined]
        assert "full-text" in page.text_content("#notice")  # type: ignore[attr-defined]
    else:
        notes = [r.id for r in server.runs if any("Chinese" in n for n in r.notes)]
        assert notes == [] or _texts(page, "#hits li a.id")[0] in notes
    # the source filter
    page.goto(f"{server.url}/search?q=merge&source=run")  # type: ignore[attr-defined]
    assert set(_texts(page, "#hits .source")) == {"run"}
