"""The HTML and PDF reports: schema checks, optional parts, escaping, atomic writes, the PDF
read back with poppler and the HTML loaded in headless Chromium."""

import copy
import json
import re
import subprocess
from pathlib import Path

import markupsafe
import pytest

from subnet.report import (
    content,
    figures,
    validate_results,
    write_document,
    write_html,
    write_pdf,
    write_reports,
)
from subnet.report.__main__ import main
from tests.helpers import poppler, skip_or_fail
from tests.report_example import (
    DENSE_ACCURACY,
    FULL_FIGURES,
    METHODS,
    MINIMAL_FIGURES,
    example_results,
)

CHROMIUM = Path("/usr/bin/chromium")
EVIL_MODEL = "<script>alert(1)</script>"
EVIL_SITE = 'a&b"<img src=x>'
DOLLAR_UNIT = r"odd$\notacommand{$:3"  # invalid mathtext: drawing it as math would raise


@pytest.fixture(scope="module")
def full_results():
    return example_results()


@pytest.fixture(scope="module")
def reports(full_results, tmp_path_factory):
    """Both reports of the full example, written once for the module."""
    return write_reports(full_results, tmp_path_factory.mktemp("reports"))


def _img_tags(html: str) -> int:
    return len(re.findall(r"<img\b", html))


# ---- the schema ----

def _delete(path):
    def change(results):
        *parents, last = path
        target = results
        for key in parents:
            target = target[key]
        del target[last]
    return change


def _set(path, value):
    def change(results):
        *parents, last = path
        target = results
        for key in parents:
            target = target[key]
        target[last] = value
    return change


SCHEMA_ERRORS = [
    (_delete(["model"]), r"results\['model'\] is required but missing"),
    (_delete(["blog", "mask_accuracy"]), r"results\['blog'\]\['mask_accuracy'\] is required"),
    (_set(["blog", "mask_accuracy"], "0.98"),
     r"results\['blog'\]\['mask_accuracy'\] must be a list of numbers in \[0, 1\] with at least "
     r"1 item\. Received: str"),
    (_set(["blog", "mask_accuracy"], [0.98, "x"]),
     r"results\['blog'\]\['mask_accuracy'\] must be a list of numbers .* at index 1"),
    (_set(["blog", "mask_accuracy"], [98.6]), r"in \[0, 1\].*98\.6"),
    (_set(["model", "sites", 1, "units"], "64"),
     r"results\['model'\]\['sites'\]\[1\]\['units'\] must be an integer >= 1\. Received: str"),
    (_set(["model", "params"], True), r"results\['model'\]\['params'\] must be an integer"),
    (_set(["command"], "python -m subnet.analyze"), r"results\['command'\] must be a list"),
    (_set(["created"], "yesterday"), r"results\['created'\] must be an ISO-8601"),
    (_set(["importance", "sites", "dense", "low"], [0.0]),
     r"results\['importance'\]\['sites'\]\['dense'\]\['low'\] must have one value per unit"),
    (_set(["importance", "class_conditional", "matrix"], [[0.0]]),
     r"results\['importance'\]\['class_conditional'\]\['matrix'\] must have one row per class"),
    (_set(["importance", "interactions", "edges", 0, "target"], "nowhere"),
     r"results\['importance'\]\['interactions'\]\['edges'\]\[0\]\['target'\] must be the id"),
    (_set(["blog", "examples", 0, "label"], 10), r"\['label'\] must be a class index < 10"),
    (_set(["blog", "examples", 0, "image"], [[2.0]]), r"\['image'\] must be an image"),
    (_set(["comparison", "summary", 0, "accuracy_oneshot_mean"], 98.6),
     r"results\['comparison'\]\['summary'\]\[0\]\['accuracy_oneshot_mean'\] must be a number "
     r"in \[0, 1\]"),
    (_delete(["comparison", "dense"]), r"results\['comparison'\]\['dense'\] is required"),
    (_set(["answer", "smallest", "flops_reduction"], 0),
     r"results\['answer'\]\['smallest'\]\['flops_reduction'\] must be a number > 0"),
    (_set(["importance", "sites", "dense", "scores", 2], "high"),
     r"results\['importance'\]\['sites'\]\['dense'\]\['scores'\]\[2\] must be a number or "
     r"null"),
    (_set(["answer", "sentences"], [1]),
     r"results\['answer'\]\['sentences'\]\[0\] must be a string\. Received: int 1"),
]


@pytest.mark.parametrize(("change", "message"), SCHEMA_ERRORS,
                         ids=[str(i) for i in range(len(SCHEMA_ERRORS))])
def test_schema_errors_name_the_key_path(full_results, change, message, tmp_path):
    results = copy.deepcopy(full_results)
    change(results)
    with pytest.raises(ValueError, match=message):
        validate_results(results)
    with pytest.raises(ValueError, match=message):
        write_reports(results, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_results_must_be_a_dict():
    with pytest.raises(TypeError, match="`results` must be a dict"):
        validate_results([1, 2])


def test_the_example_is_valid_and_unknown_keys_are_ignored(full_results):
    results = copy.deepcopy(full_results)
    results["something_new"] = {"x": 1}
    results["model"]["sites"][0]["extra"] = [1, 2]
    validate_results(results)


# ---- readings: sentences computed from the numbers ----

def test_readings_quote_the_numbers(full_results):
    results = copy.deepcopy(full_results)
    results["blog"]["mask_accuracy"] = [0.979, 0.986, 0.991]
    results["robustness"]["share_correct"] = [1.0, 1.0, 0.5, 0.25, 0.0]
    results["importance"]["sites"]["conv2d"] = {
        "scores": [0.1, 0.5, None, -0.2], "low": [0.05, 0.4, None, -0.3],
        "high": [0.15, 0.6, None, -0.1], "significant": [True, True, False, True]}
    doc = content.build(results)
    readings = {f.key: f.reading for f in doc.figures}
    assert ("Across 3 random masks (keeping each unit with probability 0.5), accuracy on the "
            "record's 600 examples ranged from 97.90 % to 99.10 % (median 98.60 %); the full "
            "network with dropout off scores 99.12 % on the 10,000 test examples."
            == readings["mask-accuracy"])
    assert ("Of the 5 examples in the record, 2 (40.00 %) are classified correctly by every one "
            "of the 400 masks, 3 (60.00 %) by at least half of them and 1 (20.00 %) by none."
            == readings["share-correct"])
    # banzhaf at 25 % is the fewest-FLOPs point within 0.1 points of the dense accuracy; the
    # prose calls it by its display name.
    assert ("fewest FLOPs being mask statistics at 25 % of the FLOPs"
            in readings["accuracy-vs-flops"])
    assert content.percent(DENSE_ACCURACY) == "99.12 %"
    # The figures hold the subnetworks to the answer's bar (the whole at its best), not to the
    # comparison's dropout-off accuracy.
    results["answer"].update(dense_accuracy=0.9995, dense_accuracy_basis="with dropout on")
    readings = {f.key: f.reading for f in content.build(results).figures}
    assert readings["accuracy-vs-flops"].startswith("The dense model scores 99.95 % with "
                                                    "dropout on, with ")
    assert "no method comes within 0.10 percentage points" in readings["accuracy-vs-flops"]
    assert ("In conv2d (4 units), 3 of 4 units are significant; scores range from -0.2 to 0.5 "
            "and the top unit, 1, scores 0.5, CI 0.4 to 0.6." == readings["importance-1"])
    tables = {t.key: t for s in doc.sections for t in s.items if isinstance(t, content.Table)}
    assert tables["timings"].rows[-1] == ("total", "32 min 24 s")  # given, not summed again
    assert tables["smallest-by-method"].rows[0][-2:] == ("4.00×", "4.00×")


# ---- one name per method ----

def test_methods_have_one_display_name_everywhere(full_results):
    doc = content.build(full_results)
    tables = {t.key: t for s in doc.sections for t in s.items if isinstance(t, content.Table)}
    names = [content.method_name(m) for m in METHODS]
    assert names == ["mask statistics", "L1 magnitude", "random units", "TFMOT (unstructured)"]
    assert {row[0] for row in tables["summary"].rows} == {"dense", *names}
    assert {row[0] for row in tables["smallest-by-method"].rows} == set(names)
    assert {row[0] for row in tables["size-latency"].rows} == {"dense", *names}
    assert tables["smallest-widths"].title.endswith("(mask statistics)")
    # The keys appear only where the key legend pairs them with their names.
    prose = [p for s in doc.sections for item in s.items if isinstance(item, content.Text)
             for p in item.paragraphs] + [f.reading for f in doc.figures]
    prose += [t.reading for t in tables.values()]
    legend = [p for p in prose if p.startswith("The methods as named here")]
    assert len(legend) == 1
    for method, name in zip(METHODS, names, strict=True):
        assert f"{name} = {method}" in legend[0]
    prose.remove(legend[0])
    # ("magnitude" and "random" are English words too: "largest in magnitude", "random masks".)
    # (The importance section names its estimator's key in parentheses after its name.)
    raw = re.compile(r"\b(banzhaf|tfmot)\b(?!\))|\b(banzhaf|magnitude|tfmot|random) at \d")
    assert [p for p in prose if raw.search(p)] == []
    # The figures' legends use the same mapping.
    from matplotlib.figure import Figure

    fig = Figure()
    with figures.style():
        figures.accuracy_vs_cost(fig, full_results["comparison"]["summary"], cost="flops",
                                 dense_accuracy=0.99, dense_cost=1000, tolerance=0.001,
                                 names=content.METHOD_NAMES)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend()
              for t in ax.get_legend().get_texts()]
    assert set(names) <= set(labels) and not set(METHODS) & set(labels)


# ---- figures ----

def _unit_importance_axes(n: int):
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.figure import Figure

    scores = [0.01 * (i % 7) - 0.02 for i in range(n)]
    fig = Figure()
    with figures.style():
        figures.unit_importance(fig, scores=scores, low=[v - 0.01 for v in scores],
                                high=[v + 0.01 for v in scores],
                                significant=[v > 0.01 for v in scores], metric="accuracy")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    return ax, bars, bands


def test_importance_of_many_units_is_a_band_not_error_bars():
    ax, bars, bands = _unit_importance_axes(500)
    assert bars == [] and len(bands) == 1
    line = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 500]
    assert len(line) == 1 and list(line[0].get_ydata()) == sorted(line[0].get_ydata(),
                                                                  reverse=True)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "significant (213 of 500)" in labels and "confidence interval" in labels
    ax, bars, bands = _unit_importance_axes(20)
    assert len(bars) == 1 and bands == []


def test_figures_are_svg_with_readable_text(full_results):
    import matplotlib

    svg = figures.render_svg(content.build(full_results).figures[0].draw, (8.0, 4.0))
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert svg == figures.render_svg(content.build(full_results).figures[0].draw, (8.0, 4.0))
    with figures.style():
        sizes = [matplotlib.rcParams[k] for k in ("xtick.labelsize", "ytick.labelsize",
                                                  "axes.labelsize", "legend.fontsize")]
    # An 8-inch figure is shown at least 38 rem (608 CSS px) wide (narrower screens scroll
    # it), so a point is at least 608 / (8 * 72) CSS px; every label is >= 10 px there.
    assert min(sizes) * 608 / (8 * 72) >= 10


# ---- optional parts ----

@pytest.mark.parametrize("how", ["null", "absent"])
def test_optional_parts_say_not_computed(how, tmp_path):
    results = example_results(optional=False, images=False)
    if how == "absent":
        del results["comparison"]
        del results["blog"]["examples"]
        del results["importance"]["class_conditional"]
        del results["importance"]["interactions"]
        for example in results["robustness"]["hardest"]:
            del example["image"]
    paths = write_reports(results, tmp_path, formats=["html"])
    html = paths["html"].read_text()
    for what in ("Per-example class probabilities", "Images of the hardest examples",
                 "Class-conditional importance", "Interactions between units",
                 "The comparison with pruning methods"):
        assert f"{what}: not computed." in html
    assert _img_tags(html) == MINIMAL_FIGURES
    assert "No subnetwork came within 0.10 percentage points" in html


# ---- escaping ----

def _evil(results: dict) -> dict:
    results = copy.deepcopy(results)
    results["model"]["name"] = EVIL_MODEL
    old = results["model"]["sites"][1]["name"]
    results["model"]["sites"][1]["name"] = EVIL_SITE
    results["importance"]["sites"][EVIL_SITE] = results["importance"]["sites"].pop(old)
    results["answer"]["smallest"]["widths"][EVIL_SITE] = \
        results["answer"]["smallest"]["widths"].pop(old)
    results["inputs"]["model"]["path"] = "models/<b>x</b>.keras"
    results["command"].append("--note=<i>hi</i>")
    results["config"]["dataset"] = "<style>body{display:none}</style>"
    graph = results["importance"]["interactions"]
    first = graph["nodes"][0]["id"]
    graph["nodes"][0]["id"] = graph["nodes"][0]["site"] = DOLLAR_UNIT
    for edge in graph["edges"]:
        for key in ("source", "target"):
            if edge[key] == first:
                edge[key] = DOLLAR_UNIT
    results["importance"]["class_conditional"]["units"][0] = DOLLAR_UNIT
    return results


@pytest.fixture(scope="module")
def evil_html(full_results, tmp_path_factory):
    """The HTML report of results whose names are markup and mathtext."""
    return write_html(_evil(full_results), tmp_path_factory.mktemp("evil") / "report.html")


def test_strings_from_models_and_files_are_escaped(evil_html):
    html = evil_html.read_text()
    for raw in (EVIL_MODEL, EVIL_SITE, "<b>x</b>", "<i>hi</i>", "<style>body"):
        assert raw not in html
        assert str(markupsafe.escape(raw)) in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a&amp;b&#34;&lt;img src=x&gt;" in html
    assert "<script" not in html.lower()
    assert _img_tags(html) == FULL_FIGURES  # no <img> smuggled in by a name


def test_html_is_self_contained(reports):
    html = reports["html"].read_text()
    assert ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            'img-src data:; style-src \'unsafe-inline\'">') in html
    text = re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "data:", html)
    assert not re.search(r"//|url\(|@import", text, re.IGNORECASE)
    assert {href[0] for href in re.findall(r'href="([^"]*)"', text)} == {"#"}
    assert re.findall(r'<img src="([a-z]+:[a-z/+]+)', html) == ["data:image/svg+xml"] * FULL_FIGURES
    assert "@media print" in html and "break-before: page" in html
    assert reports["html"].stat().st_size < 2_000_000


def test_html_layout_reads_on_any_screen(reports):
    html = reports["html"].read_text()
    assert "break-all" not in html and "word-break" not in html
    # Every table sits in its own sideways-scrolling box.
    assert html.count("<table") == len(re.findall(
        r'<div class="table-scroll" role="region" aria-labelledby="[^"]+" tabindex="0">\n'
        r'<table', html)) > 5
    assert ".table-scroll { overflow-x: auto;" in html
    # Only cells with a long token (a path, a hash) may break inside a word.
    wrapped = re.findall(r'<td class="wrap( code)?">([^<]*)</td>', html)
    assert wrapped and all(max(len(t) for t in cell.split()) >= 25 for _, cell in wrapped)
    assert ("wrap code", "ab" * 32) in [(f"wrap{c}", cell) for c, cell in wrapped]
    assert "td.wrap { overflow-wrap: anywhere;" in html
    # A number keeps its unit: "99.12 %" and "± 0.11 %" do not break.
    assert "99.12\u00a0%" in html and "99.12 %" not in html
    assert re.search("\\d\u00a0±\u00a0\\d", html)


def test_links_are_relative_and_escaped(tmp_path):
    evil = 'mnist <b>&"/report.html'
    doc = content.Document(
        title="Two data sets", subject="s", facts=(), answer=(),
        sections=(content.Section("mnist", "mnist", (content.Text((
            ("Full report: ", content.Link(evil, evil), "."), "Plain.")),)),))
    page = write_document(doc, tmp_path, created="2026-12-01T00:00:00+00:00")["html"]
    html = page.read_text()
    assert ('<p>Full report: <a href="mnist%20%3Cb%3E%26%22/report.html">'
            'mnist &lt;b&gt;&amp;&#34;/report.html</a>.</p>') in html
    assert "<p>Plain.</p>" in html
    for bad in ("http://example.com/r.html", "/etc/passwd", "javascript:alert(1)",
                "//host/x", "file:///x", ""):
        with pytest.raises(ValueError, match=r"argument `href`.*Received: href="):
            content.Link("x", bad)


# ---- atomic writes ----

@pytest.mark.parametrize("writer", [write_html, write_pdf])
def test_no_partial_file_when_rendering_fails(writer, full_results, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "share_correct_histogram", broken)
    target = tmp_path / "new" / "report.out"
    with pytest.raises(RuntimeError, match="figure failed"):
        writer(full_results, target)
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    target.parent.mkdir(exist_ok=True)
    target.write_text("the previous report")
    with pytest.raises(RuntimeError, match="figure failed"):
        writer(full_results, target)
    assert target.read_text() == "the previous report"
    assert list(target.parent.iterdir()) == [target]


def test_write_reports_formats(full_results, tmp_path):
    with pytest.raises(ValueError, match=r"argument `formats`.*Received: formats=\['docx'\]"):
        write_reports(full_results, tmp_path, formats=["docx"])
    with pytest.raises(ValueError, match="argument `formats`"):
        write_reports(full_results, tmp_path, formats=[])
    assert list(tmp_path.iterdir()) == []


def test_write_document_of_an_analysis_script(tmp_path):
    """Any Document (as analyses/ builds them) becomes both reports, strings escaped."""
    doc = content.Document(
        title="A study", subject="s", facts=(("Dataset", "mnist"),), answer=("Yes, 2 of 3.",),
        sections=(content.Section("one", "One", (
            content.Table("t", "Numbers", ("name", "value"), ((EVIL_MODEL, "0.99"),),
                          (False, True)),
            content.Figure("f", "A line", "It rises.", lambda fig: fig.subplots().plot([0, 1]),
                           (4.0, 2.0)),
            content.Text(("Plain words.",)))),))
    written = write_document(doc, tmp_path / "study", created="2026-12-01T00:00:00+00:00")
    assert set(written) == {"html", "pdf"} and all(p.exists() for p in written.values())
    page = written["html"].read_text()
    assert EVIL_MODEL not in page and markupsafe.escape(EVIL_MODEL) in page
    assert page.count('src="data:image/svg+xml;base64,') == 1 and "Yes, 2 of 3." in page
    assert written["pdf"].read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="argument `formats`"):
        write_document(doc, tmp_path / "other", created="x", formats=["docx"])
    assert not (tmp_path / "other").exists()


# ---- the command ----

def test_command_writes_the_reports(tmp_path, capsys):
    results = example_results(optional=False, images=False)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert main([str(path), "--formats", "html"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "report.html")]
    assert _img_tags((tmp_path / "report.html").read_text()) == MINIMAL_FIGURES


@pytest.mark.parametrize(("text", "message"), [
    (None, "Could not read results from"),
    ("{not json", "Could not read results from"),
    ("[1, 2]", "must hold a JSON object"),
    (json.dumps({"subnet_version": "0.1.0"}), r"results\['created'\] is required but missing"),
])
def test_command_bad_input_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "results.json"
    if text is not None:
        path.write_text(text)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("python -m subnet.report: error: ")
    assert re.search(message, err)
    assert not (tmp_path / "out").exists()


def test_command_rejects_unknown_formats(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(example_results(optional=False, images=False)))
    assert main([str(path), "--formats", "html,txt"]) == 2
    assert "Received: formats=['html', 'txt']" in capsys.readouterr().err


# ---- the PDF, read back with poppler ----

def test_pdf_pages_metadata_and_text(reports, full_results):
    info = subprocess.run([poppler("pdfinfo"), str(reports["pdf"])], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    pages = int(fields["Pages"])
    # A title page, one page per figure, and pages of tables and text.
    assert pages >= 1 + FULL_FIGURES + 4
    assert fields["Title"] == "subnet report: blog_cnn on mnist"
    assert fields["Author"] == "subnet"
    assert fields["Subject"].startswith("Does the trained network contain smaller subnetworks")

    text = subprocess.run([poppler("pdftotext"), "-layout", str(reports["pdf"]), "-"],
                          check=True, capture_output=True, text=True, timeout=60).stdout
    assert sorted({int(k) for k, n in re.findall(r"page (\d+) of (\d+)", text)
                   if int(n) == pages}) == list(range(1, pages + 1))
    assert "page 1 of" in text
    assert content.percent(DENSE_ACCURACY) in text  # "99.12 %"
    for method in METHODS:
        assert content.method_name(method) in text
    for sentence in full_results["answer"]["sentences"]:
        assert sentence.split(":")[0] in text
    assert "ab" * 32 in text.replace("\n", "").replace(" ", "")  # the model's SHA-256


def test_pdf_has_an_outline_of_sections_figures_and_tables(reports):
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(reports["pdf"])
    assert reader.page_mode == "/UseOutlines"
    top = [item for item in reader.outline if not isinstance(item, list)]
    doc = content.build(example_results())
    assert [item.title for item in top] == ["Title page"] + [
        f"{k}. {s.title}" for k, s in enumerate(doc.sections, start=1)]
    children = [item for item in reader.outline if isinstance(item, list)]
    expected = [[item.title for item in s.items if isinstance(item, content.Figure | content.Table)]
                for s in doc.sections]
    assert [[c.title for c in group] for group in children] == [e for e in expected if e]
    # Each entry points at the page where its title is printed.
    pdftotext = poppler("pdftotext")

    def page_text(page: int) -> str:
        return " ".join(subprocess.run([pdftotext, "-f", str(page), "-l", str(page), "-layout",
                                        str(reports["pdf"]), "-"], check=True,
                                       capture_output=True, text=True, timeout=60).stdout.split())

    for item in top[1:] + [c for group in children for c in group]:
        page = reader.get_destination_page_number(item) + 1
        assert item.title.split(". ", 1)[-1] in page_text(page), (item.title, page)
    # The title page's contents link to the sections, in order.
    targets = [reader.get_page_number(link.get_object()["/Dest"][0].get_object()) + 1
               for link in reader.pages[0]["/Annots"]]
    assert targets == [reader.get_destination_page_number(item) + 1 for item in top[1:]]
    for section, page in zip(doc.sections, targets, strict=True):
        assert f"page {page} of" in page_text(page) and section.title in page_text(page)


def test_pdf_tables_are_tables_within_the_margins(tmp_path):
    """Wide tables are drawn in proportional type, wrapped at spaces within their columns and
    inside the page margins; only a long token (a hash) is broken."""
    prose = "a cell with a long sentence that has to wrap over several lines in its column"
    digest = "0123456789abcdef" * 8
    doc = content.Document(
        title="Tables", subject="s", facts=(), answer=(), sections=(content.Section(
            "t", "Tables", (content.Table("wide", "Wide", tuple(f"column {j}" for j in range(7)),
                                          ((prose,) * 6 + (digest,),) * 3, (False,) * 7),
                            content.Table("kv", "Key and value", None,
                                          (("hash", digest), ("sentence", prose))))),))
    path = write_document(doc, tmp_path, created="2026-12-01T00:00:00+00:00",
                          formats=["pdf"])["pdf"]
    fonts = subprocess.run([poppler("pdffonts"), str(path)], check=True, capture_output=True,
                           text=True, timeout=60).stdout
    assert "Mono" not in fonts and "DejaVuSans" in fonts
    bbox = subprocess.run([poppler("pdftotext"), "-bbox", str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    width = float(re.search(r'<page width="([\d.]+)"', bbox).group(1))
    words = [(float(x0), float(x1), w) for x0, x1, w in re.findall(
        r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>',
        bbox)]
    assert words and all(0.05 * width - 1 <= x0 and x1 <= 0.95 * width + 1
                         for x0, x1, _ in words)
    found = [w for _, _, w in words]
    for word in prose.split():
        assert found.count(word) >= 3 * 6 + 1  # whole, in every cell it is in
    assert "".join(w for w in found if re.fullmatch(r"[0-9a-f]+", w)).count(digest) == 4


def test_pdf_shows_names_literally(full_results, tmp_path):
    path = write_pdf(_evil(full_results), tmp_path / "report.pdf")
    text = subprocess.run([poppler("pdftotext"), str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    assert EVIL_MODEL in text
    assert EVIL_SITE in text
    assert DOLLAR_UNIT in text  # drawn as written, not as (broken) mathtext


# ---- the HTML in headless Chromium ----

_IMAGES = """() => Array.from(document.images, im => ({
    src: im.getAttribute("src").slice(0, 22), complete: im.complete,
    width: im.naturalWidth, height: im.naturalHeight}))"""


_LAYOUT = """() => ({
    page: document.documentElement.scrollWidth, viewport: window.innerWidth,
    tables: Array.from(document.querySelectorAll("table"), t => ({
        boxed: t.parentElement.classList.contains("table-scroll")
            && getComputedStyle(t.parentElement).overflowX === "auto",
        box: t.parentElement.getBoundingClientRect().width,
        scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth})),
    figures: Array.from(document.querySelectorAll("figure .figure-scroll"), f => ({
        box: f.getBoundingClientRect().width,
        shown: f.querySelector("img").getBoundingClientRect().width,
        natural: f.querySelector("img").naturalWidth})),
    wordBreak: Array.from(document.querySelectorAll("p, td, th, dd, figcaption"),
                          e => getComputedStyle(e).wordBreak),
    anywhere: Array.from(document.querySelectorAll("td, p, th, dd, figcaption"))
        .filter(e => getComputedStyle(e).overflowWrap === "anywhere").map(e => e.textContent)})"""


def _load(browser, path: Path, width: int = 1100) -> dict:
    """Opens a file in a new page ``width`` CSS pixels wide, recording console messages, errors
    and requests; every request except the file itself is aborted."""
    url = path.as_uri()
    page = browser.new_page(viewport={"width": width, "height": 900})
    seen: dict = {"page": page, "url": url, "console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url == url
               else route.abort())
    page.goto(url, wait_until="load")
    return seen


def test_html_in_headless_chromium(reports, evil_html, tmp_path):
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is absent (Debian package chromium; `make test` installs it "
                     "as root)")
    from playwright.sync_api import sync_playwright

    leaky = tmp_path / "leaky.html"
    leaky.write_text(reports["html"].read_text().replace(
        "<main>", '<main><img src="http://192.0.2.1/pixel.png" alt="">', 1))
    screenshot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--headless"])
        try:
            report = _load(browser, reports["html"])
            images = report["page"].evaluate(_IMAGES)
            report["page"].screenshot(path=str(screenshot), full_page=True)
            title = report["page"].title()
            bad = _load(browser, evil_html)
            scripts = bad["page"].evaluate("() => document.scripts.length")
            heading = bad["page"].evaluate("() => document.querySelector('h1').textContent")
            leak = _load(browser, leaky)
            layouts = {width: _load(browser, reports["html"], width)["page"].evaluate(_LAYOUT)
                       for width in (390, 1280)}
        finally:
            browser.close()
    print(f"screenshot of the HTML report: {screenshot}")

    assert report["errors"] == [] and report["console"] == []
    assert [u for u in report["requests"] if u != report["url"]
            and not u.startswith("data:")] == []
    assert title == "subnet report: blog_cnn on mnist"
    assert len(images) == FULL_FIGURES
    for image in images:
        assert image["src"] == "data:image/svg+xml;bas"
        assert image["complete"] and image["width"] > 0 and image["height"] > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000

    # Names are text, not markup: nothing ran, nothing was added.
    assert scripts == 0 and bad["errors"] == [] and bad["console"] == []
    assert heading == f"subnet report: {EVIL_MODEL} on mnist"
    # The check above can fail: an external image is blocked by the policy and reported.
    assert any("Content Security Policy" in m for m in leak["console"])

    # At phone and desktop widths: the page itself never scrolls sideways; every table sits
    # in a box that does (and at 390 px the wide ones need it); a figure is shown at least
    # 608 px wide (its box scrolls), so its 10-point labels (13.3 px at the figure's natural
    # width) are >= 10 px; words break only at spaces, and only long tokens anywhere.
    for width, layout in layouts.items():
        assert layout["viewport"] == width and layout["page"] <= width
        assert layout["tables"] and all(t["boxed"] and t["box"] <= width
                                        for t in layout["tables"])
        assert (width == 390) == any(t["scrolls"] for t in layout["tables"])
        assert len(layout["figures"]) == FULL_FIGURES
        for figure in layout["figures"]:
            assert figure["box"] <= width
            assert figure["shown"] / figure["natural"] * 10 * 96 / 72 >= 10
        assert set(layout["wordBreak"]) == {"normal"}
        assert layout["anywhere"] and all(max(map(len, text.split())) >= 25
                                          for text in layout["anywhere"])
