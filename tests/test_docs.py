"""The user docs stay true to the tree: links resolve, the README stays a front door, the package map and
the outcome list cover the code, and no page speaks of the project's own history."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from telephony.answers import Outcome
from tests.helpers import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
USER_DOCS = [README, *sorted(DOCS.glob("*.md"))]
LINKED_DOCS = [*USER_DOCS, ROOT / "tests" / "contracts" / "README.md"]  # the licence notes link too
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, …

# Words of the project's own history: they mean nothing to a reader of the docs and go stale at once.
HISTORY = [
    re.compile(r"\bissue\s*#?\d+", re.IGNORECASE),
    re.compile(r"\bthis round\b", re.IGNORECASE),
    re.compile(r"\brounds? of work\b", re.IGNORECASE),
    re.compile(r"\bsessions?\b", re.IGNORECASE),
    re.compile(r"--against\s+[0-9a-f]{7,40}\b"),
    re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),  # a commit id
    re.compile(r"\btoday'?s run\b", re.IGNORECASE),
    re.compile(r"\b20[2-9][0-9]-[01][0-9]-[0-3][0-9]\b"),  # a dated report (not an API version)
]


def prose(text: str) -> str:
    """The text without fenced code blocks, where '#' lines are shell comments, not headings."""
    return _FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(prose(path.read_text())):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    text = _INLINE_CODE.sub("", prose(path.read_text()))
    return [target for target in _LINK.findall(text) if not _EXTERNAL.match(target)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and (resolved.suffix != ".md" or fragment not in anchors(resolved)):
            broken.append(f"{target}: no such heading")
    return broken


def history_words(text: str) -> list[str]:
    return [match.group(0) for pattern in HISTORY for match in pattern.finditer(text)]


def section(text: str, title: str) -> str:
    """The body of the '## title' section, up to the next heading of its level or above."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^##? |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}' section"
    return match.group(1)


def test_the_manual_has_its_pages() -> None:
    pages = {path.name for path in DOCS.glob("*.md")}
    expected = {
        "configuration.md", "okta-setup.md", "twilio-setup.md", "deploy.md", "receipts-and-alerts.md",
        "verify-feedback.md", "security.md", "operating.md", "performance.md", "development.md",
    }  # fmt: skip
    assert expected <= pages


@pytest.mark.parametrize("path", LINKED_DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_is_a_front_door() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move the detail to docs/"


def test_the_readme_links_every_page_of_the_manual() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in relative_links(README)}
    assert sorted(path.name for path in DOCS.glob("*.md") if path.resolve() not in linked) == []


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_user_doc_speaks_of_the_projects_history(path: Path) -> None:
    assert history_words(path.read_text()) == []


def test_the_package_map_names_every_module() -> None:
    package_map = section((DOCS / "development.md").read_text(), "Package map")
    modules = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "telephony").rglob("*.py"))]
    tools = [
        f"tools/{path.name}" + ("/" if path.is_dir() else "")
        for path in sorted((ROOT / "tools").iterdir())
        if not path.name.startswith(("_", "."))
    ]
    named = [name for name in [*modules, *tools] if not name.endswith("/__init__.py")]
    assert [name for name in named if f"`{name}`" not in package_map] == []


_PATH = re.compile(r"`((?:telephony|tools|tests|examples|docs)/[\w./-]*)`")


def missing_paths(text: str) -> list[str]:
    """Paths into the tree a page names in code spans (`telephony/phone.py`) that do not exist."""
    return [path for path in _PATH.findall(text) if not (ROOT / path).exists()]


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_path_named_exists(path: Path) -> None:
    assert missing_paths(path.read_text()) == []


def test_the_path_check_catches_a_module_that_moved() -> None:
    planted = "See `telephony/phone.py`, `telephony/gone.py` and `tools/monitoring/….metric.json`."
    assert missing_paths(planted) == ["telephony/gone.py"]


def outcome_table(text: str) -> dict[str, str]:
    """The Outcomes section's table: outcome -> the severity it documents."""
    rows = re.findall(r"^\| `([a-z_]+)` \|[^|\n]*\| ([A-Z]+) \|", section(text, "Outcomes"), re.MULTILINE)
    return dict(rows)


def test_the_operating_page_lists_every_outcome_at_its_severity() -> None:
    documented = outcome_table((DOCS / "operating.md").read_text())
    actual = {outcome.value: logging.getLevelName(outcome.severity) for outcome in Outcome}
    assert documented == actual


# The checks themselves, on planted bad cases: each must catch what it is there to catch.


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "target.md").write_text("# Target page\n\n## Set-up: the `OKTA_ORG_URL` (step 1)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](target.md#set-up-the-okta_org_url-step-1) [self](#a-heading) [web](https://example.com/x.md)\n"
        "[gone](missing.md) [bad anchor](target.md#no-such-heading)\n\n# A heading\n"
        "```sh\n# not a heading\n[not a link](nowhere.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md: no such file", "target.md#no-such-heading: no such heading"]


def test_github_slugs() -> None:
    assert github_slug("OAuth 2.0, step by step") == "oauth-20-step-by-step"
    assert github_slug('"I got no code", step by step') == "i-got-no-code-step-by-step"
    assert github_slug("`TWILIO_AUTH_TOKEN` and [receipts](x.md)") == "twilio_auth_token-and-receipts"


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n### Notes\n")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}


def test_the_history_check_catches_history_words() -> None:
    planted = (
        "Fixed in issue 12 during this round of work; see the session notes, "
        "`bench --against d3da7ac`, and today's run of 2026-11-30."
    )
    assert history_words(planted) == [
        "issue 12", "this round", "round of work", "session", "--against d3da7ac", "d3da7ac", "today's run",
        "2026-11-30",
    ]  # fmt: skip
    assert history_words("Search the SID SM0123456789abcdef0123456789abcdef, then the receipts.") == []


def test_the_outcome_check_catches_a_missing_outcome_and_a_wrong_severity() -> None:
    planted = (
        "## Outcomes\n\n| `outcome` | route | severity | meaning |\n|---|---|---|---|\n"
        "| `delivered` | hook | WARNING | accepted |\n| `expired` | hook | WARNING | too late |\n\n## Next\n"
        "| `receipt` | receipts | INFO | outside the section |\n"
    )
    assert outcome_table(planted) == {"delivered": "WARNING", "expired": "WARNING"}


_GUARD_ROW = re.compile(r"^\| `(GUARD_[A-Z_]+_LIMIT|GUARD_MODE)` \|(.*)$", re.MULTILINE)


@pytest.mark.parametrize("path", [README, DOCS / "spend-guard.md", DOCS / "configuration.md"], ids=lambda p: p.name)
def test_the_guard_defaults_the_docs_give_are_the_settings_defaults(path: Path) -> None:
    """The README's, the spend guard page's and the configuration page's tables each give the guard's
    defaults: a default changed in the settings alone would leave them telling readers the old one."""
    from telephony.settings import Settings

    defaults = {
        field.alias: field.default
        for field in Settings.model_fields.values()
        if field.alias and field.alias.startswith("GUARD_") and isinstance(field.default, str)
    }
    rows = dict(_GUARD_ROW.findall(path.read_text()))
    assert set(rows) == set(defaults), path.name
    for name, cells in rows.items():
        given = [cell.strip() for cell in cells.split("|") if cell.strip()]
        assert f"`{defaults[name]}`" in given, f"{path.name}: {name} does not give the default {defaults[name]}"


def test_the_wait_for_a_twin_request_the_guard_page_gives_is_the_codes() -> None:
    """A twin request waits while a new attempt would still have RESEND_SECONDS to finish within the
    hook's budget: the page's figure moves with either."""
    from telephony.guard import RESEND_SECONDS
    from telephony.settings import HOOK_BUDGET_SECONDS

    figure = f"still have a second to finish (about {HOOK_BUDGET_SECONDS - RESEND_SECONDS:.1f} s)"
    assert RESEND_SECONDS == 1.0 and figure in (DOCS / "spend-guard.md").read_text()


def test_the_codes_a_known_number_gets_unproven_are_the_codes_figure() -> None:
    """How many unproven codes a known number gets before it is held as new again: README, the guard's
    page (what it does, the log field, the threat model) and the code say one number."""
    from telephony.guard import KNOWN_CODES

    readme, guard_page = (ROOT / "README.md").read_text(), (DOCS / "spend-guard.md").read_text()
    assert f"{KNOWN_CODES} codes without a conversion" in readme
    for figure in (f"after {KNOWN_CODES} codes no conversion proved", f"{KNOWN_CODES} of its codes since went"):
        assert figure in guard_page
    assert f"a known number gets {KNOWN_CODES} codes with no conversion since" in guard_page
