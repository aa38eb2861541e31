"""The URLs of an image, as every answer that names one gives them."""

from flask import url_for


def image_links(image_id: str) -> dict[str, str]:
    return {
        "url": url_for("api.get_image", image_id=image_id),
        "image_url": url_for("api.get_image_content", image_id=image_id),
        "thumbnail_url": url_for("api.get_thumbnail", image_id=image_id),
    }
