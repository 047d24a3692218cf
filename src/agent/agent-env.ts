/**
 * The agent's environment is an allowlist, not the service's environment minus a few names: a
 * secret added to the service's environment next year must not reach the agent by default.
 */
const ALLOWED = new Set([
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'TMPDIR', 'TZ', 'LANG', 'LANGUAGE', 'TERM',
  // TLS and proxies: the CLI must reach its API from behind a corporate proxy or CA.
  'NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR',
  'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy',
  // Lets the CLI run bypassPermissions as root (it refuses otherwise).
  'IS_SANDBOX',
])

const ALLOWED_PREFIXES = ['LC_', 'ANTHROPIC_', 'CLAUDE_']

/** The service's own secrets: never passed on, whatever the pass-through list says. */
export const SERVICE_SECRETS = new Set(['AUTH_TOKENS', 'WEBHOOK_SECRET', 'METRICS_TOKEN', 'GIT_CRYPT_KEY'])

export function buildAgentEnv (
  source: NodeJS.ProcessEnv,
  passthrough: readonly string[],
  overrides: Readonly<Record<string, string>> = {}
): Record<string, string> {
  const extra = new Set(passthrough)
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(source)) {
    if (value === undefined || SERVICE_SECRETS.has(name)) continue
    if (ALLOWED.has(name) || extra.has(name) || ALLOWED_PREFIXES.some(prefix => name.startsWith(prefix))) {
      env[name] = value
    }
  }
  return { ...env, ...overrides }
}
