#!/usr/bin/env bash
# Runs the headless-Chromium test of the echo example.
# Installs what is missing first: Debian's chromium (+ a CJK font for the
# page's Chinese labels) when /usr/bin/chromium is absent, and the npm
# packages when tests/browser/node_modules is absent. Needs root for apt.
# Extra arguments are passed to `node --test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium and fonts-wqy-zenhei" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium fonts-wqy-zenhei
fi

if [ ! -d tests/browser/node_modules ]; then
  echo "run.sh: npm ci in tests/browser" >&2
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

exec node --test "$@" tests/browser/
