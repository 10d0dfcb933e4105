"""Loading apps from a deployment directory (walrep.engine.loader)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.engine.timeunits import Duration
from walrep.errors import EngineError
from walrep.log.frame import Event
from walrep.log.types import Record

REPO = Path(__file__).resolve().parents[2]

APP = """
from walrep.engine.app import App, count
app = App({name!r}{version})
app.stream("S", {{"k": "string"}})
app.aggregation("{name}_n", from_="S", group_by=["k"], aggregates=[count("n")])
"""


def write(folder: Path, file: str, name: str, version: str | None = None) -> str:
    source = APP.format(name=name, version="" if version is None else f", version={version!r}")
    (folder / file).write_text(source)
    return source


def test_loads_sorted_by_name_with_source_versions(tmp_path: Path) -> None:
    source = write(tmp_path, "a_file.py", "zeta")
    write(tmp_path, "b_file.py", "alpha", version="7")
    (tmp_path / "_helpers.py").write_text("raise RuntimeError('not an app')\n")
    (tmp_path / "notes.txt").write_text("ignored")
    apps = load_apps(tmp_path)
    assert [a.name for a in apps] == ["alpha", "zeta"]
    assert apps[0].version == "7"
    assert apps[1].version == hashlib.sha256(source.encode()).hexdigest()[:16]
    assert [a.version for a in load_apps(tmp_path)] == [a.version for a in apps]  # stable


def test_broken_module_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from walrep.engine.app import App\napp = App('x')\napp.stream('S', {'k': 'decimal'})\n"
    )
    with pytest.raises(
        EngineError, match=r"bad\.py failed to load: AppDefinitionError: .*unknown type"
    ):
        load_apps(tmp_path)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text("app = (\n")
    with pytest.raises(EngineError, match=r"typo\.py failed to load: SyntaxError"):
        load_apps(tmp_path)


def test_module_without_app(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(
        EngineError,
        match=r"empty\.py must define a module-level `app = App\(...\)` \(found nothing\)",
    ):
        load_apps(tmp_path)
    (tmp_path / "empty.py").write_text("app = 'not an App'\n")
    with pytest.raises(EngineError, match=r"found str"):
        load_apps(tmp_path)


def test_duplicate_app_names_and_missing_directory(tmp_path: Path) -> None:
    write(tmp_path, "one.py", "same")
    write(tmp_path, "two.py", "same")
    with pytest.raises(EngineError, match=r"'same' is defined twice: in .*one\.py and .*two\.py"):
        load_apps(tmp_path)
    with pytest.raises(EngineError, match="does not exist"):
        load_apps(tmp_path / "nowhere")


def test_the_deployed_apps_load() -> None:
    apps = load_apps(REPO / "conf" / "apps")
    assert "apim_analytics" in [a.name for a in apps]


def test_the_worked_example_of_docs_apps_md(tmp_path: Path) -> None:
    """docs/apps.md's example app, loaded as a module, gives the rows the page shows."""
    page = (REPO / "docs" / "apps.md").read_text()
    source = page.split("```python\n", 1)[1].split("```", 1)[0]
    lines = page.split("```\n{", 1)[1].split("```", 1)[0]
    (tmp_path / "shop.py").write_text(source)
    (app,) = load_apps(tmp_path)
    events = [orjson.loads("{" + lines.split("\n", 1)[0])]
    events += [orjson.loads(line) for line in lines.split("\n")[1:] if line.strip()]
    engine = Engine([app])
    engine.apply([Record(n, 1, 0, Event("Order", e)) for n, e in enumerate(events)])
    agg = engine.aggregation("OrdersPerShop")
    start = 1767225600000
    seconds = agg.rows(Duration.SECONDS, 0, 2**62)
    assert [(r.agg_timestamp_ms, r.key, r.values) for r in seconds] == [
        (start, ("s1",), (2, 42, 1, 2.0, 30, 2, 2, "FR")),
        (start + 1000, ("s1",), (1, 50, 0, 2.0, 50, 1, 1, "NL")),
    ]
    for duration in list(Duration)[1:]:
        (row,) = agg.rows(duration, 0, 2**62)
        assert row.values == (3, 92, 1, 4.0, 50, 2, 3, "NL")
    assert engine.table("LastOrder").rows() == [
        (("ann",), (1767225601200,)),
        (("bob",), (1767225600900,)),
    ]
    assert [c.name for c in agg.schema().columns] == [
        "orders",
        "revenue",
        "expressOrders",
        "AGG_SUM_weight",
        "biggest",
        "customers",
        "AGG_COUNT",
        "country",
    ]
