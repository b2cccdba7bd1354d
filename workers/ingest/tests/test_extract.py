import json

from workers.ingest import BlockKind, FileKind, extract_document
from workers.ingest.tests.pdf_factory import make_pdf, with_outline


def blocks_of(document):
    return [(block.kind, block.text, block.heading_path) for block in document.blocks]


def test_block_offsets_index_the_document_text():
    document = extract_document("a.md", b"# T\n\nOne.\n\nTwo.\n")
    for block in document.blocks:
        assert document.text[block.char_start : block.char_end] == block.text


def test_plain_text_paragraphs_with_source_lines():
    data = b"\n\nFirst paragraph\nstill first.\r\n\r\n  \nSecond paragraph.\n\n\n\nThird.\n"
    document = extract_document("notes.txt", data)
    assert document.kind is FileKind.TEXT
    assert [(block.text, block.line) for block in document.blocks] == [
        ("First paragraph\nstill first.", 3),
        ("Second paragraph.", 7),
        ("Third.", 11),
    ]


def test_markdown_headings_build_paths_and_keep_code_together():
    data = b"""---
title: Field guide
---
# Birds

Birds have feathers.

## Owls

Owls hunt at night.

```python
# not a heading
print("hoot")
```

Nesting
-------

- twigs
- moss

# Fish

Fish swim.
"""
    document = extract_document("guide.md", data)
    assert document.title == "Birds"
    assert blocks_of(document) == [
        (BlockKind.PARAGRAPH, "title: Field guide", ()),
        (BlockKind.HEADING, "Birds", ("Birds",)),
        (BlockKind.PARAGRAPH, "Birds have feathers.", ("Birds",)),
        (BlockKind.HEADING, "Owls", ("Birds", "Owls")),
        (BlockKind.PARAGRAPH, "Owls hunt at night.", ("Birds", "Owls")),
        (BlockKind.CODE, '```python\n# not a heading\nprint("hoot")\n```', ("Birds", "Owls")),
        (BlockKind.HEADING, "Nesting", ("Birds", "Nesting")),
        (BlockKind.PARAGRAPH, "- twigs\n- moss", ("Birds", "Nesting")),
        (BlockKind.HEADING, "Fish", ("Fish",)),
        (BlockKind.PARAGRAPH, "Fish swim.", ("Fish",)),
    ]
    assert [block.line for block in document.blocks][:3] == [2, 4, 6]


def test_html_drops_scripts_and_styles_and_keeps_structure():
    data = b"""<!doctype html>
<html><head><title>Tea &amp; Coffee</title><style>p { color: red }</style>
<script>var hidden = "do not index";</script></head>
<body>
<nav><a href="/">Home</a></nav>
<h1>Brewing</h1>
<p>Water at <b>90&deg;C</b>
   is ideal for   green tea.</p>
<h2>Steps</h2>
<ul><li>Warm the pot</li><li>Add leaves</li></ul>
<table><tr><th>Tea</th><th>Minutes</th></tr><tr><td>Green</td><td>2</td></tr></table>
<p>Line one<br>line two</p>
<pre>  indented
    code</pre>
<noscript>Enable JavaScript</noscript>
</body></html>"""
    document = extract_document("tea.html", data)
    assert document.title == "Tea & Coffee"
    assert "hidden" not in document.text and "color" not in document.text
    assert "Enable JavaScript" not in document.text
    assert blocks_of(document) == [
        (BlockKind.PARAGRAPH, "Home", ()),
        (BlockKind.HEADING, "Brewing", ("Brewing",)),
        (BlockKind.PARAGRAPH, "Water at 90\u00b0C is ideal for green tea.", ("Brewing",)),
        (BlockKind.HEADING, "Steps", ("Brewing", "Steps")),
        (BlockKind.PARAGRAPH, "- Warm the pot", ("Brewing", "Steps")),
        (BlockKind.PARAGRAPH, "- Add leaves", ("Brewing", "Steps")),
        (BlockKind.PARAGRAPH, "Tea | Minutes", ("Brewing", "Steps")),
        (BlockKind.PARAGRAPH, "Green | 2", ("Brewing", "Steps")),
        (BlockKind.PARAGRAPH, "Line one\nline two", ("Brewing", "Steps")),
        (BlockKind.CODE, "indented\n    code", ("Brewing", "Steps")),
    ]
    assert document.blocks[1].line == 6


def test_pdf_text_is_extracted_per_page():
    pdf = make_pdf(
        [
            ["Photosynthesis converts light into chemical energy in plants."],
            ["Chlorophyll absorbs mostly blue and red light."],
            [],
        ],
        title="Plant notes",
    )
    document = extract_document("plants.pdf", pdf)
    assert document.kind is FileKind.PDF
    assert document.title == "Plant notes"
    assert document.page_count == 3
    assert [(block.page, block.text) for block in document.blocks] == [
        (1, "Photosynthesis converts light into chemical energy in plants."),
        (2, "Chlorophyll absorbs mostly blue and red light."),
    ]


def test_pdf_paragraphs_break_after_a_short_closing_line():
    long_line = "This line of the paragraph runs across the full width of the page and on"
    pdf = make_pdf([[long_line, long_line, "and then it stops.", long_line, "Second ends."]])
    document = extract_document("layout.pdf", pdf)
    assert [block.text for block in document.blocks] == [
        f"{long_line}\n{long_line}\nand then it stops.",
        f"{long_line}\nSecond ends.",
    ]


def test_pdf_bookmarks_give_heading_paths():
    pdf = make_pdf([["Intro text."], ["Method text."], ["More method."], ["Results text."]])
    pdf = with_outline(
        pdf,
        [("Introduction", 0, None), ("Methods", 1, None), ("Sampling", 2, "Methods"), ("Results", 3, None)],
    )
    document = extract_document("paper.pdf", pdf)
    assert [(block.page, block.heading_path) for block in document.blocks] == [
        (1, ("Introduction",)),
        (2, ("Methods",)),
        (3, ("Methods", "Sampling")),
        (4, ("Results",)),
    ]


def test_csv_rows_become_named_records_with_lines():
    data = b'name,city,notes\nAda,London,"wrote the first\nprogram"\nGrace,Arlington,\n\n'
    document = extract_document("people.csv", data)
    assert [(block.kind, block.text, block.line) for block in document.blocks] == [
        (BlockKind.HEADING, "Columns: name, city, notes", 1),
        (BlockKind.RECORD, "name: Ada; city: London; notes: wrote the first program", 2),
        (BlockKind.RECORD, "name: Grace; city: Arlington", 4),
    ]


def test_csv_with_semicolons_and_no_header():
    data = b"1;2;3\n4;5;6\n"
    document = extract_document("numbers.csv", data)
    texts = [block.text for block in document.blocks]
    assert texts[-1] == "column 1: 4; column 2: 5; column 3: 6"


def test_json_leaves_are_written_with_their_paths():
    data = json.dumps(
        {
            "product": {"name": "Kettle", "tags": ["steel", "1.7L"]},
            "reviews": [{"stars": 5, "text": "Boils fast"}],
            "discontinued": False,
        }
    ).encode()
    document = extract_document("product.json", data)
    assert [block.text for block in document.blocks] == [
        "product.name: Kettle\nproduct.tags: steel, 1.7L",
        "reviews[0].stars: 5\nreviews[0].text: Boils fast",
        "discontinued: false",
    ]
    listing = extract_document("list.json", b'[{"a": 1}, "plain"]')
    assert [block.text for block in listing.blocks] == ["[0].a: 1", "[1]: plain"]
