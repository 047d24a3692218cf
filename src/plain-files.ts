import { constants } from 'node:fs'
import { lstat, open } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * A regular file under `root` that an agent could have tampered with, read through real folders
 * only (no symlink anywhere on the way, O_NOFOLLOW at the end, no FIFO to block on), at most
 * `maxBytes` of it: undefined when it is not there (or not a plain file), 'too_large' past the bound.
 */
export async function readPlainFile (root: string, parts: readonly string[], maxBytes: number): Promise<Buffer | 'too_large' | undefined> {
  let dir = root
  for (const part of parts.slice(0, -1)) {
    dir = join(dir, part)
    const info = await lstat(dir).catch(() => undefined)
    if (info === undefined || !info.isDirectory()) return undefined
  }
  let handle
  try {
    handle = await open(join(dir, parts.at(-1)!), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch {
    return undefined
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) return undefined
    if (info.size > maxBytes) return 'too_large'
    // One byte more than allowed: a file that grew since stat() is caught too.
    const buffer = Buffer.alloc(Math.min(info.size, maxBytes) + 1)
    let length = 0
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
      if (bytesRead === 0) break
      length += bytesRead
    }
    return length > maxBytes ? 'too_large' : buffer.subarray(0, length)
  } finally {
    await handle.close()
  }
}
