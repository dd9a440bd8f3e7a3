"""The package's folders are layers: a module imports from its own folder, from the small shared modules at the
package's root, and from folders below its own, never from above (so a folder can be read, and replaced, with
only what lies under it in mind)."""
import ast
from pathlib import Path

import registry_mirror

PACKAGE = Path(registry_mirror.__file__).parent
# lowest first; the root's modules (units, redact, outcomes, bodies, responses, free_space, background) sit below
LAYERS = ["oci", "config", "tls", "stats", "upstream", "storage", "manifests", "routes", "access", "blobs",
          "warming", "expiry", "proxy", "cli", "script"]


def layer(module: str) -> int:
    """-1 for a module at the package's root, else its folder's place in LAYERS."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 else -1


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "registry_mirror":
            if node.module == "registry_mirror":  # from registry_mirror import units
                names.update(f"registry_mirror.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "registry_mirror")
    return names


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def test_every_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(LAYERS)


def test_modules_import_only_from_below():
    upward = [f"{module} imports {name}" for module, path in sorted(modules().items())
              for name in sorted(imported(path)) if layer(name) > layer(module)]
    assert upward == []


def test_the_check_sees_an_upward_import():
    assert layer("registry_mirror.storage.layout") < layer("registry_mirror.blobs.server")
    assert layer("registry_mirror.units") < layer("registry_mirror.oci.schema1")
    assert "registry_mirror.blobs.transfers" in imported(PACKAGE / "blobs" / "spool_writer.py")
