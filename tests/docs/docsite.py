"""The static docs site of strata.ops, built offline, every link checked (run by tests/docs/build).

Sources, all read at build time (nothing is copied into the repository, so the site cannot drift):
  * modules, filters, the inventory plugin and role argument specs: one
    `ansible-doc --metadata-dump strata.ops` (DOCUMENTATION/EXAMPLES/RETURN with doc fragments
    merged, roles' meta/argument_specs.yml); Ansible markup (C(), O(), M(), P(), U(), L() ...) is
    rendered by antsibull-docs-parser;
  * README.md and docs/*.md by markdown-it-py (CommonMark + tables, raw HTML escaped); headings get
    GitHub-style ids, so `file.md#heading` links work both on GitHub and here;
  * troubleshooting.html: the operator guide's "Troubleshooting" section, rendered from it, with
    links to every section of the guides about errors and refusals.

Links between sources: a link (or a code span / plain-text mention such as `docs/data-miner.md`,
`roles/x/meta/argument_specs.yml`, `plugins/modules/x.py`, `strata.ops.x`) to a source that has a page
becomes a link to that page. A link to a repository file that has no page (a playbook) is shown as that
path in code, never as a link. A link to anything that does not exist is kept as written, so the
check below reports it.

The check (the build fails on any problem): every internal href/src of every page resolves to a file
of the site and, with a #fragment, to an id in it; no id is duplicated; markup parses; external
links are not fetched but must be well-formed http(s)/mailto URLs, and are listed in
external-links.txt next to the pages that use them.
"""

import argparse
import glob
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import jinja2
from antsibull_docs_parser import dom
from antsibull_docs_parser.format import LinkProvider
from antsibull_docs_parser.html import to_html_plain
from antsibull_docs_parser.parser import Context, parse
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup, escape

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
COLLECTION = "strata.ops"
DEFAULT_OUT = os.path.join(REPO, ".tmp", "docs", "site")
# Marks a directory as ours: the build replaces only such a directory (or a missing/empty one).
MARKER = ".strata-docs-site"
PLUGIN_DIRS = {"module": "modules", "filter": "filters", "inventory": "inventory", "role": "roles"}
SOURCE_DIRS = {"module": "plugins/modules", "filter": "plugins/filter", "inventory": "plugins/inventory"}
PLUGIN_TITLES = {"module": "Modules", "filter": "Filters", "inventory": "Inventory plugins", "role": "Roles"}
# The guides listed first on the index, in this order; other docs/*.md follow by name.
GUIDE_ORDER = ["docs/operator-guide.md", "TROUBLESHOOTING", "docs/architecture.md"]
TROUBLESHOOTING_SOURCE = "docs/operator-guide.md"
TROUBLESHOOTING_HEADING = re.compile(r"^troubleshooting\b", re.IGNORECASE)
# Sections of the guides that the troubleshooting page points to as well.
RELATED_HEADING = re.compile(r"troubleshoot|refuses?\b|\berrors?\b|\bfailures?\b", re.IGNORECASE)
DOC_MENTION = re.compile(r"(?<![\w/.-])(docs/[\w-]+\.md)(#[\w-]+)?")
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class BuildError(Exception):
    """The sources cannot be read at all (ansible-doc fails): no site is written."""


def slug(text, used):
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to '-', '-N' for repeats."""
    base = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
    candidate, count = base, 0
    while candidate in used:
        count += 1
        candidate = f"{base}-{count}"
    used.add(candidate)
    return candidate


def rel_url(from_page, to_page):
    """Relative URL from one site page to another (both site-relative POSIX paths)."""
    if from_page == to_page:
        return ""
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def option_anchor(what, path, entry_point=None):
    """The id of an option or return value row: antsibull-docs' parameter-a/b, return-a/b."""
    prefix = "parameter" if what == "option" else "return"
    name = "/".join(path)
    return f"{prefix}-{entry_point}__{name}" if entry_point else f"{prefix}-{name}"


def external_plugin_url(fqcn, plugin_type):
    """docs.ansible.com's page of a plugin or role of another collection (listed, never fetched)."""
    namespace, collection, name = fqcn.split(".", 2)
    return f"https://docs.ansible.com/ansible/latest/collections/{namespace}/{collection}/{name}_{plugin_type}.html"


def load_metadata(repo):
    """ansible-doc's metadata dump of the collection ({type: {fqcn: doc}}), the checkout's own copy."""
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    if not os.path.exists(ansible_doc):
        ansible_doc = shutil.which("ansible-doc")
    if not ansible_doc:
        raise BuildError("ansible-doc not found next to this Python or on PATH: run make venv")
    # The checkout's .collections/ links back to it; a copy laid out as .../ansible_collections/strata/ops
    # (tests/release/releaselib.copy_tree) resolves from the directory above ansible_collections.
    collections = os.path.join(repo, ".collections")
    if not os.path.isdir(collections):
        collections = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(repo))))
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections,
        ANSIBLE_CONFIG=os.path.join(repo, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [ansible_doc, "--metadata-dump", "--no-fail-on-errors", COLLECTION],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"ansible-doc --metadata-dump failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    dump = json.loads(proc.stdout)["all"]
    return {kind: dump.get(kind, {}) for kind in PLUGIN_DIRS}


def repo_relpath(repo, path):
    """A file's path relative to the checkout (.collections/.../strata/ops links back to it)."""
    return os.path.relpath(os.path.realpath(path), os.path.realpath(repo)).replace(os.sep, "/")


class SiteLinks(LinkProvider):
    """Links of rendered Ansible markup, relative to the page being written."""

    def __init__(self, site, page):
        self.site = site
        self.page = page

    def plugin_link(self, plugin):
        return self._page_url(plugin.fqcn, plugin.type)

    def plugin_option_like_link(self, plugin, entrypoint, what, name, current_plugin):
        url = self._page_url(plugin.fqcn, plugin.type)
        return None if url is None else f"{url}#{option_anchor(what, name, entrypoint)}"

    def _page_url(self, fqcn, plugin_type):
        if not fqcn.startswith(COLLECTION + "."):
            return external_plugin_url(fqcn, plugin_type)
        if (plugin_type, fqcn) not in self.site.plugins:
            kinds = sorted(kind for kind, name in self.site.plugins if name == fqcn)
            hint = f" (it is a {' and a '.join(kinds)}: P({fqcn}#{kinds[0]}))" if kinds else ""
            self.site.problems.append(f"{self.page}: reference to {fqcn}, which is no {plugin_type}{hint}")
            return None  # shown as plain text; the problem above fails the build
        target = f"{PLUGIN_DIRS[plugin_type]}/{fqcn.split('.', 2)[2]}.html"
        return rel_url(self.page, target) or posixpath.basename(target)


class Site:
    """One build: sources -> HTML pages in memory -> files in `out` -> check."""

    def __init__(self, repo, out, extra_pages=()):
        self.repo = repo
        self.out = out
        self.extra_pages = list(extra_pages)
        self.pages = {}  # site path -> HTML
        self.sources = {}  # site path -> the repository file it was rendered from
        self.problems = []
        self.path_pages = {}  # repository path (or fqcn) -> site path
        self.plugins = set()  # (kind, fqcn) of every plugin and role with a page
        self.documented = set()  # the repository files ansible-doc returned docs (or an error) for
        self.index = {kind: [] for kind in PLUGIN_DIRS}
        self.guides = []  # (site path, title)
        self.headings = {}  # site path -> [(level, id, text)]
        self.jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.jinja.globals.update(option_anchor=option_anchor, to_text=to_text, rel_url=rel_url)
        self.md = MarkdownIt("commonmark", {"html": False}).enable("table")

    # ---- plugins and roles ------------------------------------------------------------------
    def markup(self, text, page, context, inline=False):
        """Ansible markup (a string or a list of paragraphs) as HTML; parse errors are problems."""
        if text is None or text == []:
            return Markup("")
        paragraphs = parse(text, context, errors="message")
        for paragraph in paragraphs:
            for part in paragraph:
                if part.type == dom.PartType.ERROR:
                    self.problems.append(f"{page}: markup error: {part.message}")
        start, end = ("", " ") if inline else ("<p>", "</p>")
        html = to_html_plain(
            paragraphs,
            link_provider=SiteLinks(self, page),
            par_start=start,
            par_end=end,
            current_plugin=context.current_plugin,
        )
        return Markup(html.strip())

    def map_sources(self, metadata):
        """Which repository path and fqcn each plugin and role page stands for."""
        for kind, entries in metadata.items():
            for fqcn in sorted(entries):
                name = fqcn.split(".", 2)[2]
                page = f"{PLUGIN_DIRS[kind]}/{name}.html"
                self.plugins.add((kind, fqcn))
                if kind == "role":
                    self.documented.add(f"roles/{name}/meta/argument_specs.yml")
                elif "error" in entries[fqcn]:
                    self.documented.add(f"{SOURCE_DIRS[kind]}/{name}.py")  # its page reports the error
                if kind == "role":
                    for path in (f"roles/{name}", f"roles/{name}/", f"roles/{name}/meta/argument_specs.yml"):
                        self.path_pages[path] = page
                else:
                    filename = entries[fqcn].get("doc", {}).get("filename")
                    if filename:
                        self.path_pages[repo_relpath(self.repo, filename)] = page
                        self.documented.add(repo_relpath(self.repo, filename))
                # Modules first (a module and a role may share a name): the first kind keeps it.
                self.path_pages.setdefault(fqcn, page)

    def check_coverage(self):
        """ansible-doc leaves out a file it cannot load at all (a role's broken argument_specs.yml)."""
        patterns = [f"{folder}/*.py" for folder in SOURCE_DIRS.values()] + ["roles/*/meta/argument_specs.yml"]
        for pattern in patterns:
            for path in sorted(glob.glob(os.path.join(self.repo, pattern))):
                relative = repo_relpath(self.repo, path)
                if not relative.endswith("/__init__.py") and relative not in self.documented:
                    self.problems.append(f"{relative}: ansible-doc returned no documentation for it")

    def render_plugin(self, kind, fqcn, entry):
        name = fqcn.split(".", 2)[2]
        page = f"{PLUGIN_DIRS[kind]}/{name}.html"
        if "error" in entry:
            self.problems.append(f"{page}: ansible-doc could not read {fqcn}: {entry['error']}")
            return
        doc = entry["doc"]
        context = Context(current_plugin=dom.PluginIdentifier(fqcn=fqcn, type=kind))

        def md(text, inline=False):
            return self.markup(text, page, context, inline)

        seealso = [self.seealso_item(item, page, context) for item in doc.get("seealso") or []]
        self.sources[page] = repo_relpath(self.repo, doc["filename"])
        self.index[kind].append((page, fqcn, md(doc.get("short_description"), inline=True)))
        self.pages[page] = self.jinja.get_template("plugin.html.j2").render(
            page=page,
            root=rel_url(page, "index.html") or "index.html",
            kind=kind,
            fqcn=fqcn,
            doc=doc,
            md=md,
            seealso=seealso,
            options=flatten(doc.get("options"), "suboptions"),
            returns=flatten(entry.get("return"), "contains"),
            examples=(entry.get("examples") or "").strip("\n"),
            source=self.sources[page],
            nav=self.nav(page),
        )

    def seealso_item(self, item, page, context):
        """(link HTML, description HTML) of one seealso entry."""
        links = SiteLinks(self, page)
        description = self.markup(item.get("description"), page, context, inline=True)
        if "module" in item or "plugin" in item:
            fqcn = item.get("module") or item["plugin"]
            plugin_type = "module" if "module" in item else item.get("plugin_type", "module")
            url = links.plugin_link(dom.PluginIdentifier(fqcn=fqcn, type=plugin_type))
            return Markup(f'<a href="{escape(url)}"><code>{escape(fqcn)}</code></a>'), description
        if "link" in item:
            return Markup(f'<a href="{escape(item["link"])}">{escape(item["name"])}</a>'), description
        # An RST :ref: has no target outside docs.ansible.com's build: its name only.
        return Markup(f"<span>{escape(item.get('ref', ''))}</span>"), description

    def render_role(self, fqcn, entry):
        name = fqcn.split(".", 2)[2]
        page = f"roles/{name}.html"
        if "error" in entry:
            self.problems.append(f"{page}: ansible-doc could not read {fqcn}: {entry['error']}")
            return
        points = []
        for point_name, point in sorted(entry.get("entry_points", {}).items(), key=entry_point_order):
            context = Context(
                current_plugin=dom.PluginIdentifier(fqcn=fqcn, type="role"), role_entrypoint=point_name
            )

            def md(text, inline=False, context=context):
                return self.markup(text, page, context, inline)

            points.append(
                {
                    "name": point_name,
                    "short": md(point.get("short_description"), inline=True),
                    "description": md(point.get("description")),
                    "options": flatten(point.get("options"), "options"),
                    "md": md,
                }
            )
        self.sources[page] = f"roles/{name}/meta/argument_specs.yml"
        summary = escape(f" (entry points: {', '.join(p['name'] for p in points)})")
        self.index["role"].append((page, fqcn, points[0]["short"] + summary if points else summary))
        self.pages[page] = self.jinja.get_template("role.html.j2").render(
            page=page,
            root=rel_url(page, "index.html"),
            fqcn=fqcn,
            points=points,
            source=self.sources[page],
            nav=self.nav(page),
        )

    # ---- markdown -----------------------------------------------------------------------------
    def markdown_pages(self):
        """(repository path, file path, site path) of README.md, docs/*.md and --page files."""
        pages = [("README.md", os.path.join(self.repo, "README.md"), "readme.html")]
        docs = os.path.join(self.repo, "docs")
        for name in sorted(os.listdir(docs)):
            if name.endswith(".md"):
                pages.append((f"docs/{name}", os.path.join(docs, name), name[:-3] + ".html"))
        # An extra page is read as if it were in docs/ (its links resolve from there).
        for path in self.extra_pages:
            name = os.path.basename(path)
            if not name.endswith(".md"):
                raise BuildError(f"--page {path}: not a .md file")
            if f"docs/{name}" in {p[0] for p in pages}:
                raise BuildError(f"--page {path}: docs/{name} already exists")
            pages.append((f"docs/{name}", os.path.abspath(path), name[:-3] + ".html"))
        return pages

    def md_tokens(self, source, text):
        """markdown-it tokens with heading ids and the links rewritten for the site."""
        tokens = self.md.parse(text, {})
        used = set()
        for i, token in enumerate(tokens):
            if token.type == "heading_open":
                token.attrSet("id", slug(inline_text(tokens[i + 1]), used))
            if token.type == "inline" and token.children:
                token.children = self.rewrite_inline(source, token.children)
        return tokens

    def rewrite_inline(self, source, children):
        out = []
        link_depth = 0
        skip_close = []  # for each open link: True when the link became code (its close is dropped)
        for token in children:
            if token.type == "link_open":
                href = token.attrGet("href") or ""
                new_href, repo_path = self.resolve_href(source, href)
                if repo_path is not None:
                    # A repository file without a page: its text, then the path as code.
                    skip_close.append(repo_path)
                    continue
                token.attrSet("href", new_href)
                skip_close.append(None)
                link_depth += 1
                out.append(token)
            elif token.type == "link_close":
                repo_path = skip_close.pop()
                if repo_path is None:
                    link_depth -= 1
                    out.append(token)
                elif out and not (out[-1].type == "code_inline" and out[-1].content == repo_path):
                    out.extend([text_token(" ("), code_token(repo_path), text_token(")")])
            elif token.type == "image":
                new_src, repo_path = self.resolve_href(source, token.attrGet("src") or "")
                token.attrSet("src", new_src if repo_path is None else repo_path)
                out.append(token)
            elif link_depth == 0 and token.type == "code_inline" and token.content.strip() in self.path_pages:
                target = self.path_pages[token.content.strip()]
                out.extend([link_token(self.page_of(source), target), token, Token("link_close", "a", -1)])
            elif link_depth == 0 and token.type == "text":
                out.extend(self.link_mentions(source, token))
            else:
                out.append(token)
        return out

    def link_mentions(self, source, token):
        """A text token with every `docs/NAME.md[#id]` that has a page turned into a link."""
        pieces, last = [], 0
        for match in DOC_MENTION.finditer(token.content):
            target = self.path_pages.get(match.group(1))
            if not target:
                continue
            if match.start() > last:
                pieces.append(text_token(token.content[last : match.start()]))
            href = rel_url(self.page_of(source), target) + (match.group(2) or "")
            pieces.extend([link_token(None, href), text_token(match.group(0)), Token("link_close", "a", -1)])
            last = match.end()
        if not pieces:
            return [token]
        if last < len(token.content):
            pieces.append(text_token(token.content[last:]))
        return pieces

    def page_of(self, source):
        return self.path_pages.get(source, "index.html")

    def resolve_href(self, source, href):
        """(href for the site, None) or (None, repository path) for a repository file without a page."""
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path:
            return href, None  # external, or a #fragment of the same page
        if parts.path.startswith("/"):
            path = posixpath.normpath(parts.path.lstrip("/"))
        else:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(source), unquote(parts.path)))
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        if path in self.path_pages:
            return (
                rel_url(self.page_of(source), self.path_pages[path]) or self.path_pages[path]
            ) + fragment, None
        if not path.startswith("../") and os.path.exists(os.path.join(self.repo, path)):
            return None, path
        return href, None  # missing: kept as written, the check names it

    def render_markdown(self, source, filename, page):
        with open(filename, encoding="utf-8") as handle:
            tokens = self.md_tokens(source, handle.read())
        self.headings[page] = headings(tokens)
        title = next((heading[2] for heading in self.headings[page] if heading[0] == 1), source)
        self.sources[page] = source
        self.guides.append((source, page, title))
        body = Markup(self.md.renderer.render(tokens, self.md.options, {}))
        self.pages[page] = self.jinja.get_template("page.html.j2").render(
            page=page, root="index.html", title=title, body=body, source=source, nav=self.nav(page)
        )
        return tokens

    def render_troubleshooting(self, guide_tokens):
        """The operator guide's Troubleshooting section, and links to the error sections of all guides."""
        page = "troubleshooting.html"
        section, heading_id = section_tokens(guide_tokens, TROUBLESHOOTING_HEADING)
        guide_page = self.path_pages[TROUBLESHOOTING_SOURCE]
        if section is None:
            self.problems.append(f"{page}: {TROUBLESHOOTING_SOURCE} has no 'Troubleshooting' section")
            section = []
        for token in section:
            for child in token.children or []:
                href = child.attrGet("href") if child.type == "link_open" else None
                if href and href.startswith("#"):
                    child.attrSet("href", guide_page + href)  # the section's own anchors live in the guide
            if token.type == "heading_open":
                token.attrs.pop("id", None)  # ids belong to the guide page; this page gets its own
        body = Markup(self.md.renderer.render(section, self.md.options, {}))
        related = [
            (f"{guide}#{anchor}", text, self.sources[guide])
            for guide, items in sorted(self.headings.items())
            for level, anchor, text in items
            if level > 1 and RELATED_HEADING.search(text) and (guide, anchor) != (guide_page, heading_id)
        ]
        self.sources[page] = f"{TROUBLESHOOTING_SOURCE} (section)"
        self.guides.append(("TROUBLESHOOTING", page, "Troubleshooting"))
        self.pages[page] = self.jinja.get_template("troubleshooting.html.j2").render(
            page=page,
            root="index.html",
            body=body,
            origin=f"{guide_page}#{heading_id}",
            source=self.sources[page],
            related=related,
            nav=self.nav(page),
        )

    # ---- the site -------------------------------------------------------------------------------
    def nav(self, page):
        items = [
            ("index.html", "Index"),
            (self.path_pages.get("README.md"), "Overview"),
            (self.path_pages.get("docs/operator-guide.md"), "Operator guide"),
            ("troubleshooting.html", "Troubleshooting"),
            (self.path_pages.get("docs/architecture.md"), "Architecture"),
        ]
        return [
            (rel_url(page, target) or posixpath.basename(target), title) for target, title in items if target
        ]

    def build(self):
        metadata = load_metadata(self.repo)
        self.map_sources(metadata)
        self.check_coverage()
        markdown = self.markdown_pages()
        for source, page in ((entry[0], entry[2]) for entry in markdown):
            self.path_pages[source] = page
        for kind in ("module", "filter", "inventory"):
            for fqcn, entry in sorted(metadata[kind].items()):
                self.render_plugin(kind, fqcn, entry)
        for fqcn, entry in sorted(metadata["role"].items()):
            self.render_role(fqcn, entry)
        guide_tokens = None
        for source, filename, page in markdown:
            tokens = self.render_markdown(source, filename, page)
            if source == TROUBLESHOOTING_SOURCE:
                guide_tokens = tokens
        self.render_troubleshooting(guide_tokens or [])
        self.pages["index.html"] = self.render_index()
        self.sources["index.html"] = "(generated)"
        self.write()

    def render_index(self):
        order = {name: i for i, name in enumerate(GUIDE_ORDER)}
        guides = sorted(self.guides, key=lambda g: (g[0] != "README.md", order.get(g[0], len(order)), g[0]))
        sections = [(PLUGIN_TITLES[kind], kind, self.index[kind]) for kind in PLUGIN_DIRS if self.index[kind]]
        return self.jinja.get_template("index.html.j2").render(
            page="index.html", root="index.html", guides=guides, sections=sections, nav=self.nav("index.html")
        )

    def write(self):
        if os.path.isdir(self.out) and os.listdir(self.out):
            if not os.path.exists(os.path.join(self.out, MARKER)):
                raise BuildError(
                    f"{self.out} is not empty and not a docs site built here: refusing to replace it"
                )
            shutil.rmtree(self.out)
        os.makedirs(self.out)
        with open(os.path.join(self.out, MARKER), "w") as handle:
            handle.write("written by tests/docs/build; replaced by the next build\n")
        shutil.copy(os.path.join(HERE, "site.css"), os.path.join(self.out, "site.css"))
        for page, html in self.pages.items():
            path = os.path.join(self.out, *page.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(html)


def entry_point_order(item):
    return (item[0] != "main", item[0])


def to_text(value, pretty=False):
    """An option default, choice or sample as the JSON text shown in code (strings as they are)."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, sort_keys=True, indent=2 if pretty else None)


def flatten(options, children_key, path=()):
    """Options (or return values) with their nested ones, depth first: [(path, spec)]."""
    rows = []
    for name, spec in sorted((options or {}).items()):
        rows.append(((*path, name), spec))
        rows.extend(flatten(spec.get(children_key), children_key, (*path, name)))
    return rows


def inline_text(token):
    return "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))


def text_token(content):
    token = Token("text", "", 0)
    token.content = content
    return token


def code_token(content):
    token = Token("code_inline", "code", 0, markup="`")
    token.content = content
    return token


def link_token(from_page, target_or_href):
    href = target_or_href if from_page is None else rel_url(from_page, target_or_href) or target_or_href
    return Token("link_open", "a", 1, attrs={"href": href})


def headings(tokens):
    """[(level, id, text)] of a markdown page."""
    return [
        (int(token.tag[1]), token.attrGet("id"), inline_text(tokens[i + 1]))
        for i, token in enumerate(tokens)
        if token.type == "heading_open"
    ]


def section_tokens(tokens, heading):
    """The tokens of the section whose heading matches (its heading included), and its id."""
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and heading.search(inline_text(tokens[i + 1])):
            level = int(token.tag[1])
            end = next(
                (
                    j
                    for j in range(i + 1, len(tokens))
                    if tokens[j].type == "heading_open" and int(tokens[j].tag[1]) <= level
                ),
                len(tokens),
            )
            return tokens[i:end], token.attrGet("id")
    return None, None


# ---- the check ----------------------------------------------------------------------------------
class _PageLinks(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = []
        self.links = []  # (attribute, value)

    def handle_starttag(self, tag, attrs):
        for attr, value in attrs:
            if attr == "id" or (tag == "a" and attr == "name"):
                self.ids.append(value)
            elif (attr == "href" and tag in ("a", "link", "area")) or (
                attr == "src" and tag in ("img", "script")
            ):
                self.links.append((attr, value or ""))


def well_formed_url(url):
    parts = urlsplit(url)
    if any(c.isspace() for c in url):
        return False
    if parts.scheme == "mailto":
        return bool(re.fullmatch(r"[^@\s]+@[^@\s]+", parts.path))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return bool(HOSTNAME.match(parts.hostname) or re.fullmatch(r"[\d.]+|\[?[0-9a-f:]+\]?", parts.hostname))


def check_site(site_dir, sources=None):
    """(problems, links checked, {external url: pages}) of a written site."""
    sources = sources or {}
    parsed = {}
    for folder, _subdirs, files in os.walk(site_dir):
        for name in files:
            if name.endswith(".html"):
                path = os.path.join(folder, name)
                page = os.path.relpath(path, site_dir).replace(os.sep, "/")
                collector = _PageLinks()
                with open(path, encoding="utf-8") as handle:
                    collector.feed(handle.read())
                parsed[page] = collector
    problems, external, checked = [], {}, 0
    for page, collector in sorted(parsed.items()):
        where = f"{page} (from {sources[page]})" if page in sources else page
        seen = set()
        for anchor in collector.ids:
            if anchor in seen:
                problems.append(f"{where}: duplicate id {anchor!r}")
            seen.add(anchor)
        for attr, value in collector.links:
            checked += 1
            problem = check_link(site_dir, parsed, page, value, external)
            if problem:
                problems.append(f"{where}: {attr} {value!r}: {problem}")
    return problems, checked, external


def check_link(site_dir, parsed, page, value, external):
    """None when one href/src of a page resolves (or is a well-formed external URL), else why not."""
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        if not well_formed_url(value):
            return "not a well-formed http(s) or mailto URL"
        external.setdefault(value, set()).add(page)
        return None
    if not value:
        return "empty link"
    target = page
    if parts.path:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(parts.path)))
        if target.startswith("../"):
            return "points outside the site"
        if not os.path.isfile(os.path.join(site_dir, *target.split("/"))):
            return f"no such file {target}"
    if parts.fragment:
        if target not in parsed:
            return f"#{parts.fragment} in {target}, which is not a page"
        if unquote(parts.fragment) not in parsed[target].ids:
            return f"no id {unquote(parts.fragment)!r} in {target}"
    return None


def main(argv=None):
    summary = __doc__.split("\n\n", maxsplit=1)[0]
    parser = argparse.ArgumentParser(prog="tests/docs/build", description=summary)
    parser.add_argument("--out", default=DEFAULT_OUT, help="site directory (default: .tmp/docs/site)")
    parser.add_argument(
        "--page", action="append", default=[], help="an extra markdown page, read as if it were in docs/"
    )
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    site = Site(REPO, out, args.page)
    try:
        site.build()
    except BuildError as err:
        print(f"tests/docs/build: {err}", file=sys.stderr)
        return 2
    problems, checked, external = check_site(out, site.sources)
    problems = site.problems + problems
    with open(os.path.join(out, "external-links.txt"), "w") as handle:
        handle.write("# external links of the site (not fetched): URL<TAB>pages using it\n")
        for url in sorted(external):
            handle.write(f"{url}\t{' '.join(sorted(external[url]))}\n")
    for problem in problems:
        print(f"docs: {problem}", file=sys.stderr)
    pages = sum(1 for page in site.pages)
    status = f"{len(problems)} problem(s)" if problems else "no problems"
    print(
        f"docs: {pages} pages, {checked} links checked, {len(external)} external links listed in "
        f"{os.path.relpath(os.path.join(out, 'external-links.txt'))}: {status}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
