"""Griffe extensions for the site: every public name documented, docstrings read as Markdown.

:class:`RequireDocstrings` warns about every public name without a docstring.

mkdocstrings loads it (``extensions:`` in ``mkdocs.yml``) and relays Griffe's
warnings to MkDocs, so ``mkdocs build --strict`` fails on the first public name
a user would find undocumented. mkdocstrings itself would only leave such a
name out of the page (``show_if_no_docstring: false``), silently.

Public means what a user can reach: every module whose dotted path has no
``_``-prefixed part; in it, the names its ``__all__`` lists (else those without
a leading ``_``), wherever they are defined; and the methods, properties and
nested classes of an exported class. Class attributes and enum members may be
described by their class's docstring instead (``:param:``, a table).

:class:`RestToMarkdown` turns the reStructuredText the docstrings are written in
(they are read by ``help()`` and IDEs too) into the Markdown mkdocstrings renders:
roles such as ``:class:`X``` become code, a ``::`` before a literal block a colon,
and doctest examples fenced ``pycon`` blocks. The ``:param:`` fields are left to
mkdocstrings' sphinx docstring parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

logger = griffe.get_logger(__name__)


def _modules(module: griffe.Module) -> Iterator[griffe.Module]:
    yield module
    for sub in module.modules.values():
        if not sub.is_alias:
            yield from _modules(sub)


def _is_public_module(module: griffe.Module) -> bool:
    return not any(part.startswith("_") for part in module.path.split(".")[1:])


def _exported(module: griffe.Module) -> Iterator[tuple[str, griffe.Object | griffe.Alias]]:
    names = module.exports
    if names is None:
        names = [name for name in module.members if not name.startswith("_")]
    for name in names:
        member = module.members.get(str(name))
        if member is not None:
            yield f"{module.path}.{name}", member


def _target(member: griffe.Object | griffe.Alias) -> griffe.Object | None:
    if not member.is_alias:
        return member  # type: ignore[return-value]
    try:
        return member.final_target  # type: ignore[union-attr]
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None  # defined outside the package (re-exported from a dependency)


def undocumented(package: griffe.Module) -> list[str]:
    """The public names of ``package`` that have no docstring, as users import them."""
    found: dict[str, str] = {}
    for module in _modules(package):
        if not _is_public_module(module):
            continue
        if not module.docstring:
            found.setdefault(module.path, module.path)
        for path, member in _exported(module):
            target = _target(member)
            if target is None or target.is_module:
                continue
            if not target.docstring:
                found.setdefault(target.path, path)
            if target.is_class:
                for name, inner in target.members.items():
                    if name.startswith("_") or inner.is_alias or inner.is_attribute:
                        continue
                    if not inner.docstring:
                        found.setdefault(inner.path, f"{path}.{name}")
    return sorted(found.values())


class RequireDocstrings(griffe.Extension):
    """Log a warning for each public name of a loaded package that has no docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Check the package once it is loaded whole (aliases resolve within it)."""
        for path in undocumented(pkg):
            logger.warning("public name without a docstring: %s", path)


ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"(\S)::$", re.MULTILINE)
BARE_LITERAL_BLOCK = re.compile(r"^::$", re.MULTILINE)


def rest_to_markdown(text: str) -> str:
    """The Markdown form of a reStructuredText docstring (see the module's docstring)."""
    text = ROLE.sub(_role_to_code, text)
    text = BARE_LITERAL_BLOCK.sub("", LITERAL_BLOCK.sub(r"\1:", text))
    return _fence_doctests(text)


def _role_to_code(match: re.Match[str]) -> str:
    # ``~a.b.c`` shows ``c``, as Sphinx does.
    short, target = match.groups()
    return f"``{target.rsplit('.', 1)[-1] if short else target}``"


def _fence_doctests(text: str) -> str:
    lines: list[str] = []
    in_example = False
    for line in text.split("\n"):
        if not in_example and line.startswith(">>>"):
            lines.append("```pycon")
            in_example = True
        elif in_example and not line.strip():
            lines.append("```")
            in_example = False
        lines.append(line)
    if in_example:
        lines.append("```")
    return "\n".join(lines)


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)  # type: ignore[arg-type]


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring of a loaded package from reStructuredText to Markdown."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite before anything parses the docstrings (mkdocstrings does it lazily)."""
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rest_to_markdown(obj.docstring.value)
