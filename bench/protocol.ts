/** What `bench/run.ts` and its server processes (`bench/server.ts`) agree on. */

/** The servers compared. */
export const SERVER_KINDS = ['bare', 'latchkey-memory', 'latchkey-sqlite', 'express-session'] as const
export type ServerKind = (typeof SERVER_KINDS)[number]

/** Messages a server process sends to its parent over IPC. */
export type ServerMessage = { type: 'ready'; port: number } | { type: 'failed'; message: string }
