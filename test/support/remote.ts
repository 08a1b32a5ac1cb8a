/**
 * A SessionManager in a second process, for tests of what two processes sharing one store do. The
 * child (remote-child.ts) runs a manager over a `SqliteStore` on the same file as the test, with a
 * `ManualClock` the test sets, and answers calls sent over the IPC channel.
 */
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { CommitResult, UserSessionInfo } from '../../src/core/manager.js'
import type { SessionManagerOptions } from '../../src/core/options.js'
import type { PausePoint } from './pausing-store.js'

/** What a test does to a remote request's session. */
export type RemoteAction =
  | { kind: 'set'; key: string; value: unknown }
  | { kind: 'inc'; key: string }
  | { kind: 'delete'; key: string }
  | { kind: 'login'; userId: string }
  | { kind: 'logout' }
  | { kind: 'regenerate' }

/**
 * A remote session as the request sees it. `data` holds the keys the child knows of: those named in
 * `dataKeys` and by any action so far (a `Session` cannot list its keys).
 */
export interface Snapshot {
  isNew: boolean
  userId: string | null
  data: Record<string, unknown>
}

/** Store operations a remote pause can hold. */
export type RemoteOperation =
  | 'get'
  | 'create'
  | 'update'
  | 'touch'
  | 'destroy'
  | 'listByUser'
  | 'count'
  | 'prune'

/** The calls the child answers. Arguments and results are plain JSON. */
export interface RemoteApi {
  /** Sets the child's clock (epoch ms). */
  setTime(ms: number): void
  /** `manager.load({ cookie })`: a new request, named by `ref`. */
  load(cookie: string | undefined): Snapshot & { ref: string }
  act(ref: string, action: RemoteAction): Snapshot
  commit(ref: string): CommitResult
  handleOf(ref: string): string | null
  listUserSessions(userId: string): UserSessionInfo[]
  revoke(handle: string, options?: { userId?: string }): boolean
  revokeUserSessions(userId: string, options?: { except?: string }): number
  /** Arms a one-shot pause on the child's store; resolves its id. */
  pause(operation: RemoteOperation, when?: PausePoint): string
  /** Resolves once the paused call got there. */
  reached(pauseId: string): void
  release(pauseId: string): void
  /** Store operations the child made so far, in order. */
  calls(): string[]
}

/** The JSON-safe manager options a remote accepts. */
export type RemoteManagerOptions = Omit<SessionManagerOptions, 'store' | 'keys' | 'clock' | 'onEvent'>

/**
 * Which store the child opens, when not the SQLite file at `path`: a module (path from the repository
 * root, e.g. `src/stores/postgres/index.ts`), the class it exports, and JSON options for its constructor
 * (the child adds its own `clock`).
 */
export interface RemoteStoreSpec {
  module: string
  exportName: string
  options: Record<string, unknown>
}

export interface RemoteOptions {
  /** The SQLite file (shared with the test); ignored when `store` is given. */
  path: string
  /** Another store to share with the test instead of the SQLite file. */
  store?: RemoteStoreSpec
  keys: string[]
  /** The child clock's start (epoch ms). */
  time: number
  /** Default `{ cookie: { secure: false } }`, as in `harness()`. */
  managerOptions?: RemoteManagerOptions
  /** Session keys every snapshot reports. */
  dataKeys?: string[]
}

/** What the child receives as its one argument. */
export type ChildConfig = Required<Omit<RemoteOptions, 'managerOptions' | 'store'>> & {
  managerOptions: RemoteManagerOptions
  store: RemoteStoreSpec | null
}

export type Request = { id: number; method: keyof RemoteApi; args: unknown[] }
export type Reply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { message: string; code?: string; name?: string } }
  | { ready: true }

type Remote<A> = {
  [K in keyof A]: A[K] extends (...args: infer P) => infer R ? (...args: P) => Promise<Awaited<R>> : never
}

/** The parent's side. Always `close()` it (an `afterEach` is the place). */
export type RemoteManager = Remote<RemoteApi> & {
  readonly pid: number
  /** Closes the child's store and ends the child (killing it if it does not go). Idempotent. */
  close(): Promise<void>
}

const METHODS: readonly (keyof RemoteApi)[] = [
  'setTime',
  'load',
  'act',
  'commit',
  'handleOf',
  'listUserSessions',
  'revoke',
  'revokeUserSessions',
  'pause',
  'reached',
  'release',
  'calls',
]

const CHILD = fileURLToPath(new URL('./remote-child.ts', import.meta.url))
/** tsx's loader, by absolute URL: `--import tsx` would resolve from the child's working directory. */
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
const EXIT_GRACE_MS = 5000

/** Forks the child and resolves once its manager is ready; rejects with its stderr if it fails to start. */
export async function startRemoteManager(options: RemoteOptions): Promise<RemoteManager> {
  const config: ChildConfig = {
    path: options.path,
    keys: options.keys,
    time: options.time,
    managerOptions: options.managerOptions ?? { cookie: { secure: false } },
    dataKeys: options.dataKeys ?? [],
    store: options.store ?? null,
  }
  const child = fork(CHILD, [JSON.stringify(config)], {
    execArgv: ['--import', TSX],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  })
  const kill = (): void => {
    child.kill('SIGKILL')
  }
  process.once('exit', kill)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
  })

  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>()
  let nextId = 1
  let exited: Error | null = null
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      process.removeListener('exit', kill)
      exited = new Error(`remote manager exited (${signal ?? `code ${code}`})${stderr ? `: ${stderr}` : ''}`)
      for (const call of pending.values()) call.reject(exited)
      pending.clear()
      resolve()
    })
  })
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (reply: Reply) => {
      if ('ready' in reply) return resolve()
      const call = pending.get(reply.id)
      pending.delete(reply.id)
      if (!call) return
      if (reply.ok) call.resolve(reply.value)
      else call.reject(Object.assign(new Error(reply.error.message), reply.error))
    })
    exit.then(() => reject(exited))
  })

  function call(method: keyof RemoteApi, args: unknown[]): Promise<unknown> {
    if (exited) return Promise.reject(exited)
    if (!child.connected) return Promise.reject(new Error('remote manager is closing'))
    const id = nextId++
    return new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject })
      child.send({ id, method, args } satisfies Request, (error) => {
        if (error && pending.delete(id)) reject(error)
      })
    })
  }

  // The child closes its store and exits when the channel closes: at close(), or when this process dies.
  let closing: Promise<void> | undefined
  async function close(): Promise<void> {
    if (exited) return
    const timer = setTimeout(kill, EXIT_GRACE_MS)
    if (child.connected) child.disconnect()
    await exit
    clearTimeout(timer)
  }

  try {
    await ready
  } catch (error) {
    kill()
    throw error
  }
  const methods = Object.fromEntries(
    METHODS.map((method) => [method, (...args: unknown[]) => call(method, args)]),
  ) as Remote<RemoteApi>
  return {
    ...methods,
    pid: child.pid as number,
    close: () => {
      closing ??= close()
      return closing
    },
  }
}

/** The `Cookie` header a browser would send after `setCookie` (`undefined` when it clears the cookie). */
export function cookieHeader(setCookie: string | null): string | undefined {
  if (setCookie === null) return undefined
  const pair = setCookie.split(';')[0] as string
  return pair.endsWith('=') || /;\s*max-age=0(;|$)/i.test(setCookie) ? undefined : pair
}
