import { createServer, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { SseStream } from '../src/http/sse.ts'

/**
 * A real server whose one response is handed to `handle`, and a client that never reads it.
 * Resolves `closed` when the server side of the connection is gone.
 */
async function stalledStream (handle: (res: ServerResponse) => void): Promise<{ closed: Promise<void> }> {
  const { promise: closed, resolve } = Promise.withResolvers<void>()
  const server = createServer((_req, res) => {
    res.once('close', () => resolve())
    handle(res)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  onTestFinished(() => {
    client.destroy()
    server.closeAllConnections()
    return new Promise<void>(resolve => server.close(() => resolve()))
  })
  client.on('error', () => {})
  client.pause()
  client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  return { closed }
}

/**
 * Writes events until the socket's buffers are full (the kernel's on both sides, then 2 MiB in
 * the response itself), yielding so the kernel takes what it can; then writes nothing more.
 */
async function fill (sse: SseStream, res: ServerResponse): Promise<void> {
  const event = 'x'.repeat(64 * 1024)
  while (res.writableLength < 2 * 1024 * 1024) {
    sse.send(event)
    await new Promise(resolve => setImmediate(resolve))
  }
}

describe('SseStream', () => {
  it('cuts off a client that takes nothing for the write timeout while data waits for it', async () => {
    let sse: SseStream | undefined
    const { closed } = await stalledStream(res => {
      sse = new SseStream(res, { keepAliveMs: 60_000, writeTimeoutMs: 300, maxBufferedBytes: 64 * 1024 * 1024 })
      void fill(sse, res)
    })
    await closed
    expect(sse!.cutOff).toBe(true)
  })

  it('cuts off a client that never takes what was left when the stream ended', async () => {
    let sse: SseStream | undefined
    const { closed } = await stalledStream(res => {
      const stream = sse = new SseStream(res, { keepAliveMs: 60_000, writeTimeoutMs: 300, maxBufferedBytes: 64 * 1024 * 1024 })
      void fill(stream, res).then(() => stream.end())
    })
    await closed
    expect(sse!.cutOff).toBe(true)
  })

  it('cuts off a client that falls more than maxBufferedBytes behind at once', async () => {
    let sse: SseStream | undefined
    let accepted = true
    const { closed } = await stalledStream(res => {
      sse = new SseStream(res, { keepAliveMs: 60_000, writeTimeoutMs: 60_000, maxBufferedBytes: 1024 * 1024 })
      // Writing on regardless, as a chat relays deltas: the stream refuses past its bound.
      for (let i = 0; i < 1024 && accepted; i++) accepted = sse.send('y'.repeat(64 * 1024)) || !sse.closed
    })
    await closed
    expect(sse!.cutOff).toBe(true)
    expect(accepted).toBe(false)
  })
})
