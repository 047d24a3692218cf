// Compiles JSON Schemas the way Claude Code 2.1.332 does, in a worker thread of its own (see
// json-schema-check.ts for why). It says {ready} once, then answers each {id, schema} with {id, problem}.
import { Ajv } from 'ajv'
import { parentPort } from 'node:worker_threads'

function serve (port: NonNullable<typeof parentPort>): void {
  // The CLI's settings as measured: draft-07, strict, `format` never checked. Optimising the
  // generated code changes nothing it accepts and costs 5x the time.
  const ajv = new Ajv({ validateFormats: false, logger: false, code: { optimize: false } })
  port.on('message', (message: { id: number, schema: object }) => {
    let problem: string | undefined
    try {
      ajv.compile(message.schema)
    } catch (error) {
      problem = (error as Error).message
    } finally {
      // Forget it: a request's `$id` must not clash with the next one's, nor pile up.
      ajv.removeSchema()
    }
    port.postMessage({ id: message.id, problem })
  })
  // Starting (and Ajv's first compile) takes longer than most checks: time limits count from here.
  ajv.compile({ type: 'object', properties: { warm: { type: 'string', pattern: '^a' } } })
  ajv.removeSchema()
  port.postMessage({ ready: true })
}

if (parentPort !== null) serve(parentPort)
