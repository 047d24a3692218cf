import { readFileSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

interface ProcessRecord {
  pid: number
  /** /proc/PID/stat's start time (clock ticks since boot): with the boot id, it tells a reused pid apart. */
  start: string
  boot: string
}

/**
 * Every agent process started is written down (WORKSPACE_ROOT/pids/<run>) until its group is
 * gone. A crash of the service leaves the records behind, and the next start-up kills what they
 * name: with bwrap, `--die-with-parent` has already ended them, so this is the guarantee for
 * SANDBOX=off and for what slips through. A record whose pid now belongs to another process (its
 * start time or the boot differ) is dropped, never killed.
 */
export class ProcessRecords {
  readonly #dir: string
  readonly #writes = new Map<string, Promise<void>>()

  constructor (dir: string) {
    this.#dir = dir
  }

  /** Records that run `id` started `pid`; never throws (a record is a safety net, not a precondition). */
  record (id: string, pid: number): void {
    const identity = identify(pid)
    if (identity === undefined) return
    const write = mkdir(this.#dir, { recursive: true, mode: 0o700 })
      .then(() => writeFile(join(this.#dir, id), JSON.stringify({ pid, ...identity } satisfies ProcessRecord)))
      .catch(() => {})
    this.#writes.set(id, write)
  }

  /** Forgets run `id`'s process, once it and its group are gone. */
  async forget (id: string): Promise<void> {
    await this.#writes.get(id)
    this.#writes.delete(id)
    await rm(join(this.#dir, id), { force: true }).catch(() => {})
  }

  /** Kills the survivors of an earlier instance and drops every record; returns the pids killed. */
  async sweep (): Promise<number[]> {
    const names = await readdir(this.#dir).catch(() => [])
    const killed: number[] = []
    for (const name of names) {
      const file = join(this.#dir, name)
      try {
        const record = JSON.parse(await readFile(file, 'utf8')) as ProcessRecord
        const now = identify(record.pid)
        if (now !== undefined && now.start === record.start && now.boot === record.boot) {
          for (const target of [-record.pid, record.pid]) {
            try {
              process.kill(target, 'SIGKILL')
            } catch {
              // Gone already, or never a group leader.
            }
          }
          killed.push(record.pid)
        }
      } catch {
        // An unreadable record names nothing we could safely kill.
      }
      await rm(file, { force: true }).catch(() => {})
    }
    return killed
  }
}

function identify (pid: number): Omit<ProcessRecord, 'pid'> | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces): state is field 3, starttime field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // A zombie runs nothing: there is nothing to kill.
    if (fields[0] === 'Z' || fields[0] === 'X' || fields[19] === undefined) return undefined
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    return { start: fields[19], boot }
  } catch {
    return undefined
  }
}
