import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.knowledge import services
from apps.knowledge.models import Context, ContextFile, KnowledgeFile
from apps.knowledge.tests.conftest import HANDBOOK, files_on_disk

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(client, user):
    client.force_login(user)
    return client


def test_pages_need_a_login(client):
    response = client.get("/knowledge/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_index_shows_the_upload_form_with_the_limits(browser, settings):
    settings.MAX_UPLOAD_BYTES = 2 * 1024 * 1024
    page = browser.get("/knowledge/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'enctype="multipart/form-data"' in html and "2.0 MiB" in html and ".pdf" in html
    assert "No files yet" in html


def test_upload_through_the_page_then_watch_its_status(browser, user):
    response = browser.post(
        "/knowledge/files/upload",
        {"file": SimpleUploadedFile("handbook.md", HANDBOOK.encode(), "text/markdown"), "folder": "station"},
    )
    assert response.status_code == 302
    file = KnowledgeFile.objects.get(owner=user)
    assert file.name == "handbook.md" and file.folder == "station"

    page = browser.get("/knowledge/").content.decode()
    assert "handbook.md" in page and "Queued" in page
    assert 'hx-trigger="every 2s"' in page, "the table polls while a file is pending"

    services.file_ingest(file_id=file.pk)
    table = browser.get("/knowledge/files/table", HTTP_HX_REQUEST="true").content.decode()
    assert "Ready" in table and "every 2s" not in table, "polling stops once everything is settled"
    status = browser.get(f"/knowledge/files/{file.pk}/status").content.decode()
    assert "Ready" in status and "hx-trigger" not in status

    detail = browser.get(f"/knowledge/files/{file.pk}/").content.decode()
    assert "840 degrees Celsius" in detail and "Reactor safety" in detail


def test_upload_errors_are_shown_on_the_page_and_nothing_is_kept(browser, user, settings):
    settings.MAX_UPLOAD_BYTES = 100
    too_big = browser.post("/knowledge/files/upload", {"file": SimpleUploadedFile("big.txt", b"x" * 101)})
    assert too_big.status_code == 413 and "upload limit" in too_big.content.decode()

    exe = browser.post("/knowledge/files/upload", {"file": SimpleUploadedFile("tool.exe", b"MZ\x90")})
    assert exe.status_code == 415 and "not supported" in exe.content.decode()

    pdf = browser.post("/knowledge/files/upload", {"file": SimpleUploadedFile("x.pdf", b"%PDF-1.4 broken")})
    assert pdf.status_code == 400 and "damaged PDF" in pdf.content.decode()

    assert KnowledgeFile.objects.count() == 0 and files_on_disk(user) == []


def test_failed_ingestion_shows_its_error(browser, user):
    file = services.file_upload(actor=user, name="blank.md", content=b"\n\n \n")
    services.file_ingest(file_id=file.pk)
    table = browser.get("/knowledge/files/table").content.decode()
    assert "Failed" in table and "No text could be extracted from “blank.md”" in table


def test_delete_and_reingest_buttons(browser, user, django_capture_on_commit_callbacks):
    file = services.file_upload(actor=user, name="notes.txt", content=b"Notes about the generator.")
    services.file_ingest(file_id=file.pk)

    from unittest import mock

    with mock.patch("apps.knowledge.tasks.ingest_file.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            again = browser.post(f"/knowledge/files/{file.pk}/reingest", HTTP_HX_REQUEST="true")
    assert again.status_code == 200 and "Queued" in again.content.decode()
    delay.assert_called_once_with(str(file.pk))

    with django_capture_on_commit_callbacks(execute=True):
        gone = browser.post(f"/knowledge/files/{file.pk}/delete", HTTP_HX_REQUEST="true")
    assert gone.status_code == 200 and "notes.txt" not in gone.content.decode()
    assert not KnowledgeFile.objects.exists() and files_on_disk(user) == []


def test_contexts_from_the_pages(browser, user):
    created = browser.post("/knowledge/contexts/new", {"name": "Station", "description": "Field docs"})
    context = Context.objects.get(owner=user)
    assert created.status_code == 302 and created["Location"] == f"/knowledge/contexts/{context.pk}/"
    duplicate = browser.post("/knowledge/contexts/new", {"name": "station"})
    assert duplicate.status_code == 409 and "already have a context" in duplicate.content.decode()

    file = services.file_upload(actor=user, name="handbook.md", content=HANDBOOK.encode())
    services.file_ingest(file_id=file.pk)
    browser.post(f"/knowledge/contexts/{context.pk}/add", {"file_id": str(file.pk)})
    assert ContextFile.objects.filter(context=context, file=file).exists()
    browser.post(f"/knowledge/contexts/{context.pk}/add", {"folder": "ops/power"})
    page = browser.get(f"/knowledge/contexts/{context.pk}/").content.decode()
    assert "handbook.md" in page and "ops/power/" in page and "Ask this context" in page

    hits = browser.get(f"/knowledge/contexts/{context.pk}/search", {"q": "When is dinner?"}).content.decode()
    assert "[1] handbook.md" in hits and "dinner at seven" in hits
    miss = browser.get(f"/knowledge/contexts/{context.pk}/search", {"q": "sourdough bread recipe"}).content.decode()
    assert "Nothing in this context answers" in miss

    browser.post(f"/knowledge/contexts/{context.pk}/remove", {"file_id": str(file.pk)})
    assert not ContextFile.objects.filter(context=context).exists()
    browser.post(f"/knowledge/contexts/{context.pk}/delete")
    assert not Context.objects.exists() and KnowledgeFile.objects.filter(pk=file.pk).exists()


def test_other_users_pages_are_404(client, user, other_user):
    file = services.file_upload(actor=user, name="secret.txt", content=b"my secret")
    context = services.context_create(actor=user, name="Private")
    gap = services.knowledge_gap_record(actor=user, query="q")
    client.force_login(other_user)
    for url in [
        f"/knowledge/files/{file.pk}/",
        f"/knowledge/files/{file.pk}/status",
        f"/knowledge/contexts/{context.pk}/",
        f"/knowledge/contexts/{context.pk}/search?q=secret",
    ]:
        assert client.get(url).status_code == 404, url
    for url in [
        f"/knowledge/files/{file.pk}/delete",
        f"/knowledge/contexts/{context.pk}/delete",
        f"/knowledge/gaps/{gap.pk}/resolve",
    ]:
        assert client.post(url).status_code == 404, url
    assert "secret.txt" not in client.get("/knowledge/").content.decode()
    assert KnowledgeFile.objects.filter(pk=file.pk).exists() and Context.objects.filter(pk=context.pk).exists()


def test_gaps_page_lists_and_resolves(browser, user):
    gap = services.knowledge_gap_record(actor=user, query="How do I calibrate the anemometer?", best_score=0.12)
    page = browser.get("/knowledge/gaps/").content.decode()
    assert "How do I calibrate the anemometer?" in page and "0.12" in page
    browser.post(f"/knowledge/gaps/{gap.pk}/resolve")
    gap.refresh_from_db()
    assert gap.resolved_at is not None


def test_admin_pages_render(client, make_user, user):
    from apps.accounts.models import User

    services.file_upload(actor=user, name="notes.txt", content=b"Some notes.")
    client.force_login(make_user(role=User.Role.ADMIN))
    for url in [
        "/admin/knowledge/knowledgefile/",
        "/admin/knowledge/context/",
        "/admin/knowledge/chunk/",
        "/admin/knowledge/retrievalconfig/",
        "/admin/knowledge/knowledgegap/",
    ]:
        assert client.get(url).status_code == 200, url
