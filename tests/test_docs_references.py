"""Every section a module, config, benchmark, notebook or document cites resolves in this
repository: "network.md §4.3" names a heading "4.3" of docs/methods/network.md ("§4.8.1" the
first numbered item under heading 4.8), a named code file exists, and nothing points at
specification files outside the repository. The documents (README, docs/, notebooks/,
launch/) name only modules and definitions that exist (`python -m mlrpl_jax.data.prepare`,
mlrpl_jax.config.base_config), repository files that exist and links that resolve."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "methods"
CITING = [
    *ROOT.glob("mlrpl_jax/**/*.py"),
    *ROOT.glob("configs/*.py"),
    *ROOT.glob("benchmarks/*.py"),
    *ROOT.glob("tests/*.py"),
    *ROOT.glob("notebooks/*"),
    *ROOT.glob("docs/**/*.md"),
    *ROOT.glob("launch/*"),
    ROOT / "README.md",
    ROOT / "Makefile",
    ROOT / "pyproject.toml",
]
# "file.md §4.3" (any path prefix) and "file.md, Appendix A"
SECTION_REFERENCE = re.compile(r"([a-z_]+\.md) §\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#+\s+(?:Appendix\s+)?(\d+(?:\.\d+)*|[AB])\b", re.M)
# repository paths a document names, e.g. `mlrpl_jax/core/train.py`, docs/results/README.md
CODE_PATH = re.compile(
    r"\b((?:mlrpl_jax|tests|benchmarks|configs|docs|launch|notebooks)/"
    r"[\w./-]*\w\.(?:py|md|ipynb|sh|png|json))\b"
)
# dotted names in the package, e.g. mlrpl_jax.sweep, mlrpl_jax.config.base_config
MODULE_NAME = re.compile(r"\bmlrpl_jax(?:\.\w+)+")
# relative targets of Markdown links, e.g. [results](docs/results/README.md#recorded-results)
LINK = re.compile(r"\]\((?![a-z]+:)([^)#\s]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"METHODS\.md|SATL\.md|\.\./shared|methods_(?:sst_hst|sarb_dsrb|satl)\.md")


def headings(spec_file: pathlib.Path) -> set[str]:
    return set(HEADING.findall(spec_file.read_text(encoding="utf-8")))


def test_the_specification_folder_holds_every_method():
    names = {path.name for path in SPEC.glob("*.md")}
    assert {
        "README.md",
        "sst.md",
        "hst.md",
        "sarb.md",
        "dsrb.md",
        "satl.md",
        "network.md",
        "losses.md",
        "training.md",
        "evaluation.md",
        "hyperparameters.md",
    } <= names


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
            f"{path}: {file_name} has no section §{section}"
        )


def defines(module: pathlib.Path, name: str) -> bool:
    """Whether `module` defines or imports `name` at its top level."""
    return (
        re.search(
            rf"^(?:(?:def|class)\s+{name}\b|{name}\s*[:=]|(?:from\s+\S+\s+)?import\s.*\b{name}\b)",
            module.read_text(encoding="utf-8"),
            re.M,
        )
        is not None
    )


def resolves(dotted: str) -> bool:
    """Whether `dotted` names a module of the package or a name at the top level of one."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        for module in (base.with_suffix(".py"), base / "__init__.py"):
            if module.exists():
                return end == len(parts) or defines(module, parts[end])
    return False


def test_module_resolution_sees_stale_names():
    assert resolves("mlrpl_jax.data.prepare") and resolves("mlrpl_jax.config.base_config")
    assert resolves("mlrpl_jax.methods.semantic_transfer")
    assert not resolves("mlrpl_jax.semantic_transfer") and not resolves("mlrpl_jax.config.no_such")


DOCUMENTS = [p for p in CITING if p.suffix in (".md", ".ipynb") or p.parent.name == "launch"]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_modules_and_links_named_in_documents_exist(path):
    text = path.read_text(encoding="utf-8")
    missing = [name for name in CODE_PATH.findall(text) if not (ROOT / name).exists()]
    assert not missing, f"{path} names files that do not exist: {missing}"
    stale = sorted({name for name in MODULE_NAME.findall(text) if not resolves(name)})
    assert not stale, f"{path} names modules or definitions that do not exist: {stale}"
    if path.suffix == ".md":
        broken = [target for target in LINK.findall(text) if not (path.parent / target).exists()]
        assert not broken, f"{path} links to files that do not exist: {broken}"
