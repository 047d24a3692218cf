// The floor for HTTP numbers, in a process of its own: a bare Fastify "hello" route.
import Fastify from 'fastify'

const bare = Fastify({ logger: false })
bare.get('/hello', async () => ({ hello: 'world' }))
await bare.listen({ host: '127.0.0.1', port: 0 })

const address = bare.server.address()
process.stdout.write(`${JSON.stringify({ listening: typeof address === 'object' && address !== null ? address.port : null })}\n`)
process.on('SIGTERM', () => { void bare.close().then(() => process.exit(0)) })
