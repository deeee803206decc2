#!/usr/bin/env python3
"""Writes test images as an OCI image layout, without any network.

Usage: mkimages.py LAYOUT_DIR

Refs created in the layout (index.json, annotation org.opencontainers.image.ref.name):
  img    a linux/amd64 image manifest with 3 gzip tar layers of random data, a config
         whose rootfs.diff_ids match the uncompressed layers, and history entries
  multi  an image index with a linux/amd64 and a linux/arm64 image (2 layers each)

Prints a JSON summary (digests of everything) on stdout.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CREATED = "2024-01-01T00:00:00Z"


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs = []

    def blob(self, data, media_type, **extra):
        d = sha256(data)
        path = os.path.join(self.root, "blobs", "sha256", d.split(":", 1)[1])
        with open(path, "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": d, "size": len(data)}
        desc.update(extra)
        return desc

    def json_blob(self, obj, media_type, **extra):
        data = json.dumps(obj, indent=2, sort_keys=True).encode()
        return self.blob(data, media_type, **extra)

    def tag(self, desc, name):
        d = dict(desc)
        d["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs.append(d)

    def finish(self):
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": self.refs}
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump(index, f, indent=2)


def make_layer(files):
    """A gzip tar of `files` ({path: bytes}); returns (compressed, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    ti.mtime = 1704067200
                    tar.addfile(ti)
            data = files[path]
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1704067200
            tar.addfile(ti, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=1) as g:
        g.write(tar_bytes)
    return gz.getvalue(), sha256(tar_bytes)


def make_image(layout, arch, layer_specs, variant=None):
    """layer_specs: list of {path: bytes}. Returns the manifest descriptor and a summary."""
    layers, diff_ids, history = [], [], []
    for i, files in enumerate(layer_specs):
        data, diff_id = make_layer(files)
        layers.append(layout.blob(data, MT_LAYER_GZIP))
        diff_ids.append(diff_id)
        history.append({"created": CREATED, "created_by": f"berth-test layer {i}"})
    config = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/true"],
            "Labels": {"org.example.berth-test": arch},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if variant:
        config["variant"] = variant
    cdesc = layout.json_blob(config, MT_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": cdesc,
        "layers": layers,
        "annotations": {"org.opencontainers.image.created": CREATED},
    }
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    mdesc = layout.json_blob(manifest, MT_MANIFEST, platform=platform)
    summary = {
        "manifest": mdesc["digest"],
        "manifest_size": mdesc["size"],
        "config": cdesc["digest"],
        "layers": [l["digest"] for l in layers],
        "diff_ids": diff_ids,
    }
    return mdesc, summary


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    layout = Layout(sys.argv[1])
    rnd = os.urandom
    out = {}

    # A multi-layer image: 3 layers of random data (plus small text files).
    desc, out["img"] = make_image(
        layout,
        "amd64",
        [
            {"data/a.bin": rnd(1 << 20), "etc/berth-test/one": b"layer one\n"},
            {"data/b.bin": rnd(2 << 20)},
            {"data/c.bin": rnd(512 << 10), "etc/berth-test/three": b"layer three\n"},
        ],
    )
    plain = {k: v for k, v in desc.items() if k != "platform"}
    layout.tag(plain, "img")

    # A multi-arch index: linux/amd64 + linux/arm64/v8.
    children, out["multi"] = [], {}
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        d, s = make_image(
            layout,
            arch,
            [
                {f"data/{arch}-base.bin": rnd(256 << 10)},
                {f"etc/berth-test/arch": arch.encode() + b"\n", f"data/{arch}.bin": rnd(64 << 10)},
            ],
            variant=variant,
        )
        children.append(d)
        out["multi"][arch] = s
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": children}
    idesc = layout.json_blob(index, MT_INDEX)
    out["multi"]["index"] = idesc["digest"]
    layout.tag(idesc, "multi")

    layout.finish()
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
