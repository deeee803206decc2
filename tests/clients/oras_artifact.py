#!/usr/bin/env python3
"""oras (PyPI package, Python API) against berth.

  oras_artifact.py push REGISTRY REPO TAG FILE FILE_MEDIA_TYPE ARTIFACT_TYPE SUBJECT_DIGEST SUBJECT_SIZE SUBJECT_MEDIA_TYPE
      Pushes FILE as an artifact whose manifest has `artifactType` ARTIFACT_TYPE and a
      `subject` descriptor for the given manifest; prints the pushed manifest's digest.
  oras_artifact.py pull REGISTRY REFERENCE OUTDIR
      Pulls an artifact (REFERENCE is REPO:TAG or REPO@DIGEST); prints the files written.

oras-py passes `subject` through natively but has no parameter for the manifest's
`artifactType`, so `push` sets it in the one hook the library offers for the manifest
(`Registry.upload_manifest`, which receives the manifest dict just before the PUT).
"""

import json
import os
import sys
import tempfile

import oras.client
import oras.oci
import oras.provider

EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"


def client(registry):
    return oras.client.OrasClient(hostname=registry, insecure=True)


def push(registry, repo, tag, path, media_type, artifact_type, subj_digest, subj_size, subj_type):
    original = oras.provider.Registry.upload_manifest

    def upload_manifest(self, manifest, container):
        manifest["artifactType"] = artifact_type
        return original(self, manifest, container)

    oras.provider.Registry.upload_manifest = upload_manifest
    subject = oras.oci.Subject(mediaType=subj_type, digest=subj_digest, size=int(subj_size))
    with tempfile.TemporaryDirectory() as tmp:
        # The OCI empty config `{}`, as image-spec recommends for artifacts.
        empty = os.path.join(tmp, "empty.json")
        with open(empty, "w") as f:
            f.write("{}")
        resp = client(registry).push(
            target=f"{registry}/{repo}:{tag}",
            files=[f"{path}:{media_type}"],
            disable_path_validation=True,
            subject=subject,
            manifest_config=f"{empty}:{EMPTY_CONFIG_TYPE}",
            quiet=True,
        )
    if resp.status_code != 201:
        sys.exit(f"manifest PUT returned {resp.status_code}: {resp.text}")
    if resp.headers.get("OCI-Subject") != subj_digest:
        sys.exit(f"OCI-Subject header is {resp.headers.get('OCI-Subject')!r}, not {subj_digest}")
    print(resp.headers["Docker-Content-Digest"])


def pull(registry, reference, outdir):
    files = client(registry).pull(target=f"{registry}/{reference}", outdir=outdir)
    print(json.dumps(files))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "push" and len(args) == 9:
        push(*args)
    elif cmd == "pull" and len(args) == 3:
        pull(*args)
    else:
        sys.exit(__doc__)
