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
    teardownTimeout: 30_000,
  },
})
