import { randomBytes } from 'node:crypto'
import { link, mkdir, open, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { connect, createServer, type Server } from 'node:net'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../config.ts'

/** Who holds a WORKSPACE_ROOT. */
export interface LockHolder {
  pid: number
  host: string
  started_at: string
}

/** Thrown when another instance holds WORKSPACE_ROOT; the message names it. */
export class LockHeldError extends ConfigError {
  override name = 'LockHeldError'
}

/** Unix socket paths are limited to 108 bytes; a longer one is reached through /proc/self/fd. */
const MAX_SOCKET_PATH = 100

/**
 * One instance per WORKSPACE_ROOT. Node has no flock, so the lock is a unix socket bound inside
 * the folder: the kernel keeps it bound exactly as long as the holder lives, and whoever connects
 * to it learns who holds it (the holder answers with its pid, host and start). A socket file left
 * by a crash refuses connections: it is stale, and taken over (moved aside and proved stale
 * before it is deleted, so two instances starting at once cannot both win). `instance.json`
 * names the holder for people. Taken before anything under the folder is touched.
 */
export class InstanceLock {
  readonly #server: Server
  readonly #socket: string
  readonly #dir: FileHandle | undefined

  private constructor (server: Server, socket: string, dir: FileHandle | undefined) {
    this.#server = server
    this.#socket = socket
    this.#dir = dir
  }

  static async acquire (root: string): Promise<InstanceLock> {
    await mkdir(root, { recursive: true, mode: 0o700 })
    const long = join(root, 'instance.sock').length > MAX_SOCKET_PATH
    const dir = long ? await open(root, 'r') : undefined
    const base = dir === undefined ? root : `/proc/self/fd/${dir.fd}`
    const socket = join(base, 'instance.sock')
    const holder: LockHolder = { pid: process.pid, host: hostname(), started_at: new Date().toISOString() }
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        const server = await listen(socket, JSON.stringify(holder))
        if (server !== undefined) {
          await writeFile(join(root, 'instance.json'), `${JSON.stringify(holder)}\n`).catch(() => {})
          return new InstanceLock(server, socket, dir)
        }
        const held = await ask(socket)
        if (held !== undefined) throw heldError(root, held)
        // Stale: move it aside, and delete it only once it is proved stale there (another
        // instance may have taken over in between: then it goes back, and that one holds the lock).
        const aside = join(base, `instance.sock.stale-${randomBytes(4).toString('hex')}`)
        try {
          await rename(socket, aside)
        } catch {
          continue
        }
        const moved = await ask(aside)
        if (moved !== undefined) {
          await link(aside, socket).catch(() => {})
          await unlink(aside).catch(() => {})
          throw heldError(root, moved)
        }
        await unlink(aside).catch(() => {})
      }
      throw new LockHeldError(`could not take the lock on WORKSPACE_ROOT ${root}: other instances keep starting on it`)
    } catch (error) {
      await dir?.close()
      throw error
    }
  }

  async release (): Promise<void> {
    await new Promise<void>(resolve => this.#server.close(() => resolve()))
    await unlink(this.#socket).catch(() => {})
    await this.#dir?.close()
  }
}

function heldError (root: string, holder: LockHolder | 'unknown'): LockHeldError {
  const who = holder === 'unknown' ? 'another process' : `another claude-runner (pid ${holder.pid} on ${holder.host}, started ${holder.started_at})`
  return new LockHeldError(`WORKSPACE_ROOT ${root} is in use by ${who}: stop it, or give this instance a WORKSPACE_ROOT of its own`)
}

/** Binds the socket; undefined when the path is taken. */
function listen (path: string, answer: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer(connection => { connection.end(answer) })
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') resolve(undefined)
      else reject(error)
    })
    server.listen(path, () => {
      // Held for the life of the process, but it must not keep an otherwise finished process alive.
      server.unref()
      resolve(server)
    })
  })
}

/** Who answers on the socket: undefined when nobody does (stale, or gone). */
function ask (path: string): Promise<LockHolder | 'unknown' | undefined> {
  return new Promise(resolve => {
    let text = ''
    const client = connect(path)
    client.setTimeout(5000, () => client.destroy())
    client.setEncoding('utf8')
    client.on('data', chunk => { text += chunk })
    client.once('error', () => resolve(undefined))
    client.once('close', hadError => {
      if (hadError && text === '') return
      try {
        resolve(JSON.parse(text) as LockHolder)
      } catch {
        resolve('unknown')
      }
    })
  })
}
