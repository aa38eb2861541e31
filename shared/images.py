"""Turning uploaded bytes into the service's canonical image, or a clear rejection.

Every image the service keeps (catalogue entry or query) is stored as one canonical JPEG:
decoded once, EXIF orientation applied, first frame of an animation, flattened onto white
when it has transparency, RGB, at most ``max_side`` pixels on its longer side, with none of
the upload's metadata (comments, EXIF, XMP, ICC profile). Workers embed
only canonical images, so a catalogue image re-embedded by a new model months later gives the
same pixels, and a query and its catalogue twin are preprocessed identically.

Memory: a large upload costs its decoded size once (at most 4 bytes per pixel; JPEG decodes
already shrunk, at 1/2 to 1/8 scale) plus a few megabytes. It is flattened and box-reduced in
strips, never copied whole; the gateway caps how many decode at once (MAX_CONCURRENT_DECODES).
"""

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError, WebPImagePlugin

CANONICAL_QUALITY = 90
THUMBNAIL_SIDE = 160
THUMBNAIL_QUALITY = 80
# Decoding keeps at least this many times the stored size before the final LANCZOS resample
# (Pillow's own thumbnail() default): a box reduction to exactly the stored size would alias.
REDUCING_GAP = 2
# Pixels per strip when a large upload is flattened and reduced: about 4 MB at a time.
STRIP_PIXELS = 1 << 20
# WebP decodes through libwebp's animation decoder: a canvas and the previous canvas, both
# allocated when the file is opened, and a copy of the frame besides Pillow's image. That is
# about four times what other formats take, so a WebP's pixels count four times against the
# limit (peak memory per format: README.md, "Measured here", `python -m bench.gateway_memory`).
WEBP_PIXEL_COST = 4
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Ids travel in URLs and Redis keys: letters, digits, dot, dash, underscore; no path separators.
IMAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ImageRejected(ValueError):
    """An upload the service will not take, with the HTTP status a client can act on."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class CanonicalImage:
    jpeg: bytes
    thumbnail: bytes
    width: int
    height: int
    source_format: str
    content_hash: str  # sha256 of the uploaded bytes, hex


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_image_id(data: bytes) -> str:
    """The id an image gets when the client names none: its content hash (first 128 bits)."""
    return content_hash(data)[:32]


def validate_image_id(image_id: str) -> str:
    if not IMAGE_ID_PATTERN.fullmatch(image_id):
        raise ImageRejected(
            f"invalid id {image_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no slashes, spaces or control characters)",
            code="invalid_id",
        )
    return image_id


def canonicalize(data: bytes, *, max_side: int, max_pixels: int) -> CanonicalImage:
    """Decode, orient, flatten and downscale an upload; raise ImageRejected for bad input."""
    if not data:
        raise ImageRejected("the file is empty (0 bytes)", code="empty_file")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        # Checked before opening: opening allocates libwebp's canvases.
        _refuse_too_many_pixels(WebPImagePlugin._get_size(data[:30]), "WEBP", max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its own pixel limit; we apply ours below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            source_format = image.format or "unknown"
            _refuse_too_many_pixels(image.size, source_format, max_pixels)
            image.seek(0)  # animations: the first frame
            # JPEG decodes at 1/2, 1/4 or 1/8 scale (DCT scaling) when that still leaves
            # twice the stored size; other formats ignore it and decode whole.
            image.draft("RGB", _decoded_size(image.size, max_side))
            image.load()
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            rgb = _reduced_rgb(image, max_side)
            del image  # the decoded upload, the one large buffer: gone before the resampling
    except ImageRejected:
        raise
    except Image.DecompressionBombError as err:
        raise ImageRejected(
            f"the image declares more pixels than the limit of {max_pixels:,}",
            status=413,
            code="too_many_pixels",
        ) from err
    except UnidentifiedImageError as err:
        raise ImageRejected(
            "the file is not an image in a format we read (JPEG, PNG, GIF, WebP, BMP, TIFF)",
            status=415,
            code="not_an_image",
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected(
            f"the image data is truncated or corrupt ({err})", code="corrupt_image"
        ) from err

    if orientation in _ORIENTATIONS:
        rgb = rgb.transpose(_ORIENTATIONS[orientation])
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Nothing of the upload's metadata is kept: no comment, EXIF (GPS, camera serials),
    # XMP or ICC profile. Pillow would copy a JPEG or GIF comment into the saved JPEG.
    rgb.info.clear()
    thumb = rgb.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return CanonicalImage(
        jpeg=_jpeg_bytes(rgb, CANONICAL_QUALITY),
        thumbnail=_jpeg_bytes(thumb, THUMBNAIL_QUALITY),
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        content_hash=content_hash(data),
    )


def _refuse_too_many_pixels(
    size: tuple[int, int] | None, source_format: str, max_pixels: int
) -> None:
    if size is None:
        return
    width, height = size
    if source_format == "WEBP" and width * height * WEBP_PIXEL_COST > max_pixels:
        raise ImageRejected(
            f"the WebP image declares {width}x{height} pixels, more than the limit of "
            f"{max_pixels // WEBP_PIXEL_COST:,} pixels for WebP (decoding WebP takes "
            f"{WEBP_PIXEL_COST} times the memory; other formats may have {max_pixels:,})",
            status=413,
            code="too_many_pixels",
        )
    if width * height > max_pixels:
        raise ImageRejected(
            f"the image declares {width}x{height} pixels, more than the limit of "
            f"{max_pixels:,} pixels",
            status=413,
            code="too_many_pixels",
        )


def _decoded_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """What a decoder that can shrink on load must still deliver: twice the stored size."""
    scale = min(1.0, REDUCING_GAP * max_side / max(size))
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def _reduced_rgb(image: Image.Image, max_side: int) -> Image.Image:
    """The decoded image as RGB, box-reduced by a whole factor that keeps at least twice the
    stored size, converted strip by strip so no full-size copy of a large upload is made."""
    factor = max(1, max(image.size) // (REDUCING_GAP * max_side))
    if factor == 1:
        return _to_rgb(image)  # at most 2 x 2 stored sides: copies are small
    width, height = image.size
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(1, STRIP_PIXELS // (width * factor)) * factor  # whole boxes per strip
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        # Flattening before averaging, as the whole image was before: box averages of the
        # flattened pixels, so transparent pixels' hidden colours never bleed in.
        reduced.paste(_to_rgb(strip).reduce(factor), (0, top // factor))
    return reduced


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB for every mode Pillow opens: 16-bit grey, CMYK, palettes, alpha (onto white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything to white.
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
