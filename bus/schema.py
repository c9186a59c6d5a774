"""The edXML schemas shipped in ``schemas/``: compiled once, never fetched over a network.

The hot path validates with libxml2 (lxml). When a document fails, its errors are rewritten into
:class:`~bus.errors.Problem` with the element path and line, in words a clerk can act on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from lxml import etree

from bus.errors import ConfigError, Problem

__all__ = ["SCHEMA_FILES", "schema_dir", "schema_problems"]

SCHEMA_FILES = {"document": "edxml-document.xsd", "status": "edxml-status.xsd"}


def schema_dir() -> Path:
    """``bus/_schemas`` in an installed wheel, else the repository's ``schemas/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / SCHEMA_FILES["document"]).is_file():
            return candidate
    raise ConfigError(f"edXML schemas not found beside {here}; reinstall the package")


@functools.cache
def _compiled(kind: str) -> etree.XMLSchema:
    # Our own files, including each other by relative path: nothing is fetched.
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(schema_dir() / SCHEMA_FILES[kind]), parser))


_NS_IN_MESSAGE = re.compile(r"\{[^}]*\}")
_EXPECTED = re.compile(r"Expected is (?:one of )?\(?\s*([^)]*?)\s*\)?\.?$")


def _clerk_message(raw: str) -> str:
    """libxml2's wording without namespace URIs, e.g. "Element 'Foo': This element is not expected."""
    message = _NS_IN_MESSAGE.sub("", raw).strip()
    if (expected := _EXPECTED.search(message)) is not None:
        message = message[: expected.start()].rstrip() + f" Allowed here: {expected.group(1)}."
    return message


def _path_of(entry: etree._LogEntry, tree: etree._ElementTree) -> str:
    """libxml2 gives ``/*/*[1]/...`` paths for default-namespace documents; rewrite with local names."""
    from bus.checks import element_path

    # libxml2 writes the document's own prefixes (edXML:MessageHeader) or /*[n] steps; bind every
    # prefix the document declares so the path can be evaluated (error path only, never hot).
    namespaces: dict[str, str] = {}
    for element in tree.getroot().iter():
        for prefix, uri in element.nsmap.items():
            if prefix:
                namespaces.setdefault(prefix, uri)
    try:
        found = tree.xpath(entry.path, namespaces=namespaces) if entry.path else []
    except etree.XPathError:
        found = []
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return element_path(found[0])
    return entry.path or "/"


def schema_problems(tree: etree._ElementTree, kind: str) -> list[Problem]:
    """Every schema error of *tree* against the *kind* schema (``document`` or ``status``)."""
    schema = _compiled(kind)
    if schema.validate(tree):
        return []
    return [
        Problem("schema", _path_of(entry, tree), _clerk_message(entry.message), entry.line or None)
        for entry in cast("Iterable[etree._LogEntry]", schema.error_log)
    ]
