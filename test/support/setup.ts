import { ManualClock } from '../../src/core/clock.js'
import { generateKey } from '../../src/core/crypto.js'
import { storeKeyOf } from '../../src/core/id.js'
import type { SessionManagerOptions } from '../../src/core/options.js'
import type { SessionStore } from '../../src/core/store.js'
import { createSessionManager } from '../../src/index.js'
import { MemoryStore } from '../../src/stores/memory/index.js'
import type { AppData, AppHooks } from './app.js'
import { testApp } from './app.js'
import type { TestServer } from './http.js'
import { Client, serve } from './http.js'

/** A manager, its store and clock, the test app served over HTTP, and a client. */
export interface Harness<S extends SessionStore = SessionStore> {
  clock: ManualClock
  store: S
  keys: string[]
  manager: ReturnType<typeof createSessionManager<AppData>>
  server: TestServer
  errors: unknown[]
  client(): Client
  /** The stored record behind a cookie value, read through the real store. */
  recordOf(id: string | undefined): ReturnType<S['get']>
  close(): Promise<void>
}

/** Starts the test app on a real loopback server. Options default to plain-HTTP cookies (`sid`). */
export async function harness<S extends SessionStore = MemoryStore>(
  options: Partial<SessionManagerOptions> & { store?: S; hooks?: AppHooks } = {},
): Promise<Harness<S>> {
  const clock = (options.clock as ManualClock | undefined) ?? new ManualClock()
  const store = (options.store ?? new MemoryStore({ clock })) as S
  const keys = (options.keys as string[] | undefined) ?? [generateKey()]
  const { hooks, ...managerOptions } = options
  const manager = createSessionManager<AppData>({
    cookie: { secure: false },
    ...managerOptions,
    store,
    keys,
    clock,
  })
  const errors: unknown[] = []
  const server = await serve(manager, testApp(hooks), errors)
  const cookieName = manager.options.cookie.name
  return {
    clock,
    store,
    keys,
    manager,
    server,
    errors,
    client: () => new Client(server.url, cookieName),
    recordOf: (id) => store.get(storeKeyOf(id ?? '')) as ReturnType<S['get']>,
    close: async () => {
      await server.close()
      await manager.close()
    },
  }
}
