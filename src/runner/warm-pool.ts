import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { StartedAgent } from '../agent/agent-run.ts'
import { buildCliArgs, type AgentSpec } from '../agent/cli-args.ts'

export interface WarmPoolOptions {
  /** WARM_AGENTS: CLI processes kept started ahead of time, in all lanes together. */
  size: number
  /** WARM_AGENT_MAX_IDLE_SECONDS in ms: a process waiting this long is replaced by a fresh one. */
  maxIdleMs: number
  /**
   * Whether a warm start may begin now: this replica has a slot free (none is started while every
   * slot is busy) and room on disk (a warm workspace takes what a run's does).
   */
  mayStart: () => boolean
  /** The clock whose local day the CLI's "today" is (see `localDay`). */
  now: () => number
  logger: Logger
  /** Told of every run's start: warm (`true`) or cold. */
  onTake?: (hit: boolean) => void
}

/** How a lane (an executor: jobs, or chat completions) makes, inspects and removes its warm processes. */
export interface LaneOptions<P> {
  /** The argument set kept warm before any run of the lane was seen. */
  defaultSpec?: AgentSpec | undefined
  /** What a workspace made now would be (a commit, or an empty folder); undefined while none can be made ahead. */
  current: () => string | undefined
  /** Calls `listener` whenever `current` may have changed. */
  onChange: (listener: () => void) => void
  /** Makes the workspace and folders and starts the CLI for `spec`; `signal` aborts it. */
  start: (id: string, spec: AgentSpec, signal: AbortSignal) => Promise<P>
  /** The workspace it waits in, as `current` names them. */
  identity: (process: P) => string | undefined
  agent: (process: P) => StartedAgent
  /** Stops its CLI and removes its folders; never throws. */
  release: (process: P) => Promise<void>
}

export interface WarmLane<P> {
  /**
   * A warm process for a run of `spec` in a workspace like `identity` (undefined: the run cannot
   * use one made ahead, e.g. another ref), alive and answering; undefined means start cold. Every
   * call is counted, hit or miss.
   */
  take (spec: AgentSpec, identity: string | undefined, signal: AbortSignal): Promise<P | undefined>
  /** Marks a run's CLI as starting: no warm start competes with it. Returns the idempotent "started". */
  runStarting (): () => void
}

/** What GET /health says about warm processes. */
export interface WarmInfo {
  ready: number
  starting: number
  hits: number
  misses: number
}

interface Lane {
  readonly name: string
  readonly options: LaneOptions<unknown>
}

interface Entry {
  readonly id: string
  readonly lane: Lane
  readonly key: string
  identity: string
  state: 'starting' | 'ready'
  readonly controller: AbortController
  /** The lane's process once made; rejects if it could not be. */
  readonly process: Promise<unknown>
  made?: unknown
  readonly startedAt: number
  /** The local day it was started on: its CLI tells the model that day's date. */
  readonly day: string
  timer?: NodeJS.Timeout
}

interface Wanted { lane: Lane, key: string, spec: AgentSpec }

const MAX_BACKOFF_MS = 5 * 60_000

/**
 * The CLIs this replica keeps started ahead of time (WARM_AGENTS). Each waits in a sandbox of its
 * own, with its workspace and configuration folder made exactly as a cold run's are, for the
 * prompt of a run with its argv. They are not runs: no engine count, slot or queue sees them.
 *
 * Which argument sets: each lane's default one, then those runs used most recently, one process
 * each, most recent first; processes left over go to the most recent again. A run that takes one
 * leaves a gap, filled when no run's CLI is starting and a slot is free, one start at a time: a
 * warm start never competes with a run's start (a run that starts cold stops the warm start in
 * progress). A process is replaced after `maxIdleMs` (a new CLI or rotated credentials take
 * effect), at midnight (its CLI would give the model yesterday's date), when its workspace goes
 * stale (the base moved), and when it dies; one whose argument set keeps dying is retried with a
 * growing delay.
 */
export class WarmPool {
  readonly #options: WarmPoolOptions
  readonly #lanes: Lane[] = []
  readonly #entries: Entry[] = []
  /** Argument sets runs used, most recent first (at most `size`). */
  readonly #recent: Wanted[] = []
  readonly #failures = new Map<string, { count: number, until: number }>()
  readonly #pending = new Set<Promise<void>>()
  /** Entries whose CLI may still run: waiting, or stopped and not yet gone (a taken one is the run's). */
  readonly #live = new Set<Entry>()
  #runsStarting = 0
  #hits = 0
  #misses = 0
  #info: WarmInfo | undefined
  #retry: NodeJS.Timeout | undefined
  #kicked = false
  #closed = false

  constructor (options: WarmPoolOptions) {
    this.#options = options
  }

  get size (): number {
    return this.#options.size
  }

  lane<P> (name: string, options: LaneOptions<P>): WarmLane<P> {
    const lane: Lane = { name, options: options as LaneOptions<unknown> }
    this.#lanes.push(lane)
    options.onChange(() => { this.#replaceStale(lane) })
    this.kick()
    return {
      take: async (spec, identity, signal) => (await this.#take(lane, spec, identity, signal)) as P | undefined,
      runStarting: () => {
        this.#runsStarting++
        let done = false
        return () => {
          if (done) return
          done = true
          this.#runsStarting--
          this.#refill()
        }
      },
    }
  }

  /** The same object until something it reports changes. */
  describe (): WarmInfo {
    this.#info ??= {
      ready: this.#entries.filter(entry => entry.state === 'ready').length,
      starting: this.#entries.filter(entry => entry.state === 'starting').length,
      hits: this.#hits,
      misses: this.#misses,
    }
    return this.#info
  }

  /** A slot may have freed: look again, once the queue has given it to whoever waited. */
  kick (): void {
    if (this.#kicked || this.#closed) return
    this.#kicked = true
    setImmediate(() => {
      this.#kicked = false
      this.#refill()
    })
  }

  /** Stops every warm process and waits until each has exited and its folders are gone. */
  async close (): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    for (const entry of [...this.#entries]) this.#discard(entry, 'shutdown')
    while (this.#pending.size > 0) await Promise.all(this.#pending)
  }

  /** SIGKILLs every warm process's group now: for a forced exit only. */
  killAll (): void {
    for (const entry of this.#live) {
      const pid = entry.made === undefined ? undefined : entry.lane.options.agent(entry.made).pid
      if (pid === undefined) continue
      try {
        process.kill(-pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
  }

  async #take (lane: Lane, spec: AgentSpec, identity: string | undefined, signal: AbortSignal): Promise<unknown> {
    const key = keyOf(spec)
    this.#touch({ lane, key, spec })
    // Its timer may not have fired yet (a busy loop, a suspended machine): the day decides.
    const today = localDay(this.#options.now())
    for (const entry of this.#entries.filter(entry => entry.day !== today)) this.#discard(entry, 'it was started on another day')
    if (identity !== undefined && !this.#closed) {
      const candidates = this.#entries
        .filter(entry => entry.lane === lane && entry.key === key && entry.identity === identity)
        .sort((a, b) => (a.state === b.state ? a.startedAt - b.startedAt : a.state === 'ready' ? -1 : 1))
      for (const entry of candidates) {
        this.#remove(entry)
        this.#live.delete(entry)
        const made = await entry.process.catch(() => undefined)
        if (made === undefined) continue
        const agent = lane.options.agent(made)
        const ready = await Promise.race([agent.ready, aborted(signal)])
        if (ready && agent.alive) {
          this.#failures.delete(failureKey(lane, key))
          this.#count(true)
          return made
        }
        this.#track(lane.options.release(made))
        if (signal.aborted) break
        this.#failed(lane, key, 'it died while waiting for a prompt')
      }
    }
    this.#count(false)
    // A cold start needs the CPU more than a warm start for another argument set does.
    for (const entry of this.#entries.filter(entry => entry.state === 'starting')) this.#discard(entry, 'a run is starting cold')
    return undefined
  }

  #count (hit: boolean): void {
    if (hit) this.#hits++
    else this.#misses++
    this.#changed()
    this.#options.onTake?.(hit)
    this.#refill()
  }

  #touch (used: Wanted): void {
    if (used.lane.options.defaultSpec !== undefined && keyOf(used.lane.options.defaultSpec) === used.key) return
    const index = this.#recent.findIndex(item => item.lane === used.lane && item.key === used.key)
    if (index !== -1) this.#recent.splice(index, 1)
    this.#recent.unshift(used)
    this.#recent.length = Math.min(this.#recent.length, this.#options.size)
  }

  /** `size` argument sets, with repeats: the lanes' defaults, then the most recent, then round again from the most recent. */
  #wanted (): Wanted[] {
    const defaults = this.#lanes.flatMap(lane => lane.options.defaultSpec === undefined ? [] : [{ lane, key: keyOf(lane.options.defaultSpec), spec: lane.options.defaultSpec }])
    const distinct = [...defaults, ...this.#recent].slice(0, this.#options.size)
    const again = [...this.#recent, ...defaults]
    const wanted = [...distinct]
    for (let i = 0; wanted.length < this.#options.size && again.length > 0; i++) wanted.push(again[i % again.length]!)
    return wanted
  }

  /** Starts the first missing process, if nothing forbids a start now. */
  #refill (): void {
    if (this.#closed || this.#options.size === 0 || this.#runsStarting > 0) return
    if (this.#entries.some(entry => entry.state === 'starting') || !this.#options.mayStart()) return
    const wanted = this.#wanted()
    const need = tally(wanted.map(item => failureKey(item.lane, item.key)))
    const have = tally(this.#entries.map(entry => failureKey(entry.lane, entry.key)))
    const seen = new Map<string, number>()
    const now = Date.now()
    let nextTry: number | undefined
    for (const item of wanted) {
      const id = failureKey(item.lane, item.key)
      const nth = (seen.get(id) ?? 0) + 1
      seen.set(id, nth)
      if ((have.get(id) ?? 0) >= nth) continue
      const failure = this.#failures.get(id)
      if (failure !== undefined && failure.until > now) {
        nextTry = Math.min(nextTry ?? Infinity, failure.until)
        continue
      }
      const identity = item.lane.options.current()
      if (identity === undefined) continue
      if (this.#entries.length >= this.#options.size) {
        // A set no longer wanted (or wanted fewer times) gives its place up.
        const surplus = this.#entries.find(entry => (have.get(failureKey(entry.lane, entry.key)) ?? 0) > (need.get(failureKey(entry.lane, entry.key)) ?? 0))
        if (surplus === undefined) return
        this.#discard(surplus, 'its argument set is no longer among the most recent')
      }
      this.#start(item, identity)
      return
    }
    if (nextTry !== undefined) {
      clearTimeout(this.#retry)
      this.#retry = setTimeout(() => { this.#refill() }, Math.max(0, nextTry - now))
      this.#retry.unref()
    }
  }

  #start ({ lane, key, spec }: Wanted, identity: string): void {
    const controller = new AbortController()
    const id = `warm-${randomBytes(6).toString('hex')}`
    const made = lane.options.start(id, spec, controller.signal)
    const now = this.#options.now()
    const entry: Entry = { id, lane, key, identity, state: 'starting', controller, process: made, startedAt: Date.now(), day: localDay(now) }
    this.#entries.push(entry)
    this.#live.add(entry)
    this.#changed()
    void made.then(prepared => {
      entry.made = prepared
      const agent = lane.options.agent(prepared)
      entry.identity = lane.options.identity(prepared) ?? entry.identity
      void agent.ready.then(ready => {
        if (!ready || !this.#entries.includes(entry)) return
        entry.state = 'ready'
        const idleMs = entry.startedAt + this.#options.maxIdleMs - Date.now()
        entry.timer = setTimeout(() => {
          this.#discard(entry, 'it waited WARM_AGENT_MAX_IDLE_SECONDS, or the day changed')
          this.#refill()
        }, Math.max(0, Math.min(idleMs, nextDay(now) - this.#options.now())))
        entry.timer.unref()
        this.#changed()
        this.#refill()
      })
      void agent.exited.then(() => {
        if (!this.#entries.includes(entry)) return
        this.#discard(entry, 'it exited while waiting')
        this.#failed(lane, key, 'it exited while waiting for a prompt')
      })
      // Made while the base moved: replaced at once.
      if (entry.identity !== lane.options.current()) this.#replaceStale(lane)
    }, (error: unknown) => {
      this.#live.delete(entry)
      if (!this.#entries.includes(entry)) return
      this.#remove(entry)
      this.#failed(lane, key, `it could not be started: ${(error as Error).message}`)
    })
  }

  #replaceStale (lane: Lane): void {
    const current = lane.options.current()
    for (const entry of this.#entries.filter(entry => entry.lane === lane && entry.identity !== current)) this.#discard(entry, 'its workspace is stale')
    this.#refill()
  }

  #failed (lane: Lane, key: string, why: string): void {
    const id = failureKey(lane, key)
    const count = (this.#failures.get(id)?.count ?? 0) + 1
    const delayMs = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (count - 1))
    this.#failures.set(id, { count, until: Date.now() + delayMs })
    if (!this.#closed) this.#options.logger.warn({ lane: lane.name, argv: JSON.parse(key) as unknown, retryInMs: delayMs }, `a warm agent failed: ${why}`)
    this.#refill()
  }

  /** Takes the entry out of the pool and stops it; its process, once made, is released. */
  #discard (entry: Entry, why: string): void {
    if (!this.#entries.includes(entry)) return
    this.#remove(entry)
    this.#options.logger.debug({ lane: entry.lane.name, id: entry.id, why }, 'warm agent stopped')
    entry.controller.abort(new Error(why))
    this.#track(entry.process.then(made => entry.lane.options.release(made), () => {}).finally(() => { this.#live.delete(entry) }))
  }

  #remove (entry: Entry): void {
    const index = this.#entries.indexOf(entry)
    if (index === -1) return
    this.#entries.splice(index, 1)
    clearTimeout(entry.timer)
    this.#changed()
  }

  #track (work: Promise<void>): void {
    const tracked = work.catch(() => {}).finally(() => { this.#pending.delete(tracked) })
    this.#pending.add(tracked)
  }

  #changed (): void {
    this.#info = undefined
  }
}

/** Two runs may share a warm process exactly when their argv would be the same. */
function keyOf (spec: AgentSpec): string {
  return JSON.stringify(buildCliArgs(spec))
}

function failureKey (lane: Lane, key: string): string {
  return `${lane.name}\0${key}`
}

/**
 * The CLI writes "Today's date is …" into its system prompt as it starts, in its local time zone,
 * which is the service's (TZ and /etc/localtime reach the sandbox): measured with 2.1.332, a CLI
 * started at 23:59:48 and given its prompt at 00:00:09 told the model the day before.
 */
function localDay (at: number): string {
  const date = new Date(at)
  return `${date.getFullYear()}-${date.getMonth() + 1}-${date.getDate()}`
}

/** The local midnight after `at`. */
function nextDay (at: number): number {
  const date = new Date(at)
  return new Date(date.getFullYear(), date.getMonth(), date.getDate() + 1).getTime()
}

function tally (keys: string[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const key of keys) counts.set(key, (counts.get(key) ?? 0) + 1)
  return counts
}

function aborted (signal: AbortSignal): Promise<false> {
  if (signal.aborted) return Promise.resolve(false)
  return new Promise(resolve => signal.addEventListener('abort', () => resolve(false), { once: true }))
}
