import { describe, expect, it } from 'vitest'
import { AppError, RunCancelledError, RunTimeoutError } from '../src/errors.ts'
import { Runner } from '../src/runner/runner.ts'

/** A task the test finishes by hand, and that records the signal it was given. */
function gate () {
  const { promise, resolve } = Promise.withResolvers<void>()
  const started = Promise.withResolvers<AbortSignal>()
  const task = async (signal: AbortSignal) => {
    started.resolve(signal)
    await promise
    return signal.aborted ? signal.reason : 'done'
  }
  return { task, release: resolve, started: started.promise }
}

describe('Runner', () => {
  it('checks its options', () => {
    expect(() => new Runner({ concurrency: 0, maxQueueDepth: 1 })).toThrow('concurrency must be an integer >= 1, got 0')
    expect(() => new Runner({ concurrency: 1, maxQueueDepth: 0 })).toThrow('maxQueueDepth must be an integer >= 1, got 0')
  })

  it('runs at most `concurrency` tasks and starts the rest in order', async () => {
    const runner = new Runner({ concurrency: 2, maxQueueDepth: 10 })
    const order: number[] = []
    const gates = Array.from({ length: 5 }, () => gate())
    const runs = gates.map((g, i) => runner.schedule(`t${i}`, async signal => {
      order.push(i)
      return g.task(signal)
    }))
    expect(runner.active).toBe(2)
    expect(runner.queued).toBe(3)
    expect([runner.position('t2'), runner.position('t3'), runner.position('t4'), runner.position('t0')]).toEqual([1, 2, 3, undefined])
    for (const g of gates) g.release()
    await Promise.all(runs)
    expect(order).toEqual([0, 1, 2, 3, 4])
  })

  it('refuses once maxQueueDepth runs are admitted, running and waiting together, with Retry-After', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 2 })
    const a = gate()
    const first = runner.schedule('a', a.task)
    const second = runner.schedule('b', async () => 'b')
    let refused: unknown
    try {
      void runner.schedule('c', async () => 'c')
    } catch (error) {
      refused = error
    }
    expect(refused).toBeInstanceOf(AppError)
    expect(refused).toMatchObject({ code: 'queue_full', statusCode: 429, headers: { 'retry-after': expect.stringMatching(/^\d+$/) } })
    a.release()
    expect(await first).toBe('done')
    expect(await second).toBe('b')
  })

  it('with depth 1 runs one and queues none', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 1 })
    const a = gate()
    const first = runner.schedule('a', a.task)
    expect(() => { void runner.schedule('b', async () => 'b') }).toThrow(/queue is full/)
    a.release()
    await first
  })

  it('starts the timeout when the task starts, not while it waits', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 5 })
    const a = gate()
    const first = runner.schedule('a', a.task)
    const b = gate()
    const second = runner.schedule('b', b.task, { timeoutMs: 50 })
    await new Promise(resolve => setTimeout(resolve, 150))
    a.release()
    await first
    const signal = await b.started
    expect(signal.aborted).toBe(false)
    // Now running: the timeout fires and aborts with a RunTimeoutError.
    await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve()))
    b.release()
    expect(await second).toBeInstanceOf(RunTimeoutError)
  })

  it('drops a cancelled waiting task at once; aborts a running one and keeps its slot until it settles', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 5 })
    const a = gate()
    const first = runner.schedule('a', a.task)
    const second = runner.schedule('b', async () => 'never')
    expect(runner.cancel('b')).toBe('dequeued')
    await expect(second).rejects.toBeInstanceOf(RunCancelledError)
    expect(runner.queued).toBe(0)

    expect(runner.cancel('a')).toBe('aborted')
    const signal = await a.started
    expect(signal.reason).toBeInstanceOf(RunCancelledError)
    expect(runner.active).toBe(1)
    a.release()
    expect(await first).toBeInstanceOf(RunCancelledError)
    expect(runner.active).toBe(0)
    expect(runner.cancel('a')).toBe('unknown')
  })

  it('follows an external signal', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 5 })
    const a = gate()
    const controller = new AbortController()
    const first = runner.schedule('a', a.task, { signal: controller.signal })
    controller.abort(new RunCancelledError('client_disconnected'))
    a.release()
    expect(await first).toMatchObject({ reason: 'client_disconnected' })
  })

  it('on close cancels what waits, gives running tasks their grace, then cancels them', async () => {
    const runner = new Runner({ concurrency: 1, maxQueueDepth: 5 })
    const a = gate()
    const first = runner.schedule('a', a.task)
    const second = runner.schedule('b', async () => 'never')
    const closing = runner.close(50)
    expect(runner.closing).toBe(true)
    await expect(second).rejects.toMatchObject({ reason: 'shutdown' })
    expect(() => { void runner.schedule('c', async () => 'c') }).toThrow(/shutting down/)
    const signal = await a.started
    await new Promise<void>(resolve => signal.addEventListener('abort', () => resolve()))
    expect(signal.reason).toMatchObject({ reason: 'shutdown' })
    a.release()
    await closing
    expect(await first).toMatchObject({ reason: 'shutdown' })
  })
})
