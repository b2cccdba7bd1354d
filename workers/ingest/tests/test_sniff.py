import io

import pytest
from pypdf import PdfReader, PdfWriter

from workers.ingest import (
    ALLOWED_EXTENSIONS,
    CorruptFile,
    FileKind,
    IngestError,
    UnsupportedFileType,
    detect_file_type,
    extract_document,
)
from workers.ingest.tests.pdf_factory import make_pdf

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"


def test_allow_list_is_the_documented_types():
    assert set(ALLOWED_EXTENSIONS) == {"txt", "md", "markdown", "html", "htm", "pdf", "csv", "json"}


@pytest.mark.parametrize(
    ("filename", "data", "kind"),
    [
        ("notes.txt", b"plain words\n", FileKind.TEXT),
        ("NOTES.TXT", b"upper-case extension", FileKind.TEXT),
        ("readme.md", b"# Title\n\nBody", FileKind.MARKDOWN),
        ("page.htm", b"<p>hi</p>", FileKind.HTML),
        ("table.csv", b"a,b\n1,2\n", FileKind.CSV),
        ("data.json", b'{"a": [1, 2]}', FileKind.JSON),
        ("paper.pdf", make_pdf([["Hello"]]), FileKind.PDF),
        ("utf16.txt", "caf\u00e9 au lait".encode("utf-16"), FileKind.TEXT),
        ("legacy.txt", "caf\u00e9 \u2013 cr\u00e8me".encode("cp1252"), FileKind.TEXT),
        ("empty.txt", b"", FileKind.TEXT),
    ],
)
def test_accepts_allowed_types_whose_content_matches(filename, data, kind):
    assert detect_file_type(filename, data) is kind


@pytest.mark.parametrize("filename", ["setup.exe", "report.docx", "archive.tar.gz", "image.png"])
def test_rejects_extensions_off_the_allow_list(filename):
    with pytest.raises(UnsupportedFileType) as raised:
        detect_file_type(filename, b"anything")
    assert "not supported" in raised.value.message
    assert ".pdf" in raised.value.message
    assert raised.value.code == "unsupported_file_type"


def test_rejects_a_file_without_extension():
    with pytest.raises(UnsupportedFileType, match="no file extension"):
        detect_file_type("Makefile", b"all:\n")


def test_rejects_binary_content_named_as_text_and_names_what_it_is():
    with pytest.raises(UnsupportedFileType, match="PNG image, not text"):
        detect_file_type("photo.txt", PNG)
    with pytest.raises(UnsupportedFileType, match="binary data"):
        detect_file_type("blob.md", bytes(range(256)) * 4)
    with pytest.raises(UnsupportedFileType):
        detect_file_type("control.csv", b"a,b\n" + b"\x01\x02\x03\x04" * 50)


def test_rejects_a_pdf_disguised_as_text():
    with pytest.raises(UnsupportedFileType, match="with a .pdf extension"):
        detect_file_type("paper.txt", make_pdf([["Hello"]]))


def test_rejects_a_pdf_name_without_pdf_content():
    with pytest.raises(CorruptFile, match="no %PDF- header"):
        detect_file_type("fake.pdf", b"just some text pretending to be a pdf")
    with pytest.raises(UnsupportedFileType, match="PNG image, not a PDF"):
        detect_file_type("fake.pdf", PNG)


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7\n" + b"\x00\x13garbage that is no PDF structure at all" * 20,
        make_pdf([["A page that will be cut short"]])[:150],
    ],
    ids=["garbage-after-header", "truncated"],
)
def test_rejects_a_corrupt_pdf(data):
    with pytest.raises(CorruptFile, match="damaged PDF") as raised:
        extract_document("broken.pdf", data)
    assert raised.value.code == "corrupt_file"
    assert "broken.pdf" in str(raised.value)


def test_rejects_a_password_protected_pdf():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([["Secret"]]))))
    writer.encrypt(user_password="hunter2", algorithm="AES-128")
    output = io.BytesIO()
    writer.write(output)
    with pytest.raises(UnsupportedFileType, match="password-protected"):
        detect_file_type("locked.pdf", output.getvalue())


def test_accepts_a_pdf_encrypted_with_an_empty_user_password():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([["Readable anyway"]]))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    output = io.BytesIO()
    writer.write(output)
    document = extract_document("restricted.pdf", output.getvalue())
    assert "Readable anyway" in document.text


def test_rejects_invalid_json_with_its_position():
    with pytest.raises(CorruptFile, match=r"not valid JSON: .* line 2, column"):
        detect_file_type("data.json", b'{"a": 1,\n "b": }')
    with pytest.raises(CorruptFile, match="empty"):
        detect_file_type("data.json", b"  \n")


def test_all_errors_share_a_base_class_with_a_message():
    for error_type in (UnsupportedFileType, CorruptFile):
        error = error_type("explained")
        assert isinstance(error, IngestError)
        assert error.message == str(error) == "explained"
