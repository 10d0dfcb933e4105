"""Loading the apps of a deployment directory (``conf/apps/`` by default).

Every ``*.py`` file of the directory (not its subdirectories; names starting with ``_``
are skipped, for helpers) is a module that defines a module-level ``app`` (an
``App``). Files are loaded in sorted name order, from their path with ``importlib``,
under the module name ``walrep_apps.<file stem>``, so both nodes load the same source
the same way. An app without an explicit ``version=`` gets the first 16 hex digits of
the sha256 of its module's source bytes: any edit makes a new version, which a snapshot
of the old one refuses (``Engine.restore``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Final

from walrep.engine.app import App
from walrep.errors import EngineError

MODULE_PREFIX: Final = "walrep_apps"
DEFAULT_DIRECTORY: Final = Path("conf/apps")


def source_version(source: bytes) -> str:
    """The version of an app module without ``version=``: sha256 of its source, 16 hex."""
    return hashlib.sha256(source).hexdigest()[:16]


def load_app(path: Path) -> App:
    """The ``app`` of one module file; ``EngineError`` naming the file on any failure."""
    try:
        source = path.read_bytes()
    except OSError as e:
        raise EngineError(f"app module {path}: cannot read it: {e}") from e
    name = f"{MODULE_PREFIX}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EngineError(f"app module {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and the like look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # any error in app code: name the file, keep the cause
        sys.modules.pop(name, None)
        raise EngineError(f"app module {path} failed to load: {type(e).__name__}: {e}") from e
    app = getattr(module, "app", None)
    if not isinstance(app, App):
        sys.modules.pop(name, None)
        found = "nothing" if app is None else type(app).__name__
        raise EngineError(
            f"app module {path} must define a module-level `app = App(...)` (found {found})"
        )
    app.source_version = source_version(source)
    return app


def load_apps(directory: Path | str = DEFAULT_DIRECTORY) -> list[App]:
    """The apps of ``directory``, sorted by app name (see the module docstring)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise EngineError(f"app directory {folder} does not exist or is not a directory")
    apps: list[App] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        app = load_app(path)
        if app.name in seen:
            raise EngineError(f"app {app.name!r} is defined twice: in {seen[app.name]} and {path}")
        seen[app.name] = path
        apps.append(app)
    return sorted(apps, key=lambda a: a.name)
