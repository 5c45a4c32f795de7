"""The center uses only the node's public names: a private helper of edge/ may change without notice."""

from __future__ import annotations

import ast

from centerkit import REPO


def _private_uses(source: str) -> set[tuple[str, str]]:
    """(module, name) of every private name of edge/ that the source imports or reaches through an attribute."""
    tree = ast.parse(source)
    found: set[tuple[str, str]] = set()
    from_edge: dict[str, str] = {}  # local name -> edge module it came from
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "edge":
            for alias in node.names:
                from_edge[alias.asname or alias.name] = node.module
                if alias.name.startswith("_"):
                    found.add((node.module, alias.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in from_edge
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.add((from_edge[node.value.id], f"{node.value.id}.{node.attr}"))
    return found


def test_the_center_imports_no_private_name_of_the_node():
    uses = set()
    for path in sorted((REPO / "center").rglob("*.py")):
        uses |= _private_uses(path.read_text())
    assert uses == set()


def test_the_check_finds_a_private_import_and_a_private_attribute():
    """The control: what the test above looks for is found when it is there."""
    source = "from edge.listen import Listener\nfrom edge.publish.manifest import _x\nListener._chunk_ok(1)\n"
    assert _private_uses(source) == {("edge.publish.manifest", "_x"), ("edge.listen", "Listener._chunk_ok")}
