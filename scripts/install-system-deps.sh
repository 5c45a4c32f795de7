#!/usr/bin/env bash
# Debian packages the tests start for real: Mosquitto, GStreamer's RTSP server, ffmpeg, systemd-analyze,
# and Chromium (the calibration page's and the center's page tests drive it through Playwright; Playwright's own
# download is not used), with a Chinese font (WenQuanYi Micro Hei) so the screenshots of the pages are legible.
# PostgreSQL: the community center's tests and bench start throwaway clusters of their own (initdb, pg_ctl).
# prometheus: only for its promtool, which checks and unit-tests the example alert rules (docs/ops/).
set -euo pipefail
PKGS=(mosquitto mosquitto-clients ffmpeg openssl systemd postgresql
      python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools
      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
      chromium fonts-wqy-microhei prometheus)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
