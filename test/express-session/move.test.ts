// latchkey/express-session on a latchkey store, in this process (latchkey's MemoryStore and SqliteStore;
// the old store express-session's own MemoryStore): the option's refusals; sessions sealed, keyed by
// the ID's hash and in the user index ("your devices" and revoke through a SessionManager on the same
// store and keys); the save by compare-and-set with the merge; sessions moved from the old store as
// they are used, two first requests on one moving session overlapping (held by a pausing store), a
// failed write leaving the session in the old store, and an ended session never coming back from it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import express from 'express'
import realSession from 'express-session'
import { afterAll, describe, expect, test } from 'vitest'
import { run } from '../../src/cli/program.js'
import { generateKey } from '../../src/core/crypto.js'
import { ConfigError, StoreError } from '../../src/core/errors.js'
import { storeKeyOf } from '../../src/core/id.js'
import { createSessionManager } from '../../src/core/manager.js'
import type { SessionRecord, SessionStore } from '../../src/core/store.js'
import dropIn, { defaultUserOf, STARTED_AT } from '../../src/express-session/index.js'
import { FileStore } from '../../src/stores/file/index.js'
import { MemoryStore } from '../../src/stores/memory/index.js'
import { SqliteStore } from '../../src/stores/sqlite/index.js'
import { pausable } from '../support/pausing-store.js'
import { startApp } from './app.js'

const SECRET = 'keyboard cat'
const KEYS = [generateKey()]
const dir = mkdtempSync(join(tmpdir(), 'latchkey-es-move-'))
const servers: Array<{ close(): void }> = []
afterAll(() => {
  for (const server of servers) server.close()
  rmSync(dir, { recursive: true, force: true })
})

type Data = Record<string, unknown>
const data = (req: express.Request): Data => req.session as unknown as Data

const app = (middleware: unknown) => startApp(middleware, servers, { errorPage: true })

async function get(
  base: string,
  path: string,
  cookie = '',
): Promise<{ status: number; text: string; cookie: string }> {
  const response = await fetch(`${base}${path}`, { headers: { cookie } })
  const set = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
  return { status: response.status, text: await response.text(), cookie: set || cookie }
}

function sidOf(cookie: string): string {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1))
  return value.slice(2, value.lastIndexOf('.'))
}

const common = { secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }

/** An express-session app on express-session's MemoryStore (the app before the switch), and the store. */
async function oldApp(): Promise<{ base: string; store: realSession.MemoryStore }> {
  const store = new realSession.MemoryStore()
  return { base: await app(realSession({ ...common, store })), store }
}

function oldRecord(store: realSession.Store, sid: string): Promise<Data | undefined> {
  return new Promise((resolve, reject) =>
    store.get(sid, (error, session) =>
      error ? reject(error) : resolve((session ?? undefined) as Data | undefined),
    ),
  )
}

async function records(store: MemoryStore | SqliteStore | FileStore): Promise<SessionRecord[]> {
  const all: SessionRecord[] = []
  for await (const record of store.list()) all.push(record)
  return all
}

describe('the option', () => {
  const latchkey = new MemoryStore()
  const old = new realSession.MemoryStore()
  const refused = (options: Record<string, unknown>): ConfigError => {
    try {
      dropIn({ secret: SECRET, ...options } as never)
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError)
      return error as ConfigError
    }
    throw new Error('not refused')
  }

  test('a latchkey store with keys is taken; without keys (and no LATCHKEY_KEYS) it is refused, naming the fix', () => {
    expect(typeof dropIn({ secret: SECRET, store: latchkey, keys: KEYS })).toBe('function')
    const saved = process.env.LATCHKEY_KEYS
    delete process.env.LATCHKEY_KEYS
    try {
      expect(refused({ store: latchkey }).message).toMatch(/keys: .*pass keys or set LATCHKEY_KEYS.*keygen/)
    } finally {
      if (saved !== undefined) process.env.LATCHKEY_KEYS = saved
    }
    expect(refused({ store: latchkey, keys: ['short'] }).option).toBe('keys[0]')
    expect(refused({ store: latchkey, keys: KEYS[0] }).message).toMatch(/must be an array/)
  })

  test('keys, moveFrom and userOf without a latchkey store are refused, naming the fix', () => {
    expect(refused({ store: old, keys: KEYS }).message).toMatch(/^keys: .*store of latchkey\/stores/)
    expect(refused({ moveFrom: old }).message).toMatch(/^moveFrom: .*the old store goes in moveFrom/)
    expect(refused({ store: old, userOf: () => null }).option).toBe('userOf')
  })

  test('incoherent moves are refused: from a latchkey store, from something that is no store, a bad userOf', () => {
    expect(refused({ store: latchkey, keys: KEYS, moveFrom: new MemoryStore() }).message).toMatch(
      /moveFrom: is a latchkey store/,
    )
    expect(refused({ store: latchkey, keys: KEYS, moveFrom: {} }).message).toMatch(/express-session store/)
    expect(refused({ store: latchkey, keys: KEYS, userOf: 'user' }).option).toBe('userOf')
    expect(refused({ store: {} }).option).toBe('store')
    // As in express-session, a null store is the default MemoryStore.
    expect(typeof dropIn({ secret: SECRET, store: null } as never)).toBe('function')
  })

  test('with a latchkey store, an unknown option is refused with the nearest one', () => {
    expect(refused({ store: latchkey, keys: KEYS, moveFrm: old }).message).toMatch(/did you mean moveFrom/)
  })
})

describe('on a latchkey store', () => {
  test('sealed, keyed by the hash of the ID, in the user index: a manager lists the session and revokes it', async () => {
    const store = new SqliteStore({ path: join(dir, 'flow.db') })
    const base = await app(dropIn({ ...common, store, keys: KEYS }))
    const login = await get(base, '/login?name=ada')
    const sid = login.text
    expect(sidOf(login.cookie)).toBe(sid)
    expect((await get(base, '/me', login.cookie)).text).toBe('ada')

    const [record, ...others] = await records(store)
    expect(others).toEqual([])
    expect(record?.key).toBe(storeKeyOf(sid))
    expect(record?.userId).toBe('ada')
    expect(JSON.stringify(record)).not.toContain(sid)
    expect(record?.payload).not.toContain('ada')
    expect(Buffer.from(record?.payload.split('.')[1] ?? '', 'base64url').toString('latin1')).not.toContain(
      'ada',
    )
    // The idle deadline is the cookie's expiry.
    expect(Math.abs((record?.idleExpiresAt ?? 0) - Date.now() - 60_000)).toBeLessThan(5_000)

    const manager = createSessionManager({ store, keys: KEYS, idleTimeoutMs: 3_600_000 })
    const [device, ...more] = await manager.listUserSessions('ada')
    expect(more).toEqual([])
    expect(device?.userAgent).toMatch(/node|undici/i)
    expect(await manager.revoke(device?.handle as string)).toBe(true)
    expect((await get(base, '/me', login.cookie)).text).toBe('nobody')

    // destroy (logout) leaves nothing that opens.
    const second = await get(base, '/login?name=grace')
    expect((await get(base, '/logout', second.cookie)).text).toBe('bye')
    expect(await store.get(storeKeyOf(second.text))).toBeNull()
    expect((await get(base, '/me', second.cookie)).text).toBe('nobody')
    await store.close()
  })

  test('the default userOf: passport.user, userId, user, user.id; on the factory for require() users', () => {
    expect(dropIn.defaultUserOf).toBe(defaultUserOf)
    expect(defaultUserOf({ passport: { user: 42 }, userId: 'x' })).toBe(42)
    expect(defaultUserOf({ userId: 'u1', user: 'x' })).toBe('u1')
    expect(defaultUserOf({ user: 'ada' })).toBe('ada')
    expect(defaultUserOf({ user: { id: 'u2', name: 'x' } })).toBe('u2')
    expect(defaultUserOf({ user: { name: 'x' }, cart: 'id' })).toBeNull()
    expect(defaultUserOf({ passport: {} })).toBeNull()
  })

  test('a userOf that gives no usable ID fails the save with a ConfigError naming userOf; nothing is written', async () => {
    const store = new MemoryStore()
    let failed = (_error: unknown): void => {}
    const failure = new Promise<unknown>((resolve) => {
      failed = resolve
    })
    const base = await app(
      express()
        .use(
          dropIn({ ...common, store, keys: KEYS, userOf: (s) => s.user as never }) as express.RequestHandler,
        )
        .get('/login', (req, res) => {
          data(req).user = { name: 'ada' }
          res.send('ok')
        })
        .use((error: unknown, _req: express.Request, _res: express.Response, _next: express.NextFunction) => {
          failed(error)
        }),
    )
    await expect(get(base, '/login')).rejects.toThrow()
    const error = (await failure) as ConfigError
    expect(error).toBeInstanceOf(ConfigError)
    expect(error.message).toMatch(/^userOf: must give a user ID .* got object/)
    expect(await store.count()).toBe(0)
  })

  test('userOf decides the user index entry; a session that signs out leaves it', async () => {
    const store = new MemoryStore()
    const base = await app(
      dropIn({ ...common, store, keys: KEYS, userOf: (s) => (s.user ? `u:${s.user}` : null) }),
    )
    const { cookie, text: sid } = await get(base, '/login?name=ada')
    expect((await store.get(storeKeyOf(sid)))?.userId).toBe('u:ada')
    await get(base, '/set?key=user&value=', cookie)
    expect((await store.get(storeKeyOf(sid)))?.userId).toBeNull()
  })

  test('two requests changing different keys: the later save loses the compare-and-set, merges, and both keep theirs', async () => {
    const { store, pause, calls } = pausable(new MemoryStore())
    const base = await app(dropIn({ ...common, store, keys: KEYS }))
    const { cookie, text: sid } = await get(base, '/login?name=ada')
    calls.length = 0
    const held = pause('update', { when: 'before' })
    const first = get(base, '/set?key=a&value=1', cookie)
    await held.reached
    expect((await get(base, '/set?key=b&value=2', cookie)).status).toBe(200)
    held.release()
    expect((await first).status).toBe(200)
    const record = await store.get(storeKeyOf(sid))
    // Created (1), B's save (2), A's save lost its first compare-and-set, read again and merged (3).
    expect(record?.version).toBe(3)
    expect(calls.filter((call) => call === 'update')).toHaveLength(3)
    expect((await get(base, '/me', cookie)).text).toBe('ada')
    const opened = createSessionManager({ store, keys: KEYS })
    expect(opened.inspect(record as SessionRecord)).toBe('live')
    const app2 = await app(
      express()
        .use(dropIn({ ...common, store, keys: KEYS }) as express.RequestHandler)
        .get('/dump', (req, res) => {
          res.json(req.session)
        }),
    )
    const dump = JSON.parse((await get(app2, '/dump', cookie)).text) as Data
    expect(dump).toMatchObject({ user: 'ada', a: '1', b: '2' })
  })

  test('regenerate: the old record ends, the new ID gets a record of its own', async () => {
    const store = new MemoryStore()
    const base = await app(dropIn({ ...common, store, keys: KEYS }))
    const first = await get(base, '/login?name=ada')
    const second = await get(base, '/regenerate', first.cookie)
    expect(second.text).not.toBe(first.text)
    expect(await store.get(storeKeyOf(first.text))).toBeNull()
    expect((await store.get(storeKeyOf(second.text)))?.userId).toBe('after regenerate')
    expect((await get(base, '/me', first.cookie)).text).toBe('nobody')
    expect((await get(base, '/me', second.cookie)).text).toBe('after regenerate')
  })

  test('absoluteTimeoutMs: the record ends at the session start plus the timeout, in the store itself', async () => {
    const store = new MemoryStore()
    const base = await app(dropIn({ ...common, store, keys: KEYS, absoluteTimeoutMs: 3_600_000 }))
    const { text: sid, cookie } = await get(base, '/login?name=ada')
    const dumped = await app(
      express()
        .use(dropIn({ ...common, store, keys: KEYS }) as express.RequestHandler)
        .get('/dump', (req, res) => {
          res.json(req.session)
        }),
    )
    const startedAt = (JSON.parse((await get(dumped, '/dump', cookie)).text) as Data)[STARTED_AT]
    expect(typeof startedAt).toBe('number')
    expect((await store.get(storeKeyOf(sid)))?.absoluteExpiresAt).toBe((startedAt as number) + 3_600_000)
  })

  test('a save that keeps losing its compare-and-set gives up with ERR_LATCHKEY_CONFLICT, never a blind write', async () => {
    const store = new MemoryStore()
    const base = await app(dropIn({ ...common, store, keys: KEYS }))
    const { cookie, text: sid } = await get(base, '/login?name=ada')
    let updates = 0
    const contended: SessionStore = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'update') {
          return async () => {
            updates++
            return false
          }
        }
        return Reflect.get(target, property, receiver)
      },
    })
    let failed = (_error: unknown): void => {}
    const failure = new Promise<unknown>((resolve) => {
      failed = resolve
    })
    const busy = await app(
      express()
        .use(dropIn({ ...common, store: contended, keys: KEYS }) as express.RequestHandler)
        .get('/set', (req, res) => {
          data(req).cart = 'book'
          res.send('ok')
        })
        .use((error: unknown, _req: express.Request, _res: express.Response, _next: express.NextFunction) => {
          failed(error)
        }),
    )
    // A failed save never completes the response as if it had worked: the response is destroyed.
    await expect(get(busy, '/set', cookie)).rejects.toThrow()
    expect(await failure).toMatchObject({ code: 'ERR_LATCHKEY_CONFLICT' })
    expect(updates).toBe(16)
    expect((await store.get(storeKeyOf(sid)))?.version).toBe(1)
  })

  test('a latchkey store that fails answers 503, never a signed-out user', async () => {
    const store = new MemoryStore()
    const down: SessionStore = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'get') {
          return async () =>
            Promise.reject(new StoreError('MemoryStore', 'get', new Error('connection refused')))
        }
        return Reflect.get(target, property, receiver)
      },
    })
    const healthy = await app(dropIn({ ...common, store, keys: KEYS }))
    const { cookie } = await get(healthy, '/login?name=ada')
    const failing = await app(dropIn({ ...common, store: down, keys: KEYS }))
    const answer = await get(failing, '/me', cookie)
    expect(answer.status).toBe(503)
    expect(answer.text).toContain('connection refused')
  })
})

describe('moving from an old store as sessions are used', () => {
  const inProcess = {
    SqliteStore: () => new SqliteStore({ path: join(dir, 'move.db') }),
    FileStore: () => new FileStore({ directory: join(dir, 'move-files') }),
    MemoryStore: () => new MemoryStore(),
  }
  test.each(Object.keys(inProcess) as Array<keyof typeof inProcess>)(
    'into %s: signed in under express-session, still signed in after the switch; moved under the same ID, the old copy gone',
    async (kind) => {
      const old = await oldApp()
      const store = inProcess[kind]()
      const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old.store }))
      const { cookie } = await get(old.base, '/login?name=ada')
      const sid = sidOf(cookie)
      expect(await store.get(storeKeyOf(sid))).toBeNull()

      const after = await get(moving, '/me', cookie)
      expect(after.text).toBe('ada')
      expect(after.cookie).toBe(cookie)
      expect(await oldRecord(old.store, sid)).toBeUndefined()
      const [record, ...others] = await records(store)
      expect(others).toEqual([])
      expect(record).toMatchObject({ key: storeKeyOf(sid), version: 1, userId: 'ada' })
      expect(JSON.stringify(record)).not.toContain(sid)
      expect(record?.payload).not.toContain('ada')

      // New sessions go only to the new store.
      const fresh = await get(moving, '/login?name=grace')
      expect(await oldRecord(old.store, fresh.text)).toBeUndefined()
      expect((await store.get(storeKeyOf(fresh.text)))?.userId).toBe('grace')
      await store.close()
    },
  )

  test('two first requests on one moving session: one record, both writes kept', async () => {
    const old = await oldApp()
    const { store, pause } = pausable(new MemoryStore())
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old.store }))
    const { cookie } = await get(old.base, '/login?name=ada')
    const sid = sidOf(cookie)

    // A reads the old copy and is held at its create; B moves the session and saves its change.
    const held = pause('create', { when: 'before' })
    const a = get(moving, '/set?key=a&value=1', cookie)
    await held.reached
    expect((await get(moving, '/set?key=b&value=2', cookie)).status).toBe(200)
    expect(await oldRecord(old.store, sid)).toBeUndefined()
    held.release()
    expect((await a).status).toBe(200)

    expect(await store.count()).toBe(1)
    const record = await store.get(storeKeyOf(sid))
    expect(record?.version).toBe(3)
    const dumpApp = await app(
      express()
        .use(dropIn({ ...common, store, keys: KEYS }) as express.RequestHandler)
        .get('/dump', (req, res) => {
          res.json(req.session)
        }),
    )
    expect(JSON.parse((await get(dumpApp, '/dump', cookie)).text)).toMatchObject({
      user: 'ada',
      a: '1',
      b: '2',
    })
  })

  test('a failed write to the new store fails the request and leaves the session in the old store', async () => {
    const old = await oldApp()
    const store = new MemoryStore()
    const failing: SessionStore = new Proxy(store, {
      get(target, property, receiver) {
        if (property === 'create') return async () => Promise.reject(new Error('disk full'))
        return Reflect.get(target, property, receiver)
      },
    })
    const broken = await app(dropIn({ ...common, store: failing, keys: KEYS, moveFrom: old.store }))
    const { cookie } = await get(old.base, '/login?name=ada')
    const sid = sidOf(cookie)
    const failed = await get(broken, '/me', cookie)
    expect(failed.status).toBe(500)
    expect(failed.text).toContain('disk full')
    expect(await oldRecord(old.store, sid)).toMatchObject({ user: 'ada' })
    expect(await store.count()).toBe(0)

    const working = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old.store }))
    expect((await get(working, '/me', cookie)).text).toBe('ada')
    expect(await oldRecord(old.store, sid)).toBeUndefined()
  })

  test('a session ended in the new store never comes back from a copy left in the old one', async () => {
    const old = await oldApp()
    const store = new MemoryStore()
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old.store }))
    const { cookie } = await get(old.base, '/login?name=ada')
    const sid = sidOf(cookie)
    const copy = await oldRecord(old.store, sid)
    expect((await get(moving, '/me', cookie)).text).toBe('ada')
    // A copy left behind (a failed clean-up, or the import command without --delete-source).
    await new Promise<void>((resolve, reject) =>
      old.store.set(sid, copy as never, (e) => (e ? reject(e) : resolve())),
    )
    const manager = createSessionManager({ store, keys: KEYS })
    expect(await manager.revokeUserSessions('ada')).toBe(1)
    expect((await get(moving, '/me', cookie)).text).toBe('nobody')
    expect(await oldRecord(old.store, sid)).toBeUndefined()
    expect(await store.get(storeKeyOf(sid))).toBeNull()
  })

  test('logout destroys the session in both stores', async () => {
    const old = await oldApp()
    const store = new MemoryStore()
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old.store }))
    const { cookie } = await get(old.base, '/login?name=ada')
    const sid = sidOf(cookie)
    expect((await get(moving, '/logout', cookie)).text).toBe('bye')
    expect(await oldRecord(old.store, sid)).toBeUndefined()
    expect(await store.get(storeKeyOf(sid))).toBeNull()
    expect((await get(moving, '/me', cookie)).text).toBe('nobody')
  })

  test('an old record without a cookie is refused as before, and not moved', async () => {
    const old = new realSession.MemoryStore()
    const store = new MemoryStore()
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old }))
    const sid = 'no-cookie-session-id'
    ;(old as unknown as { sessions: Record<string, string> }).sessions[sid] = JSON.stringify({ user: 'ada' })
    const { sign } = await import('cookie-signature')
    const cookie = `connect.sid=${encodeURIComponent(`s:${sign(sid, SECRET)}`)}`
    const answer = await get(moving, '/me', cookie)
    expect(answer.status).toBe(500)
    expect(answer.text).toContain('has no cookie field')
    expect(await oldRecord(old, sid)).toMatchObject({ user: 'ada' })
    expect(await store.count()).toBe(0)
  })

  test('an old session whose cookie expired is not moved', async () => {
    const old = new realSession.MemoryStore()
    const store = new MemoryStore()
    const moving = await app(dropIn({ ...common, store, keys: KEYS, moveFrom: old }))
    const sid = 'expired-session-id'
    // express-session's MemoryStore keeps it (it checks expiry only on its own get of a Date).
    const stale = {
      cookie: { originalMaxAge: 1000, expires: new Date(Date.now() - 1000).toISOString() },
      user: 'ada',
    }
    ;(old as unknown as { sessions: Record<string, string> }).sessions[sid] = JSON.stringify(stale)
    const { sign } = await import('cookie-signature')
    const cookie = `connect.sid=${encodeURIComponent(`s:${sign(sid, SECRET)}`)}`
    expect((await get(moving, '/me', cookie)).text).toBe('nobody')
    expect(await store.count()).toBe(0)
  })
})

/** Runs `latchkey args` in this process with `env`. */
async function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
  signal = new AbortController().signal,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  const text = { stdout: '', stderr: '' }
  stdout.on('data', (chunk: Buffer) => {
    text.stdout += chunk.toString()
  })
  stderr.on('data', (chunk: Buffer) => {
    text.stderr += chunk.toString()
  })
  const code = await run(args, { stdout, stderr, env, signal })
  return { code, ...text }
}

describe('latchkey import-express-sessions, without a server', () => {
  const env = { LATCHKEY_KEYS: KEYS.join(',') }
  let modules = 0
  /** A module for --from-module exporting `exports` (handed over through a global). */
  const moduleOf = (exports: Record<string, unknown>): string => {
    const name = `latchkey-test-move-${process.pid}-${++modules}`
    ;(globalThis as Record<string, unknown>)[name] = exports
    const lines = Object.keys(exports).map((key) =>
      key === 'default'
        ? `export default globalThis[${JSON.stringify(name)}].default`
        : `export const ${key} = globalThis[${JSON.stringify(name)}].${key}`,
    )
    const path = join(dir, `${name}.mjs`)
    writeFileSync(path, `${lines.join('\n')}\n`)
    return path
  }

  test('listed in --help, with its options', async () => {
    const top = await cli(['--help'], {})
    expect(top.stdout).toContain('import-express-sessions')
    const help = await cli(['import-express-sessions', '--help'], {})
    expect(help.code).toBe(0)
    for (const option of ['--from-module <path>', '--store <url>', '--delete-source', '--keys-file']) {
      expect(help.stdout).toContain(option)
    }
  })

  test('usage errors (exit 2) name the fix: no --from-module, no keys, a module without a store, a latchkey store as the source', async () => {
    const store = ['--store', `sqlite:${join(dir, 'cli-usage.db')}`]
    const missing = await cli(['import-express-sessions', ...store], env)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain("required option '--from-module <path>'")
    const from = moduleOf({ default: new realSession.MemoryStore() })
    const noKeys = await cli(['import-express-sessions', '--from-module', from, ...store], {})
    expect(noKeys.code).toBe(2)
    expect(noKeys.stderr).toContain('no keys in LATCHKEY_KEYS')
    const nothing = await cli(
      ['import-express-sessions', '--from-module', moduleOf({ userOf: () => null }), ...store],
      env,
    )
    expect(nothing.code).toBe(2)
    expect(nothing.stderr).toMatch(
      /exports no express-session store: export the instance .* as the default export or as `store`/,
    )
    const wrongWay = await cli(
      ['import-express-sessions', '--from-module', moduleOf({ store: new MemoryStore() }), ...store],
      env,
    )
    expect(wrongWay.code).toBe(2)
    expect(wrongWay.stderr).toContain('exports a latchkey store')
    const unloadable = await cli(
      ['import-express-sessions', '--from-module', join(dir, 'nope.mjs'), ...store],
      env,
    )
    expect(unloadable.code).toBe(2)
    expect(unloadable.stderr).toContain('cannot load --from-module')
  })

  test('a store that cannot list its sessions (no all(), no ids()) is exit 4, naming the `all` export', async () => {
    const path = join(dir, 'cli-unlisted.db')
    await new SqliteStore({ path }).close()
    class UnlistedStore extends realSession.Store {
      get(_sid: string, callback: (error: unknown, session?: null) => void): void {
        callback(null, null)
      }
      set(_sid: string, _session: unknown, callback?: (error?: unknown) => void): void {
        callback?.()
      }
      destroy(_sid: string, callback?: (error?: unknown) => void): void {
        callback?.()
      }
    }
    const from = moduleOf({ default: new UnlistedStore() })
    const result = await cli(
      ['import-express-sessions', '--from-module', from, '--store', `sqlite:${path}`],
      env,
    )
    expect(result.code).toBe(4)
    expect(result.stderr).toMatch(
      /UnlistedStore cannot list its sessions \(it has no all\(\) and no ids\(\)\): export an `all` function from .* that resolves \{ \[sessionId\]: session \}/,
    )
  })

  test("express-session's MemoryStore into SqliteStore: a `store` export and a `userOf` export", async () => {
    const path = join(dir, 'cli-memory.db')
    // The application has run once on the latchkey store: its table is there.
    const target = new SqliteStore({ path })
    await target.get('A'.repeat(43))
    const old = new realSession.MemoryStore()
    const expires = new Date(Date.now() + 600_000).toISOString()
    for (const name of ['ada', 'grace']) {
      await new Promise<void>((resolve, reject) =>
        old.set(
          `sid-${name}`,
          { cookie: { expires, originalMaxAge: 600_000 }, account: { name } } as never,
          (e) => (e ? reject(e) : resolve()),
        ),
      )
    }
    const from = moduleOf({
      store: old,
      userOf: (s: Data) => (s.account as { name?: string } | undefined)?.name,
    })
    const result = await cli(
      ['import-express-sessions', '--from-module', from, '--store', `sqlite:${path}`, '--json'],
      env,
    )
    expect(result.code, result.stderr).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({
      ok: true,
      copied: 2,
      alreadyThere: 0,
      expired: 0,
      failed: 0,
      deleted: 0,
    })
    expect((await target.get(storeKeyOf('sid-ada')))?.userId).toBe('ada')
    expect((await target.get(storeKeyOf('sid-grace')))?.userId).toBe('grace')
    expect(await oldRecord(old, 'sid-ada')).toBeDefined()
    await target.close()
  })

  test('a store with ids() and no all() is listed by its IDs; an interrupted run says so (exit 130)', async () => {
    const path = join(dir, 'cli-ids.db')
    const target = new SqliteStore({ path })
    await target.get('A'.repeat(43))
    const memory = new realSession.MemoryStore()
    const expires = new Date(Date.now() + 600_000).toISOString()
    const sessions = (memory as unknown as { sessions: Record<string, string> }).sessions
    for (const sid of ['one', 'two', 'three'])
      sessions[sid] = JSON.stringify({ cookie: { expires }, userId: 7 })
    // A store package with ids() and get(), no all().
    const old = {
      get: memory.get.bind(memory),
      set: memory.set.bind(memory),
      destroy: memory.destroy.bind(memory),
      ids: (callback: (error: unknown, ids?: string[]) => void) => callback(null, Object.keys(sessions)),
    }
    const from = moduleOf({ default: old })
    const args = ['import-express-sessions', '--from-module', from, '--store', `sqlite:${path}`, '--json']
    const aborted = new AbortController()
    aborted.abort()
    const interrupted = await cli(args, env, aborted.signal)
    expect(interrupted.code).toBe(130)
    expect(JSON.parse(interrupted.stdout)).toMatchObject({ ok: false, partial: { copied: 0 } })
    const result = await cli(args, env)
    expect(result.code, result.stderr).toBe(0)
    expect(JSON.parse(result.stdout)).toMatchObject({ copied: 3, failed: 0 })
    expect((await target.get(storeKeyOf('two')))?.userId).toBe('7')
    await target.close()
  })
})
