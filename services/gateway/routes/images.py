"""/images: add, list, look up, read and delete catalogue images."""

import logging

from flask import jsonify, request

from shared.catalog import ImageMeta
from shared.contracts import (
    Deleted,
    Image,
    ImageList,
    ImagePage,
    ImageUpload,
    ImageUploadForm,
    IndexAccepted,
    LookupAnswer,
    LookupRequest,
)

from ..answers import accepted, image_response
from ..apidoc import documented
from ..auth import read_access, require_key
from ..context import catalog, settings
from ..errors import ApiError, validated
from ..inputs import json_body, uploaded_files
from ..links import image_links
from ..uploads import add_images as store_and_index
from . import api

log = logging.getLogger(__name__)
READ_ERRORS = (401, 404, 503)


@api.post("/images")
@documented(
    "addImages",
    "images",
    form=ImageUploadForm,
    ok=(202, IndexAccepted, "Accepted: the job is queued. Poll `status_url`."),
    errors=(400, 401, 413, 415, 503),
)
@require_key
def add_images():
    """Add images to the catalogue and index them with every method

    Each file is validated and stored as a canonical JPEG. A bad file fails alone and is
    listed in `rejected`; the others are stored. Without `id`, an image's id is its content
    hash, so the same bytes are stored once.
    """
    files = uploaded_files()
    upload = validated(
        ImageUpload,
        {
            "files": len(files),
            "ids": request.form.getlist("id"),
            "metadata": request.form.getlist("metadata"),
        },
        max_files_per_request=settings().max_files_per_request,
    )
    return accepted(store_and_index(files, upload))


@api.get("/images")
@documented(
    "listImages",
    "images",
    query=ImagePage,
    ok=(200, ImageList, "A page of the catalogue."),
    errors=(400, 401, 503),
)
@read_access
def list_images():
    """List the catalogue, in the order images were added"""
    page = validated(ImagePage, request.args.to_dict())
    ids = catalog().ids(page.offset, page.limit)
    metas = catalog().get_metas(ids)
    images = [describe(metas[i]) for i in ids if i in metas]
    total = catalog().size()
    return jsonify({"total": total, "offset": page.offset, "limit": page.limit, "images": images})


@api.post("/images/lookup")
@documented(
    "lookupImages",
    "images",
    json=LookupRequest,
    ok=(200, LookupAnswer, "The ids found, in the order given."),
    errors=(400, 401, 413, 503),
)
@read_access
def lookup_images():
    """Which of the given ids are in the catalogue

    Bulk clients use it to skip images already stored.
    """
    ids = validated(LookupRequest, json_body()).ids
    found = catalog().existing(ids)
    return jsonify({"existing": [i for i in ids if i in found]})


def describe(meta: ImageMeta) -> dict:
    """An image as clients read it (the Image model)."""
    return {
        "id": meta.id,
        "filename": meta.filename,
        "width": meta.width,
        "height": meta.height,
        "added_at": meta.added_at,
        "metadata": meta.metadata,
        **image_links(meta.id),
    }


def _not_found(image_id: str) -> ApiError:
    return ApiError(404, "image_not_found", f"no image with id {image_id!r} in the catalogue")


def _jpeg(data: bytes | None, image_id: str):
    if data is None:
        raise _not_found(image_id)
    return image_response(data, "image/jpeg")


@api.get("/images/<image_id>")
@documented("getImage", "images", ok=(200, Image, "The image."), errors=READ_ERRORS)
@read_access
def get_image(image_id: str):
    """An image's metadata and links"""
    meta = catalog().get_meta(image_id)
    if meta is None:
        raise _not_found(image_id)
    return jsonify(describe(meta))


@api.get("/images/<image_id>/content")
@documented(
    "getImageContent",
    "images",
    ok=(200, None, "The image."),
    binary="image/jpeg",
    errors=READ_ERRORS,
)
@read_access
def get_image_content(image_id: str):
    """The stored canonical JPEG (at most 512 px by default)"""
    return _jpeg(catalog().get_image(image_id), image_id)


@api.get("/images/<image_id>/thumbnail")
@documented(
    "getThumbnail",
    "images",
    ok=(200, None, "The thumbnail."),
    binary="image/jpeg",
    errors=READ_ERRORS,
)
@read_access
def get_thumbnail(image_id: str):
    """A thumbnail JPEG (at most 160 px)"""
    return _jpeg(catalog().get_thumbnail(image_id), image_id)


@api.delete("/images/<image_id>")
@documented("deleteImage", "images", ok=(200, Deleted, "Deleted."), errors=READ_ERRORS)
@require_key
def delete_image(image_id: str):
    """Delete an image from the catalogue and from every index

    Takes effect at once: no later search returns it.
    """
    if not catalog().delete(image_id):
        raise _not_found(image_id)
    log.info("image deleted", extra={"image_id": image_id})
    return jsonify({"id": image_id, "deleted": True})
