"""The project documents itself: code cites docs/ pages that exist, anchors resolve, README stays short."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE = ["src", "conf", "scripts", "tests", "notebooks", "train.py", "eval.py"]
SUFFIXES = {".py", ".yaml", ".yml", ".ipynb", ".md", ".txt", ".cfg", ".toml", ".cpp", ".h", ".sh"}

# A citation of the papers' fact sheets, which live outside the repository ("PAPERS.md 5", "LAYOUTS 4.5").
OUTSIDE = re.compile(r"\b(?:PAPERS|LAYOUTS)\.md\b|\b(?:PAPERS|LAYOUTS) (?:section |note |§)?\d")
DOC_REF = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)(?:#([\w-]+))?")
LINK = re.compile(r"\]\(([A-Za-z0-9_./-]+\.md)(?:#([\w-]+))?\)")
README_MAX_LINES = 260


def code_files() -> list[Path]:
    files: list[Path] = []
    for name in CODE:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in SUFFIXES]
    return [p for p in files if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text and code kept, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """Anchors of every heading outside code fences; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    fence = False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        match = None if fence else re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            seen[base] = seen.get(base, -1) + 1
    return {base if n == 0 else f"{base}-{n}" for base, count in seen.items() for n in range(count + 1)}


def test_slug_follows_github_rules(tmp_path: Path) -> None:
    assert slug("## 3. DPT / ViT-S/14 (BiDense DPT row)".lstrip("# ")) == "3-dpt--vit-s14-bidense-dpt-row"
    assert slug("Weights & Biases") == "weights--biases"
    assert slug("5. delta_m baselines") == "5-delta_m-baselines"
    assert slug("4. sign(0): the whole story") == "4-sign0-the-whole-story"
    page = tmp_path / "p.md"
    page.write_text("# A\n```\n# not a heading\n```\n## A\n", encoding="utf-8")
    assert anchors(page) == {"a", "a-1"}


def test_code_cites_no_file_outside_the_repository() -> None:
    here = Path(__file__).resolve()
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in code_files()
        if path.resolve() != here
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "cite docs/<FILE>.md instead of a file outside the repository:\n" + "\n".join(found)


def test_cited_docs_and_anchors_exist() -> None:
    bad = []
    for path in [*code_files(), ROOT / "README.md"]:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for page, anchor in DOC_REF.findall(line):
                where = f"{path.relative_to(ROOT)}:{n}: docs/{page}{'#' + anchor if anchor else ''}"
                target = DOCS / page
                if not target.is_file():
                    bad.append(f"{where}: no such file")
                elif anchor and anchor not in anchors(target):
                    bad.append(f"{where}: no heading with that anchor")
    assert not bad, "\n".join(bad)


def test_links_between_doc_pages_resolve() -> None:
    """Anchored links inside docs/ (and README's relative links) point at headings that exist."""
    bad = []
    for page in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for target, anchor in LINK.findall(line):
                path = (page.parent / target).resolve()
                if target.startswith("#") or not path.is_file():
                    continue  # pages other branches add are listed in the index before they exist
                if anchor and anchor not in anchors(path):
                    bad.append(f"{page.relative_to(ROOT)}:{n}: {target}#{anchor}")
    assert not bad, "links to missing headings:\n" + "\n".join(bad)


def test_same_page_anchors_resolve() -> None:
    bad = [
        f"{page.relative_to(ROOT)}: #{anchor}"
        for page in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
        for anchor in re.findall(r"\]\(#([\w-]+)\)", page.read_text(encoding="utf-8"))
        if anchor not in anchors(page)
    ]
    assert not bad, "\n".join(bad)


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
