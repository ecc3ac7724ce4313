#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers for building this example on a machine whose distribution has no
# libonnxruntime-dev (Debian 12): Debian 13's package, pinned, downloaded with apt from Debian's own archive
# into a private apt state (nothing is installed or changed on the system), unpacked under third_party/
# (git-ignored; never committed).
#
#   examples/cpp/get_headers.sh        -> examples/cpp/third_party/onnxruntime-1.21.0/include/onnxruntime_cxx_api.h
#
# Headers of ONNX Runtime 1.21 declare C API version 21; any libonnxruntime >= 1.21 serves that version
# (the C API is ABI-stable and versioned), e.g. the 1.31.1 library in the onnxruntime Python wheel.
set -euo pipefail
VERSION="1.21.0+dfsg-1"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEST="$HERE/third_party/onnxruntime-${VERSION%%+*}"
if [ -f "$DEST/include/onnxruntime_cxx_api.h" ]; then echo "$DEST/include"; exit 0; fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
# The machine's own Debian archive (its first URI in the apt sources), asked for the trixie suite.
MIRROR="$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | sed 's/^URIs: *//')"
[ -n "$MIRROR" ] || MIRROR="$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | head -n1 | sed 's/^deb *//')"
[ -n "$MIRROR" ] || { echo "no Debian archive found in the apt sources" >&2; exit 1; }
echo "deb $MIRROR trixie main" > "$WORK/sources.list"
APT=(-o Dir::Etc::SourceList="$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$WORK/lists" -o Dir::Cache="$WORK/cache" -o APT::Sandbox::User=root -qq)
apt-get "${APT[@]}" update >&2
(cd "$WORK" && apt-get "${APT[@]}" download "libonnxruntime-dev=$VERSION" >&2)
dpkg-deb -x "$WORK"/libonnxruntime-dev_*.deb "$WORK/x"
mkdir -p "$DEST"
cp -r "$WORK/x/usr/include/onnxruntime" "$DEST/include"
cp "$WORK/x/usr/share/doc/libonnxruntime-dev/copyright" "$DEST/"
echo "$DEST/include"
