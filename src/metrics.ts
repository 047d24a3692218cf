import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { CliResult } from './agent/stream-json.ts'
import type { ClusterCounts, QueueCounts, RunRecord } from './engine/types.ts'
import type { WarmInfo } from './runner/warm-pool.ts'

const PREFIX = 'claude_runner_'
/** Seconds: from a few milliseconds (HTTP, a warm workspace) to an hour-long agent run. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]

/**
 * Prometheus metrics of one app, in a registry of its own (never prom-client's global one, so
 * every app, and every test, counts for itself).
 */
export class Metrics {
  readonly registry = new Registry()
  readonly #jobs: Counter<'tenant' | 'status' | 'error'>
  readonly #chats: Counter<'tenant' | 'api' | 'outcome'>
  readonly #queueWait: Histogram<'kind'>
  readonly #runTime: Histogram<'kind'>
  readonly #prepare: Histogram
  readonly #cost: Counter<'tenant' | 'kind'>
  readonly #tokens: Counter<'tenant' | 'kind' | 'type'>
  readonly #warmStarts: Counter<'result'>
  readonly #httpRequests: Counter<'method' | 'route' | 'status'>
  readonly #httpDuration: Histogram<'method' | 'route'>
  readonly #httpChildren = new Map<string, { requests: ReturnType<Counter<'method' | 'route' | 'status'>['labels']>, duration: ReturnType<Histogram<'method' | 'route'>['labels']> }>()
  readonly #loopDelay = monitorEventLoopDelay({ resolution: 20 })
  /** Read at scrape time; kept so the registry's gauges have an owner. */
  readonly #gauges: Gauge[]

  /** `runner` is read at scrape time for the queue and slot gauges; `cluster` (Redis engine only) and `warm` too. */
  constructor (runner: () => QueueCounts, cluster: () => ClusterCounts | null = () => null, info?: { replica: string, version: string, engine: string }, warm: () => WarmInfo | null = () => null) {
    const registers = [this.registry]
    // Which replica this is, as an info series (Prometheus' own `instance` label names the target).
    if (info !== undefined) new Gauge({ name: `${PREFIX}info`, help: 'Always 1: this replica (INSTANCE_ID), its version and engine.', labelNames: ['replica', 'version', 'engine'], registers }).set(info, 1)
    this.#jobs = new Counter({ name: `${PREFIX}jobs_total`, help: 'Jobs that ended, by tenant, terminal status and error code.', labelNames: ['tenant', 'status', 'error'], registers })
    this.#chats = new Counter({ name: `${PREFIX}chat_completions_total`, help: 'Chats that ended (chat completions, responses, messages), by tenant, API and outcome.', labelNames: ['tenant', 'api', 'outcome'], registers })
    const gauge = (name: string, help: string, read: () => number): Gauge => new Gauge({ name, help, registers, collect () { this.set(read()) } })
    const loopDelay = this.#loopDelay
    this.#gauges = [
      gauge(`${PREFIX}queue_depth`, 'Runs waiting for a slot.', () => runner().queued),
      gauge(`${PREFIX}active_runs`, 'Agent runs in progress.', () => runner().active),
      gauge(`${PREFIX}capacity`, 'MAX_CONCURRENCY.', () => runner().capacity),
      gauge(`${PREFIX}draining`, '1 while the service drains for shutdown.', () => runner().closing ? 1 : 0),
      gauge(`${PREFIX}cluster_queue_depth`, 'Redis engine: runs waiting for a slot anywhere in the cluster (else as queue_depth).', () => cluster()?.queued ?? runner().queued),
      gauge(`${PREFIX}cluster_active_runs`, 'Redis engine: runs executing on any replica (else as active_runs).', () => cluster()?.active ?? runner().active),
      gauge(`${PREFIX}cluster_capacity`, 'Redis engine: the MAX_CONCURRENCY of every replica taking work, summed (else as capacity).', () => cluster()?.capacity ?? runner().capacity),
      gauge(`${PREFIX}cluster_replicas`, 'Redis engine: replicas alive (else 1).', () => cluster()?.replicas ?? 1),
      gauge(`${PREFIX}warm_agents_ready`, 'CLIs started ahead of time and waiting for a prompt (WARM_AGENTS).', () => warm()?.ready ?? 0),
      gauge(`${PREFIX}warm_agents_starting`, 'CLIs being started ahead of time.', () => warm()?.starting ?? 0),
      gauge('process_resident_memory_bytes', 'Resident set size.', () => process.memoryUsage.rss()),
      gauge('nodejs_heap_used_bytes', 'V8 heap in use.', () => process.memoryUsage().heapUsed),
      gauge('nodejs_eventloop_delay_p99_seconds', 'p99 event loop delay since the previous scrape.', () => {
        const p99 = loopDelay.percentile(99) / 1e9
        loopDelay.reset()
        return p99
      }),
    ]
    loopDelay.enable()
    this.#queueWait = new Histogram({ name: `${PREFIX}queue_wait_seconds`, help: 'Time runs waited for a slot.', labelNames: ['kind'], buckets: BUCKETS, registers })
    this.#runTime = new Histogram({ name: `${PREFIX}run_seconds`, help: 'Time runs held a slot (workspace, agent, collecting).', labelNames: ['kind'], buckets: BUCKETS, registers })
    this.#prepare = new Histogram({ name: `${PREFIX}workspace_prepare_seconds`, help: "Time to prepare a job's workspace.", buckets: BUCKETS, registers })
    this.#cost = new Counter({ name: `${PREFIX}cost_usd_total`, help: 'total_cost_usd reported by the CLI, by tenant.', labelNames: ['tenant', 'kind'], registers })
    this.#tokens = new Counter({ name: `${PREFIX}tokens_total`, help: 'Tokens reported by the CLI, by tenant.', labelNames: ['tenant', 'kind', 'type'], registers })
    this.#warmStarts = new Counter({ name: `${PREFIX}warm_starts_total`, help: 'Runs started while WARM_AGENTS > 0: hit, a warm CLI took the prompt; miss, a cold start.', labelNames: ['result'], registers })
    this.#httpRequests = new Counter({ name: `${PREFIX}http_requests_total`, help: 'HTTP requests answered (but /health and /metrics).', labelNames: ['method', 'route', 'status'], registers })
    this.#httpDuration = new Histogram({ name: `${PREFIX}http_request_duration_seconds`, help: 'Time to answer HTTP requests (streams: until they end).', labelNames: ['method', 'route'], buckets: BUCKETS, registers })
  }

  runSettled (kind: 'job' | 'chat', queuedMs: number, runMs: number | undefined): void {
    this.#queueWait.observe({ kind }, queuedMs / 1000)
    if (runMs !== undefined) this.#runTime.observe({ kind }, runMs / 1000)
  }

  jobFinished (job: RunRecord): void {
    this.#jobs.inc({ tenant: job.tenant, status: job.status, error: job.error?.code ?? '' })
    if (job.phaseMs.preparing !== undefined) this.#prepare.observe(job.phaseMs.preparing / 1000)
    this.#usage(job.tenant, 'job', job.result)
  }

  warmTake (hit: boolean): void {
    this.#warmStarts.inc({ result: hit ? 'hit' : 'miss' })
  }

  chatFinished (api: string, outcome: string, result: CliResult | null, tenant: string): void {
    this.#chats.inc({ tenant, api, outcome })
    this.#usage(tenant, 'chat', result)
  }

  /** Called for every response: the labelled children are made once and kept. */
  httpRequest (method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${route} ${status}`
    let children = this.#httpChildren.get(key)
    if (children === undefined) {
      children = { requests: this.#httpRequests.labels({ method, route, status: String(status) }), duration: this.#httpDuration.labels({ method, route }) }
      this.#httpChildren.set(key, children)
    }
    children.requests.inc()
    children.duration.observe(seconds)
  }

  close (): void {
    this.#loopDelay.disable()
  }

  #usage (tenant: string, kind: 'job' | 'chat', result: CliResult | null): void {
    if (result === null) return
    if (typeof result.total_cost_usd === 'number') this.#cost.inc({ tenant, kind }, result.total_cost_usd)
    const usage = (result.usage ?? {}) as Record<string, unknown>
    for (const [key, type] of [['input_tokens', 'input'], ['output_tokens', 'output'], ['cache_read_input_tokens', 'cache_read'], ['cache_creation_input_tokens', 'cache_creation']] as const) {
      const value = usage[key]
      if (typeof value === 'number' && value > 0) this.#tokens.inc({ tenant, kind, type }, value)
    }
  }
}
