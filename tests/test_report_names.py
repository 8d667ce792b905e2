"""Names from files in the reports: shortened with a tag and kept whole once, control characters
shown as escapes, and reports of bounded size and time however long the names are."""

import base64
import contextlib
import copy
import re
import signal
import subprocess
import time

import pytest

from subnet.errors import clean
from subnet.report import content, names, pdf, write_html, write_pdf
from tests.helpers import poppler
from tests.report_example import example_results

# Names as a hostile model file may hold them: thousands of characters, alike at both ends.
LONG_MODEL = "M" * 5000
LONG_SITES = {"conv2d": "site_" + "c" * 3000 + "_a", "conv2d_1": "site_" + "c" * 4999 + "_b",
              "dense": "site_" + "c" * 2000 + "_dense"}
LONG_MASK = "mask_" + "m" * 3000
LONG_ORIGINAL = " ".join(["original name"] * 300)  # a name TensorFlow refuses, as in the file
LONG_DATASET = "data_" + "d" * 3000
CONTROL = "ctl\x1b[2J\rcr\ttab"  # the layer name
CONTROL_SHOWN = r"ctl\x1b[2J\rcr\ttab"
# Every control character but the newline (a line break in HTML and in pdftotext's output) and
# the form feed (pdftotext's page break): none may reach a report raw.
RAW_CONTROL = re.compile("[\x00-\x09\x0b\x0d-\x1f\x7f-\x9f\u202e]")


def _renamed(results: dict, sites: dict, *, model: str, mask: str | None = None,
             original: dict | None = None, dataset: str | None = None,
             sentence: str | None = None) -> dict:
    """``results`` with the sites renamed everywhere (site tables, importance, widths, unit
    labels, graph), the model, mask layers, data set and names in the file as given."""
    results = copy.deepcopy(results)
    results["model"]["name"] = model
    for site in results["model"]["sites"]:
        site["name"] = sites.get(site["name"], site["name"])
        if mask is not None:
            site["mask_layer"] = mask + site["mask_layer"]
    if original:
        results["model"]["original_names"] = original
    if dataset is not None:
        results["inputs"]["dataset"]["name"] = dataset
    results["importance"]["sites"] = {sites.get(k, k): v
                                      for k, v in results["importance"]["sites"].items()}
    for entry in [results["answer"]["smallest"], *results["answer"]["smallest_by_method"].values()]:
        if entry and entry.get("widths"):
            entry["widths"] = {sites.get(k, k): v for k, v in entry["widths"].items()}

    def unit(label: str) -> str:
        site, _, k = label.rpartition(":")
        return f"{sites.get(site, site)}:{k}"

    table = results["importance"]["class_conditional"]
    table["units"] = [unit(u) for u in table["units"]]
    graph = results["importance"]["interactions"]
    for node in graph["nodes"]:
        node["id"], node["site"] = unit(node["id"]), sites.get(node["site"], node["site"])
    for edge in graph["edges"]:
        edge["source"], edge["target"] = unit(edge["source"]), unit(edge["target"])
    if sentence is not None:
        results["answer"]["sentences"].append(sentence)
    return results


def _widths_sentence(sites: dict) -> str:
    """A sentence as subnet.analyze writes it, with the smallest subnetwork's widths."""
    widths = ", ".join(f"{name} {k}" for k, name in enumerate(sites.values(), start=8))
    return ("The smallest subnetwork within 0.10 points of it was found by mask statistics: "
            f"4.0x fewer FLOPs and 4.0x fewer parameters ({widths}), at 99.05 %.")


def _long_results() -> dict:
    return _renamed(example_results(), LONG_SITES, model=LONG_MODEL, mask=LONG_MASK,
                    original={"original_name_": LONG_ORIGINAL, "odd_name": "odd name"},
                    dataset=LONG_DATASET, sentence=_widths_sentence(LONG_SITES))


def _text_of(html: str) -> tuple[str, list[bytes]]:
    """The page without its figures, and the figures' SVG bytes."""
    svgs = [base64.b64decode(b) for b in
            re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", html)]
    return re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "data:", html), svgs


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fails (rather than hangs) if the block runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---- how a name is shown ----

def test_a_long_name_is_shortened_with_a_tag_that_tells_it_apart():
    first, second = names.shown("c" * 3000), names.shown("c" * 3001)
    assert len(first) == len(second) == names.NAME_LIMIT == 40
    assert re.fullmatch(r"c{20}…c{10} \[[0-9a-f]{6}\]", first) and first != second
    assert names.shown("conv2d_1") == "conv2d_1"  # a usual name is shown as it is
    assert names.shown(first) == first  # showing a shown name changes nothing
    assert names.label("c" * 3000 + ":12") == first + ":12"
    assert names.shown(CONTROL) == CONTROL_SHOWN


def test_names_shown_alike_get_longer_tags_and_each_full_name_is_listed_once():
    seen = names.Names()
    # Two names whose visible forms are the same (an ESC, and a backslash, x, 1, b).
    assert seen("a\x1b") == r"a\x1b"
    other = seen(r"a\x1b")
    assert other.startswith(r"a\x1b [") and other != r"a\x1b"
    long = seen("n" * 5000)
    assert seen("n" * 5000) == long and len(long) == 40
    assert seen.shortened == {other: r"a\x1b", long: "n" * 5000}
    assert seen.rows() == ((other, r"a\x1b"), (long, "n" * 5000))


def test_the_table_of_full_names_is_bounded():
    seen = names.Names()
    for k in range(30):
        seen(f"{k:02d}" + "x" * 20_000)
    rows = seen.rows()
    assert len(rows[0][1]) < names.FULL_NAME_LIMIT + 50
    assert rows[0][1].endswith("… (10,002 more characters)")
    assert sum(len(full) for _, full in rows) < names.FULL_NAMES_BUDGET + 2000
    assert rows[-1] == ("…", "20 more names, not listed here (results.json has them in full)")


def test_clean_keeps_its_terminal_behaviour_and_can_keep_everything():
    assert clean(CONTROL) == CONTROL_SHOWN
    assert clean("x" * 2001) == "x" * 2000 + "... (1 more chars)"
    assert clean("x" * 3000, limit=None) == "x" * 3000
    assert clean("a\ud800b\u202ec") == r"a\ud800b\u202ec"  # UTF-8 cannot write a lone surrogate
    assert clean("µ × ± — …\u00a0") == "µ × ± — …\u00a0"


# ---- names thousands of characters long ----

def test_long_names_are_shown_short_everywhere(tmp_path):
    doc = content.build(_long_results())
    texts = [doc.title, *[v for _, v in doc.facts], *doc.answer]
    for section in doc.sections[:-1]:  # all but the list of full names
        for item in section.items:
            if isinstance(item, content.Table):
                texts += [item.title, item.reading, *[c for row in item.rows for c in row]]
            elif isinstance(item, content.Figure):
                texts += [item.title, item.reading]
            elif isinstance(item, content.Text):
                texts += [content.Text.plain(p) for p in item.paragraphs]
    for text in texts:
        for run in ("M" * 50, "c" * 50, "m" * 50, "d" * 50, "original name " * 4):
            assert run not in text
    assert any(names.shown(LONG_SITES["conv2d"]) + " 8," in a for a in doc.answer)
    last = doc.sections[-1]
    assert last.title == "Full names"
    full = {row[0]: row[1] for row in last.items[0].rows}
    for name in (LONG_MODEL, *LONG_SITES.values(), LONG_ORIGINAL, LONG_DATASET):
        assert full[names.shown(name)] == name
    assert dict(doc.names) == {k: v for k, v in full.items()}


def test_the_names_in_the_model_file_are_listed_up_to_a_bound():
    results = example_results()
    results["model"]["original_names"] = {f"layer_{k:04d}": f"layer {k:04d} " + "x" * 3000
                                          for k in range(1000)}  # a model of 1,000 layers
    doc = content.build(results)
    tables = {t.key: t for s in doc.sections for t in s.items if isinstance(t, content.Table)}
    renamed = tables["renamed"]
    assert len(renamed.rows) == content.MAX_RENAMED == 100
    assert renamed.rows[0] == ("layer_0000", names.shown("layer 0000 " + "x" * 3000))
    assert renamed.reading.endswith("The first 100 of 1,000 are listed; results.json has them "
                                    "all.")
    full = tables["full-names"].rows  # 33 names whole, one cut, and a count of the rest
    assert sum(len(name) for _, name in full[:-1]) < names.FULL_NAMES_BUDGET + 100
    assert full[33][1].endswith(" more characters)")
    assert full[-1] == ("…", "66 more names, not listed here (results.json has them in full)")


def test_long_names_keep_the_html_small_with_each_full_name_once(tmp_path):
    normal = write_html(example_results(), tmp_path / "normal.html").stat().st_size
    path = write_html(_long_results(), tmp_path / "long.html")
    assert path.stat().st_size < normal + 300_000
    page, svgs = _text_of(path.read_text())
    for name in (LONG_MODEL, *LONG_SITES.values(), LONG_DATASET):
        assert page.count(name) == 1  # in the table of full names
        assert page.count(f'<abbr title="{name[:names.TOOLTIP_LIMIT]}…') >= 2  # the tooltips
    assert page.count(LONG_MASK) == 3  # three mask layers, each listed once
    # The figures (unit labels, graph nodes and legend, titles) show the names short.
    for svg in svgs:
        assert b"c" * 100 not in svg and b"M" * 100 not in svg
    assert any(names.shown(LONG_SITES["conv2d_1"]).encode() in svg for svg in svgs)
    assert f"<title>subnet report: {names.shown(LONG_MODEL)} on " in page


def test_long_names_pdf_is_built_in_bounded_time(tmp_path):
    normal = write_pdf(example_results(), tmp_path / "normal.pdf")
    start = time.perf_counter()
    with _deadline(240):
        path = write_pdf(_long_results(), tmp_path / "long.pdf")
    seconds = time.perf_counter() - start
    pages = [int(re.search(r"Pages:\s+(\d+)", subprocess.run(
        [poppler("pdfinfo"), str(p)], check=True, capture_output=True, text=True,
        timeout=60).stdout).group(1)) for p in (normal, path)]
    assert pages[1] <= pages[0] + 15  # the list of full names: about 40,000 characters
    assert path.stat().st_size < normal.stat().st_size + 200_000
    text = subprocess.run([poppler("pdftotext"), str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert names.shown(LONG_MODEL) in text and "Names shortened in this report" in text
    shown, listed = text.split("Names shortened in this report", 1)
    assert "c" * 50 not in shown.replace("\n", "")  # only the list of full names holds them
    # ... all of every name (the list continues over pages, its lines broken anywhere).
    assert listed.count("M") >= len(LONG_MODEL)
    assert listed.count("c") >= sum(name.count("c") for name in LONG_SITES.values())
    print(f"PDF with names of 2,000 to 5,000 characters: {seconds:.1f} s")


def test_a_long_token_is_wrapped_measuring_about_a_line_at_a_time(monkeypatch):
    measured = []
    real = pdf._text_width.__wrapped__
    token = "".join(chr(ord("a") + k % 26) for k in range(20_000))

    def counting(text, bold=False):
        measured.append(len(text))
        if sum(measured) > 60 * len(token):  # fail at once, rather than after hours
            raise AssertionError(f"measured {len(measured)} texts, {sum(measured):,} characters")
        return real(text, bold)

    monkeypatch.setattr(pdf, "_text_width", counting)
    lines = pdf._wrap_cell(token, 300.0, False)
    assert "".join(lines) == token
    assert all(real(line) <= 300.0 for line in lines)
    assert all(real(line + token[len("".join(lines[:k + 1]))]) > 300.0
               for k, line in enumerate(lines[:-1]))  # each line as full as it can be


def test_a_cell_taller_than_a_page_continues_over_rows():
    table = content.Table("t", "Long", ("name", "value"),
                          (("short", "word " * 6000), ("x", "y")))
    header, rows = pdf._table_rows(table)
    assert len(rows) > 3 and all(len(c) <= pdf._ROW_LINES for r in rows for c in r.cells)
    assert [r.continues for r in rows] == [True] * (len(rows) - 2) + [False, False]
    assert sum(len(r.cells[1]) for r in rows[:-1]) >= 6000 // 100
    assert rows[0].cells[0] == ("short",) and rows[-1].cells == (("x",), ("y",))


# ---- control characters ----

def _controlled() -> dict:
    sites = {"conv2d_1": CONTROL, "conv2d": "a&b<\x07>\x85"}
    return _renamed(example_results(), sites, model="model\x1b]0;title\x07",
                    original={"ctl__2J_cr_tab": CONTROL}, dataset="data\u202eset\udc80",
                    sentence=_widths_sentence(sites))


def test_control_characters_are_shown_as_escapes_in_the_html(tmp_path):
    results = _controlled()
    results["command"].append("--out=\x1b[31mred")
    html = write_html(results, tmp_path / "report.html").read_text()
    page, svgs = _text_of(html)
    assert not RAW_CONTROL.search(html)
    assert page.count(CONTROL_SHOWN) >= 6  # sites table, figure title, widths, answer, ...
    assert r"model\x1b]0;title\x07" in page and r"--out=\x1b[31mred" in page
    assert r"data\u202eset\udc80" in page  # a lone surrogate too: UTF-8 cannot write it
    # HTML-special characters are escaped once, as before.
    assert r"a&amp;b&lt;\x07&gt;\x85" in page and "&amp;amp;" not in page
    for svg in svgs:  # the figures' text (and the SVG's own copies of it) too
        assert not RAW_CONTROL.search(svg.decode())
    assert any(CONTROL_SHOWN.encode() in svg for svg in svgs)


def test_control_characters_are_shown_as_escapes_in_the_pdf(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    path = write_pdf(_controlled(), tmp_path / "report.pdf")
    text = subprocess.run([poppler("pdftotext"), str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert not RAW_CONTROL.search(text)
    assert CONTROL_SHOWN in text and r"model\x1b]0;title\x07" in text
    reader = pypdf.PdfReader(path)
    assert reader.metadata.title == \
        r"subnet report: model\x1b]0;title\x07 on data\u202eset\udc80"
    titles = [item.title for item in reader.outline if not isinstance(item, list)]
    titles += [c.title for group in reader.outline if isinstance(group, list) for c in group]
    assert f"Importance of the units of {CONTROL_SHOWN}" in titles
    assert not any(RAW_CONTROL.search(t) for t in titles)


def test_a_document_of_an_analysis_shows_control_characters_as_escapes(tmp_path):
    from subnet.report import write_document

    doc = content.Document(
        title="Study \x1b[2J", subject="s", facts=(("Model", CONTROL),), answer=("Yes\r.",),
        sections=(content.Section("one", "One\x07", (
            content.Table("t", "T\x1b", ("name\t", "value"), ((CONTROL, "0.99"),)),
            content.Note("What\x1b"),
            content.Text((("See ", content.Link("x\x1b", "x.html"), "."),)))),))
    written = write_document(doc, tmp_path, created="2026-12-01T00:00:00+00:00")
    html = written["html"].read_text()
    assert not RAW_CONTROL.search(html) and html.count(CONTROL_SHOWN) == 2
    text = subprocess.run([poppler("pdftotext"), str(written["pdf"]), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert not RAW_CONTROL.search(text) and CONTROL_SHOWN in text
