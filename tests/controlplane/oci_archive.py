"""Write a one-layer OCI image archive holding one static binary: an image ``FROM scratch``.

build.sh makes the kubelet tests' sandbox ("pause") image with it, from the pause.c that ships
in the pinned k8s.io/kubernetes module (compiled with ``gcc -static``), the way
build/pause/Dockerfile there lays it out: the binary at /<name>, user 65535:65535, the binary
as the entrypoint. No registry, no container tool: a tar file that ``ctr images import``
reads (the OCI image layout, one uncompressed layer). Reproducible: every timestamp is 0 and
every owner root, so the same binary always gives the same image digest.

    python3 oci_archive.py BINARY IMAGE_NAME OUT.tar    # e.g. ... localhost/pause:3.10.2
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def _tar(entries: dict[str, tuple[bytes | None, int]]) -> bytes:
    """A tar of ``{name: (content or None for a folder, mode)}``, owned by root, mtime 0, in
    name order (a folder before what it holds)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            data, mode = entries[name]
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def archive(binary: bytes, name: str, image: str) -> bytes:
    """The OCI archive of an image holding ``binary`` at ``/<name>``, named ``image``."""
    layer_digest, layer = _blob(_tar({name: (binary, 0o755)}))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "65535:65535", "Entrypoint": [f"/{name}"]},
        # Uncompressed layer: its diff ID is its digest.
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": f"oci_archive.py: /{name}"}],
    }
    config_digest, config_raw = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config_raw)},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_raw = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest_raw),
            "platform": {"architecture": "amd64", "os": "linux"},
            # containerd names the imported image after this annotation (the full name);
            # the OCI one is what other tools read.
            "annotations": {"io.containerd.image.name": image,
                            "org.opencontainers.image.ref.name": image},
        }],
    }
    blobs = {
        f"blobs/sha256/{digest.split(':', 1)[1]}": (data, 0o644)
        for digest, data in ((layer_digest, layer), (config_digest, config_raw),
                             (manifest_digest, manifest_raw))
    }
    return _tar({
        "blobs": (None, 0o755),
        "blobs/sha256": (None, 0o755),
        "oci-layout": (json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644),
        "index.json": (json.dumps(index, sort_keys=True).encode(), 0o644),
        **blobs,
    })


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    binary, image, out = Path(argv[0]), argv[1], Path(argv[2])
    out.write_bytes(archive(binary.read_bytes(), binary.name, image))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
