import { statfs } from 'node:fs/promises'

/** What GET /health says of the disk under WORKSPACE_ROOT. */
export interface DiskInfo {
  free_bytes: number | null
  total_bytes: number | null
  /** WORKSPACE_MIN_FREE_BYTES: below it /health says `degraded`. */
  min_free_bytes: number
  /** Why the disk could not be measured, if it could not. */
  error: string | null
}

/**
 * Below this much free space a run that failed is taken to have failed for lack of space, whatever
 * it said: git and the CLI rarely say "No space left" when a disk fills under them.
 */
export const FULL_BYTES = 64 * 1024 * 1024
const REFRESH_MS = 5000
const NO_SPACE = /ENOSPC|No space left|disk quota exceeded|EDQUOT/i

/**
 * The free space under WORKSPACE_ROOT, measured in the background (every 5 s, and after a run
 * fails) so that /health never waits on the disk. The same object is kept until a figure changes.
 */
export class DiskWatch {
  readonly #path: string
  readonly #minFreeBytes: number
  #info: DiskInfo
  #timer: NodeJS.Timeout | undefined

  constructor (path: string, minFreeBytes: number) {
    this.#path = path
    this.#minFreeBytes = minFreeBytes
    this.#info = { free_bytes: null, total_bytes: null, min_free_bytes: minFreeBytes, error: null }
  }

  get info (): DiskInfo {
    return this.#info
  }

  /** True while the free space is below WORKSPACE_MIN_FREE_BYTES (as last measured). */
  get low (): boolean {
    return this.#info.free_bytes !== null && this.#info.free_bytes < this.#minFreeBytes
  }

  start (): this {
    void this.refresh()
    this.#timer = setInterval(() => { void this.refresh() }, REFRESH_MS)
    this.#timer.unref()
    return this
  }

  async refresh (): Promise<DiskInfo> {
    let next: DiskInfo
    try {
      const stats = await statfs(this.#path)
      next = { free_bytes: stats.bavail * stats.bsize, total_bytes: stats.blocks * stats.bsize, min_free_bytes: this.#minFreeBytes, error: null }
    } catch (error) {
      next = { free_bytes: null, total_bytes: null, min_free_bytes: this.#minFreeBytes, error: (error as Error).message }
    }
    const info = this.#info
    // Free space moves by a few KiB all the time: a change under 1 MiB is not one for /health.
    const moved = info.free_bytes === null || next.free_bytes === null || Math.abs(info.free_bytes - next.free_bytes) >= 1024 * 1024
    if (moved || info.total_bytes !== next.total_bytes || info.error !== next.error) this.#info = next
    return this.#info
  }

  /**
   * After a run failed with `message`: the sentence to report instead when the disk is why (it said
   * so, or less than FULL_BYTES is left), or undefined.
   */
  async full (message: string): Promise<string | undefined> {
    const { free_bytes: free, total_bytes: total } = await this.refresh()
    if (!NO_SPACE.test(message) && (free === null || free >= FULL_BYTES)) return undefined
    const space = free === null ? 'its free space is unknown' : `${mib(free)} free of ${mib(total ?? 0)}`
    return `the disk under WORKSPACE_ROOT is full (${space}): free some space; the run said: ${message}`
  }

  close (): void {
    clearInterval(this.#timer)
  }
}

function mib (bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`
}
