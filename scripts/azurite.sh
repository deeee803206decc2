# shellcheck shell=bash
# Azurite, the Azure Blob Storage emulator the tests store blobs in; sourced, not run.
#
#   azurite_install           installs azurite with npm when it is missing
#   azurite_start DIR         starts its blob service on a free loopback port with its data
#                             under DIR, creates container "berth", and exports
#                             TEST_AZURE_ENDPOINT (the account URL), TEST_AZURE_ACCOUNT,
#                             TEST_AZURE_KEY and TEST_AZURE_CONTAINER
#   azurite_stop              stops it

AZURITE_PID=
# The emulator's well-known development account.
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

azurite_install() {
    command -v azurite-blob >/dev/null 2>&1 && return 0
    if ! command -v npm >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    echo "installing azurite with npm"
    npm install -g azurite >/dev/null
}

azurite_start() {
    local dir=$1 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    azurite-blob --blobHost 127.0.0.1 --blobPort "$port" --location "$dir" --silent \
        --skipApiVersionCheck >"$dir/log" 2>&1 &
    AZURITE_PID=$!
    export TEST_AZURE_ENDPOINT=http://127.0.0.1:$port/$AZURITE_ACCOUNT
    export TEST_AZURE_ACCOUNT=$AZURITE_ACCOUNT TEST_AZURE_KEY=$AZURITE_KEY TEST_AZURE_CONTAINER=berth
    # Create the container with a Shared Key signed request (object_store creates none).
    python3 - "$TEST_AZURE_ENDPOINT" "$AZURITE_ACCOUNT" "$AZURITE_KEY" berth <<'PY'
import base64, hashlib, hmac, sys, time, urllib.request
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:]
for attempt in range(100):
    date = formatdate(usegmt=True)
    version = "2021-08-06"
    # VERB, then Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date,
    # If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range.
    to_sign = "PUT\n\n\n\n\napplication/octet-stream\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + \
        f"/{account}/{account}/{container}\nrestype:container"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(f"{endpoint}/{container}?restype=container", method="PUT", data=b"",
        headers={"Content-Type": "application/octet-stream", "x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
    try:
        urllib.request.urlopen(req, timeout=5)
        sys.exit(0)
    except urllib.error.HTTPError as e:
        if e.code == 409:
            sys.exit(0)
        print(e.code, e.read().decode(), file=sys.stderr)
        sys.exit(1)
    except OSError:
        time.sleep(0.1)
sys.exit("azurite did not answer")
PY
}

azurite_stop() {
    [ -n "$AZURITE_PID" ] || return 0
    kill "$AZURITE_PID" 2>/dev/null || true
    wait "$AZURITE_PID" 2>/dev/null || true
    AZURITE_PID=
}
