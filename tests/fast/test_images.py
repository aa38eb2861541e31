"""Canonicalisation of uploads: every format a phone or a user may send, and bad input."""

import io

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from shared.images import (
    ImageRejected,
    canonicalize,
    default_image_id,
    validate_image_id,
)
from tests.helpers.images import encode

LIMITS = {"max_side": 256, "max_pixels": 10_000_000}


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_canonical_image_is_rgb_jpeg_within_max_side():
    data = encode(Image.new("RGB", (800, 400), (200, 30, 30)), "PNG")
    image = canonicalize(data, **LIMITS)
    out = decoded(image.jpeg)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", (256, 128))
    assert (image.width, image.height) == (256, 128)
    assert max(decoded(image.thumbnail).size) <= 160
    assert out.getpixel((128, 64))[0] > 180


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"),
        lambda: encode(Image.new("L", (40, 30), 128), "PNG"),
        lambda: encode(Image.new("I;16", (40, 30), 40000), "PNG"),
        lambda: encode(Image.new("P", (40, 30), 3), "PNG"),
        lambda: encode(Image.new("RGBA", (40, 30), (255, 0, 0, 128)), "PNG"),
        lambda: encode(Image.new("RGB", (40, 30), (0, 0, 255)), "WEBP"),
        lambda: encode(Image.new("RGB", (40, 30), (0, 0, 255)), "BMP"),
    ],
    ids=["cmyk-jpeg", "grey-png", "16bit-png", "palette-png", "alpha-png", "webp", "bmp"],
)
def test_every_common_mode_becomes_rgb(make):
    out = decoded(canonicalize(make(), **LIMITS).jpeg)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_sixteen_bit_grey_keeps_its_brightness():
    out = decoded(canonicalize(encode(Image.new("I;16", (8, 8), 32768), "PNG"), **LIMITS).jpeg)
    assert 110 < out.getpixel((4, 4))[0] < 145  # half of 65535 -> about 128, not clipped


def test_transparency_is_flattened_onto_white():
    data = encode(Image.new("RGBA", (10, 10), (0, 0, 0, 0)), "PNG")
    assert decoded(canonicalize(data, **LIMITS).jpeg).getpixel((5, 5)) >= (250, 250, 250)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 255, 0)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, green, _ = decoded(canonicalize(data, **LIMITS).jpeg).getpixel((10, 10))
    assert red > 200 and green < 60


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.new("RGB", (60, 20), (10, 200, 10)), "JPEG", exif=exif)
    image = canonicalize(data, **LIMITS)
    assert (image.width, image.height) == (20, 60)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"%PDF-1.4 definitely not an image", 415, "not_an_image"),
        (encode(Image.new("RGB", (200, 200), (1, 2, 3)), "JPEG")[:300], 400, "corrupt_image"),
    ],
    ids=["empty", "not-an-image", "truncated-jpeg"],
)
def test_bad_input_is_rejected_with_a_reason(data, status, code):
    with pytest.raises(ImageRejected) as caught:
        canonicalize(data, **LIMITS)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG header declaring 30,000 x 30,000 pixels; decoding it would need 2.7 GB.
    bomb = encode(Image.new("1", (30_000, 30_000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageRejected) as caught:
        canonicalize(bomb, max_side=256, max_pixels=50_000_000)
    assert caught.value.status == 413


def test_default_id_is_the_content_hash():
    data = encode(Image.new("RGB", (5, 5)), "PNG")
    assert default_image_id(data) == default_image_id(bytes(data))
    assert default_image_id(data) != default_image_id(data + b"\0")
    assert len(default_image_id(data)) == 32


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/b", "a\\b", "new\nline", "-x", "x" * 129])
def test_ids_with_separators_or_control_characters_are_refused(bad):
    with pytest.raises(ImageRejected):
        validate_image_id(bad)


@pytest.mark.parametrize("good", ["a", "SKU-123_v2.front", "0" * 128])
def test_reasonable_ids_pass(good):
    assert validate_image_id(good) == good


def reference(image: Image.Image, max_side: int) -> Image.Image:
    """The canonical picture computed the plain way: flatten the whole image, then resize."""
    flat = Image.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A"))
    flat.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return flat


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def test_a_large_upload_is_reduced_in_strips_to_the_same_picture():
    # Odd sizes: the strips and the reduction boxes do not divide them evenly.
    gradient = Image.linear_gradient("L").resize((4099, 2053))
    alpha = Image.new("L", gradient.size, 0)
    alpha.paste(255, (300, 200, 3800, 1900))  # transparent border: must turn white
    rgba = Image.merge(
        "RGBA",
        (
            gradient,
            gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            Image.new("L", gradient.size, 90),
            alpha,
        ),
    )
    image = canonicalize(encode(rgba, "PNG"), **LIMITS)
    out = decoded(image.jpeg)
    assert out.size == (256, 128)
    assert mean_difference(out, reference(rgba, 256)) < 2.0
    # The last rows and columns are picture (white border), not the black of an empty strip.
    assert min(out.getpixel((255, 127))) > 240 and min(out.getpixel((0, 0))) > 240


def test_a_large_jpeg_is_decoded_shrunk_to_the_same_picture():
    picture = Image.linear_gradient("L").resize((3000, 2000)).convert("RGB")
    data = encode(picture, "JPEG", quality=95)
    opened = Image.open(io.BytesIO(data))
    opened.draft("RGB", (1024, 683))
    assert opened.size == (1500, 1000), "Pillow no longer decodes JPEG at reduced scale"
    out = decoded(canonicalize(data, **LIMITS).jpeg)
    expected = picture.copy()
    expected.thumbnail((256, 256), Image.Resampling.LANCZOS)
    assert out.size == expected.size
    assert mean_difference(out, expected) < 2.0


def with_metadata(fmt: str) -> bytes:
    image = Image.new("RGB", (64, 48), (20, 120, 200))
    if fmt == "GIF":
        return encode(image, "GIF", comment=b"secret gif comment")
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # GPS latitude
    return encode(
        image,
        "JPEG",
        exif=exif,
        comment=b"secret jpeg comment",
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>secret</x:xmpmeta>",
    )


@pytest.mark.parametrize("fmt", ["JPEG", "GIF"])
def test_no_comment_or_metadata_survives_into_the_stored_images(fmt):
    data = with_metadata(fmt)
    assert b"secret" in data
    image = canonicalize(data, **LIMITS)
    for stored in (image.jpeg, image.thumbnail):
        out = decoded(stored)
        assert not {"comment", "exif", "icc_profile", "xmp"} & set(out.info), out.info
        assert not out.getexif()
        assert b"secret" not in stored and b"SecretCam" not in stored


def test_webp_pixels_count_four_times_against_the_limit():
    # 1,700 x 1,600 = 2.72 Mpixel: fine as PNG under a 10 Mpixel limit, too many as WebP,
    # whose decoder takes four times the memory. Refused before the file is opened.
    picture = Image.new("RGB", (1700, 1600), (30, 90, 150))
    assert canonicalize(encode(picture, "PNG"), **LIMITS).width == 256
    with pytest.raises(ImageRejected) as caught:
        canonicalize(encode(picture, "WEBP"), **LIMITS)
    assert (caught.value.status, caught.value.code) == (413, "too_many_pixels")
    assert "2,500,000 pixels for WebP" in caught.value.message
    small = Image.new("RGB", (1000, 1000), (30, 90, 150))
    assert canonicalize(encode(small, "WEBP"), **LIMITS).width == 256
