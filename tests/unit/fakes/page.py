"""The report page as a person reads it (strata.ops.health_report's HTML), parsed with the
standard library: text per element id, table rows with their classes, every tag seen. The unit
tests read the rendered page with it, the integration test the DOM chromium dumped."""

from html.parser import HTMLParser


class Dom(HTMLParser):
    """``ids`` (id -> text), ``rows`` (each: class list, attrs, text, the enclosing table's attrs
    and its data-host) and ``tags``."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.rows, self.tags, self._open, self._table = {}, [], [], [], {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table = attrs
        if tag == "tr":
            self.rows.append(
                {
                    "class": (attrs.get("class") or "").split(),
                    "attrs": attrs,
                    "text": "",
                    "table": self._table,
                    "host": self._table.get("data-host"),
                }
            )
        self._open.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _tag, ident in self._open:
            if ident:
                self.ids[ident] = self.ids.get(ident, "") + data
        if self.rows and any(t == "tr" for t, _i in self._open):
            self.rows[-1]["text"] += data
