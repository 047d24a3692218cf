// The floors for HTTP numbers, in a process of their own: a bare Fastify "hello" route, and the
// same framework answering a body the size and shape of /health with a request logger (pino),
// which is what any Fastify service answering that JSON would pay.
import { createWriteStream } from 'node:fs'
import Fastify from 'fastify'
import { pino } from 'pino'

const bare = Fastify({ logger: false })
bare.get('/hello', async () => ({ hello: 'world' }))
await bare.listen({ host: '127.0.0.1', port: 0 })

const health = { status: 'ok', busy: false, active: 0, queued: 0, capacity: 10, max_queue_depth: 100, version: '0.1.0', uptime_seconds: 1, claude: { bin: '/usr/local/bin/claude', state: 'found', version: '2.1.332 (Claude Code)', error: null }, workspace: { kind: 'directory' } }
const logged = Fastify({ loggerInstance: pino({ level: 'info' }, createWriteStream('/dev/null')) })
logged.get('/health', async () => health)
await logged.listen({ host: '127.0.0.1', port: 0 })

const port = (server: typeof bare.server) => {
  const address = server.address()
  return typeof address === 'object' && address !== null ? address.port : null
}
process.stdout.write(`${JSON.stringify({ listening: port(bare.server), logged: port(logged.server) })}\n`)
process.on('SIGTERM', () => { void Promise.all([bare.close(), logged.close()]).then(() => process.exit(0)) })
