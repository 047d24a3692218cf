// `npm run bench` / `./dev bench`: how close each part of claude-runner runs to its floor, measured
// in the same run on the same machine. Not part of the test suite. Writes docs/benchmarks.md and
// bench/results.json. Options: --only http,jobs,sandbox,scale,engine,stream,workspaces,cli,warm  --quick (smaller runs).
import { execFileSync } from 'node:child_process'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { execa } from 'execa'
import { pino } from 'pino'
import { buildCliArgs } from '../src/agent/cli-args.ts'
import { Bubblewrap, type Mount, type RunPaths } from '../src/agent/sandbox.ts'
import { initializeRequest, userMessage } from '../src/agent/stream-json.ts'
import { GitWorkspaces } from '../src/workspace/git-workspaces.ts'
import { WorkspaceFolders } from '../src/workspace/workspace.ts'
import { AUTH, cpuMs, fixture, json, machine, pinTo, round, rss, startBareFastify, startRedis, startService, stats, wallNow, type ServiceProcess, type Stats } from './lib.ts'

const { values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' }, 'report-only': { type: 'boolean' } } })
const quick = values.quick === true
const only = values.only?.split(',')
const scratch = mkdtempSync(join(tmpdir(), 'claude-runner-bench-'))
const dir = (name: string): string => {
  const path = join(scratch, name)
  mkdirSync(path, { recursive: true })
  return path
}
const log = (message: string): void => { process.stderr.write(`bench: ${message}\n`) }
// The floors run a CLI as the service does: its argv, its stream-json handshake and prompt on stdin.
const CLI_ARGS = buildCliArgs({ prompt: '' })
const input = (prompt: string): string => initializeRequest('claude-runner-bench') + userMessage(prompt)

// --- 1. HTTP ----------------------------------------------------------------------------------
// autocannon runs in this process. On a machine of a few cores it and the servers fight for them
// and the figures swing with the scheduler, so the servers are pinned to core 0 and this process
// to core 1. Even so, one autocannon thread cannot keep a server's core busy: its request rate is
// the generator's limit as much as the server's. What a server can sustain is read from the server
// itself: the CPU time it spends per request (from /proc), and capacity = 1 s / that time.
// Most of that time is the kernel's (a send on loopback wakes the other core), and on a virtual
// machine it drifts by 2x within minutes. So runs are short and many: the targets take turns,
// one second each, in an order that rotates every round; every ratio is taken within a round; the
// median over the rounds is reported. A second, identical floor process is measured as a control:
// its ratio to the first shows how much of a difference is noise.
async function http () {
  const service = await startService({ CLAUDE_BIN: fixture('noop-claude.mjs'), WORKSPACE_ROOT: dir('http') })
  const bare = await startBareFastify()
  const control = await startBareFastify()
  const pinned = pinTo('0', [service.child.pid!, bare.pid, control.pid]) && pinTo('1', [process.pid])
  try {
    const job = await json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'bench' }) })
    await json(`${service.url}/jobs/${job.job_id}?wait=30`)
    const rounds = quick ? 6 : 24
    const connections = 20
    const targets = {
      floor: { url: `${bare.url}/hello`, pid: bare.pid, headers: {} },
      control: { url: `${control.url}/hello`, pid: control.pid, headers: {} },
      health: { url: `${service.url}/health`, pid: service.child.pid!, headers: {} },
      job: { url: `${service.url}/jobs/${job.job_id}`, pid: service.child.pid!, headers: AUTH },
    }
    type Name = keyof typeof targets
    type Sample = { rps: number, p99_ms: number, cpu_us: number }
    const names = Object.keys(targets) as Name[]
    const load = async ({ url, pid, headers }: typeof targets[Name], duration: number): Promise<Sample> => {
      const cpuBefore = cpuMs(pid)
      const result = await autocannon({ url, connections, duration, headers })
      if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors`)
      return { rps: result.requests.total / duration, p99_ms: result.latency.p99, cpu_us: (cpuMs(pid) - cpuBefore) * 1000 / result.requests.total }
    }
    for (const name of names) await load(targets[name], 2)
    const samples: Array<Record<Name, Sample>> = []
    for (let round = 0; round < rounds; round++) {
      const sample: Partial<Record<Name, Sample>> = {}
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + round) % names.length]!
        sample[name] = await load(targets[name], 1)
      }
      samples.push(sample as Record<Name, Sample>)
    }
    const median = (values: number[]) => stats(values).p50
    const quartiles = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b)
      return [round(sorted[Math.floor(sorted.length / 4)]!, 3), round(sorted[Math.floor(sorted.length * 3 / 4)]!, 3)]
    }
    const row = (name: Name) => {
      const cpuUs = median(samples.map(s => s[name].cpu_us))
      const capacityRatios = samples.map(s => s.floor.cpu_us / s[name].cpu_us)
      return {
        rps: round(median(samples.map(s => s[name].rps)), 0),
        p99_ms: round(median(samples.map(s => s[name].p99_ms))),
        cpu_us_per_request: round(cpuUs, 1),
        capacity_rps: round(1e6 / cpuUs, 0),
        capacity_ratio: round(median(capacityRatios), 3),
        capacity_ratio_quartiles: quartiles(capacityRatios),
        rps_ratio: round(median(samples.map(s => s[name].rps / s.floor.rps)), 3),
      }
    }
    return { floor: row('floor'), control: row('control'), health: row('health'), job: row('job'), pinned, connections, rounds }
  } finally {
    if (pinned) pinTo(`0-${availableParallelism() - 1}`, [process.pid])
    await Promise.all([service.stop(), bare.stop(), control.stop()])
  }
}

// --- 2. Job overhead -------------------------------------------------------------------------
async function jobs () {
  const n = quick ? 15 : 60
  const noop = fixture('noop-claude.mjs')
  // The service's own overhead: without the sandbox (its cost is the sandbox suite's).
  const service = await startService({ CLAUDE_BIN: noop, WORKSPACE_ROOT: dir('jobs'), MAX_CONCURRENCY: '1', SANDBOX: 'off' })
  const direct = { spawn: [] as number[], roundTrip: [] as number[] }
  const ours = { spawn: [] as number[], roundTrip: [] as number[], preparing: [] as number[] }
  try {
    // Direct spawns and jobs take turns, so a slower moment of the machine hits both alike.
    for (let i = 0; i < n + 5; i++) {
      let t0 = wallNow()
      const result = await execa(noop, CLI_ARGS, { input: input('bench'), cwd: scratch })
      let t1 = wallNow()
      const started = Number(JSON.parse(result.stdout.trim().split('\n').at(-1)!).result)
      if (i >= 5) {
        direct.spawn.push(started - t0)
        direct.roundTrip.push(t1 - t0)
      }
      t0 = wallNow()
      const job = await json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'bench' }) })
      const done = await json(`${service.url}/jobs/${job.job_id}?wait=30`)
      t1 = wallNow()
      if (done.status !== 'completed') throw new Error(`job ${job.job_id} ${done.status}: ${JSON.stringify(done.error)}`)
      if (i >= 5) {
        ours.spawn.push(Number(done.result.text) - t0)
        ours.roundTrip.push(t1 - t0)
        ours.preparing.push(done.phase_ms.preparing)
      }
    }
  } finally {
    await service.stop()
  }
  const d = { spawn: stats(direct.spawn), roundTrip: stats(direct.roundTrip) }
  const o = { spawn: stats(ours.spawn), roundTrip: stats(ours.roundTrip), preparing: stats(ours.preparing) }
  return {
    n,
    direct: { spawn: ms(d.spawn), round_trip: ms(d.roundTrip) },
    service: { spawn: ms(o.spawn), round_trip: ms(o.roundTrip), workspace: ms(o.preparing) },
    overhead_p50_ms: round(o.spawn.p50 - d.spawn.p50),
    overhead_excluding_workspace_p50_ms: round(o.spawn.p50 - o.preparing.p50 - d.spawn.p50),
    overhead_p99_ms: round(o.spawn.p99 - d.spawn.p99),
    round_trip_overhead_p50_ms: round(o.roundTrip.p50 - d.roundTrip.p50),
  }
}

// --- 2b. What the sandbox costs a run ----------------------------------------------------------
// The same no-op CLI four ways, taking turns: spawned directly (the floor), spawned in the
// sandbox the service builds (bwrap, the run's folders bound), and as jobs of a service with
// SANDBOX=off and with SANDBOX=bwrap. "Spawn" is until the CLI runs its first line.
async function sandbox () {
  const n = quick ? 15 : 60
  const noop = fixture('noop-claude.mjs')
  const env = { PATH: process.env.PATH! }
  const bwrap = await Bubblewrap.create({ cli: noop, env, stateDir: dir('sandbox-state'), readOnly: [] })
  const off = await startService({ CLAUDE_BIN: noop, WORKSPACE_ROOT: dir('sandbox-off'), MAX_CONCURRENCY: '1', SANDBOX: 'off' })
  const on = await startService({ CLAUDE_BIN: noop, WORKSPACE_ROOT: dir('sandbox-on'), MAX_CONCURRENCY: '1', SANDBOX: 'bwrap' })
  const samples = { direct: [] as number[], directBwrap: [] as number[], serviceOff: [] as number[], serviceOn: [] as number[] }
  const trips = { direct: [] as number[], directBwrap: [] as number[], serviceOff: [] as number[], serviceOn: [] as number[] }
  const started = (stdout: string): number => Number(JSON.parse(stdout.trim().split('\n').at(-1)!).result)
  const viaService = async (url: string): Promise<[number, number]> => {
    const t0 = wallNow()
    const job = await json(`${url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'bench' }) })
    const done = await json(`${url}/jobs/${job.job_id}?wait=30`)
    if (done.status !== 'completed') throw new Error(`job ${job.job_id} ${done.status}: ${JSON.stringify(done.error)}`)
    return [Number(done.result.text) - t0, wallNow() - t0]
  }
  try {
    for (let i = 0; i < n + 5; i++) {
      let t0 = wallNow()
      const plain = await execa(noop, CLI_ARGS, { input: input('bench'), cwd: scratch })
      const direct = [started(plain.stdout) - t0, wallNow() - t0]
      const runDir = dir(`sandbox-run-${i}`)
      const paths: RunPaths = { workspace: join(runDir, 'ws'), config: join(runDir, 'config'), home: join(runDir, 'home'), tmp: join(runDir, 'tmp'), inputs: join(runDir, 'inputs') }
      for (const path of Object.values(paths)) mkdirSync(path)
      t0 = wallNow()
      const command = await bwrap.command({ paths, mounts: [], bin: noop, args: CLI_ARGS, env })
      if ('error' in command) throw new Error(command.error.message)
      const boxed = await execa(command.bin, command.args, { input: input('bench'), cwd: command.cwd, env: command.env, extendEnv: false, stdio: ['pipe', 'pipe', 'pipe', new Uint8Array(command.fd3!)] })
      const directBwrap = [started(boxed.stdout) - t0, wallNow() - t0]
      rmSync(runDir, { recursive: true, force: true })
      const serviceOff = await viaService(off.url)
      const serviceOn = await viaService(on.url)
      if (i < 5) continue
      for (const [name, [spawn, trip]] of Object.entries({ direct, directBwrap, serviceOff, serviceOn }) as Array<[keyof typeof samples, number[]]>) {
        samples[name].push(spawn!)
        trips[name].push(trip!)
      }
    }
  } finally {
    await Promise.all([off.stop(), on.stop()])
  }
  const row = (name: keyof typeof samples) => ({ spawn: ms(stats(samples[name])), round_trip: ms(stats(trips[name])) })
  const p50 = (name: keyof typeof samples) => stats(samples[name]).p50
  return {
    n,
    bwrap: bwrap.info.version,
    direct: row('direct'),
    direct_bwrap: row('directBwrap'),
    service_off: row('serviceOff'),
    service_bwrap: row('serviceOn'),
    bwrap_added_p50_ms: round(p50('directBwrap') - p50('direct')),
    service_bwrap_added_p50_ms: round(p50('serviceOn') - p50('serviceOff')),
    service_bwrap_added_round_trip_p50_ms: round(stats(trips.serviceOn).p50 - stats(trips.serviceOff).p50),
  }
}

// --- 3. Scale --------------------------------------------------------------------------------
// 10,000 no-op jobs through each of two services, WARM_AGENTS=0 (as before warm starts) and
// WARM_AGENTS=2, against a floor of the same CLI run straight from here. The machine is shared
// and its load drifts over minutes, so the three take turns in blocks (the floor, then both
// services in alternating order) and each rate is its total over its blocks.
async function scale () {
  const total = quick ? 1000 : 10_000
  const blocks = 5
  const concurrency = 10
  const fast = fixture('fast-claude.sh')
  const loadBefore = loadAverage()
  const cold = await startScaleService(total, concurrency, '0')
  const warm = await startScaleService(total, concurrency, '2')
  let floorSeconds = 0
  try {
    for (let block = 0; block < blocks; block++) {
      const size = Math.floor(total / blocks) + (block < total % blocks ? 1 : 0)
      const floorStart = performance.now()
      let next = 0
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (next < size) {
          next++
          await execa(fast, CLI_ARGS, { input: input('bench'), cwd: scratch })
        }
      }))
      const took = (performance.now() - floorStart) / 1000
      floorSeconds += took
      const rates = []
      for (const service of block % 2 === 0 ? [cold, warm] : [warm, cold]) rates.push(await service.block(size))
      log(`scale: block ${block + 1}: floor ${round(size / took, 1)}/s, ${block % 2 === 0 ? 'cold then warm' : 'warm then cold'} ${rates.join(', ')}/s`)
    }
    const floorRate = total / floorSeconds
    return {
      ...await cold.result(floorRate),
      blocks,
      warm: await warm.result(floorRate),
      load_before: loadBefore,
      load_after: loadAverage(),
    }
  } finally {
    await Promise.all([cold.stop(), warm.stop()])
  }
}

async function startScaleService (total: number, concurrency: number, warmAgents: string) {
  const root = dir(`scale-${warmAgents}`)
  const service = await startService({
    CLAUDE_BIN: fixture('fast-claude.sh'),
    WORKSPACE_ROOT: root,
    MAX_CONCURRENCY: String(concurrency),
    MAX_QUEUE_DEPTH: String(total * 2),
    MAX_FINISHED_JOBS: String(total * 2),
    MAX_RETAINED_BYTES: String(8 * 2 ** 30),
    WARM_AGENTS: warmAgents,
  })
  const warmup = 50
  await Promise.all(Array.from({ length: warmup }, () => json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'warm-up' }) })))
  await idle(service.url)
  // Workspaces are removed after their jobs end: not while another block is timed.
  const calm = async () => {
    while (readdirSync(join(root, 'trash')).length > 0) await new Promise(resolve => setTimeout(resolve, 50))
    await quiet(service.child.pid!)
  }
  await calm()
  const rssBefore = service.rssBytes()
  let seconds = 0
  let submitSeconds = 0
  let submitted = 0
  let refused = 0
  return {
    stop: () => service.stop(),
    /** `size` jobs from 20 clients at once; done when every one has finished. */
    block: async (size: number) => {
      const start = performance.now()
      let sent = 0
      await Promise.all(Array.from({ length: 20 }, async () => {
        while (sent < size) {
          sent++
          submitted++
          const response = await fetch(`${service.url}/execute`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ prompt: `job ${submitted}` }) })
          await response.arrayBuffer()
          if (response.status !== 202) refused++
        }
      }))
      submitSeconds += (performance.now() - start) / 1000
      await idle(service.url)
      const took = (performance.now() - start) / 1000
      seconds += took
      await calm()
      return round(size / took, 1)
    },
    result: async (floorRate: number) => {
      const rssAfter = service.rssBytes()
      // Nothing lost: every job is there, terminal and completed; every workspace is gone.
      const counts: Record<string, number> = {}
      let cursor: string | null = null
      let listed = 0
      do {
        const page: { jobs: Array<{ status: string }>, next_cursor: string | null } = await json(`${service.url}/jobs?limit=200${cursor === null ? '' : `&cursor=${cursor}`}`)
        for (const job of page.jobs) counts[job.status] = (counts[job.status] ?? 0) + 1
        listed += page.jobs.length
        cursor = page.next_cursor
      } while (cursor !== null)
      // Warm agents' workspaces are there on purpose (jobs/warm-*); a job's must be gone.
      const leftoverWorkspaces = readdirSync(join(root, 'jobs')).filter(name => !name.startsWith('warm-')).length
      const warm = (await json(`${service.url}/health`)).warm as { hits: number, misses: number }
      const serviceRate = submitted / seconds
      return {
        jobs: submitted,
        capacity: concurrency,
        accepted_per_second: round(submitted / submitSeconds, 0),
        refused,
        completion_per_second: round(serviceRate, 1),
        floor_completion_per_second: round(floorRate, 1),
        ratio: round(serviceRate / floorRate, 3),
        listed: listed - warmup,
        statuses: counts,
        lost: submitted + warmup - (counts.completed ?? 0),
        leftover_workspaces: leftoverWorkspaces,
        rss_before_mib: round(rssBefore / 2 ** 20, 1),
        rss_after_mib: round(rssAfter / 2 ** 20, 1),
        rss_per_retained_job_kib: round((rssAfter - rssBefore) / submitted / 1024, 2),
        warm_hits: warm.hits,
        warm_misses: warm.misses,
      }
    },
  }
}

// --- 3b. The Redis engine --------------------------------------------------------------------
// The same no-op CLI as the jobs suite, one job at a time: from POST /execute to the agent's start,
// through the memory engine and through one replica on Redis (a private redis-server on a unix
// socket, as in the tests). Then the scale suite's 10,000 jobs through the memory engine, one
// replica on Redis, and two (each MAX_CONCURRENCY=10, submissions alternating between them), and
// what Redis holds per retained job (INFO memory, before and after).
async function engine () {
  const n = quick ? 20 : 100
  const total = quick ? 1000 : 10_000
  const redis = await startRedis(dir('redis'))
  try {
    const noop = fixture('noop-claude.mjs')
    const memory = await startService({ CLAUDE_BIN: noop, WORKSPACE_ROOT: dir('engine-memory'), MAX_CONCURRENCY: '1', SANDBOX: 'off' })
    const onRedis = await startService({ CLAUDE_BIN: noop, WORKSPACE_ROOT: dir('engine-redis'), MAX_CONCURRENCY: '1', SANDBOX: 'off', REDIS_URL: redis.url, REDIS_PREFIX: 'latency', INSTANCE_ID: 'bench-latency' })
    const starts = { memory: [] as number[], redis: [] as number[] }
    try {
      // They take turns, so a slower moment of the machine hits both alike.
      for (let i = 0; i < n + 5; i++) {
        for (const [name, service] of [['memory', memory], ['redis', onRedis]] as const) {
          const t0 = wallNow()
          const job = await json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'bench' }) })
          const done = await json(`${service.url}/jobs/${job.job_id}?wait=30`)
          if (done.status !== 'completed') throw new Error(`job ${job.job_id} ${done.status}: ${JSON.stringify(done.error)}`)
          if (i >= 5) starts[name].push(Number(done.result.text) - t0)
        }
      }
    } finally {
      await Promise.all([memory.stop(), onRedis.stop()])
    }
    const memoryStart = stats(starts.memory)
    const redisStart = stats(starts.redis)

    const fast = fixture('fast-claude.sh')
    const settings = (root: string) => ({ CLAUDE_BIN: fast, WORKSPACE_ROOT: root, MAX_CONCURRENCY: '10', SANDBOX: 'off', MAX_QUEUE_DEPTH: String(total * 2), MAX_FINISHED_JOBS: String(total * 2), MAX_RETAINED_BYTES: String(8 * 2 ** 30) })
    const throughput = async (services: ServiceProcess[]): Promise<{ per_second: number, lost: number }> => {
      const submitStart = performance.now()
      let submitted = 0
      const ids: string[] = []
      await Promise.all(Array.from({ length: 20 }, async (_, client) => {
        while (submitted < total) {
          submitted++
          const job = await json(`${services[client % services.length]!.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: `job ${submitted}` }) })
          ids.push(job.job_id)
        }
      }))
      await Promise.all(services.map(service => idleCluster(service.url)))
      const seconds = (performance.now() - submitStart) / 1000
      let completed = 0
      for (let i = 0; i < ids.length; i += 100) {
        const batch = await Promise.all(ids.slice(i, i + 100).map(id => json(`${services[0]!.url}/jobs/${id}`)))
        completed += batch.filter(job => job.status === 'completed').length
      }
      return { per_second: round(total / seconds, 1), lost: total - completed }
    }
    const single = await startService(settings(dir('throughput-memory')))
    let memoryRun
    try {
      memoryRun = await throughput([single])
    } finally {
      await single.stop()
    }
    const memoryBefore = await redis.usedMemory()
    const one = await startService({ ...settings(dir('throughput-redis-1')), REDIS_URL: redis.url, REDIS_PREFIX: 'one', INSTANCE_ID: 'bench-one' })
    let redisRun
    let memoryPerJob
    try {
      redisRun = await throughput([one])
      memoryPerJob = (await redis.usedMemory() - memoryBefore) / total
    } finally {
      await one.stop()
    }
    const pair = await Promise.all(['a', 'b'].map(name => startService({ ...settings(dir(`throughput-redis-2${name}`)), REDIS_URL: redis.url, REDIS_PREFIX: 'two', INSTANCE_ID: `bench-two-${name}` })))
    let pairRun
    try {
      pairRun = await throughput(pair)
    } finally {
      await Promise.all(pair.map(service => service.stop()))
    }
    return {
      n,
      jobs: total,
      start_memory: ms(memoryStart),
      start_redis: ms(redisStart),
      redis_added_start_p50_ms: round(redisStart.p50 - memoryStart.p50),
      redis_added_start_p99_ms: round(redisStart.p99 - memoryStart.p99),
      memory_per_second: memoryRun.per_second,
      redis_one_per_second: redisRun.per_second,
      redis_two_per_second: pairRun.per_second,
      ratio_redis_to_memory: round(redisRun.per_second / memoryRun.per_second, 3),
      ratio_two_to_one: round(pairRun.per_second / redisRun.per_second, 3),
      lost: memoryRun.lost + redisRun.lost + pairRun.lost,
      redis_bytes_per_retained_job: round(memoryPerJob, 0),
    }
  } finally {
    await redis.stop()
  }
}

/** Waits until the replica (and, with Redis, the whole cluster) has nothing running or waiting. */
async function idleCluster (url: string): Promise<void> {
  for (;;) {
    const health = await json(`${url}/health`)
    const numbers = health.cluster ?? health
    if (health.active === 0 && numbers.active === 0 && numbers.queued === 0) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function idle (url: string): Promise<void> {
  for (;;) {
    const health = await json(`${url}/health`)
    if (health.active === 0 && health.queued === 0) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

// --- 4. Streaming relay ----------------------------------------------------------------------
async function stream () {
  const deltas = quick ? 100 : 300
  const streams = 3
  const cli = fixture('stream-claude.mjs')
  const floor: number[] = []
  for (let i = 0; i < streams; i++) {
    const child = execa(cli, CLI_ARGS, { input: input('bench'), env: { BENCH_DELTAS: String(deltas) }, buffer: false })
    let buffer = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const now = wallNow()
      buffer += chunk
      let newline = buffer.indexOf('\n')
      while (newline !== -1) {
        const line = buffer.slice(0, newline)
        buffer = buffer.slice(newline + 1)
        newline = buffer.indexOf('\n')
        const match = /"text":"@([\d.]+);"/.exec(line)
        if (match) floor.push(now - Number(match[1]))
      }
    })
    await child
  }
  const service = await startService({ CLAUDE_BIN: cli, WORKSPACE_ROOT: dir('stream'), AGENT_ENV_PASSTHROUGH: 'BENCH_DELTAS', BENCH_DELTAS: String(deltas) })
  const ours: number[] = []
  try {
    for (let i = 0; i < streams; i++) {
      const response = await fetch(`${service.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...AUTH, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'haiku', messages: [{ role: 'user', content: 'bench' }], stream: true }),
      })
      const decoder = new TextDecoder()
      for await (const chunk of response.body!) {
        const now = wallNow()
        for (const match of decoder.decode(chunk, { stream: true }).matchAll(/"content":"@([\d.]+);"/g)) ours.push(now - Number(match[1]))
      }
    }
  } finally {
    await service.stop()
  }
  const o = stats(ours)
  const f = stats(floor)
  return { deltas: ours.length, floor: ms(f), service: ms(o), added_p50_ms: round(o.p50 - f.p50, 3), added_p99_ms: round(o.p99 - f.p99, 3) }
}

// --- 5. Workspaces ---------------------------------------------------------------------------
function makeRepo (path: string, files: number): void {
  execFileSync('git', ['init', '-q', '--bare', path])
  const chunks: Buffer[] = [Buffer.from('commit refs/heads/main\ncommitter Bench <bench@example.invalid> 0 +0000\ndata 6\nbench\n')]
  for (let i = 0; i < files; i++) {
    // ~10 KB of text per file that does not compress to nothing, like source code would not.
    const content = Buffer.from(randomBytes(7500).toString('base64').replace(/(.{100})/g, '$1\n'))
    chunks.push(Buffer.from(`M 644 inline dir${i % 100}/file${i}.txt\ndata ${content.length}\n`), content, Buffer.from('\n'))
  }
  chunks.push(Buffer.from('\n'))
  execFileSync('git', ['fast-import', '--quiet'], { cwd: path, input: Buffer.concat(chunks), maxBuffer: 2 ** 30 })
  execFileSync('git', ['symbolic-ref', 'HEAD', 'refs/heads/main'], { cwd: path })
}

async function workspaces () {
  const sizes = quick ? [200, 2000] : [200, 5000, 30_000]
  const runs = 5
  const results = []
  for (const files of sizes) {
    log(`workspaces: generating a repository of ${files} files`)
    const origin = join(dir(`ws-${files}`), 'origin.git')
    makeRepo(origin, files)
    const floorsDir = dir(`ws-${files}/floors`)
    const folders = new WorkspaceFolders(dir(`ws-${files}/root`))
    await folders.init()
    const provider = new GitWorkspaces({ folders, repo: origin, refreshMs: 0, maxDiffBytes: 2 ** 20, sandboxed: false, logger: pino({ level: 'silent' }), now: Date.now })
    await provider.ready
    // The floors read the same object store the service clones from: its warm bare base.
    const base = join(folders.root, 'base.git')
    // They take turns, each after the previous one's files are deleted and flushed (creating
    // files right after deleting others is slow on some filesystems): the disk is in the same state
    // for all. The first round warms the page cache and is dropped. The three ways a workspace can
    // get its objects: hardlinks (--local, what the service did), borrowed through an alternate
    // (--shared, what it does: the agent sees the base's objects through a read-only bind),
    // copied (--no-hardlinks). Each one's own object bytes are counted (hardlinked files are not its own).
    const cloneWith = (flag: string, name: string) => ({
      run: (i: number) => { execFileSync('git', ['clone', '-q', flag, base, join(floorsDir, `${name}-${i}`)]) },
      own: (i: number) => ownBytes(join(floorsDir, `${name}-${i}`, '.git', 'objects')),
      clean: async (i: number) => rmSync(join(floorsDir, `${name}-${i}`), { recursive: true, force: true }),
    })
    const methods = {
      clone: cloneWith('--local', 'local'),
      shared: cloneWith('--shared', 'shared'),
      copied: cloneWith('--no-hardlinks', 'copied'),
      checkoutIndex: {
        run: (i: number) => {
          const target = join(floorsDir, `index-${i}`)
          mkdirSync(target, { recursive: true })
          const env = { ...process.env, GIT_DIR: base, GIT_WORK_TREE: target, GIT_INDEX_FILE: join(floorsDir, `index-${i}.idx`) }
          execFileSync('git', ['read-tree', 'main'], { env })
          execFileSync('git', ['checkout-index', '-a'], { env })
        },
        own: () => 0,
        clean: async (i: number) => rmSync(join(floorsDir, `index-${i}`), { recursive: true, force: true }),
      },
      service: {
        run: async (i: number) => { made.set(i, await provider.prepare(`bench-${i}`, { signal: new AbortController().signal })) },
        own: (i: number) => ownBytes(join(made.get(i)!.path, '.git', 'objects')),
        clean: async (i: number) => {
          await made.get(i)?.dispose()
          await folders.drain()
        },
      },
    }
    const made = new Map<number, Awaited<ReturnType<typeof provider.prepare>>>()
    const samples: Record<keyof typeof methods, number[]> = { clone: [], shared: [], copied: [], checkoutIndex: [], service: [] }
    const own: Partial<Record<keyof typeof methods, number>> = {}
    for (let i = 0; i < runs + 1; i++) {
      for (const [name, method] of Object.entries(methods) as Array<[keyof typeof methods, { run: (i: number) => unknown, own: (i: number) => number, clean: (i: number) => Promise<void> }]>) {
        execFileSync('sync')
        const t0 = performance.now()
        await method.run(i)
        if (i > 0) samples[name].push(performance.now() - t0)
        own[name] = method.own(i)
        await method.clean(i)
      }
    }
    const clone = stats(samples.clone)
    const checkoutIndex = stats(samples.checkoutIndex)
    const ours = stats(samples.service)
    const mib = (bytes: number | undefined) => round((bytes ?? 0) / 2 ** 20, 1)
    await provider.close()
    rmSync(join(scratch, `ws-${files}`), { recursive: true, force: true })
    results.push({
      files,
      floor_clone_local_ms: ms(clone),
      clone_shared_ms: ms(stats(samples.shared)),
      clone_no_hardlinks_ms: ms(stats(samples.copied)),
      floor_checkout_index_ms: ms(checkoutIndex),
      service_prepare_ms: ms(ours),
      own_objects_mib: { clone_local: mib(own.clone), clone_shared: mib(own.shared), clone_no_hardlinks: mib(own.copied), service: mib(own.service) },
      ratio_to_clone: round(ours.p50 / clone.p50, 2),
      ratio_to_checkout_index: round(ours.p50 / checkoutIndex.p50, 2),
    })
  }
  return { runs, sizes: results }
}

// --- 6. Claude Code's own state: a configuration folder per run, or one shared -------------------
async function cli () {
  const claude = fileURLToPath(new URL('../node_modules/.bin/claude', import.meta.url))
  const server = createServer((request, response) => {
    request.resume().on('end', () => {
      response.writeHead(200, { 'content-type': 'text/event-stream' })
      const send = (type: string, data: Record<string, unknown>) => response.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`)
      send('message_start', { message: { id: 'msg_bench', type: 'message', role: 'assistant', model: 'claude-haiku-5-5', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 1 } } })
      send('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })
      send('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'ok' } })
      send('content_block_stop', { index: 0 })
      send('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 2 } })
      send('message_stop', {})
      response.end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const base = { PATH: process.env.PATH!, ANTHROPIC_BASE_URL: `http://127.0.0.1:${port}`, ANTHROPIC_API_KEY: 'bench', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }
  const cwd = dir('cli-work')
  const shared = dir('cli-shared')
  const runOnce = async (env: Record<string, string>) => {
    const t0 = performance.now()
    await execa(claude, CLI_ARGS, { input: input('say ok'), cwd, env, extendEnv: false })
    return performance.now() - t0
  }
  // The same run in the sandbox the service gives it (fresh folders, bwrap).
  const bwrap = await Bubblewrap.create({ cli: claude, env: base, stateDir: dir('cli-sandbox-state'), readOnly: [] })
  const runBoxed = async (i: number) => {
    const runDir = dir(`cli-boxed-${i}`)
    const paths: RunPaths = { workspace: join(runDir, 'ws'), config: join(runDir, 'config'), home: join(runDir, 'home'), tmp: join(runDir, 'tmp'), inputs: join(runDir, 'inputs') }
    for (const path of Object.values(paths)) mkdirSync(path)
    const t0 = performance.now()
    const command = await bwrap.command({ paths, mounts: [], bin: claude, args: CLI_ARGS, env: base })
    if ('error' in command) throw new Error(command.error.message)
    await execa(command.bin, command.args, { input: input('say ok'), cwd: command.cwd, env: command.env, extendEnv: false, stdio: ['pipe', 'pipe', 'pipe', new Uint8Array(command.fd3!)] })
    return performance.now() - t0
  }
  const n = quick ? 3 : 10
  const fresh: number[] = []
  const reused: number[] = []
  const boxed: number[] = []
  try {
    await runOnce({ ...base, HOME: dir('cli-home'), CLAUDE_CONFIG_DIR: shared })
    for (let i = 0; i < n; i++) {
      reused.push(await runOnce({ ...base, HOME: dir('cli-home'), CLAUDE_CONFIG_DIR: shared }))
      fresh.push(await runOnce({ ...base, HOME: dir('cli-home'), CLAUDE_CONFIG_DIR: dir(`cli-fresh-${i}`) }))
      boxed.push(await runBoxed(i))
    }
  } finally {
    server.close()
  }
  const f = stats(fresh)
  const r = stats(reused)
  const b = stats(boxed)
  return { runs: n, shared_config_ms: ms(r), fresh_config_ms: ms(f), sandboxed_ms: ms(b), added_p50_ms: round(f.p50 - r.p50), sandbox_added_p50_ms: round(b.p50 - f.p50) }
}

// --- 7. Warm starts ---------------------------------------------------------------------------
// The real CLI against a local stand-in API, two services side by side: WARM_AGENTS on and
// WARM_AGENTS=0. Nothing is pinned (a CLI start needs both cores). Each measured request runs
// alone: before it, the warm service is idle (every warm CLI ready, none starting, no CPU used:
// a CLI goes on working for a second or so after its handshake) and the previous run's folders
// are deleted. Warm and cold take turns with their floors, so a busier moment hits all alike.
// The floors are the CLI alone, in the sandbox the service gives it, fed by this process: started
// now with its prompt (cold), or started earlier, idle, then given its prompt (warm).
async function warm () {
  const claude = fileURLToPath(new URL('../node_modules/.bin/claude', import.meta.url))
  const api = await standInApi()
  const env = { CLAUDE_BIN: claude, ANTHROPIC_BASE_URL: api.url, ANTHROPIC_API_KEY: 'bench', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }
  // The floors' CLI also reports its own timings (in its result line, at the cost of a few clock reads).
  const agentEnv = { PATH: process.env.PATH!, ANTHROPIC_BASE_URL: api.url, ANTHROPIC_API_KEY: 'bench', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', CLAUDE_CODE_EMIT_STARTUP_TIMING: '1' }
  const floor: Floor = { claude, env: agentEnv, api, bwrap: await Bubblewrap.create({ cli: claude, env: agentEnv, stateDir: dir('warm-floor-state'), readOnly: [] }) }
  try {
    return {
      load_before: loadAverage(),
      chat: await warmChat(env, api, floor),
      job: await warmJob(env, api, floor),
      miss: await warmMiss(env, api),
      load_after: loadAverage(),
    }
  } finally {
    api.close()
  }
}

/** The 1, 5 and 15 minute load averages: the machine is shared, and a CLI start needs both cores. */
function loadAverage (): number[] {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number)
}

interface Floor { claude: string, env: Record<string, string>, api: StandIn, bwrap: Bubblewrap }

/**
 * The floor: the CLI alone in the sandbox the service gives it, no service. From its prompt to its
 * model call, for a CLI started now with its prompt (`cold`, timed from before its sandbox is
 * built) or started earlier and idle since its handshake (`warm`). In `workspace` when given.
 */
async function cliFloor (floor: Floor, how: 'cold' | 'warm', workspace?: { path: string, mounts?: readonly Mount[] | undefined }): Promise<{ call: number, cli: number | undefined, phases: Record<string, number> }> {
  const runDir = dir(`warm-floor-${randomBytes(4).toString('hex')}`)
  const paths: RunPaths = { workspace: workspace?.path ?? join(runDir, 'ws'), config: join(runDir, 'config'), home: join(runDir, 'home'), tmp: join(runDir, 'tmp'), inputs: join(runDir, 'inputs') }
  for (const [name, path] of Object.entries(paths)) if (name !== 'workspace' || workspace === undefined) mkdirSync(path)
  const args = buildCliArgs({ prompt: '', model: 'haiku', includePartialMessages: true })
  let called = floor.api.next()
  let t0 = wallNow()
  const command = await floor.bwrap.command({ paths, mounts: workspace?.mounts ?? [], bin: floor.claude, args, env: floor.env })
  if ('error' in command) throw new Error(command.error.message)
  const child = execa(command.bin, command.args, { cwd: command.cwd, env: command.env, extendEnv: false, reject: false, stdio: ['pipe', 'pipe', 'ignore', new Uint8Array(command.fd3!)] })
  let seen = ''
  const handshake = new Promise<void>(resolve => {
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      seen += chunk
      if (seen.includes('"control_response"')) resolve()
    })
  })
  if (how === 'cold') {
    child.stdin.end(input('Say ok.'))
  } else {
    child.stdin.write(initializeRequest('claude-runner-bench'))
    await handshake
    await quiet(child.pid!)
    called = floor.api.next()
    t0 = wallNow()
    child.stdin.end(userMessage('Say ok.'))
  }
  const at = await called
  const exit = await child
  if (exit.exitCode !== 0) throw new Error(`floor CLI exited ${exit.exitCode}: ${seen.slice(-500)}`)
  rmSync(runDir, { recursive: true, force: true })
  // The CLI's own count, from handling its prompt to its model request built (CLAUDE_CODE_EMIT_STARTUP_TIMING).
  const own = /"time_to_request_ms":(\d+)/.exec(seen)
  const phases = /"time_to_request_phases_ms":(\{[^}]*\})/.exec(seen)
  return { call: at - t0, cli: own === null ? undefined : Number(own[1]), phases: phases === null ? {} : JSON.parse(phases[1]!) as Record<string, number> }
}

/** Every process under `root` (itself first), from /proc. */
function processTree (root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)])
    } catch {}
  }
  const pids = [root]
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i]!) ?? []))
  return pids
}

/** Until `root` and everything under it used at most 10 ms of CPU in the last 250 ms. */
async function quiet (root: number): Promise<void> {
  const cpu = (): number => processTree(root).reduce((sum, pid) => {
    try {
      return sum + cpuMs(pid)
    } catch {
      return sum
    }
  }, 0)
  let before = cpu()
  for (let tries = 0; tries < 120; tries++) {
    await new Promise(resolve => setTimeout(resolve, 250))
    const now = cpu()
    if (now - before <= 10) return
    before = now
  }
  throw new Error(`process ${root} never went quiet`)
}

interface StandIn { url: string, next: () => Promise<number>, close: () => void }

/** Answers every model call with a short streamed text; `next()` resolves with the wall-clock time the next call arrives. */
async function standInApi (): Promise<StandIn> {
  let waiting: Array<(at: number) => void> = []
  const server = createServer((request, response) => {
    const at = wallNow()
    for (const resolve of waiting.splice(0)) resolve(at)
    request.resume().on('end', () => {
      response.writeHead(200, { 'content-type': 'text/event-stream' })
      const send = (type: string, data: Record<string, unknown>) => response.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`)
      send('message_start', { message: { id: 'msg_bench', type: 'message', role: 'assistant', model: 'claude-haiku-5-5', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 10, output_tokens: 1 } } })
      send('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })
      for (const text of ['o', 'k', '.']) send('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })
      send('content_block_stop', { index: 0 })
      send('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 2 } })
      send('message_stop', {})
      response.end()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    next: () => new Promise(resolve => { waiting.push(resolve) }),
    close: () => {
      waiting = []
      server.closeAllConnections()
      server.close()
    },
  }
}

/** Until the service's warm CLIs are all ready (at least `ready`), none starting, its trash is empty and it uses no CPU. */
async function settled (service: ServiceProcess, root: string, ready: number): Promise<void> {
  for (;;) {
    const health = await json(`${service.url}/health`)
    const trash = readdirSync(join(root, 'trash')).length
    if (health.warm.ready >= ready && health.warm.starting === 0 && health.active === 0 && trash === 0) break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  await quiet(service.child.pid!)
}

/** Time to the model call and to the first content delta of one streamed chat completion. */
async function chatOnce (service: ServiceProcess, api: StandIn): Promise<{ call: number, delta: number }> {
  const called = api.next()
  const t0 = wallNow()
  const response = await fetch(`${service.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { ...AUTH, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'haiku', messages: [{ role: 'user', content: 'Say ok.' }], stream: true }),
  })
  if (response.status !== 200) throw new Error(`chat: ${response.status} ${await response.text()}`)
  const decoder = new TextDecoder()
  let delta: number | undefined
  let text = ''
  for await (const chunk of response.body!) {
    text += decoder.decode(chunk, { stream: true })
    if (delta === undefined && /"delta":\{"content":"[^"]/.test(text)) delta = wallNow() - t0
  }
  if (delta === undefined) throw new Error(`chat: no content in ${text.slice(0, 500)}`)
  return { call: (await called) - t0, delta }
}

async function warmChat (env: Record<string, string>, api: StandIn, floor: Floor) {
  const n = quick ? 5 : 20
  const roots = { cold: dir('warm-chat-cold'), warm: dir('warm-chat-warm') }
  const cold = await startService({ ...env, WORKSPACE_ROOT: roots.cold, WARM_AGENTS: '0' })
  const warmed = await startService({ ...env, WORKSPACE_ROOT: roots.warm, WARM_AGENTS: '2' })
  const samples = { coldCall: [] as number[], coldDelta: [] as number[], warmCall: [] as number[], warmDelta: [] as number[], backToBackCall: [] as number[], backToBackDelta: [] as number[], floorCold: [] as number[], floorWarm: [] as number[], floorWarmCli: [] as number[] }
  const phases: Record<string, number[]> = {}
  try {
    // One chat each first: the warm service learns the chat's argument set (that one is a miss).
    await settled(warmed, roots.warm, 1)
    await chatOnce(cold, api)
    await chatOnce(warmed, api)
    for (let i = 0; i < n; i++) {
      for (const which of i % 2 === 0 ? ['cold', 'warm'] as const : ['warm', 'cold'] as const) {
        await settled(warmed, roots.warm, 2)
        await settled(cold, roots.cold, 0)
        const sample = await chatOnce(which === 'cold' ? cold : warmed, api)
        samples[`${which}Call`].push(sample.call)
        samples[`${which}Delta`].push(sample.delta)
      }
      await settled(warmed, roots.warm, 2)
      await settled(cold, roots.cold, 0)
      samples.floorCold.push((await cliFloor(floor, 'cold')).call)
      const warmFloor = await cliFloor(floor, 'warm')
      samples.floorWarm.push(warmFloor.call)
      if (warmFloor.cli !== undefined) samples.floorWarmCli.push(warmFloor.cli)
      for (const [phase, took] of Object.entries(warmFloor.phases)) (phases[phase] ??= []).push(took)
    }
    // One after another, with no pause: each takes the CLI its predecessor's replacement is still starting.
    await settled(warmed, roots.warm, 2)
    for (let i = 0; i < n; i++) {
      const sample = await chatOnce(warmed, api)
      samples.backToBackCall.push(sample.call)
      samples.backToBackDelta.push(sample.delta)
    }
    await settled(warmed, roots.warm, 2)
    await settled(cold, roots.cold, 0)
    const memory = { cold: treeMemory(cold.child.pid!), warm: treeMemory(warmed.child.pid!) }
    const health = await json(`${warmed.url}/health`)
    const row = (name: keyof typeof samples) => ms(stats(samples[name]))
    return {
      n,
      floor_cold_to_call: row('floorCold'),
      floor_warm_to_call: row('floorWarm'),
      floor_warm_cli_own: samples.floorWarmCli.length === 0 ? undefined : row('floorWarmCli'),
      // Its largest phases, p50 each (names as the CLI gives them).
      floor_warm_cli_phases_p50: Object.fromEntries(Object.entries(phases).map(([phase, took]) => [phase, stats(took).p50]).sort((a, b) => (b[1] as number) - (a[1] as number)).slice(0, 8)),
      cold_to_call: row('coldCall'),
      cold_to_delta: row('coldDelta'),
      warm_to_call: row('warmCall'),
      warm_to_delta: row('warmDelta'),
      back_to_back_to_call: row('backToBackCall'),
      back_to_back_to_delta: row('backToBackDelta'),
      delta_ratio_p50: round(stats(samples.warmDelta).p50 / stats(samples.coldDelta).p50, 3),
      warm: health.warm as { hits: number, misses: number },
      idle_memory: memory,
    }
  } finally {
    await Promise.all([cold.stop(), warmed.stop()])
  }
}

async function warmJob (env: Record<string, string>, api: StandIn, floor: Floor) {
  const files = quick ? 2000 : 30_000
  const n = quick ? 3 : 20
  log(`warm: generating a repository of ${files} files`)
  const origin = join(dir('warm-repo'), 'origin.git')
  makeRepo(origin, files)
  const roots = { cold: dir('warm-job-cold'), warm: dir('warm-job-warm') }
  const repo = { BASE_REPO: origin, BASE_REFRESH_SECONDS: '0' }
  const cold = await startService({ ...env, ...repo, WORKSPACE_ROOT: roots.cold, WARM_AGENTS: '0' })
  const warmed = await startService({ ...env, ...repo, WORKSPACE_ROOT: roots.warm, WARM_AGENTS: '1' })
  const samples = { cold: [] as number[], warm: [] as number[], coldPreparing: [] as number[], warmPreparing: [] as number[], floorCold: [] as number[], floorWarm: [] as number[], floorWarmCli: [] as number[] }
  // The floors' workspace: one made by the service's own code (a shared clone of a bare base), for all of them.
  const folders = new WorkspaceFolders(dir('warm-job-floor'))
  await folders.init()
  const provider = new GitWorkspaces({ folders, repo: origin, refreshMs: 0, maxDiffBytes: 2 ** 20, sandboxed: true, logger: pino({ level: 'silent' }), now: Date.now })
  await provider.ready
  const checkout = await provider.prepare('floor', { signal: new AbortController().signal })
  const jobOnce = async (service: ServiceProcess) => {
    const called = api.next()
    const t0 = wallNow()
    const job = await json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'Say ok.' }) })
    const call = (await called) - t0
    const done = await json(`${service.url}/jobs/${job.job_id}?wait=60`)
    if (done.status !== 'completed') throw new Error(`job ${job.job_id} ${done.status}: ${JSON.stringify(done.error)}`)
    return { call, preparing: done.phase_ms.preparing as number }
  }
  try {
    for (const service of [cold, warmed]) {
      for (;;) {
        if ((await json(`${service.url}/health`)).workspace.state === 'ready') break
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    }
    for (let i = 0; i < n + 1; i++) {
      for (const which of i % 2 === 0 ? ['cold', 'warm'] as const : ['warm', 'cold'] as const) {
        await settled(warmed, roots.warm, 1)
        await settled(cold, roots.cold, 0)
        execFileSync('sync')
        const sample = await jobOnce(which === 'cold' ? cold : warmed)
        // The first round warms the page cache.
        if (i === 0) continue
        samples[which].push(sample.call)
        samples[`${which}Preparing`].push(sample.preparing)
      }
      await settled(warmed, roots.warm, 1)
      await settled(cold, roots.cold, 0)
      const coldFloor = await cliFloor(floor, 'cold', checkout)
      const warmFloor = await cliFloor(floor, 'warm', checkout)
      if (i === 0) continue
      samples.floorCold.push(coldFloor.call)
      samples.floorWarm.push(warmFloor.call)
      if (warmFloor.cli !== undefined) samples.floorWarmCli.push(warmFloor.cli)
    }
    await settled(warmed, roots.warm, 1)
    const memory = { cold: treeMemory(cold.child.pid!), warm: treeMemory(warmed.child.pid!) }
    const health = await json(`${warmed.url}/health`)
    return {
      files,
      n,
      floor_cold_cli_to_call: ms(stats(samples.floorCold)),
      floor_warm_to_call: ms(stats(samples.floorWarm)),
      floor_warm_cli_own: samples.floorWarmCli.length === 0 ? undefined : ms(stats(samples.floorWarmCli)),
      cold_to_call: ms(stats(samples.cold)),
      warm_to_call: ms(stats(samples.warm)),
      cold_preparing: ms(stats(samples.coldPreparing)),
      warm_preparing: ms(stats(samples.warmPreparing)),
      warm: health.warm as { hits: number, misses: number },
      idle_memory: memory,
    }
  } finally {
    await Promise.all([cold.stop(), warmed.stop()])
    await checkout.dispose()
    await provider.close()
  }
}

// A run that cannot be warm (its argv is new each time) arriving while a warm CLI is starting
// (for the argument set used just before): the warm start is stopped, so the run's start should
// cost what it costs with WARM_AGENTS=0.
async function warmMiss (env: Record<string, string>, api: StandIn) {
  const n = quick ? 5 : 20
  const roots = { cold: dir('warm-miss-cold'), warm: dir('warm-miss-warm') }
  const cold = await startService({ ...env, WORKSPACE_ROOT: roots.cold, WARM_AGENTS: '0' })
  const warmed = await startService({ ...env, WORKSPACE_ROOT: roots.warm, WARM_AGENTS: '2' })
  const samples = { cold: [] as number[], miss: [] as number[] }
  let caught = 0
  const jobOnce = async (service: ServiceProcess, turns: number) => {
    const called = api.next()
    const t0 = wallNow()
    const job = await json(`${service.url}/execute`, { method: 'POST', body: JSON.stringify({ prompt: 'Say ok.', max_turns: turns }) })
    const call = (await called) - t0
    await json(`${service.url}/jobs/${job.job_id}?wait=60`)
    return call
  }
  try {
    await settled(warmed, roots.warm, 1)
    await jobOnce(warmed, 1000)
    for (let i = 0; i < n; i++) {
      await settled(warmed, roots.warm, 2)
      await settled(cold, roots.cold, 0)
      samples.cold.push(await jobOnce(cold, 2000 + i))
      // The previous miss made its argument set the most recent: a warm CLI starts for it. Catch it starting.
      await jobOnce(warmed, 3000 + i)
      for (let polls = 0; polls < 500; polls++) {
        const health = await json(`${warmed.url}/health`)
        if (health.warm.starting > 0) {
          caught++
          break
        }
        await new Promise(resolve => setTimeout(resolve, 5))
      }
      samples.miss.push(await jobOnce(warmed, 4000 + i))
    }
    return { n, cold_to_call: ms(stats(samples.cold)), miss_while_warm_starts_to_call: ms(stats(samples.miss)), caught_starting: caught, ratio_p50: round(stats(samples.miss).p50 / stats(samples.cold).p50, 3) }
  } finally {
    await Promise.all([cold.stop(), warmed.stop()])
  }
}

/** RSS and PSS of a process and all its descendants (PSS shares each shared page among its users). */
function treeMemory (root: number): { processes: number, rss_mib: number, pss_mib: number } {
  const pids = processTree(root)
  let rssBytes = 0
  let pssKib = 0
  for (const pid of pids) {
    try {
      rssBytes += rss(pid)
      pssKib += Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0)
    } catch {}
  }
  return { processes: pids.length, rss_mib: round(rssBytes / 2 ** 20, 1), pss_mib: round(pssKib / 1024, 1) }
}

/** Bytes of the files under `dir` that are its own: a hardlinked file (more than one link) is shared. */
function ownBytes (dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const info = lstatSync(join(dir, entry))
    if (info.isFile() && info.nlink === 1) total += info.size
  }
  return total
}

function ms (s: Stats) {
  return { p50: round(s.p50), p99: round(s.p99), mean: round(s.mean), n: s.n }
}

// --- run and report -------------------------------------------------------------------------
// http runs last: autocannon leaves this process large, and a large process forks more slowly,
// which would slow the direct-spawn floors of the other suites.
const suites = { jobs, sandbox, stream, cli, warm, scale, engine, workspaces, http } as const
const results: Record<string, unknown> = { date: new Date().toISOString(), quick, machine: machine() }
try {
  for (const [name, suite] of Object.entries(suites)) {
    if (values['report-only'] === true) break
    if (only !== undefined && !only.includes(name)) continue
    log(`${name}…`)
    const started = performance.now()
    results[name] = await suite()
    log(`${name} done in ${round((performance.now() - started) / 1000, 1)} s: ${JSON.stringify(results[name])}`)
  }
} finally {
  rmSync(scratch, { recursive: true, force: true })
}
const resultsFile = new URL('./results.json', import.meta.url)
if ((only !== undefined || values['report-only'] === true) && existsSync(resultsFile)) {
  // A partial run (--only) updates its sections and keeps the others.
  const previous = JSON.parse(readFileSync(resultsFile, 'utf8')) as Record<string, unknown>
  for (const [key, value] of Object.entries(previous)) if (!(key in results) || values['report-only'] === true) results[key] = value
}
writeFileSync(resultsFile, JSON.stringify(results, null, 2) + '\n')
writeFileSync(new URL('../docs/benchmarks.md', import.meta.url), report(results as unknown as Report))
log('wrote bench/results.json and docs/benchmarks.md')

interface Report {
  date: string
  quick: boolean
  machine: Record<string, string | number>
  http?: Awaited<ReturnType<typeof http>>
  jobs?: Awaited<ReturnType<typeof jobs>>
  sandbox?: Awaited<ReturnType<typeof sandbox>>
  scale?: Awaited<ReturnType<typeof scale>>
  engine?: Awaited<ReturnType<typeof engine>>
  stream?: Awaited<ReturnType<typeof stream>>
  workspaces?: Awaited<ReturnType<typeof workspaces>>
  cli?: Awaited<ReturnType<typeof cli>>
  warm?: Awaited<ReturnType<typeof warm>>
}

function report (r: Report): string {
  const verdict = (ok: boolean): string => ok ? 'met' : '**not met**'
  const lines = [
    '# Benchmarks',
    '',
    `Made by \`npm run bench\` (\`bench/run.ts\`) on ${r.date.slice(0, 10)}${r.quick ? ' (quick mode: smaller runs)' : ''}. Every figure`,
    'stands next to its floor, measured in the same run on the same machine; raw numbers are in',
    '`bench/results.json`. Re-run after touching a hot path.',
    '',
    `Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memory_gib} GiB, Linux ${r.machine.kernel}, Node ${r.machine.node}, ${r.machine.git}, ${r.machine.git_crypt}.`,
    '',
  ]
  if (r.http) {
    const h = r.http
    const line = (label: string, x: typeof h.floor) =>
      `| ${label} | ${x.cpu_us_per_request} | ${x.capacity_rps} | ${x.capacity_ratio} (${x.capacity_ratio_quartiles.join('–')}) | ${x.rps} | ${x.rps_ratio} | ${x.p99_ms} |`
    lines.push('## HTTP', '',
      `autocannon, ${h.connections} connections. The targets take turns, one second each, over ${h.rounds} rounds, in an order that`,
      'rotates every round. The service runs as its own process at LOG_LEVEL=info; the floor, a bare Fastify "hello"',
      'route, in another; the control is a second, identical floor process.',
      h.pinned
        ? 'The servers are pinned to core 0 and the load generator to core 1 (`taskset`), so they do not fight over cores.'
        : '`taskset` was not available (or there is one core): servers and load generator shared the cores.',
      '',
      'One autocannon thread cannot keep a server\'s core busy, so its request rate is partly its own limit. What a',
      'server can sustain is its **capacity**: one second over the CPU time it spends per request, read from its /proc',
      'entry. Most of that time is the kernel\'s, and on this virtual machine it drifts by up to 2x within minutes, so',
      'ratios are taken within each round, against the floor of that round: the median over the rounds is shown, with',
      'the quartiles in brackets. The control\'s ratio shows how much of a difference is noise.', '',
      '| route | CPU µs per request | capacity req/s | capacity ratio | autocannon req/s | req/s ratio | p99 ms |', '| --- | --- | --- | --- | --- | --- | --- |',
      line('floor: bare Fastify `GET /hello`', h.floor),
      line('control: a second bare Fastify process', h.control),
      line('`GET /health`', h.health),
      line('`GET /jobs/:id` (bearer auth, full job JSON, logged)', h.job),
      '', `Goal: /health at >= 80% of the floor's throughput: ${verdict(h.health.capacity_ratio >= 0.8)} (${Math.round(h.health.capacity_ratio * 100)}% of its capacity).`,
      '/health runs no hook, builds no child logger and sends JSON serialised once per change; what it still costs over the floor is what a Fastify app with a logger pays per request and sending a 250-byte body instead of 17 bytes.', '')
  }
  if (r.jobs) {
    const j = r.jobs
    lines.push('## Job overhead', '',
      `${j.n} no-op jobs one after another (MAX_CONCURRENCY=1, SANDBOX=off: what the sandbox adds is the next section). "Spawn" is from the moment the client sends \`POST /execute\``,
      'to the moment the agent process runs its first line (it reports its own wall-clock start); the floor is a direct',
      '`execa` spawn of the same CLI. "Round trip" ends when the client has the finished job (`GET /jobs/:id?wait`).', '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      `| floor: direct spawn, to first line | ${j.direct.spawn.p50} | ${j.direct.spawn.p99} |`,
      `| service: POST to first line | ${j.service.spawn.p50} | ${j.service.spawn.p99} |`,
      `| of which the workspace (mkdir) | ${j.service.workspace.p50} | ${j.service.workspace.p99} |`,
      `| floor: direct spawn, to exit | ${j.direct.round_trip.p50} | ${j.direct.round_trip.p99} |`,
      `| service: POST to finished job in hand | ${j.service.round_trip.p50} | ${j.service.round_trip.p99} |`,
      '', `Overhead over the direct spawn, p50: ${j.overhead_p50_ms} ms (${j.overhead_excluding_workspace_p50_ms} ms excluding the workspace); p99: ${j.overhead_p99_ms} ms.`,
      `Round trip overhead, p50: ${j.round_trip_overhead_p50_ms} ms.`,
      `Goal: < 5 ms p50 over the direct spawn, excluding the workspace: ${verdict(j.overhead_excluding_workspace_p50_ms < 5)}.`, '')
  }
  if (r.sandbox) {
    const x = r.sandbox
    const line = (label: string, row: typeof x.direct) => `| ${label} | ${row.spawn.p50} | ${row.spawn.p99} | ${row.round_trip.p50} | ${row.round_trip.p99} |`
    lines.push('## The sandbox', '',
      `${x.n} runs of a no-op CLI each way, taking turns (bubblewrap ${x.bwrap}). "Spawn" is until the CLI runs its first line; "round trip"`,
      'until its exit (direct) or until the client has the finished job (service). In the sandbox, the run has its folders',
      'bound (workspace, configuration folder, HOME, /tmp, inputs), its own user, PID, IPC and mount namespaces, a read-only root.', '',
      '| | spawn p50 ms | spawn p99 ms | round trip p50 ms | round trip p99 ms |', '| --- | --- | --- | --- | --- |',
      line('floor: direct spawn', x.direct),
      line('direct spawn in the sandbox (bwrap)', x.direct_bwrap),
      line('service, SANDBOX=off', x.service_off),
      line('service, SANDBOX=bwrap (the default)', x.service_bwrap),
      '', `bwrap adds ${x.bwrap_added_p50_ms} ms to a run's start at p50; through the service, SANDBOX=bwrap adds ${x.service_bwrap_added_p50_ms} ms to the start`,
      `and ${x.service_bwrap_added_round_trip_p50_ms} ms to the round trip (the run's folders are made and removed too). The real CLI's start-up is about a second (next section).`, '')
  }
  if (r.scale) {
    const s = r.scale
    lines.push('## Scale', '',
      `${s.jobs} jobs submitted by 20 concurrent clients to a service with MAX_CONCURRENCY=${s.capacity}, running a CLI stand-in that`,
      'costs as little as a process can (`bench/fixtures/fast-claude.sh`). The floor runs the same CLI the same number of',
      `times, 10 at a time, straight from the benchmark. Floor and services take turns in ${s.blocks ?? 1} blocks (the machine's load drifts).`, '',
      '| | value |', '| --- | --- |',
      `| accepted per second | ${s.accepted_per_second} (refused: ${s.refused}) |`,
      `| completed per second | ${s.completion_per_second} |`,
      `| floor: direct runs per second | ${s.floor_completion_per_second} |`,
      `| ratio to floor | ${s.ratio} |`,
      `| jobs lost (not completed) | ${s.lost} |`,
      `| workspaces left behind | ${s.leftover_workspaces} |`,
      `| statuses listed | ${JSON.stringify(s.statuses)} |`,
      `| RSS before / after | ${s.rss_before_mib} MiB / ${s.rss_after_mib} MiB |`,
      `| RSS per retained finished job | ${s.rss_per_retained_job_kib} KiB |`,
      '', `Goal: every job terminal and nothing lost, memory bounded: ${verdict(s.lost === 0 && s.leftover_workspaces === 0)}. Retained jobs are bounded by`,
      'MAX_FINISHED_JOBS and MAX_RETAINED_BYTES (here raised to keep all of them, to measure the cost of one).', '',
      ...(s.warm === undefined
        ? []
        : [
            'The same with warm starts on (`WARM_AGENTS=2`; the table above is `WARM_AGENTS=0`), in the same blocks, against the same floor.',
            `Load average (1 / 5 / 15 min) before the services ran: ${s.load_before?.join(' / ') ?? 'unknown'}; after: ${s.load_after?.join(' / ') ?? 'unknown'}.`, '',
            '| | WARM_AGENTS=0 | WARM_AGENTS=2 |', '| --- | --- | --- |',
            `| completed per second | ${s.completion_per_second} | ${s.warm.completion_per_second} |`,
            `| ratio to floor | ${s.ratio} | ${s.warm.ratio} |`,
            `| jobs lost / workspaces left behind | ${s.lost} / ${s.leftover_workspaces} | ${s.warm.lost} / ${s.warm.leftover_workspaces} |`,
            `| warm hits / misses | - | ${s.warm.warm_hits} / ${s.warm.warm_misses} |`,
            '', `Goal: with warm agents, not below the ratio without: ${verdict(s.warm.ratio >= s.ratio * 0.95)} (within 5%, the run-to-run noise here).`,
            'While every slot is busy, no warm CLI starts: with 20 clients keeping 10 slots full, nearly every job starts cold.', '',
          ]))
  }
  if (r.engine) {
    const e = r.engine
    lines.push('## The Redis engine', '',
      'From `POST /execute` to the start of a no-op CLI, one job at a time, SANDBOX=off (the engine, not the sandbox), taking',
      `turns, ${e.n} jobs each: through the memory engine (the floor) and through one replica on Redis (a private redis-server on a`,
      'unix socket).', '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      `| memory engine | ${e.start_memory.p50} | ${e.start_memory.p99} |`,
      `| Redis engine, one replica | ${e.start_redis.p50} | ${e.start_redis.p99} |`,
      '', `Redis adds ${e.redis_added_start_p50_ms} ms at p50 (${e.redis_added_start_p99_ms} ms at p99) to a job's start: admission, dispatch and claim scripts,`,
      'BullMQ\'s hand-off, the record and event writes. The real CLI\'s own start-up is about a second.', '',
      `${e.jobs} jobs of the scale suite's cheapest CLI stand-in, 20 concurrent clients, MAX_CONCURRENCY=10 per replica:`, '',
      '| | jobs per second | ratio |', '| --- | --- | --- |',
      `| memory engine (the floor) | ${e.memory_per_second} | 1 |`,
      `| Redis engine, one replica | ${e.redis_one_per_second} | ${e.ratio_redis_to_memory} |`,
      `| Redis engine, two replicas (same machine, 2 cores) | ${e.redis_two_per_second} | ${e.ratio_two_to_one} of one replica |`,
      '', `Jobs lost across the three runs: ${e.lost}. Redis holds ${e.redis_bytes_per_retained_job} bytes per retained finished job (record, output, events,`,
      'indexes). Two replicas on one 2-core machine share its CPUs; on two machines each brings its own.', '')
  }
  if (r.stream) {
    const s = r.stream
    lines.push('## Streaming relay', '',
      `${s.deltas} text deltas, each stamped with the wall-clock time the CLI wrote it, 3 ms apart. Latency is until the`,
      'chunk reaches the client: through the service (SSE chat completion), and for the floor straight from the',
      "CLI's stdout pipe to the benchmark.", '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      `| floor: CLI stdout to reader | ${s.floor.p50} | ${s.floor.p99} |`,
      `| service: CLI stdout to SSE client | ${s.service.p50} | ${s.service.p99} |`,
      '', `Added by the service: ${s.added_p50_ms} ms p50, ${s.added_p99_ms} ms p99. Goal: < 2 ms p50: ${verdict(s.service.p50 < 2)}.`, '')
  }
  if (r.cli) {
    const c = r.cli
    lines.push('## Claude Code state per run', '',
      `The real CLI (the pinned devDependency) answering a one-word prompt from a local stand-in API, ${c.runs} runs each, taking`,
      'turns: with the configuration folder (CLAUDE_CONFIG_DIR) of earlier runs, and with a fresh empty one, as the',
      'service gives every run.', '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      `| shared, warm configuration folder | ${c.shared_config_ms.p50} | ${c.shared_config_ms.p99} |`,
      `| fresh configuration folder per run | ${c.fresh_config_ms.p50} | ${c.fresh_config_ms.p99} |`,
      ...(c.sandboxed_ms === undefined ? [] : [`| fresh folders, in the sandbox (as the service runs it) | ${c.sandboxed_ms.p50} | ${c.sandboxed_ms.p99} |`]),
      '', `A folder of its own costs each run ${c.added_p50_ms} ms at p50: the price of never sharing \`.claude.json\` between concurrent runs.`,
      ...(c.sandbox_added_p50_ms === undefined ? [] : [`The sandbox adds ${c.sandbox_added_p50_ms} ms at p50 to a real CLI run.`]), '')
  }
  if (r.warm) {
    const { chat, job, miss } = r.warm
    const row = (label: string, stats: { p50: number, p99: number }) => `| ${label} | ${stats.p50} | ${stats.p99} |`
    const load = (values: number[] | undefined) => values === undefined ? 'unknown' : values.join(' / ')
    const added = (msAdded: number) => msAdded > 0 ? `adds ${round(msAdded)} ms at p50` : `adds nothing measurable at p50 (the difference, ${round(msAdded)} ms, is noise)`
    lines.push('## Warm starts', '',
      'The real CLI (the pinned devDependency) against a local stand-in API, two services side by side: `WARM_AGENTS` on',
      'and `WARM_AGENTS=0`, taking turns with the floors. Each measured request runs alone: the warm service has every warm',
      'CLI ready, none starting and no process of it using CPU (a CLI goes on working for a second or so after its handshake),',
      'and the previous run\'s folders are deleted. Nothing is pinned (a CLI start needs both cores). The floors are the CLI',
      'alone in the sandbox the service builds, fed by the benchmark: started with its prompt (cold), or started, idle since',
      'its handshake, then given its prompt (warm): what the CLI itself takes from its prompt to its first model call.',
      `Load average (1 / 5 / 15 min) before: ${load(r.warm.load_before)}; after: ${load(r.warm.load_after)} (2 cores, shared with other work).`, '',
      `### Chat completion, streamed (${chat.n} requests each, one after another)`, '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      ...(chat.floor_cold_to_call === undefined ? [] : [row('floor, cold: the CLI alone, its start to the model call', chat.floor_cold_to_call), row('floor, warm: the CLI alone, idle, its prompt to the model call', chat.floor_warm_to_call)]),
      ...(chat.floor_warm_cli_own === undefined ? [] : [row('of which the CLI\'s own count, its prompt handled to its request built', chat.floor_warm_cli_own)]),
      row('WARM_AGENTS=0: request to the model call', chat.cold_to_call),
      row('WARM_AGENTS=0: request to the first content delta at the client', chat.cold_to_delta),
      row('warm: request to the model call', chat.warm_to_call),
      row('warm: request to the first content delta at the client', chat.warm_to_delta),
      row('warm, back to back (no pause): to the model call', chat.back_to_back_to_call),
      row('warm, back to back (no pause): to the first content delta', chat.back_to_back_to_delta),
      '', `Warm over cold at p50, to the first delta: ${chat.delta_ratio_p50}. Goal: ≤ 0.35: ${verdict(chat.delta_ratio_p50 <= 0.35)}.`,
      `To the model call, p50: ${chat.warm_to_call.p50} ms. Goal: ≤ 150 ms: ${verdict(chat.warm_to_call.p50 <= 150)}.`,
      ...(chat.floor_warm_to_call === undefined ? [] : [`The CLI alone takes ${chat.floor_warm_to_call.p50} ms of that (the warm floor); the service (HTTP, admission, the queue, the take, the stdin write) ${added(chat.warm_to_call.p50 - chat.floor_warm_to_call.p50)}.`]),
      ...(chat.floor_warm_cli_phases_p50 === undefined ? [] : [`The CLI's own count (CLAUDE_CODE_EMIT_STARTUP_TIMING, set for the floors only) is work inside the CLI after it has read its prompt; its largest phases, p50 ms: ${Object.entries(chat.floor_warm_cli_phases_p50).map(([phase, took]) => `${phase} ${took}`).join(', ')}.`]),
      'Back to back, a request takes the CLI its predecessor\'s replacement is still starting: it waits for the rest of that start.', '',
      `### Job at BASE_REF, ${job.files.toLocaleString('en')} files (${job.n} jobs each, after one of each to warm the page cache)`, '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      ...(job.floor_warm_to_call === undefined ? [] : [row('floor, cold: the CLI alone in a ready checkout, its start to the model call', job.floor_cold_cli_to_call), row('floor, warm: the CLI alone in a ready checkout, idle, its prompt to the model call', job.floor_warm_to_call)]),
      ...(job.floor_warm_cli_own === undefined ? [] : [row('of which the CLI\'s own count, its prompt handled to its request built', job.floor_warm_cli_own)]),
      row('WARM_AGENTS=0: `POST /execute` to the model call', job.cold_to_call),
      row('of which preparing (the checkout)', job.cold_preparing),
      row('warm: `POST /execute` to the model call', job.warm_to_call),
      row('of which preparing', job.warm_preparing),
      '', `Goal: ≤ 150 ms p50 warm: ${verdict(job.warm_to_call.p50 <= 150)}.`,
      ...(job.floor_warm_to_call === undefined ? [] : [`The CLI alone takes ${job.floor_warm_to_call.p50} ms of that; the service ${added(job.warm_to_call.p50 - job.floor_warm_to_call.p50)}.`]), '',
      `### A cold start while a warm CLI starts (${miss.n} each)`, '',
      'Jobs whose argv is new each time (a `max_turns` of their own) never find a warm CLI. On the warm service each is sent',
      `while a warm CLI is starting (for the argument set used just before; caught starting ${miss.caught_starting} times of ${miss.n}), which the cold start then stops.`, '',
      '| | p50 ms | p99 ms |', '| --- | --- | --- |',
      row('WARM_AGENTS=0: `POST /execute` to the model call', miss.cold_to_call),
      row('WARM_AGENTS=2, a warm CLI starting: the same', miss.miss_while_warm_starts_to_call),
      '', `Ratio at p50: ${miss.ratio_p50}. Goal: a warm start never slows a run's start: ${verdict(miss.ratio_p50 <= 1.1)} (within 10%).`, '',
      '### Idle memory (RSS and PSS of the service and every process under it)', '',
      '| | processes | RSS MiB | PSS MiB |', '| --- | --- | --- | --- |',
      `| chat service, WARM_AGENTS=0 | ${chat.idle_memory.cold.processes} | ${chat.idle_memory.cold.rss_mib} | ${chat.idle_memory.cold.pss_mib} |`,
      `| chat service, WARM_AGENTS=2 (2 CLIs waiting) | ${chat.idle_memory.warm.processes} | ${chat.idle_memory.warm.rss_mib} | ${chat.idle_memory.warm.pss_mib} |`,
      `| job service with BASE_REPO, WARM_AGENTS=0 | ${job.idle_memory.cold.processes} | ${job.idle_memory.cold.rss_mib} | ${job.idle_memory.cold.pss_mib} |`,
      `| job service with BASE_REPO, WARM_AGENTS=1 | ${job.idle_memory.warm.processes} | ${job.idle_memory.warm.rss_mib} | ${job.idle_memory.warm.pss_mib} |`,
      '')
  }
  if (r.workspaces) {
    const w = r.workspaces
    lines.push('## Workspaces', '',
      'Preparing one job\'s workspace at BASE_REF (`GitWorkspaces.prepare`: one `clone --shared --branch` of the warm base,',
      `its template holding the git-crypt key, parallel checkout from 1,000 files), p50 of ${w.runs} runs after one warm-up, on`,
      'generated repositories (~10 KB of incompressible text per file). From the same base: `git clone` with its checkout,',
      'its objects hardlinked (`--local`), borrowed (`--shared`) or copied (`--no-hardlinks`), and `git read-tree` +',
      '`checkout-index -a` into an empty folder (the files and nothing else, the floor). They take turns, each after the',
      'previous one\'s files are deleted and flushed.', '',
      '| files | clone --local | clone --shared | clone --no-hardlinks | floor: checkout-index | service prepare | ratio to --local | ratio to checkout-index |', '| --- | --- | --- | --- | --- | --- | --- | --- |',
      ...w.sizes.map(size => `| ${size.files} | ${size.floor_clone_local_ms.p50} ms | ${size.clone_shared_ms?.p50 ?? '-'} ms | ${size.clone_no_hardlinks_ms?.p50 ?? '-'} ms | ${size.floor_checkout_index_ms.p50} ms | ${size.service_prepare_ms.p50} ms | ${size.ratio_to_clone} | ${size.ratio_to_checkout_index} |`),
      '', 'Object bytes each workspace holds of its own (hardlinked files are shared with the base: an agent that can write them changes the base):', '',
      '| files | clone --local | clone --shared | clone --no-hardlinks | service |', '| --- | --- | --- | --- | --- |',
      ...w.sizes.filter(size => size.own_objects_mib !== undefined).map(size => `| ${size.files} | ${size.own_objects_mib!.clone_local} MiB | ${size.own_objects_mib!.clone_shared} MiB | ${size.own_objects_mib!.clone_no_hardlinks} MiB | ${size.own_objects_mib!.service} MiB |`),
      '')
  }
  return lines.join('\n')
}
