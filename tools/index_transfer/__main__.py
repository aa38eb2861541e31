"""python -m tools.index_transfer export METHOD FILE [--version V] | import FILE"""

import argparse
import sys
from pathlib import Path

import pydantic
import redis

from shared import names
from shared.blobs import open_blob_store
from shared.catalogue import Catalogue
from shared.settings import CommonSettings, redis_client
from tools.index_transfer.file_format import TransferRefused, read_file, write_file
from tools.index_transfer.transfer import export_index, import_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.index_transfer",
        description="Move a method's index (vectors, catalogue images, model) between "
        "deployments as a .npz file. Talks to the Redis at REDIS_URL.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write one method's index to FILE")
    export.add_argument("method", choices=names.METHODS)
    export.add_argument("file", type=Path)
    export.add_argument("--version", help="the model version (default: the active one)")
    load = commands.add_parser("import", help="add FILE's images, model and vectors here")
    load.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        settings = CommonSettings()
        client = redis_client(settings)
        catalogue = Catalogue(client, open_blob_store(settings))
        if args.command == "export":
            index = export_index(
                catalogue, args.method, args.version, index_shards=settings.index_shards
            )
            size = write_file(args.file, index)
            model = ", with its model" if index.model else ""
            print(
                f"exported {index.method} version {index.model_version}: "
                f"{len(index.images)} images and vectors (dim {index.dim}){model} "
                f"to {args.file} ({size / 1e6:.1f} MB)"
            )
        else:
            index = read_file(args.file)  # the whole file is checked before anything is stored
            summary = import_index(catalogue, index, index_shards=settings.index_shards)
            print(f"imported {args.file}:")
            print("\n".join(f"  {line}" for line in summary.lines()))
    except TransferRefused as err:
        print(f"refused: {err}", file=sys.stderr)
        return 1
    except pydantic.ValidationError as err:
        print(f"invalid settings: {err}", file=sys.stderr)
        return 2
    except redis.RedisError as err:
        print(f"Redis at REDIS_URL failed: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the file could not be written
        print(f"failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
