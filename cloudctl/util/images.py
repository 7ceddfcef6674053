"""Container image references (pure): the tag of ``repo[:port]/path/name[:tag][@digest]`` and
the same reference with another tag."""

from __future__ import annotations


def tag_of(image: str) -> str:
    """The tag of an image reference, or "" when it has none (a digest is ignored)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def retag(image: str, tag: str) -> str:
    """``image`` with ``tag`` instead of its tag (any digest dropped); unchanged when either is
    empty."""
    if not image or not tag:
        return image
    head, _, last = image.split("@", 1)[0].rpartition("/")
    name = last.split(":", 1)[0]
    return f"{head}/{name}:{tag}" if head else f"{name}:{tag}"
