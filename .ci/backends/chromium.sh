# Headless Chromium (Debian's `chromium` package) for the dashboard browser test
# (tests/system/test_dashboard_browser.py). Sourced by .ci/run (bash, set -euo pipefail): installs it when missing
# and exports OBS_TEST_CHROMIUM. The test starts and stops its own browser: nothing to clean up.
if ! command -v chromium >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
fi
export OBS_TEST_CHROMIUM
OBS_TEST_CHROMIUM=$(command -v chromium)
echo "chromium ready: $("$OBS_TEST_CHROMIUM" --version 2>/dev/null || echo "$OBS_TEST_CHROMIUM")"
