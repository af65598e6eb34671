"""The project's documents: links stay inside the repository, and protocol.md and settlement.md
cover the code.

Commands, error codes, settlement answer codes and settings are read from the gateway's own
modules, so one added to the code without a word in its document fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from manager_gateway.commands.registry import ALL_COMMANDS
from manager_gateway.config import Settings
from manager_gateway.protocol import errors
from manager_gateway.settlement.codes import Code

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "docs" / "protocol.md"
SETTLEMENT = ROOT / "docs" / "settlement.md"
#: Every Markdown document of the project: the top-level ones (README.md first) and docs/.
DOCUMENTS = sorted({*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md")})

#: An inline link or image, `[text](target)` or `[text](<target> "title")`.
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one level of nested brackets allowed
    r"\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)"  # (target "optional title")
)
#: A reference definition, `[label]: target`.
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, mailto:, //host
_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _links(text: str) -> list[str]:
    """Every link target of a Markdown text, code blocks left out (they hold no links)."""
    prose = _FENCE.sub("", text)
    return _INLINE_LINK.findall(prose) + _REFERENCE.findall(prose)


def _local_links(path: Path) -> list[tuple[str, Path, str]]:
    """(link as written, the file it points to, its #fragment) for each relative link."""
    found = []
    for target in _links(path.read_text(encoding="utf-8")):
        if not target or target.startswith("#") or _EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        found.append((target, (path.parent / file_part).resolve(), fragment))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _error_codes() -> set[str]:
    """The `code` of GatewayError and of every subclass of it in protocol/errors.py."""
    codes, pending = set(), [errors.GatewayError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def test_documents_are_found() -> None:
    """The documents checked here include README.md, docs/protocol.md and every file in docs/."""
    names = {_name(path) for path in DOCUMENTS}
    assert {"README.md", "docs/protocol.md"} <= names
    assert {_name(path) for path in (ROOT / "docs").rglob("*.md")} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_relative_links_resolve_inside_the_repository(document: Path) -> None:
    """Each relative link of the document names a file or directory that exists in the repo."""
    broken = [
        target
        for target, resolved, _ in _local_links(document)
        if not resolved.is_relative_to(ROOT) or not resolved.exists()
    ]
    assert broken == [], f"{_name(document)}: links outside the repository or to nothing"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_nothing_points_outside_the_repository(document: Path) -> None:
    """No link leaves the repo, and no text names ../shared or the PROTOCOL.md kept there."""
    text = document.read_text(encoding="utf-8")
    assert not re.search(r"\.\./shared|\bPROTOCOL\.md", text), _name(document)
    for target in _links(text):
        if not _EXTERNAL.match(target) and not target.startswith("#"):
            resolved = (document.parent / target.partition("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{_name(document)}: {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_anchors_of_links_exist(document: Path) -> None:
    """A #fragment in a link to a Markdown file (or a pure #anchor) names one of its headings."""
    targets = [
        (target, resolved, fragment)
        for target, resolved, fragment in _local_links(document)
        if fragment and resolved.suffix == ".md" and resolved.is_file()
    ]
    text = _FENCE.sub("", document.read_text(encoding="utf-8"))
    targets += [(f"#{a}", document, a) for a in re.findall(r"\]\(#([^)\s]+)\)", text)]
    missing = [target for target, path, fragment in targets if fragment not in _anchors(path)]
    assert missing == [], f"{_name(document)}: anchors that name no heading"


def test_protocol_names_every_command() -> None:
    """Every command of the registry, HealthCheck included, is named in docs/protocol.md."""
    text = PROTOCOL.read_text(encoding="utf-8")
    assert len(ALL_COMMANDS) >= 20  # the table was read, not an empty stand-in
    missing = sorted(name for name in ALL_COMMANDS if f"`{name}`" not in text)
    assert missing == [], "commands not named in docs/protocol.md"


def test_protocol_names_every_error_code() -> None:
    """Every error code of protocol/errors.py is named in docs/protocol.md."""
    text = PROTOCOL.read_text(encoding="utf-8")
    codes = _error_codes()
    assert {"INTERNAL_ERROR", "SYNC_TIMEOUT", "INVALID_JSON"} <= codes
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert missing == [], "error codes not named in docs/protocol.md"


def test_settlement_names_every_code_and_setting() -> None:
    """Each settlement answer code and each settlement_* setting is named in docs/settlement.md."""
    text = SETTLEMENT.read_text(encoding="utf-8")
    settings = [name for name in Settings.model_fields if name.startswith("settlement_")]
    assert len(settings) >= 10  # the settings were read, not an empty stand-in
    names = [code.value for code in Code] + settings
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert missing == [], "codes or settings not named in docs/settlement.md"
