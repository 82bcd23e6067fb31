"""The docs site (tests/docs/build, `make docs`): the real generator and ansible-doc, offline.

The site is built once per module into a temporary directory. Each page is compared with its own
source read here without the generator: a module's DOCUMENTATION/EXAMPLES/RETURN strings (ast +
YAML), a role's meta/argument_specs.yml, the docs' markdown files. A second build with a sample
page holding broken links must fail and name the page and each target.
"""

import ast
import glob
import os
import re
import subprocess
from html.parser import HTMLParser

import pytest
import yaml

from tests.release import releaselib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUMMARY = re.compile(
    r"^docs: (\d+) pages, (\d+) links checked, (\d+) external links listed in \S+: (.*)$", re.M
)


class Page(HTMLParser):
    """The ids, hrefs and text of a page, and the text of each <pre class="examples">."""

    def __init__(self, path):
        super().__init__(convert_charrefs=True)
        self.ids, self.hrefs, self.text, self.examples = set(), [], [], []
        self._in_examples = False
        with open(path, encoding="utf-8") as handle:
            self.feed(handle.read())
        self.text = "".join(self.text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "pre" and attrs.get("class") == "examples":
            self._in_examples = True
            self.examples.append("")

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_examples = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_examples:
            self.examples[-1] += data


def build(out, *extra, repo=REPO):
    # The checkout's venv first: a copy of the tree has none of its own.
    env = dict(os.environ, PATH=os.path.join(REPO, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(
        [os.path.join(repo, "tests", "docs", "build"), "--out", str(out), *extra],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def module_docs(path):
    """A module file's own DOCUMENTATION, EXAMPLES and RETURN strings (no doc fragments)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
            found[target.id] = ast.literal_eval(node.value)
    return found


def module_names():
    return sorted(
        os.path.basename(path)[:-3]
        for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))
        if not path.endswith("__init__.py")
    )


def role_names():
    return sorted(
        path.split(os.sep)[-3]
        for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml"))
    )


def doc_pages():
    return sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, "docs", "*.md")))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "site"
    proc = build(out)
    return out, proc


def test_build_checks_every_link_and_passes(site):
    out, proc = site
    summary = SUMMARY.search(proc.stdout)
    assert summary, proc.stdout + proc.stderr
    pages, links, external = (int(summary.group(i)) for i in (1, 2, 3))
    assert proc.returncode == 0, f"the docs build reports problems:\n{proc.stderr}"
    assert summary.group(4) == "no problems"
    assert pages == len(list(out.rglob("*.html")))
    # Every page links at least to the index and the guides in its navigation bar.
    assert links >= 5 * pages
    listed = (out / "external-links.txt").read_text().splitlines()[1:]
    assert len(listed) == external
    for line in listed:
        url, pages_using = line.split("\t")
        assert re.match(r"^(https?://[a-z0-9.-]+(:\d+)?(/\S*)?|mailto:\S+@\S+)$", url), url
        assert all((out / page).is_file() for page in pages_using.split())


def test_a_page_per_module_role_and_doc(site):
    out = site[0]
    index = Page(out / "index.html")
    expected = [f"modules/{name}.html" for name in module_names()]
    expected += [f"roles/{name}.html" for name in role_names()]
    expected += [f"{name}.html" for name in doc_pages()] + ["readme.html", "troubleshooting.html"]
    # Each filter and inventory plugin file here holds the one plugin it is named after.
    for kind, folder in (("filter", "filters"), ("inventory", "inventory")):
        for path in glob.glob(os.path.join(REPO, "plugins", kind, "*.py")):
            expected.append(f"{folder}/{os.path.basename(path)[:-3]}.html")
    for page in expected:
        assert (out / page).is_file(), page
        assert page in index.hrefs, f"index.html does not link {page}"


@pytest.mark.parametrize("name", module_names())
def test_module_page_shows_its_options_returns_and_examples(site, name):
    out = site[0]
    docs = module_docs(os.path.join(REPO, "plugins", "modules", f"{name}.py"))
    page = Page(out / "modules" / f"{name}.html")
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    for option in documentation.get("options") or {}:
        assert f"parameter-{option}" in page.ids, f"{name}: option {option} missing"
    for key in yaml.safe_load(docs.get("RETURN") or "") or {}:
        assert f"return-{key}" in page.ids, f"{name}: return value {key} missing"
    assert page.examples, f"{name}: no examples block"
    assert page.examples[0].strip() == docs["EXAMPLES"].strip()
    assert documentation["short_description"] in page.text


@pytest.mark.parametrize("name", role_names())
def test_role_page_shows_every_entry_point_and_option(site, name):
    out = site[0]
    with open(os.path.join(REPO, "roles", name, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    page = Page(out / "roles" / f"{name}.html")
    for entry_point, spec in specs.items():
        assert f"entry-point-{entry_point}" in page.ids, f"{name}: entry point {entry_point} missing"
        for option in spec.get("options") or {}:
            assert f"parameter-{entry_point}__{option}" in page.ids, f"{name}/{entry_point}: {option} missing"


def test_guides_render_with_heading_anchors_and_site_links(site):
    out = site[0]
    guide = Page(out / "operator-guide.html")
    with open(os.path.join(REPO, "docs", "operator-guide.md"), encoding="utf-8") as handle:
        headings = [line for line in handle if line.startswith("## ")]
    assert headings
    assert "troubleshooting-from-the-operators-runbooks" in guide.ids
    readme = Page(out / "readme.html")
    # README's docs/*.md links point to the pages, never to the markdown files.
    assert "operator-guide.html" in readme.hrefs
    assert not [href for href in readme.hrefs if href.endswith(".md") or ".md#" in href]


def test_troubleshooting_page_is_rendered_from_the_operator_guide(site):
    out = site[0]
    with open(os.path.join(REPO, "docs", "operator-guide.md"), encoding="utf-8") as handle:
        guide = handle.read()
    section = re.search(r"^## Troubleshooting.*?\n(.*?)(?=^## |\Z)", guide, re.M | re.S).group(1)
    page = Page(out / "troubleshooting.html")
    # Each runbook entry's leading words (markdown emphasis and code stripped) are on the page.
    for item in re.findall(r"^- (.+)$", section, re.M):
        words = re.sub(r"[*`]", "", item)[:40]
        assert words in page.text, words
    assert "operator-guide.html#troubleshooting-from-the-operators-runbooks" in page.hrefs


def test_broken_links_are_reported_with_page_and_target(tmp_path):
    sample = tmp_path / "sample-broken.md"
    sample.write_text(
        "# Sample\n\n"
        "[gone](no-such-page.md), [bad anchor](operator-guide.md#no-such-heading),\n"
        "[fine](architecture.md#shape), and [the stop playbook](../playbooks/stop.yml).\n"
    )
    proc = build(tmp_path / "site", "--page", str(sample))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    where = "sample-broken.html (from docs/sample-broken.md)"
    assert f"{where}: href 'no-such-page.md': no such file no-such-page.md" in proc.stderr
    assert f"{where}: href 'operator-guide.html#no-such-heading': no id 'no-such-heading'" in proc.stderr
    assert "architecture.html#shape" not in proc.stderr
    page = Page(tmp_path / "site" / "sample-broken.html")
    # A repository file without a page is shown as its path, not linked.
    assert "playbooks/stop.yml" in page.text
    assert not [href for href in page.hrefs if "stop.yml" in href]
    assert SUMMARY.search(proc.stdout).group(4).endswith("problem(s)")


def test_broken_references_in_module_docs_are_reported(tmp_path):
    """A copy of the tree whose zfs_dataset docs name a module and an option that do not exist."""
    tree = releaselib.copy_tree(str(tmp_path / "copy"))
    module = os.path.join(tree, "plugins", "modules", "zfs_dataset.py")
    with open(module, encoding="utf-8") as handle:
        source = handle.read()
    broken = r"\1 (see M(strata.ops.no_such_module), O(no_such_option))"
    source, count = re.subn(r"^(short_description: .*)$", broken, source, count=1, flags=re.M)
    assert count == 1
    with open(module, "w", encoding="utf-8") as handle:
        handle.write(source)
    proc = build(tmp_path / "site", repo=tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    page = "modules/zfs_dataset.html"
    assert f"{page}: reference to strata.ops.no_such_module, which is no module" in proc.stderr
    assert "href 'zfs_dataset.html#parameter-no_such_option': no id 'parameter-no_such_option'" in proc.stderr
