import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/redis.ts'],
    setupFiles: ['test/setup/wait-for.ts'],
    // Tests spawn real processes (fake CLI, git, git-crypt) on a 2-core machine: give them room,
    // but every wait inside a test is for an event, never a fixed sleep.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Test files wait on processes far more than they compute: two at a time on 2 cores took the
    // suite from ~700 s to ~610 s on a loaded machine, all green (vitest's default would be one).
    maxWorkers: 2,
    teardownTimeout: 30_000,
  },
})
