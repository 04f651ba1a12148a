#!/usr/bin/env bash
# Installs everything the toolkit needs on a fresh Debian machine that has Node.js and npm:
#   - Mesa's software Vulkan driver (lavapipe), so WebGPU works without a GPU;
#   - Deno (pinned, from the npm package `deno`) into .tools/;
#   - the npm packages pinned in deno.json (deno install).
# Idempotent: a second run does nothing but check.
set -euo pipefail
cd "$(dirname "$0")"
DENO_VERSION=2.9.6

if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  echo "setup: installing mesa-vulkan-drivers (software Vulkan adapter)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers >/dev/null
fi

if [ ! -x .tools/node_modules/.bin/deno ] || [ "$(.tools/node_modules/.bin/deno --version | head -1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  echo "setup: installing deno@$DENO_VERSION from npm into .tools/" >&2
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "deno@$DENO_VERSION" >/dev/null
fi

./deno install --quiet >/dev/null
echo "setup: ok ($(./deno --version | head -1))" >&2
