#!/usr/bin/env bash
# Base images for machines that reach no container registry: a minimal Debian bookworm
# bootstrapped from the Debian mirror this host's apt already uses, imported into Docker.
#
#   deploy/local-base.sh            # builds imgsearch-local/debian:bookworm if missing
#   deploy/local-base.sh --force    # builds it again
#
# The host's extra CA certificates (/usr/local/share/ca-certificates) go into the image:
# where package indexes are reached through a TLS-intercepting proxy, pip inside a build
# trusts the same certificates the host does. No proxy setting is written into the image.
# deploy/local-base.Dockerfile then adds Python (for the gateway and worker images) and
# redis-server (for the Redis image) from the same mirror.
set -euo pipefail

IMAGE=${LOCAL_BASE_IMAGE:-imgsearch-local/debian:bookworm}
SUITE=bookworm

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "local base: $IMAGE already present"
  exit 0
fi

# The mirror: DEBIAN_MIRROR if set, else the first Debian archive URI apt is configured with
# (deb822 .sources files or the one-line sources.list format), else Debian's CDN.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(
    {
      grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
    } | grep -E '/debian/?$' | head -n 1 || true
  )
fi
mirror=${mirror:-http://deb.debian.org/debian}

for tool in debootstrap docker; do
  command -v "$tool" >/dev/null || { echo "local base: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

rootfs=$(mktemp -d /tmp/imgsearch-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "local base: debootstrap $SUITE from $mirror (a few minutes)"
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$mirror" \
  >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Package sources inside the image: the same mirror, the release and its updates.
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$SUITE" "$mirror" "$SUITE" \
  >"$rootfs/etc/apt/sources.list"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
# Smaller image: no package lists or downloaded .debs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  - "$IMAGE" >/dev/null
echo "local base: $IMAGE imported"
