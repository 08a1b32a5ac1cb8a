/**
 * The child side of remote.ts: a SessionManager over a SqliteStore, driven over the IPC channel.
 * Started by `startRemoteManager` with its config as the one argument; ends when the channel closes.
 */
import { ManualClock } from '../../src/core/clock.js'
import { createSessionManager } from '../../src/core/manager.js'
import type { Session } from '../../src/core/session.js'
import type { SessionStore } from '../../src/core/store.js'
import { SqliteStore } from '../../src/stores/sqlite/sqlite-store.js'
import type { Pause } from './pausing-store.js'
import { pausable } from './pausing-store.js'
import type {
  ChildConfig,
  RemoteAction,
  RemoteApi,
  RemoteStoreSpec,
  Reply,
  Request,
  Snapshot,
} from './remote.js'

const config = JSON.parse(process.argv[2] as string) as ChildConfig
const clock = new ManualClock(config.time)
// Typed as the richest bundled store: a pause names any operation; a store without it is never asked.
const real: SqliteStore = config.store
  ? ((await openSpec(config.store)) as SqliteStore)
  : new SqliteStore({ path: config.path, clock })

/** The store a {@link RemoteStoreSpec} names, on this child's clock. */
async function openSpec(spec: RemoteStoreSpec): Promise<SessionStore> {
  const module = (await import(new URL(`../../${spec.module}`, import.meta.url).href)) as Record<
    string,
    unknown
  >
  const Store = module[spec.exportName] as new (options: Record<string, unknown>) => SessionStore
  return new Store({ ...spec.options, clock })
}
const { store, pause, calls, releaseAll } = pausable(real)
const manager = createSessionManager({ ...config.managerOptions, store, keys: config.keys, clock })

const requests = new Map<string, Session>()
const pauses = new Map<string, Pause>()
const dataKeys = new Set(config.dataKeys)
let nextRef = 1

function lookup<V>(map: Map<string, V>, name: string): V {
  const value = map.get(name)
  if (value === undefined) {
    throw Object.assign(new Error(`remote: no such request or pause ${name}`), { code: 'ERR_REMOTE_REF' })
  }
  return value
}

function snapshot(session: Session): Snapshot {
  const data: Record<string, unknown> = {}
  for (const key of dataKeys) if (session.has(key)) data[key] = session.get(key)
  return { isNew: session.isNew, userId: session.userId, data }
}

function apply(session: Session, action: RemoteAction): void {
  if ('key' in action) dataKeys.add(action.key)
  if (action.kind === 'set') session.set(action.key, action.value)
  else if (action.kind === 'inc') session.update(action.key, (n) => ((n as number | undefined) ?? 0) + 1)
  else if (action.kind === 'delete') session.delete(action.key)
  else if (action.kind === 'login') session.login(action.userId)
  else if (action.kind === 'logout') session.logout()
  else session.regenerate()
}

type Handlers = {
  [K in keyof RemoteApi]: (
    ...args: Parameters<RemoteApi[K]>
  ) => ReturnType<RemoteApi[K]> | Promise<ReturnType<RemoteApi[K]>>
}

const handlers: Handlers = {
  setTime: (ms) => clock.set(ms),
  load: async (cookie) => {
    const ref = `r${nextRef++}`
    const session = await manager.load({ cookie })
    requests.set(ref, session)
    return { ref, ...snapshot(session) }
  },
  act: (ref, action) => {
    const session = lookup(requests, ref)
    apply(session, action)
    return snapshot(session)
  },
  commit: (ref) => manager.commit(lookup(requests, ref)),
  handleOf: (ref) => manager.handleOf(lookup(requests, ref)),
  listUserSessions: (userId) => manager.listUserSessions(userId),
  revoke: (handle, options) => manager.revoke(handle, options),
  revokeUserSessions: (userId, options) => manager.revokeUserSessions(userId, options),
  pause: (operation, when = 'before') => {
    const id = `p${pauses.size + 1}`
    pauses.set(id, pause(operation, { when }))
    return id
  },
  reached: (id) => lookup(pauses, id).reached,
  release: (id) => lookup(pauses, id).release(),
  calls: () => calls,
}

function reply(message: Reply): void {
  if (process.connected) process.send?.(message)
}

process.on('message', async ({ id, method, args }: Request) => {
  try {
    const handler = handlers[method] as (...args: unknown[]) => unknown
    reply({ id, ok: true, value: (await handler(...args)) ?? null })
  } catch (error) {
    const { message, code, name } = error as { message?: string; code?: string; name?: string }
    reply({ id, ok: false, error: { message: String(message ?? error), code, name } })
  }
})

process.on('disconnect', async () => {
  releaseAll()
  await manager.close().catch(() => {})
  process.exit(0)
})

reply({ ready: true })
