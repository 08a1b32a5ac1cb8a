/**
 * What both benchmarks of the drop-in build their sides from (`bench/dropin-server.ts` over HTTP,
 * `bench/dropin-inproc.ts` in process): the store package both middlewares run on, and the middleware
 * factory of each side.
 */
import type { Store } from 'express-session'
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { connectRedis, fromDist } from './serve.js'

/** The store package, built as its README shows (redis: its keys under `prefix`), and what closes it. */
export async function dropInStore(
  kind: DropInStore,
  prefix: string,
): Promise<{ store: Store; close(): Promise<void> }> {
  if (kind === 'memory') {
    const { MemoryStore } = await import('express-session')
    return { store: new MemoryStore(), close: async () => {} }
  }
  return connectRedis(prefix)
}

/** The middleware factory of each side: express-session itself, or the drop-in as the build ships it. */
export async function dropInFactory(side: DropInSide): Promise<(options: object) => unknown> {
  if (side === 'express-session') return (await import('express-session')).default as never
  const dropIn = await fromDist<typeof import('../src/express-session/index.js')>('express-session/index.js')
  return dropIn.default as never
}
