/**
 * An async readers-writer lock. Workspaces being cloned from the base share it (their clones only
 * read the base); whatever changes the base (clone, fetch, repack) takes it alone. A waiting writer
 * goes before readers that come after it, so a fetch is not starved by a stream of jobs.
 */
export class RwLock {
  #readers = 0
  #writer = false
  readonly #queue: Array<{ write: boolean, grant: () => void }> = []

  async read<T> (fn: () => Promise<T>): Promise<T> {
    await this.#acquire(false)
    try {
      return await fn()
    } finally {
      this.#readers--
      this.#next()
    }
  }

  async write<T> (fn: () => Promise<T>): Promise<T> {
    await this.#acquire(true)
    try {
      return await fn()
    } finally {
      this.#writer = false
      this.#next()
    }
  }

  #acquire (write: boolean): Promise<void> {
    if (this.#queue.length === 0 && !this.#writer && (!write || this.#readers === 0)) {
      if (write) this.#writer = true
      else this.#readers++
      return Promise.resolve()
    }
    return new Promise(resolve => this.#queue.push({ write, grant: resolve }))
  }

  #next (): void {
    while (this.#queue.length > 0 && !this.#writer) {
      const head = this.#queue[0]!
      if (head.write) {
        if (this.#readers > 0) return
        this.#queue.shift()
        this.#writer = true
        head.grant()
        return
      }
      this.#queue.shift()
      this.#readers++
      head.grant()
    }
  }
}
