import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.knowledge.models import KnowledgeFile
from apps.knowledge.services import user_files_dir
from apps.knowledge.tests.conftest import HANDBOOK, files_on_disk, upload
from workers.ingest.tests.pdf_factory import make_pdf

pytestmark = pytest.mark.django_db


def _error(response) -> dict:
    body = response.json()
    assert body["status"] == "error", body
    assert body["request_id"]
    return body["error"]


def test_limits_name_the_allowed_types_and_the_size_cap(client_for, user, settings):
    settings.MAX_UPLOAD_BYTES = 12345
    response = client_for(user).get("/v1/files/limits")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["max_upload_bytes"] == 12345
    assert {"txt", "md", "html", "pdf", "csv", "json"} <= set(data["allowed_extensions"])
    assert "exe" not in data["allowed_extensions"]


def test_the_api_needs_a_login(api_client):
    assert api_client.get("/v1/files").status_code == 401
    assert upload(api_client, "a.txt", b"hello").status_code == 401


def test_upload_stores_the_file_under_the_owner_and_records_it(client_for, user):
    content = HANDBOOK.encode()
    response = upload(client_for(user), "handbook.md", content, "text/markdown", folder="station/docs")

    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert data["name"] == "handbook.md" and data["folder"] == "station/docs"
    assert data["kind"] == "markdown" and data["status"] == "queued"
    assert data["size_bytes"] == len(content) and data["sha256"] == hashlib.sha256(content).hexdigest()
    path = user_files_dir(user.pk) / "handbook.md"
    assert path.read_bytes() == content
    file = KnowledgeFile.objects.get(pk=data["file_id"])
    assert file.owner == user and file.storage_path == f"users/{user.pk}/files/handbook.md"
    assert files_on_disk(user) == ["handbook.md"], "no temporary files are left behind"


def test_upload_queues_ingestion_only_once_the_row_is_committed(client_for, user, django_capture_on_commit_callbacks):
    from unittest import mock

    with mock.patch("apps.knowledge.tasks.ingest_file.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            response = upload(client_for(user), "notes.txt", b"Some notes about the station.")
    assert response.status_code == 201
    delay.assert_called_once_with(response.json()["data"]["file_id"])


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd.txt",
        "..\\..\\boot.ini.txt",
        "/etc/cron.d/evil.txt",
        "notes/../../x.md",
        "..",
        "../",
        "a/b.txt",
    ],
)
def test_traversal_names_are_refused_and_nothing_is_written(client_for, user, name):
    response = upload(client_for(user), name, b"harmless text")

    assert response.status_code == 400, response.content
    error = _error(response)
    assert error["code"] == "invalid_filename"
    assert KnowledgeFile.objects.count() == 0
    assert files_on_disk(user) == []


def test_awkward_but_harmless_names_are_cleaned(client_for, user):
    response = upload(client_for(user), ".hidden  report<v2>?.txt", b"text")
    assert response.status_code == 201, response.content
    assert response.json()["data"]["name"] == "hidden report_v2__.txt"
    assert files_on_disk(user) == ["hidden report_v2__.txt"]


def test_oversize_files_get_413_in_the_envelope_and_nothing_is_written(client_for, user, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    client = client_for(user)

    response = upload(client, "big.txt", b"a" * 1001)

    assert response.status_code == 413
    error = _error(response)
    assert error["code"] == "payload_too_large"
    assert error["details"]["max_upload_bytes"] == 1000
    assert "1000 bytes" in error["message"] or "1000" in error["message"]
    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []

    exactly = upload(client, "fits.txt", b"a" * 1000)
    assert exactly.status_code == 201


def test_a_declared_body_far_over_the_limit_is_refused_before_parsing(client_for, user, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    response = client_for(user).generic(
        "POST",
        "/v1/files/upload",
        b"x" * 10,
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(50 * 1024 * 1024),
    )
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("name", "content", "code"),
    [
        ("tool.exe", b"MZ\x90\x00binary", "unsupported_file_type"),
        ("archive.zip", b"PK\x03\x04zip", "unsupported_file_type"),
        ("noextension", b"just text", "unsupported_file_type"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "unsupported_file_type"),
        ("report.md", make_pdf([["A PDF pretending to be markdown."]]), "unsupported_file_type"),
    ],
)
def test_disallowed_types_are_refused_by_name_and_by_content(client_for, user, name, content, code):
    response = upload(client_for(user), name, content)

    assert response.status_code == 415, response.content
    error = _error(response)
    assert error["code"] == code
    assert "txt" in error["details"]["allowed_extensions"]
    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []


@pytest.mark.parametrize(
    "content",
    [
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage without xref or pages",
        make_pdf([["A real page"]])[:120],  # truncated mid-file
        b"this is not a pdf at all",
    ],
)
def test_a_corrupt_pdf_is_refused_and_nothing_is_written(client_for, user, content):
    response = upload(client_for(user), "paper.pdf", content, "application/pdf")

    assert response.status_code == 400, response.content
    error = _error(response)
    assert error["code"] == "corrupt_file"
    assert "paper.pdf" in error["message"]
    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []


def test_invalid_json_and_empty_files_are_refused(client_for, user):
    client = client_for(user)
    bad_json = upload(client, "data.json", b'{"a": 1,')
    assert bad_json.status_code == 400 and _error(bad_json)["code"] == "corrupt_file"
    empty = upload(client, "empty.txt", b"")
    assert empty.status_code == 400 and _error(empty)["code"] == "empty_file"
    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []


def test_duplicate_content_is_detected_by_sha256(client_for, user):
    client = client_for(user)
    first = upload(client, "a.txt", b"the same words")
    second = upload(client, "b.txt", b"the same words")

    assert first.status_code == 201
    assert second.status_code == 409
    error = _error(second)
    assert error["code"] == "duplicate_file"
    assert error["details"] == {"file_id": first.json()["data"]["file_id"], "name": "a.txt"}
    assert files_on_disk(user) == ["a.txt"]


def test_the_same_content_may_belong_to_two_users(client_for, user, other_user):
    assert upload(client_for(user), "a.txt", b"shared words").status_code == 201
    assert upload(client_for(other_user), "a.txt", b"shared words").status_code == 201


def test_a_taken_name_is_never_overwritten(client_for, user):
    client = client_for(user)
    first = upload(client, "notes.txt", b"first version")
    second = upload(client, "NOTES.txt", b"second version")
    third = upload(client, "notes.txt", b"third version")

    assert [r.status_code for r in (first, second, third)] == [201, 201, 201]
    assert second.json()["data"]["name"] == "NOTES (2).txt"
    assert third.json()["data"]["name"] == "notes (3).txt"
    directory = user_files_dir(user.pk)
    assert (directory / "notes.txt").read_bytes() == b"first version"
    assert (directory / "notes (3).txt").read_bytes() == b"third version"


def test_a_stray_file_on_disk_is_not_overwritten_either(client_for, user):
    directory = user_files_dir(user.pk)
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_bytes(b"written by something else")

    response = upload(client_for(user), "notes.txt", b"uploaded")

    assert response.json()["data"]["name"] == "notes (2).txt"
    assert (directory / "notes.txt").read_bytes() == b"written by something else"


def test_upload_into_contexts(client_for, user, other_user):
    from apps.knowledge.services import context_create

    client = client_for(user)
    mine = context_create(actor=user, name="Station")
    theirs = context_create(actor=other_user, name="Theirs")

    refused = upload(client, "a.txt", b"into someone else's context", context_id=str(theirs.pk))
    assert refused.status_code == 404
    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []

    response = upload(client, "a.txt", b"into my context", context_id=str(mine.pk))
    assert response.status_code == 201
    detail = client.get(f"/v1/contexts/{mine.pk}").json()["data"]
    assert [f["file_id"] for f in detail["files"]] == [response.json()["data"]["file_id"]]


def test_files_are_private_to_their_owner(client_for, user, other_user):
    mine = upload(client_for(user), "secret.txt", b"my secret notes").json()["data"]
    intruder = client_for(other_user)

    assert intruder.get("/v1/files").json()["data"]["items"] == []
    assert intruder.get(f"/v1/files/{mine['file_id']}").status_code == 404
    assert intruder.delete(f"/v1/files/{mine['file_id']}").status_code == 404
    assert intruder.get(f"/v1/files/{mine['file_id']}/chunks").status_code == 404
    assert intruder.post(f"/v1/files/{mine['file_id']}/reingest").status_code == 404
    assert KnowledgeFile.objects.filter(pk=mine["file_id"]).exists()
    assert [f["file_id"] for f in client_for(user).get("/v1/files").json()["data"]["items"]] == [mine["file_id"]]


def test_delete_removes_the_row_and_the_bytes(client_for, user, django_capture_on_commit_callbacks):
    client = client_for(user)
    file_id = upload(client, "gone.txt", b"soon gone").json()["data"]["file_id"]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(f"/v1/files/{file_id}")

    assert response.status_code == 200 and response.json()["data"] == {"deleted": True, "file_id": file_id}
    assert not KnowledgeFile.objects.filter(pk=file_id).exists()
    assert files_on_disk(user) == []
    assert client.get(f"/v1/files/{file_id}").status_code == 404


def test_the_upload_needs_exactly_one_file(client_for, user):
    client = client_for(user)
    none = client.post("/v1/files/upload", {"folder": "x"}, format="multipart")
    assert none.status_code == 400 and _error(none)["code"] == "validation_error"
    two = client.post(
        "/v1/files/upload",
        {"file": [SimpleUploadedFile("a.txt", b"a"), SimpleUploadedFile("b.txt", b"b")]},
        format="multipart",
    )
    assert two.status_code == 400
    assert KnowledgeFile.objects.count() == 0


def _chunked_post(base: str, path: str, body_chunks, headers: dict) -> tuple[int, dict]:
    """POST with Transfer-Encoding: chunked (no Content-Length), as curl -T - or a streaming client does."""
    import http.client
    import json
    from urllib.parse import urlsplit

    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        connection.request("POST", path, body=body_chunks, headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (BrokenPipeError, ConnectionResetError):  # the server answered and closed early
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_measured_not_dropped(live_server_url, make_user, login_tokens):
    """Without a Content-Length, a body past the limit is a 413 in the envelope (it used to
    reach the view empty: "No file was uploaded"), and a small one arrives whole."""
    from django.conf import settings

    user = make_user()
    auth = {"Authorization": f"Bearer {login_tokens(user)['access_token']}"}
    boundary = "liminalboundary"
    megabyte = b"x" * (1024 * 1024)

    def multipart(parts, name="big.txt"):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        yield from parts
        yield f"\r\n--{boundary}--\r\n".encode()

    form = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    small = [b"Chunked uploads arrive whole. ", b"Every part of them.\n"]
    status, body = _chunked_post(live_server_url, "/v1/files/upload", multipart(small, "small.txt"), form)
    assert status in (200, 201, 202), body
    assert KnowledgeFile.objects.get(owner=user, name="small.txt").size_bytes == len(b"".join(small))

    status, body = _chunked_post(
        live_server_url,
        "/v1/files/upload",
        multipart([megabyte] * (settings.MAX_UPLOAD_BYTES // (1024 * 1024) + 6)),
        form,
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large", body
    assert not KnowledgeFile.objects.filter(owner=user, name="big.txt").exists()

    status, body = _chunked_post(
        live_server_url,
        "/v1/conversations",
        iter([b'{"title": "sent in ', b'chunks"}']),
        {**auth, "Content-Type": "application/json"},
    )
    assert status == 201, body
    assert body["data"]["title"] == "sent in chunks"
