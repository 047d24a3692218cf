import { vi } from 'vitest'

/*
 * vi.waitFor waits for a condition, never for time; its timeout only says when to give up. The
 * default (1 s) is a bet on a quiet machine: CI's two cores run servers, agents and Redis at once.
 * Give up after 15 s unless a test says otherwise.
 */
const waitFor = vi.waitFor.bind(vi)
vi.waitFor = ((callback, options) => waitFor(callback, typeof options === 'number' ? options : { timeout: 15_000, ...options })) as typeof vi.waitFor
