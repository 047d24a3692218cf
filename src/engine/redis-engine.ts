import type { Engine } from './types.ts'
export async function createRedisEngine (_options: unknown): Promise<Engine> { throw new Error('not yet') }
