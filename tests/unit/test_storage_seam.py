"""Every path into the registry's storage is built in storage/ (storage/layout.py knows the layout), so that a
second storage backend replaces one folder: outside it, no module joins a path onto `mirror.storage` (a name or
attribute called storage or root, the left of a `/` or a `+`) or imports the layout's V2 folder."""
import ast
import re

from .test_layers import modules

STORAGE_NAME = re.compile(r"\bstorage\b|\broot\b|\.storage\b")
# the tag state's default file, `<mirror.storage>.tags.json`: a configuration default, and config/ lies below storage/
ALLOWED = {("registry_mirror.config.load", "storage.rstrip('/') + '.tags.json'")}


def joins_onto_storage(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Add)):
            left = node.left
            while isinstance(left, ast.BinOp):
                left = left.left
            if not isinstance(left, (ast.Constant, ast.JoinedStr)) and STORAGE_NAME.search(ast.unparse(left)):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and node.module == "registry_mirror.storage.layout":
            found += [f"import {a.name}" for a in node.names if a.name == "V2"]
    return found


def test_no_module_outside_storage_builds_a_path_under_it():
    outside = {name: path for name, path in modules().items() if not name.startswith("registry_mirror.storage.")}
    found = {(name, joined) for name, path in outside.items() for joined in joins_onto_storage(ast.parse(
        path.read_text()))}
    assert found - ALLOWED == set()


def test_the_check_sees_a_join():
    assert joins_onto_storage(ast.parse("p = self.root / V2 / 'repositories'")) != []
    assert joins_onto_storage(ast.parse("p = Path(cfg.mirror.storage) / 'x'")) != []
    assert joins_onto_storage(ast.parse("from registry_mirror.storage.layout import V2")) != []
    assert joins_onto_storage(ast.parse("p = spool / name")) == []
    assert joins_onto_storage(ast.parse("message = f'{root}: ' + detail")) == []
