/** What `bench/run.ts` and its server processes (`bench/server.ts`) agree on. */

/** The servers compared. */
export const SERVER_KINDS = ['bare', 'latchkey-memory', 'latchkey-sqlite', 'express-session'] as const
export type ServerKind = (typeof SERVER_KINDS)[number]

/** Messages a server process sends to its parent over IPC. */
export type ServerMessage =
  | { type: 'ready'; port: number }
  | { type: 'failed'; message: string }
  /** The answer to a `cpu` request: the process's `process.cpuUsage()`, in microseconds. */
  | { type: 'cpu'; user: number; system: number }

/** Messages the parent sends: `cpu` asks for the CPU time used so far, `stop` ends the process. */
export type ParentMessage = { type: 'cpu' } | { type: 'stop' }
