import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CONFIG_VARIABLES, ConfigError, loadConfig } from '../src/config.ts'

describe('configuration', () => {
  it('has working defaults', () => {
    const config = loadConfig({})
    expect(config).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      maxConcurrency: 10,
      maxQueueDepth: 110,
      jobTimeoutSeconds: 1800,
      jobTtlSeconds: 3600,
      claudeBin: 'claude',
      workspaceRoot: join(tmpdir(), 'claude-runner'),
      maxOutputBytes: 8 * 1024 * 1024,
      logLevel: 'info',
    })
  })

  it('never runs open: without AUTH_TOKENS it makes a random token', () => {
    const a = loadConfig({})
    const b = loadConfig({})
    expect(a.authTokensGenerated).toBe(true)
    expect(a.authTokens).toHaveLength(1)
    expect(a.authTokens[0]!.length).toBeGreaterThanOrEqual(32)
    expect(a.authTokens[0]).not.toBe(b.authTokens[0])
    const set = loadConfig({ AUTH_TOKENS: 'first-token-0123456789, second-token-0123456789' })
    expect(set).toMatchObject({ authTokensGenerated: false, authTokens: ['first-token-0123456789', 'second-token-0123456789'] })
  })

  it.each([
    ['MAX_CONCURRENCY', '-1', 'MAX_CONCURRENCY must be an integer from 1 to 1000, got "-1"'],
    ['MAX_CONCURRENCY', 'ten', 'MAX_CONCURRENCY must be an integer from 1 to 1000, got "ten"'],
    ['MAX_CONCURRENCY', '2.5', 'MAX_CONCURRENCY must be an integer'],
    ['PORT', '70000', 'PORT must be an integer from 0 to 65535'],
    ['JOB_TIMEOUT_SECONDS', '0', 'JOB_TIMEOUT_SECONDS must be a number of seconds'],
    ['JOB_TTL_SECONDS', 'soon', 'JOB_TTL_SECONDS must be a number of seconds'],
    ['MAX_QUEUE_DEPTH', '', 'MAX_QUEUE_DEPTH must be an integer'],
    ['LOG_LEVEL', 'loud', 'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent'],
    ['AUTH_TOKENS', 'short', 'AUTH_TOKENS: every token must be at least 16 characters'],
    ['ALLOW_PUSH', 'maybe', 'ALLOW_PUSH must be a boolean'],
    ['AGENT_PERMISSION_MODE', 'yolo', 'AGENT_PERMISSION_MODE must be one of acceptEdits, auto, bypassPermissions, manual, dontAsk, plan'],
  ])('rejects %s=%j naming the variable', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError)
    expect(() => loadConfig({ [name]: value })).toThrow(message)
  })

  it('is documented: every variable is in the README table', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
    for (const name of CONFIG_VARIABLES) expect(readme, name).toContain(`| \`${name}\``)
  })
})
