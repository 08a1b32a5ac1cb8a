/** What `bench/dropin.ts` and its server processes (`bench/dropin-server.ts`) agree on. */

/** The stores both middlewares run on: express-session's MemoryStore, connect-redis 9 (node-redis). */
export const DROPIN_STORES = ['memory', 'redis'] as const
export type DropInStore = (typeof DROPIN_STORES)[number]

/** express-session itself, or latchkey/express-session (the drop-in). */
export const DROPIN_SIDES = ['express-session', 'dropin'] as const
export type DropInSide = (typeof DROPIN_SIDES)[number]

export const DROPIN_STORE_NAMES: Record<DropInStore, string> = {
  memory: "express-session's MemoryStore",
  redis: 'connect-redis (node-redis)',
}

export const DROPIN_SIDE_NAMES: Record<DropInSide, string> = {
  'express-session': 'express-session',
  dropin: 'latchkey/express-session',
}
