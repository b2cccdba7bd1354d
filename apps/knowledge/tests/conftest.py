import shutil

import pytest
from django.conf import settings

from apps.knowledge.services import user_files_dir

HANDBOOK = """# Zephyr Research Station field handbook

## Arrival and quarters

New staff arrive by the supply ferry from Port Aldous, which sails every second Tuesday.
Quarters are assigned by the station steward; each cabin sleeps two people and has its own
heater. Bring thermal layers: the common room is heated only between six in the morning and
ten at night. Laundry runs on Thursdays and Sundays, and the drying room doubles as the boot store.

## Reactor safety

The station is powered by a small molten-salt reactor in the lower annex. The reactor shuts
down automatically when the core outlet temperature exceeds 840 degrees Celsius, and the
control rods drop within four seconds of the trip signal. Only the two licensed operators may
reset the trip; everyone else must leave the annex and report to the muster point by the radio
mast. The annual safety drill takes place in the first week of March.

## Food and the galley

Meals are cooked in the galley on a fixed rota. Breakfast is at seven, lunch at half past
twelve, and dinner at seven in the evening. Fresh vegetables come from the hydroponic
greenhouse, which yields about forty kilograms of lettuce and herbs a month. Anyone with an
allergy must tell the cook on their first day so it can be written on the galley board.

## Wildlife rules

Elephant seals haul out on the north beach from September to November. Keep at least fifteen
metres away from any seal, never walk between a seal and the sea, and do not feed the skuas.
Penguin colonies on the east cliffs are off limits without a permit from the station biologist.
"""


@pytest.fixture
def owner_dirs():
    """Remove the shared-filesystem directories of users created in the test."""
    created = []

    def track(user):
        created.append(user)
        return user_files_dir(user.pk)

    yield track
    for user in created:
        shutil.rmtree(user_files_dir(user.pk).parent, ignore_errors=True)


@pytest.fixture
def user(make_user, owner_dirs):
    user = make_user()
    owner_dirs(user)
    return user


@pytest.fixture
def other_user(make_user, owner_dirs):
    user = make_user()
    owner_dirs(user)
    return user


@pytest.fixture
def client_for(owner_dirs):
    from rest_framework.test import APIClient

    def make(user):
        owner_dirs(user)
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


BOUNDARY = "liminal-test-boundary-7MA4YWxkTrZu0gW"


def multipart_body(name: str, content: bytes, content_type: str = "application/octet-stream", **fields) -> bytes:
    """A multipart body with the file name exactly as given (Django's test client would strip
    directories from it, hiding what a hostile client can send)."""
    parts = []
    for key, value in fields.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{item}\r\n'.encode())
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def upload(client, name, content, content_type="application/octet-stream", **fields):
    return client.generic(
        "POST",
        "/v1/files/upload",
        multipart_body(name, content, content_type, **fields),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    )


def files_on_disk(user) -> list[str]:
    directory = user_files_dir(user.pk)
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


assert str(settings.SHARED_FS_ROOT).endswith("test-shared"), "tests must not touch the real shared filesystem"
