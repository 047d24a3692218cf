import { connect, createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { onTestFinished } from 'vitest'

/**
 * What the proxy does with its Nth connection (0-based): `pass` forwards both ways; `drop` reads
 * the request and closes without a word (a server killed mid-request); `one-event` forwards the
 * answer up to the end of its first Server-Sent Event, then cuts both sides.
 */
export type ProxyPolicy = (connection: number) => 'pass' | 'drop' | 'one-event'

export interface CuttingProxy {
  url: string
  /** Connections accepted so far. */
  readonly connections: number
  /** The request lines forwarded so far (`GET /jobs/x?wait=1 HTTP/1.1`), in order. */
  readonly requests: readonly string[]
}

/** A TCP proxy in front of `target` (http://127.0.0.1:PORT) that cuts connections as told. */
export async function cuttingProxy (target: string, policy: ProxyPolicy): Promise<CuttingProxy> {
  const { port: targetPort } = new URL(target)
  let connections = 0
  const requests: string[] = []
  const sockets = new Set<Socket>()
  const server = createServer(client => {
    const mode = policy(connections++)
    sockets.add(client)
    client.once('close', () => sockets.delete(client))
    client.on('error', () => {})
    if (mode === 'drop') {
      client.once('data', () => client.destroy())
      return
    }
    const upstream = connect(Number(targetPort), '127.0.0.1')
    sockets.add(upstream)
    upstream.once('close', () => { sockets.delete(upstream); client.destroy() })
    upstream.on('error', () => {})
    client.once('close', () => upstream.destroy())
    client.on('data', (chunk: Buffer) => {
      for (const match of chunk.toString('latin1').matchAll(/^[A-Z]+ \S+ HTTP\/1\.1(?=\r\n)/gm)) requests.push(match[0])
    })
    client.pipe(upstream)
    if (mode === 'pass') {
      upstream.pipe(client)
      return
    }
    let seen = Buffer.alloc(0)
    upstream.on('data', (chunk: Buffer) => {
      const before = seen.length
      seen = Buffer.concat([seen, chunk])
      const body = seen.indexOf('\r\n\r\n')
      const end = body === -1 ? -1 : seen.indexOf('\n\n', body + 4)
      if (end === -1) {
        client.write(chunk)
        return
      }
      client.write(seen.subarray(before, end + 2))
      client.destroy()
      upstream.destroy()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get connections () { return connections },
    requests,
  }
}

/** A port of 127.0.0.1 nothing listens on (it was free a moment ago: connections are refused). */
export async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}
