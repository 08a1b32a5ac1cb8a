/**
 * The lifecycle races of test/races.test.ts again, over real HTTP: browsers (clients holding a cookie)
 * against the test app, the overlap forced by holding one store call.
 */
import { afterEach, describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { storeKeyOf } from '../src/core/id.js'
import { isEnded } from '../src/core/lifecycle/record-state.js'
import type { SessionRecord } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import type { AppData } from './support/app.js'
import { testApp } from './support/app.js'
import type { TestServer } from './support/http.js'
import { Client, serve } from './support/http.js'
import { type Pausable, pausable } from './support/pausing-store.js'
import type { Harness } from './support/setup.js'
import { harness } from './support/setup.js'

const MINUTE = 60_000
let h: Harness
let paused: Pausable<MemoryStore>
let memory: MemoryStore
const extra: TestServer[] = []

afterEach(async () => {
  paused.releaseAll()
  expect(h.errors).toEqual([])
  for (const server of extra.splice(0)) await server.close()
  await h.close()
})

async function start(options: { touchIntervalMs?: number; renewalGraceMs?: number } = {}) {
  const clock = new ManualClock()
  memory = new MemoryStore({ clock })
  paused = pausable(memory)
  h = await harness({ store: paused.store, clock, renewalIntervalMs: 10 * MINUTE, ...options })
}

/** A second server on the same store (as a second process would be). */
async function secondServer(): Promise<string> {
  const other = createSessionManager<AppData>({
    store: paused.store,
    keys: h.keys,
    clock: h.clock,
    cookie: { secure: false },
    renewalIntervalMs: 10 * MINUTE,
  })
  const server = await serve(other, testApp(), h.errors)
  extra.push(server)
  return server.url
}

function tab(from: Client, base = from.base): Client {
  const copy = new Client(base, from.cookieName)
  copy.cookie = from.cookie
  return copy
}

async function signedIn(user = 'alice'): Promise<Client> {
  const client = h.client()
  await client.request(`/login?user=${user}`)
  return client
}

/** Starts `path` on `client` and holds it right after its session was read from the store. */
async function heldAfterLoad(client: Client, path: string) {
  const pause = paused.pause('get', { when: 'after' })
  const response = client.request(path)
  await pause.reached
  return { response, release: () => pause.release() }
}

/** What the browser holding `id` is now, as the app sees it. */
async function as(id: string | undefined) {
  const client = h.client()
  client.cookie = id
  return (await client.json('/state?key=k')).body
}

const isEnd = ([record]: [SessionRecord, number]) => isEnded(record)

describe('over HTTP: a logout racing a rotation', () => {
  test('a logout that loaded before a renewal ends the renewed ID too', async () => {
    await start()
    const browser = await signedIn()
    const id0 = browser.cookie
    h.clock.advance(11 * MINUTE)
    const leaving = await heldAfterLoad(tab(browser), '/logout')
    await browser.request('/state')
    const id1 = browser.cookie
    expect(id1).not.toBe(id0)
    leaving.release()
    expect((await leaving.response).status).toBe(200)
    expect(await as(id0)).toMatchObject({ isNew: true, userId: null })
    expect(await as(id1)).toMatchObject({ isNew: true, userId: null })
    expect(await h.manager.listUserSessions('alice')).toEqual([])
  })

  test('a logout that loaded before a regenerate ends the regenerated ID too', async () => {
    await start()
    const browser = await signedIn()
    const id0 = browser.cookie
    const leaving = await heldAfterLoad(tab(browser), '/logout')
    await browser.request('/regenerate')
    const id1 = browser.cookie
    expect(id1).not.toBe(id0)
    leaving.release()
    await leaving.response
    expect(await as(id0)).toMatchObject({ isNew: true })
    expect(await as(id1)).toMatchObject({ isNew: true })
    expect(await memory.count()).toBe(0)
  })

  test('"sign out everywhere" while a renewal is half done leaves nothing signed in', async () => {
    await start()
    const browser = await signedIn()
    h.clock.advance(11 * MINUTE)
    const created = paused.pause('create', { when: 'after' })
    const renewing = browser.request('/state')
    await created.reached
    const revoking = h.manager.revokeUserSessions('alice')
    created.release()
    expect(await revoking).toBe(1)
    await renewing
    expect((await browser.json('/state')).body).toMatchObject({ isNew: true, userId: null })
    expect(await memory.count()).toBe(0)
  })

  test('revoking a handle listed before the device renewed its ID signs the device out', async () => {
    await start()
    const phone = await signedIn()
    const laptop = await signedIn()
    const current = await h.manager.load({ cookie: `sid=${phone.cookie}` })
    const handle = (await h.manager.listUserSessions('alice', { current })).find((s) => s.current)?.handle
    h.clock.advance(11 * MINUTE)
    const before = phone.cookie
    await phone.request('/state')
    await laptop.request('/state')
    expect(phone.cookie).not.toBe(before)
    h.clock.advance(h.manager.options.renewalGraceMs + 1)
    expect(await h.manager.revoke(handle as string)).toBe(true)
    expect((await phone.json('/state')).body).toMatchObject({ isNew: true, userId: null })
    expect((await laptop.json('/state')).body).toMatchObject({ userId: 'alice' })
  })
})

describe('over HTTP: the grace window is a hard limit', () => {
  test('a slow read-only request on the old ID does not keep it forwarding', async () => {
    await start({ touchIntervalMs: MINUTE, renewalGraceMs: 5 * MINUTE })
    const browser = await signedIn()
    const id0 = browser.cookie as string
    h.clock.advance(11 * MINUTE)
    const slow = await heldAfterLoad(tab(browser), '/state')
    await browser.request('/state')
    const id1 = browser.cookie
    h.clock.advance(2 * MINUTE)
    slow.release()
    expect((await slow.response).status).toBe(200)
    h.clock.advance(3 * MINUTE)
    expect(await memory.get(storeKeyOf(id0))).toBeNull()
    expect(await as(id0)).toMatchObject({ isNew: true })
    expect(await as(id1)).toMatchObject({ isNew: false, userId: 'alice' })
  })
})

describe('over HTTP: no lost write at sign-in', () => {
  test('a write through another server during a login is carried into the signed-in session', async () => {
    await start()
    const otherUrl = await secondServer()
    const browser = h.client()
    await browser.request('/set?key=k&value=apples')
    const id0 = browser.cookie
    const retiring = paused.pause('update', { match: isEnd })
    const loggingIn = browser.request('/login?user=alice')
    await retiring.reached
    const writer = tab(browser, otherUrl)
    expect((await writer.request('/set?key=late&value=pears')).status).toBe(200)
    retiring.release()
    expect((await loggingIn).status).toBe(200)
    expect(browser.cookie).not.toBe(id0)
    expect((await browser.json('/state?key=late')).body).toMatchObject({ userId: 'alice', value: 'pears' })
    expect((await browser.json('/state?key=k')).body.value).toBe('apples')
    expect(await as(id0)).toMatchObject({ isNew: true })
  })
})
