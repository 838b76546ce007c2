#!/usr/bin/env bash
# Install the Debian packages named as arguments that are not installed yet, as root or through
# sudo. Usage: bash scripts/apt_install.sh chromium chromium-driver shellcheck
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
echo "==> installing Debian packages: ${missing[*]}"
if ! { "${as_root[@]}" apt-get update -qq \
    && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "error: could not install ${missing[*]} with apt-get; install them by hand (apt-get install ${missing[*]}) and re-run" >&2
  exit 1
fi
