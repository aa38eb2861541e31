"""The catalogue as clients read it: an image with its links, a page, which ids exist."""

import logging
from typing import Any

from flask import url_for

from shared.blobs import BlobMissing
from shared.catalogue import ImageMeta
from shared.contracts import ImagePage

from .context import catalogue
from .errors import ApiError

log = logging.getLogger(__name__)


def image_links(image_id: str) -> dict[str, str]:
    return {
        "url": url_for("api.get_image", image_id=image_id),
        "image_url": url_for("api.get_image_content", image_id=image_id),
        "thumbnail_url": url_for("api.get_thumbnail", image_id=image_id),
    }


def describe(meta: ImageMeta) -> dict[str, Any]:
    """An image as clients read it (the Image model)."""
    return {
        "id": meta.id,
        "label": meta.label,
        "filename": meta.filename,
        "width": meta.width,
        "height": meta.height,
        "added_at": meta.added_at,
        "metadata": meta.metadata,
        **image_links(meta.id),
    }


def not_found(image_id: str) -> ApiError:
    return ApiError(404, "image_not_found", f"no image with id {image_id!r} in the catalogue")


def image(image_id: str) -> dict[str, Any]:
    meta = catalogue().get_meta(image_id)
    if meta is None:
        raise not_found(image_id)
    return describe(meta)


def page(request: ImagePage) -> dict[str, Any]:
    """A page of the catalogue, in the order images were added (the ImageList model)."""
    ids = catalogue().ids(request.offset, request.limit)
    metas = catalogue().get_metas(ids)
    return {
        "total": catalogue().size(),
        "offset": request.offset,
        "limit": request.limit,
        "images": [describe(metas[i]) for i in ids if i in metas],
    }


def existing(ids: list[str]) -> list[str]:
    """The ids that are in the catalogue, in the order given."""
    found = catalogue().existing(ids)
    return [i for i in ids if i in found]


def delete(image_id: str) -> dict[str, Any]:
    if not catalogue().delete(image_id):
        raise not_found(image_id)
    log.info("image deleted", extra={"image_id": image_id})
    return {"id": image_id, "deleted": True}


def jpeg(image_id: str, thumbnail: bool = False) -> bytes:
    """The stored canonical JPEG of an image, or its thumbnail."""
    try:
        data = catalogue().get_thumbnail(image_id) if thumbnail else catalogue().get_image(image_id)
    except BlobMissing as err:
        raise ApiError(500, "image_bytes_missing", f"the stored image is lost: {err}") from err
    if data is None:
        raise not_found(image_id)
    return data
