#!/usr/bin/env bash
# Assembles the root filesystem of berth's container image from a built berth binary:
#
#   deploy/docker/rootfs.sh BINARY OUTDIR
#
# OUTDIR gets the binary (/usr/local/bin/berth), the shared libraries it loads (from ldd,
# with the dynamic loader, and the NSS modules libnss_files and libnss_dns, so host and DNS
# lookups work), /etc/nsswitch.conf, /etc/passwd and /etc/group with the berth user
# (65532:65532), the CA bundle (/etc/ssl/certs/ca-certificates.crt, for upstream registries
# over TLS), berth's configuration (/etc/berth/config.yaml, from config.yaml beside this
# script), an empty data dir (/var/lib/berth, owned by 65532 when run as root) and /tmp
# (1777). Files are taken from this machine, so run it where the binary was built (or on
# the same distribution release): the Dockerfile runs it in its build stage, and on a host
# without a registry it is run on the host for the Dockerfile's `prebuilt` stage:
#
#   deploy/docker/rootfs.sh target/release/berth target/docker-rootfs
#   podman build --format docker --build-arg ROOTFS=prebuilt -t berth .
#
# OUTDIR must not exist, or be empty, or be an earlier output of this script (then it is
# replaced).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY OUTDIR" >&2
    exit 2
fi
BIN=$1
OUT=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UID_GID=65532

if [ ! -f "$BIN" ] || [ ! -x "$BIN" ]; then
    echo "$BIN: not an executable file" >&2
    exit 2
fi
for tool in ldd readlink realpath install; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
CA=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA" ] || { echo "$CA is missing: install ca-certificates" >&2; exit 2; }

if [ -e "$OUT" ]; then
    if [ -z "$(ls -A "$OUT")" ] ||
        { [ -f "$OUT/usr/local/bin/berth" ] && [ -f "$OUT/etc/berth/config.yaml" ]; }; then
        rm -rf "$OUT"
    else
        echo "$OUT exists and was not made by $0: not replacing it" >&2
        exit 2
    fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# put PATH: recreates the host's absolute PATH under $OUT as it is on the host: symbolic
# links (of the path and of its directories, e.g. /lib -> usr/lib on merged-/usr systems)
# stay links, and what they point to is brought along; the file itself is copied.
put() {
    local p=$1 prefix="" comp target rest
    local -a comps
    IFS=/ read -r -a comps <<<"${p#/}"
    for comp in "${comps[@]}"; do
        [ -n "$comp" ] || continue
        prefix=$prefix/$comp
        if [ -L "$prefix" ]; then
            target=$(readlink "$prefix")
            [ -L "$OUT$prefix" ] || ln -s "$target" "$OUT$prefix"
            case $target in
            /*) ;;
            *) target=$(dirname "$prefix")/$target ;;
            esac
            rest=${p#"$prefix"}
            put "$(realpath -s -m "$target")$rest"
            return
        fi
        if [ "$prefix" != "$p" ]; then
            [ -d "$OUT$prefix" ] || install -d -m 0755 "$OUT$prefix"
        fi
    done
    [ -e "$OUT$p" ] || cp -p "$p" "$OUT$p"
}

# libs FILE: the absolute paths of the shared objects FILE loads (the loader included).
libs() {
    local out
    out=$(ldd "$1" 2>&1) || { echo "ldd $1 failed: $out" >&2; return 1; }
    if grep -q 'not found' <<<"$out"; then
        echo "ldd $1: a library is missing:" >&2
        echo "$out" >&2
        return 1
    fi
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out"
}

install -D -m 0755 "$BIN" "$OUT/usr/local/bin/berth"

LIBS=$(libs "$BIN")
LIBC=$(grep '/libc\.so\.' <<<"$LIBS" | head -n 1)
[ -n "$LIBC" ] || { echo "$BIN does not link libc dynamically: nothing to do for it" >&2; exit 2; }
LIBDIR=$(dirname "$LIBC")
# getaddrinfo and getpwuid load these by name from nsswitch.conf (built into glibc from
# 2.34 on, where the files are stubs; loaded all the same where they are not).
for nss in libnss_files.so.2 libnss_dns.so.2; do
    [ -e "$LIBDIR/$nss" ] || { echo "$LIBDIR/$nss is missing" >&2; exit 2; }
    LIBS+=$'\n'$LIBDIR/$nss$'\n'$(libs "$LIBDIR/$nss")
done
while read -r lib; do
    [ -n "$lib" ] && put "$lib"
done < <(sort -u <<<"$LIBS")

install -d -m 0755 "$OUT/etc" "$OUT/etc/ssl/certs" "$OUT/etc/berth"
install -m 0644 "$CA" "$OUT/etc/ssl/certs/ca-certificates.crt"
install -m 0644 "$HERE/config.yaml" "$OUT/etc/berth/config.yaml"
cat >"$OUT/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
berth:x:$UID_GID:$UID_GID:berth:/var/lib/berth:/sbin/nologin
EOF
cat >"$OUT/etc/group" <<EOF
root:x:0:
berth:x:$UID_GID:
EOF
chmod 0644 "$OUT/etc/passwd" "$OUT/etc/group"
cat >"$OUT/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
chmod 0644 "$OUT/etc/nsswitch.conf"

install -d -m 1777 "$OUT/tmp"
install -d -m 0755 "$OUT/var" "$OUT/var/lib"
install -d -m 0750 "$OUT/var/lib/berth"
if [ "$(id -u)" = 0 ]; then
    chown "$UID_GID:$UID_GID" "$OUT/var/lib/berth"
fi

# The image must work on its own: the binary runs with only what was put here.
if command -v chroot >/dev/null && [ "$(id -u)" = 0 ]; then
    chroot "$OUT" /usr/local/bin/berth --version >/dev/null ||
        { echo "berth does not run inside $OUT" >&2; exit 1; }
fi
echo "rootfs for $("$BIN" --version) in $OUT ($(du -sh "$OUT" | cut -f1)):"
(cd "$OUT" && find . -path ./var -prune -o \( -type f -o -type l \) -print | sed 's|^\./|  /|' | sort)
