import { afterEach, describe, expect, test } from 'vitest'
import { createSessionManager } from '../src/index.js'
import type { MemoryStore } from '../src/stores/memory/index.js'
import type { AppData } from './support/app.js'
import { gatedHooks, testApp } from './support/app.js'
import type { TestServer } from './support/http.js'
import { Client, serve } from './support/http.js'
import type { Harness } from './support/setup.js'
import { harness } from './support/setup.js'

let h: Harness<MemoryStore>
const extra: TestServer[] = []
afterEach(async () => {
  expect(h.errors).toEqual([])
  for (const server of extra.splice(0)) await server.close()
  await h.close()
})

async function signedIn(): Promise<Client> {
  const client = h.client()
  await client.request('/login?user=dana')
  return client
}

function tab(from: Client, base = from.base): Client {
  const copy = new Client(base, from.cookieName)
  copy.cookie = from.cookie
  return copy
}

describe('concurrent requests on one session', () => {
  test('50 parallel requests setting 50 different keys keep all 50', async () => {
    h = await harness()
    const client = await signedIn()
    const responses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => tab(client).request(`/set?key=k${i}&value=${i}&delay=20`)),
    )
    expect(responses.map((response) => response.status)).toEqual(Array(50).fill(200))
    for (let i = 0; i < 50; i++) expect((await client.json(`/state?key=k${i}`)).body.value).toBe(String(i))
  })

  test('200 parallel update(n => n + 1) end with n = 200', async () => {
    h = await harness()
    const client = await signedIn()
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => tab(client).request('/inc?delay=20')),
    )
    expect(responses.map((response) => response.status)).toEqual(Array(200).fill(200))
    expect((await client.json('/state')).body.n).toBe(200)
  })

  test('two servers sharing one store (as two processes would) lose no update either', async () => {
    h = await harness()
    const other = createSessionManager<AppData>({
      store: h.store,
      keys: h.keys,
      clock: h.clock,
      cookie: { secure: false },
    })
    const second = await serve(other, testApp(), h.errors)
    extra.push(second)
    const client = await signedIn()
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        tab(client, i % 2 ? h.server.url : second.url).request('/inc?delay=20'),
      ),
    )
    expect(responses.map((response) => response.status)).toEqual(Array(100).fill(200))
    expect((await client.json('/state')).body.n).toBe(100)
  })

  test('a request that loaded the session before a logout cannot write it back', async () => {
    const { hooks, isLoaded, release } = gatedHooks()
    h = await harness({ hooks })
    const client = await signedIn()
    const id = client.cookie as string
    const slow = tab(client)
    const slowResponse = slow.request('/slow-set?key=zombie&value=1')
    await isLoaded
    await client.request('/logout')
    expect(client.cookie).toBeUndefined()
    release()
    expect((await slowResponse).status).toBe(200)
    // The slow request neither resurrected the record nor handed out a cookie.
    expect(slow.lastSetCookies).toEqual([])
    expect(await h.recordOf(id)).toBeNull()
    const replay = new Client(h.server.url, client.cookieName)
    replay.cookie = id
    expect((await replay.json('/state?key=zombie')).body).toMatchObject({
      isNew: true,
      userId: null,
      value: null,
    })
    expect(await h.store.count()).toBe(0)
  })

  test('a sign-in stands even if the anonymous session it started from was destroyed meanwhile', async () => {
    const { hooks, isLoaded, release } = gatedHooks()
    h = await harness({ hooks })
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const anonymous = client.cookie as string
    const signingIn = tab(client)
    const pending = signingIn.request('/slow-login?user=gina')
    await isLoaded
    await client.request('/logout')
    release()
    expect((await pending).status).toBe(200)
    expect(signingIn.cookie).toBeDefined()
    expect(signingIn.cookie).not.toBe(anonymous)
    expect(await h.recordOf(anonymous)).toBeNull()
    expect((await signingIn.json('/state')).body).toMatchObject({ isNew: false, userId: 'gina' })
  })
})
