/** What `bench/run.ts` and its server processes (`bench/server.ts`) agree on. */

/** The front doors: node:http itself, and each framework latchkey has an adapter for. */
export const FRAMEWORKS = ['node', 'express', 'fastify', 'hono', 'koa'] as const
export type Framework = (typeof FRAMEWORKS)[number]

/**
 * The servers compared on each framework: the framework alone, with latchkey on each store, and with
 * the session middleware its users use today (the peer, see {@link PEERS}).
 */
export const SERVER_KINDS = ['bare', 'latchkey-memory', 'latchkey-sqlite', 'peer'] as const
export type ServerKind = (typeof SERVER_KINDS)[number]

/** The peer of each framework, by npm package: each runs on its own in-memory store. */
export const PEERS: Record<Framework, string> = {
  // On node:http itself, as a plain (req, res, next) middleware.
  node: 'express-session',
  express: 'express-session',
  fastify: '@fastify/session',
  hono: 'hono-sessions',
  koa: 'koa-session',
}

/** Messages a server process sends to its parent over IPC. */
export type ServerMessage =
  | { type: 'ready'; port: number }
  | { type: 'failed'; message: string }
  /** The answer to a `cpu` request: the process's `process.cpuUsage()`, in microseconds. */
  | { type: 'cpu'; user: number; system: number }

/** Messages the parent sends: `cpu` asks for the CPU time used so far, `stop` ends the process. */
export type ParentMessage = { type: 'cpu' } | { type: 'stop' }
