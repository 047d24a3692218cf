import { Worker } from 'node:worker_threads'

export interface JsonSchemaCheckerOptions {
  /** How long one schema may take to compile before it is refused as too complex. Default 2 s. */
  timeoutMs?: number
}

interface Check {
  id: number
  schema: object
  resolve: (problem: string | undefined) => void
}

/**
 * Compiles request schemas with Ajv, as the CLI will, to refuse at submit time what the CLI would
 * refuse at run time. Ajv turns a schema into code, which is slow for large ones (a 45 KiB
 * `anyOf` took 3.5 s, 0.7 s unoptimised, on one core: measured), so it runs in a worker thread,
 * one schema at a time, each within a time bound: a caller's schema can never stall the event
 * loop that serves everyone else.
 */
export class JsonSchemaChecker {
  readonly #timeoutMs: number
  readonly #queue: Check[] = []
  #current: { check: Check, timer: NodeJS.Timeout } | undefined
  #worker: Worker | undefined
  #ready = false
  #seq = 0
  #closed = false

  constructor (options: JsonSchemaCheckerOptions = {}) {
    this.#timeoutMs = options.timeoutMs ?? 2000
  }

  /** Why Ajv (draft-07, strict, formats unchecked) cannot compile `schema`, or undefined. */
  problem (schema: object): Promise<string | undefined> {
    if (this.#closed) return Promise.resolve('could not be checked: the service is shutting down')
    return new Promise(resolve => {
      this.#queue.push({ id: ++this.#seq, schema, resolve })
      this.#next()
    })
  }

  async close (): Promise<void> {
    this.#closed = true
    for (const check of this.#queue.splice(0)) check.resolve('could not be checked: the service is shutting down')
    this.#settle('could not be checked: the service is shutting down')
    await this.#stop()
  }

  #next (): void {
    if (this.#current !== undefined || this.#queue.length === 0) return
    if (this.#worker === undefined) this.#worker = this.#start()
    // A starting worker is not timed: #next runs again when it says it is ready.
    if (!this.#ready) return
    const worker = this.#worker
    const check = this.#queue.shift()!
    const timer = setTimeout(() => {
      this.#settle(`could not be compiled within ${this.#timeoutMs / 1000} s: make it smaller or simpler`)
      void this.#stop()
      this.#next()
    }, this.#timeoutMs)
    this.#current = { check, timer }
    worker.postMessage({ id: check.id, schema: check.schema })
  }

  #start (): Worker {
    const worker = new Worker(new URL('./json-schema-worker.ts', import.meta.url), { resourceLimits: { maxOldGenerationSizeMb: 128 } })
    // An idle checker never keeps the process alive.
    worker.unref()
    this.#ready = false
    worker.on('message', (answer: { ready: true } | { id: number, problem: string | undefined }) => {
      if ('ready' in answer) {
        if (this.#worker !== worker) return
        this.#ready = true
        this.#next()
        return
      }
      if (this.#current?.check.id !== answer.id) return
      this.#settle(answer.problem)
      this.#next()
    })
    // A worker stopped on purpose was already let go; any other end fails the check it had.
    worker.on('error', error => { if (this.#worker === worker) this.#lost(`could not be checked: ${error.message}`) })
    worker.on('exit', code => { if (this.#worker === worker) this.#lost(`could not be checked: the checker stopped (exit code ${code})`) })
    return worker
  }

  #lost (problem: string): void {
    const started = this.#ready
    this.#worker = undefined
    this.#ready = false
    this.#settle(problem)
    // One that never started would not start the next time either.
    if (started) this.#next()
    else for (const check of this.#queue.splice(0)) check.resolve(problem)
  }

  #settle (problem: string | undefined): void {
    const current = this.#current
    if (current === undefined) return
    this.#current = undefined
    clearTimeout(current.timer)
    current.check.resolve(problem)
  }

  async #stop (): Promise<void> {
    const worker = this.#worker
    this.#worker = undefined
    this.#ready = false
    await worker?.terminate()
  }
}
