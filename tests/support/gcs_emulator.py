"""Runs gcp-storage-emulator (same arguments as its command line), with one gap of it filled.

Cloud Storage names an object's generation in the `x-goog-generation` header of a download;
the emulator leaves it out. tensorstore reads the generation from that header and makes the
next write of the object conditional on it, which is how orbax's OCDBT checkpoints update their
manifest, so without the header such a write fails ('Malformed StorageGeneration').
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator.handlers import objects

_emulator_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
    _emulator_download(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        stored = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = stored["generation"]
        response["x-goog-metageneration"] = stored["metageneration"]


# The emulator's routing table refers to objects.download when its server module is imported.
objects.download = download_with_generation

from gcp_storage_emulator.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
