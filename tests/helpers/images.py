"""Test images, made in memory: the one place tests build pictures from nothing."""

import io
import random

from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """``image`` saved in ``fmt`` (PNG, JPEG, ...) with Pillow's save options."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def solid(
    colour: tuple[int, int, int] = (10, 20, 30), size: tuple[int, int] = (32, 32), fmt="PNG"
) -> bytes:
    """A picture of one colour."""
    return encode(Image.new("RGB", size, colour), fmt)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """``image`` as an RGB JPEG, as a camera or a browser would send it."""
    return encode(image.convert("RGB"), "JPEG", quality=quality)


def distinct_images(count: int, seed: int, size: int = 64, blocks: int = 4) -> list[bytes]:
    """``count`` different small PNGs: random colour blocks, reproducible from ``seed``."""
    rng = random.Random(seed)
    images = []
    cell = size // blocks
    for _ in range(count):
        image = Image.new("RGB", (size, size))
        for row in range(blocks):
            for col in range(blocks):
                colour = tuple(rng.randrange(256) for _ in range(3))
                image.paste(colour, (col * cell, row * cell, (col + 1) * cell, (row + 1) * cell))
        images.append(encode(image, "PNG"))
    return images


def png(seed: int = 0) -> bytes:
    """One small PNG of colour blocks, a different picture for each ``seed``."""
    return distinct_images(1, seed=seed)[0]
