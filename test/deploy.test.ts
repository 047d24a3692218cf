import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { buildAgentEnv } from '../src/agent/agent-env.ts'
import { CONFIG_VARIABLES, loadConfig } from '../src/config.ts'

/**
 * deploy/docker-compose.yml cannot be run here (no Docker engine): it is read as Compose reads it
 * (merge keys included), and what it sets is checked against what the service knows.
 */

interface Service {
  image?: string
  command?: string[]
  environment?: Record<string, string>
  stop_grace_period?: string
  security_opt?: string[]
  volumes?: string[]
  depends_on?: Record<string, { condition: string }>
}

const compose = parse(readFileSync(new URL('../deploy/docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as { services: Record<string, Service> }
const replicas = Object.entries(compose.services).filter(([, service]) => service.image === 'claude-runner:latest')
// Compose's `${NAME:?message}` interpolation, with a value for each.
const interpolate = (value: string): string => value.replace(/\$\{([A-Z_]+)(:\?[^}]*)?\}/g, (_match, name: string) => name === 'AUTH_TOKENS' ? 'token-for-the-deploy-test-0123' : `value-of-${name.toLowerCase()}`)

describe('deploy/docker-compose.yml', () => {
  it('runs two replicas of the image on one Redis', () => {
    expect(replicas.map(([name]) => name)).toEqual(['replica-1', 'replica-2'])
    for (const [, service] of replicas) {
      expect(service.environment!.REDIS_URL).toMatch(/^redis:\/\/:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379\/0$/)
      expect(service.depends_on).toEqual({ redis: { condition: 'service_healthy' } })
    }
  })

  it('sets only variables the service reads, or passes to the agent, each with a valid value', () => {
    for (const [name, service] of replicas) {
      const env = Object.fromEntries(Object.entries(service.environment!).map(([key, value]) => [key, interpolate(String(value))]))
      for (const key of Object.keys(env)) {
        const known = CONFIG_VARIABLES.includes(key) || key in buildAgentEnv({ [key]: 'x' }, [])
        expect(known, `${name}: ${key} is neither a setting nor passed to the agent`).toBe(true)
      }
      // Every value parses as the service would parse it at start-up.
      expect(() => loadConfig(env), name).not.toThrow()
    }
  })

  it('gives each replica its own name and workspaces, and the same cluster settings', () => {
    const ids = replicas.map(([, service]) => service.environment!.INSTANCE_ID)
    expect(new Set(ids).size).toBe(replicas.length)
    const volumes = replicas.map(([, service]) => service.volumes!.find(volume => volume.endsWith(':/var/lib/claude-runner')))
    expect(new Set(volumes).size).toBe(replicas.length)
    for (const key of ['REPLICA_TIMEOUT_SECONDS', 'MAX_QUEUE_DEPTH', 'REDIS_PREFIX', 'JOB_TTL_SECONDS', 'BASE_REPO']) {
      expect(new Set(replicas.map(([, service]) => service.environment![key])).size, key).toBe(1)
    }
  })

  it('gives a stopping replica longer than its drain before Docker kills it, and lets the sandbox run', () => {
    for (const [, service] of replicas) {
      const stop = Number(/^(\d+)s$/.exec(service.stop_grace_period!)![1])
      expect(stop).toBeGreaterThan(Number(service.environment!.SHUTDOWN_GRACE_SECONDS))
      expect(service.security_opt).toEqual(expect.arrayContaining(['seccomp=unconfined', 'apparmor=unconfined', 'systempaths=unconfined']))
    }
  })

  it('runs Redis with noeviction and an append-only file, behind a password', () => {
    const command = compose.services.redis!.command!.join(' ')
    expect(command).toContain('--maxmemory-policy noeviction')
    expect(command).toContain('--appendonly yes')
    expect(command).toMatch(/--requirepass \$\{REDIS_PASSWORD/)
  })
})
