"""HTML (.html, .htm): the visible text with paragraphs and lines kept (BeautifulSoup), titled
by ``<title>``; scripts, styles and the like dropped; a page without ``</head>`` keeps its body."""

from __future__ import annotations

import re

from ragqa.indexing.documents import WHITESPACE, Document, Skip, SourceFile

# Not "head" itself: html.parser nests a <body> in a <head> that was never closed (HTML5 closes it
# implicitly), so dropping <head> would drop the whole page; what a head holds that is not shown is
# these tags (title, script, style) or has no text (meta, link, base).
_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "title"]
# Block elements end a line; "paragraph" blocks also leave a blank line around them.
_PARA_TAGS = [
    "address", "article", "aside", "blockquote", "body", "details", "dialog", "dl", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr",
    "html", "main", "menu", "nav", "ol", "p", "pre", "section", "table", "ul",
]
_LINE_TAGS = [
    "caption", "dd", "div", "dt", "figcaption", "legend", "li", "option", "summary", "td",
    "th", "tr", "tbody", "thead", "tfoot",
]
_LINE_MARK = "\ue000"  # private-use characters, removed from the input first
_PARA_MARK = "\ue001"
# a run of marks (with only whitespace between them) starts and ends with a mark: no backtracking
_MARKS = re.compile(r"[\ue000\ue001](?:[\s\ue000\ue001]*[\ue000\ue001])?")
_SPACES = re.compile(r"[^\S\n]+")


def load(sf: SourceFile, html: str) -> list[Document]:
    from bs4 import BeautifulSoup
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    html = html.replace(_LINE_MARK, "").replace(_PARA_MARK, "")
    soup = BeautifulSoup(html, "html.parser")
    title = ""
    t = soup.find("title")
    if t is not None:
        title = WHITESPACE.sub(" ", t.get_text()).strip()
    for name in _DROP_TAGS:
        while (tag := soup.find(name)) is not None:
            tag.decompose()
    if not title:
        h1 = soup.find("h1")
        if h1 is not None:
            title = WHITESPACE.sub(" ", h1.get_text(" ")).strip()
    for s in soup.find_all(string=lambda s: isinstance(s, (Comment, Declaration, Doctype, ProcessingInstruction))):
        s.extract()
    # HTML whitespace rules: runs of whitespace are one space, except inside <pre>/<textarea>
    for s in list(soup.find_all(string=True)):
        if s.find_parent(["pre", "textarea"]) is None:
            collapsed = WHITESPACE.sub(" ", str(s))
            if collapsed != s:
                s.replace_with(NavigableString(collapsed))
    for br in soup.find_all("br"):
        br.replace_with(_LINE_MARK)
    for names, mark in ((_PARA_TAGS, _PARA_MARK), (_LINE_TAGS, _LINE_MARK)):
        for tag in soup.find_all(names):
            if tag.parent is not None:
                tag.insert_before(mark)
                tag.insert_after(mark)
    raw = _MARKS.sub(lambda m: "\n\n" if _PARA_MARK in m.group(0) else "\n", soup.get_text())
    lines = [_SPACES.sub(" ", line).strip() for line in raw.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if not text:
        raise Skip("skipped: no visible text in this HTML file")
    return [Document(sf.rel, text, title=title or sf.title, source=sf.source)]
