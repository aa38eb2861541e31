"""/images: add, list, look up, read and delete catalogue images."""

from flask import jsonify, request

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

from .. import catalogue
from ..answers import accepted, image_response
from ..apidoc import documented
from ..auth import read_access, require_key
from ..context import settings
from ..errors import validated
from ..inputs import json_body, uploaded_files
from ..uploads import add_images as store_and_index
from . import api

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
    return jsonify(catalogue.page(validated(ImagePage, request.args.to_dict())))


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
    return jsonify({"existing": catalogue.existing(ids)})


@api.get("/images/<image_id>")
@documented("getImage", "images", ok=(200, Image, "The image."), errors=READ_ERRORS)
@read_access
def get_image(image_id: str):
    """An image's metadata and links"""
    return jsonify(catalogue.image(image_id))


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
    return image_response(catalogue.jpeg(image_id), "image/jpeg")


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
    return image_response(catalogue.jpeg(image_id, thumbnail=True), "image/jpeg")


@api.delete("/images/<image_id>")
@documented("deleteImage", "images", ok=(200, Deleted, "Deleted."), errors=READ_ERRORS)
@require_key
def delete_image(image_id: str):
    """Delete an image from the catalogue and from every index

    Takes effect at once: no later search returns it.
    """
    return jsonify(catalogue.delete(image_id))
