import { createServer, connect, type Socket } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { diffLines } from '../ui/diff.js'
import * as format from '../ui/format.js'
import { followEvents, SseParser, StreamRefused, type SseEvent } from '../ui/sse.js'
import { finished, listen, makeApp, submit, TOKEN } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

// The dashboard's modules that need no DOM, run under Node: the SSE client against the real
// service, the diff reader, the formatting.

describe('SseParser', () => {
  const stream = '\uFEFF: a comment\r\nretry: 1500\nid: 1\nevent: status\ndata: {"a":1}\n\n' +
    'id: 2\r\nevent: text\r\ndata: line one\r\ndata:line two\r\n\r\n' +
    'data: no type, no id\r\rid: 3\nevent: tool_use\ndata\n\n' +
    'id: 4\n\n' +
    'event: end\ndata: {"done":true}\n\n' +
    'event: cut\ndata: never dispatched'
  const expected = [
    { type: 'status', data: '{"a":1}', id: '1' },
    { type: 'text', data: 'line one\nline two', id: '2' },
    { type: 'message', data: 'no type, no id', id: '2' },
    { type: 'tool_use', data: '', id: '3' },
    { type: 'end', data: '{"done":true}', id: '4' },
  ]

  it('reads the event stream format, whatever the line ends', () => {
    const events: SseEvent[] = []
    const parser = new SseParser(event => events.push(event))
    parser.push(stream)
    expect(events).toEqual(expected)
    expect(parser.retry).toBe(1500)
    expect(parser.lastEventId).toBe('4')
  })

  it('gives the same events however the stream is cut into chunks', () => {
    for (let size = 1; size <= 9; size++) {
      for (let offset = 0; offset < size; offset++) {
        const events: SseEvent[] = []
        const parser = new SseParser(event => events.push(event))
        parser.push(stream.slice(0, offset))
        for (let i = offset; i < stream.length; i += size) parser.push(stream.slice(i, i + size))
        expect(events, `chunks of ${size} from ${offset}`).toEqual(expected)
      }
    }
  })
})

/** A TCP relay in front of the service that can cut every connection, as a flaky network would. */
async function relay (target: string): Promise<{ url: string, requests: string[], cut: () => void }> {
  const { port } = new URL(target)
  const sockets = new Set<Socket>()
  const requests: string[] = []
  const server = createServer(client => {
    const upstream = connect(Number(port), '127.0.0.1')
    sockets.add(client).add(upstream)
    client.once('data', chunk => requests.push(chunk.toString('latin1')))
    client.pipe(upstream).pipe(client)
    const drop = (): void => { client.destroy(); upstream.destroy() }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>(resolve => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  const address = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    cut: () => { for (const socket of sockets) socket.destroy() },
  }
}

describe('followEvents', () => {
  it('resumes a dropped stream with Last-Event-ID: every event once, in order, then the end', async () => {
    const { app } = await makeApp()
    const net = await relay(await listen(app))
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `[[fake say before the cut]] ${probe.directive} [[fake say after the cut]]` })
    const events: SseEvent[] = []
    const states: string[] = []
    const before = Promise.withResolvers<void>()
    const controller = new AbortController()
    const followed = followEvents(`${net.url}/jobs/${job.job_id}/events`, {
      token: TOKEN,
      signal: controller.signal,
      onEvent: event => {
        events.push(event)
        if (event.type === 'text' && JSON.parse(event.data).text === 'before the cut') before.resolve()
      },
      onState: state => states.push(state),
    })
    await before.promise
    const seen = events.at(-1)!.id
    net.cut()
    // Once the client is back (it reconnected through the relay), the agent goes on.
    await expect.poll(() => net.requests.length, { timeout: 15_000 }).toBe(2)
    probe.release()
    const end = await followed
    await finished(app, job.job_id)

    expect(JSON.parse(end.data)).toMatchObject({ job_id: job.job_id, status: 'completed' })
    expect(states).toEqual(['open', 'reconnecting', 'open'])
    expect(net.requests[0]).not.toMatch(/last-event-id/i)
    expect(net.requests[1]).toMatch(new RegExp(`\\r\\nlast-event-id: ${seen}\\r\\n`, 'i'))
    expect(net.requests[1]).toMatch(/\r\nauthorization: Bearer test-token-0123456789abcdef\r\n/i)
    const ids = events.filter(event => event.type !== 'end').map(event => Number(event.id))
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
    expect(events.filter(event => event.type === 'text').map(event => JSON.parse(event.data).text)).toEqual(['before the cut', 'after the cut', 'Hi! (fake model)'])
  })

  it('stops at a refusal (a wrong token, a job that is gone, a token without the scope) instead of retrying', async () => {
    const { app } = await makeApp({ metricsToken: 'metrics-token-0123456789abcd' })
    const base = await listen(app)
    const job = await submit(app, { prompt: 'hi' })
    await finished(app, job.job_id)
    const signal = new AbortController().signal
    const wrongToken = followEvents(`${base}/jobs/${job.job_id}/events`, { token: 'wrong-token-000000000000', signal, onEvent: () => {} })
    await expect(wrongToken).rejects.toBeInstanceOf(StreamRefused)
    await expect(wrongToken).rejects.toMatchObject({ status: 401, body: { error: { code: 'unauthorized' } } })
    await expect(followEvents(`${base}/jobs/nope/events`, { token: TOKEN, signal, onEvent: () => {} }))
      .rejects.toMatchObject({ status: 404, body: { error: { code: 'job_not_found' } } })
    // The page shows the refusal's message: a token without the jobs scope is told which it lacks.
    await expect(followEvents(`${base}/jobs/${job.job_id}/events`, { token: 'metrics-token-0123456789abcd', signal, onEvent: () => {} }))
      .rejects.toMatchObject({ status: 403, message: expect.stringContaining('lacks the jobs scope') })
  })

  it('gives up when aborted, while waiting to reconnect', async () => {
    const closed = createServer(socket => socket.destroy())
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>(resolve => closed.close(() => resolve())))
    const controller = new AbortController()
    const attempts: number[] = []
    const followed = followEvents(`http://127.0.0.1:${(closed.address() as { port: number }).port}/jobs/x/events`, {
      token: TOKEN,
      signal: controller.signal,
      onEvent: () => {},
      onState: (state, detail) => {
        if (state === 'reconnecting') attempts.push(detail!.delayMs)
        if (attempts.length === 3) controller.abort(new Error('left the page'))
      },
    })
    await expect(followed).rejects.toThrow('left the page')
    expect(attempts).toEqual([500, 1000, 2000])
  })
})

describe('diffLines', () => {
  it('marks added and removed lines by the hunk counts, not by how a line starts', () => {
    const diff = [
      'diff --git a/x.md b/x.md',
      'index 1111111..2222222 100644',
      '--- a/x.md',
      '+++ b/x.md',
      '@@ -1,3 +1,3 @@',
      ' keep',
      '--- a removed line that looks like a header',
      '+++ an added line that looks like a header',
      ' keep',
      '\\ No newline at end of file',
      'diff --git a/new.txt b/new.txt',
      'new file mode 100644',
      '--- /dev/null',
      '+++ b/new.txt',
      '@@ -0,0 +1 @@',
      '+hello',
      'diff --git a/secret.bin b/secret.bin',
      'Binary files a/secret.bin and b/secret.bin differ',
      '',
    ].join('\n')
    expect(diffLines(diff).map(line => line.kind)).toEqual([
      'file', 'meta', 'meta', 'meta', 'hunk', 'context', 'del', 'add', 'context', 'note',
      'file', 'meta', 'meta', 'meta', 'hunk', 'add',
      'file', 'meta',
    ])
  })
})

describe('format', () => {
  it('says durations, ages, costs and sizes as people read them', () => {
    expect([0, 999, 1000, 9_940, 59_000, 61_000, 3_600_000 + 120_000, 50 * 3_600_000].map(format.duration))
      .toEqual(['0 ms', '999 ms', '1.0 s', '9.9 s', '59 s', '1 min 01 s', '1 h 02 min', '2 d 2 h'])
    expect(format.duration(null)).toBe('—')
    const now = Date.parse('2026-01-01T12:00:00Z')
    expect(['2026-01-01T11:59:58Z', '2026-01-01T11:59:30Z', '2026-01-01T11:57:00Z', '2026-01-01T09:00:00Z', '2025-12-25T12:00:00Z', 'not a date'].map(iso => format.age(iso, now)))
      .toEqual(['just now', '30 s ago', '3 min ago', '3 h ago', '7 d ago', '—'])
    expect([null, 0, 0.049864, 0.5, 12.345].map(format.cost)).toEqual(['—', '$0', '$0.050', '$0.500', '$12.35'])
    expect([0.004].map(format.cost)).toEqual(['$0.0040'])
    expect([512, 2048, 5 * 1024 * 1024].map(format.bytes)).toEqual(['512 B', '2.0 KiB', '5.0 MiB'])
    expect(format.words('timed_out')).toBe('timed out')
  })
})
