import { buildApp } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'

/**
 * The process entry: configuration from the environment, build, listen, and on SIGTERM/SIGINT a
 * graceful drain (see AppContext.drain); a second signal forces the exit.
 */
let config: Config
try {
  config = loadConfig(process.env)
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`claude-runner: invalid configuration: ${error.message}\n`)
  process.exit(2)
}

let app: Awaited<ReturnType<typeof buildApp>>
try {
  app = await buildApp(config)
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`claude-runner: invalid configuration: ${error.message}\n`)
  process.exit(2)
}
if (config.authTokensGenerated) {
  app.log.warn({ token: config.authTokens[0] }, 'AUTH_TOKENS is not set: generated a bearer token for this run (set AUTH_TOKENS to choose your own)')
}

let stopping = false
const stop = (signal: NodeJS.Signals): void => {
  if (stopping) {
    app.log.warn({ signal }, 'second signal: killing every agent and exiting now')
    app.ctx.killAgentsNow()
    process.exit(1)
  }
  stopping = true
  app.log.info({ signal, graceSeconds: config.shutdownGraceSeconds, active: app.ctx.engine.queue.counts.active, queued: app.ctx.engine.queue.counts.queued }, 'draining')
  app.ctx.drain()
    .then(() => app.close())
    .then(() => {
      app.log.info('drained; exiting')
      process.exit(0)
    }, (error: unknown) => {
      app.log.error({ err: error }, 'error while shutting down')
      process.exit(1)
    })
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
// Tokens rotate without a restart: TENANTS_FILE is re-read (and logged); a file that no longer
// parses leaves the tenants in force. Without a handler SIGHUP would end the process.
process.on('SIGHUP', () => { void app.ctx.tenants.reload() })

try {
  await app.listen({ host: config.host, port: config.port })
} catch (error) {
  app.log.error({ err: error }, 'could not listen')
  process.exit(1)
}
