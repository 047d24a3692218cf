// The floor for HTTP numbers: a bare Fastify with one route, no logger, nothing else.
import Fastify from 'fastify'

const app = Fastify({ logger: false })
app.get('/hello', async () => ({ hello: 'world' }))
await app.listen({ host: '127.0.0.1', port: 0 })
const address = app.server.address()
process.stdout.write(`${JSON.stringify({ listening: typeof address === 'object' && address !== null ? address.port : null })}\n`)
process.on('SIGTERM', () => { void app.close().then(() => process.exit(0)) })
