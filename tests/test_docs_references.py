"""Every section a module, config, benchmark, notebook or document cites resolves in this
repository: "network.md §4.3" names a heading "4.3" of docs/methods/network.md ("§4.8.1" the
first numbered item under heading 4.8), a named code file exists, and nothing points at
specification files outside the repository."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "methods"
CITING = [*ROOT.glob("mlrpl_jax/**/*.py"), *ROOT.glob("configs/*.py"), *ROOT.glob("benchmarks/*.py"),
          *ROOT.glob("tests/*.py"), *ROOT.glob("notebooks/*"), *ROOT.glob("docs/**/*.md"),
          *ROOT.glob("launch/*"), ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
# "file.md §4.3" (any path prefix) and "file.md, Appendix A"
SECTION_REFERENCE = re.compile(r"([a-z_]+\.md) §\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#+\s+(?:Appendix\s+)?(\d+(?:\.\d+)*|[AB])\b", re.M)
# repository paths of code a document names, e.g. `mlrpl_jax/core/train.py`
CODE_PATH = re.compile(r"\b((?:mlrpl_jax|tests|benchmarks|configs)/[\w/]+\.py)\b")
OUTSIDE = re.compile(r"METHODS\.md|SATL\.md|\.\./shared|methods_(?:sst_hst|sarb_dsrb|satl)\.md")


def headings(spec_file: pathlib.Path) -> set[str]:
    return set(HEADING.findall(spec_file.read_text(encoding="utf-8")))


def test_the_specification_folder_holds_every_method():
    names = {path.name for path in SPEC.glob("*.md")}
    assert {"README.md", "sst.md", "hst.md", "sarb.md", "dsrb.md", "satl.md", "network.md",
            "losses.md", "training.md", "evaluation.md", "hyperparameters.md"} <= names


@pytest.mark.parametrize("path", CITING, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_sections_exist_and_nothing_points_outside(path):
    text = path.read_text(encoding="utf-8")
    assert not OUTSIDE.search(text), f"{path}: cites a document outside the repository"
    for file_name, section in SECTION_REFERENCE.findall(text):
        spec_file = SPEC / file_name
        if not spec_file.exists():
            continue  # another document's own numbering (e.g. docs/dry_run.md)
        numbered_item = section.count(".") == 2 and section.rsplit(".", 1)[0]
        assert section in headings(spec_file) or numbered_item in headings(spec_file), (
            f"{path}: {file_name} has no section §{section}")


@pytest.mark.parametrize("path", [p for p in CITING if p.suffix in (".md", ".ipynb")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_files_named_in_documents_exist(path):
    missing = [name for name in CODE_PATH.findall(path.read_text(encoding="utf-8"))
               if not (ROOT / name).exists()]
    assert not missing, f"{path} names files that do not exist: {missing}"
