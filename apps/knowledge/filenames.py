"""File and folder names that are safe on the shared filesystem and still recognisable.

A name that tries to leave its directory (path separators, `..`, NUL) is refused outright rather
than quietly rewritten: the uploader should know their name was not used. Characters that are
merely awkward (control characters, characters Windows forbids) are replaced.
"""

import re
import unicodedata
from pathlib import PurePath

from liminal.api import ApiError

MAX_NAME_LENGTH = 180
MAX_FOLDER_DEPTH = 8
MAX_FOLDER_SEGMENT_LENGTH = 64

_AWKWARD = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
_SPACES = re.compile(r"\s+")


class InvalidFileName(ApiError):
    def __init__(self, message: str):
        super().__init__(400, "invalid_filename", message)


def _normalise(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    # Format characters (bidi overrides, zero-width joiners) make a name display as another one.
    value = "".join(char for char in value if unicodedata.category(char) != "Cf")
    return _SPACES.sub(" ", _AWKWARD.sub("_", value)).strip()


def clean_file_name(raw: str) -> str:
    """A safe file name from what the client sent, or InvalidFileName."""
    raw = raw or ""
    if "\x00" in raw:
        raise InvalidFileName("File names cannot contain NUL characters.")
    if "/" in raw or "\\" in raw:
        raise InvalidFileName(
            f"“{raw}” is a path, not a file name: names cannot contain “/” or “\\”. Rename the file and try again."
        )
    name = _normalise(raw).lstrip(".").strip()
    if raw.strip() in {".", ".."} or not name:
        raise InvalidFileName(f"“{raw}” is not a usable file name.")
    if len(name) > MAX_NAME_LENGTH:
        suffix = PurePath(name).suffix
        suffix = suffix if len(suffix) <= 16 else ""
        name = name[: MAX_NAME_LENGTH - len(suffix)].rstrip(" .") + suffix
    return name


def clean_folder(raw: str) -> str:
    """A virtual folder path like "research/papers" ('' for the top level), or InvalidFileName."""
    raw = (raw or "").strip().replace("\\", "/")
    segments = [segment.strip() for segment in raw.split("/") if segment.strip()]
    if any(segment in {".", ".."} or "\x00" in segment for segment in segments):
        raise InvalidFileName(f"“{raw}” is not a valid folder: “.” and “..” are not allowed.")
    segments = [_normalise(segment).lstrip(".").strip() for segment in segments]
    if any(not segment or len(segment) > MAX_FOLDER_SEGMENT_LENGTH for segment in segments):
        raise InvalidFileName(f"“{raw}” is not a valid folder name.")
    if len(segments) > MAX_FOLDER_DEPTH:
        raise InvalidFileName(f"Folders can be at most {MAX_FOLDER_DEPTH} levels deep.")
    return "/".join(segments)


def numbered(name: str, number: int) -> str:
    """report.pdf → report (2).pdf"""
    path = PurePath(name)
    stem, suffix = (path.stem, path.suffix) if path.suffix else (name, "")
    return f"{stem} ({number}){suffix}"
