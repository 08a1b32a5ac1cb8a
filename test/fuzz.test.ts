import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { generateId, storeKeyOf } from '../src/core/id.js'
import type { MemoryStore } from '../src/stores/memory/index.js'
import { rawCookieRequest } from './support/http.js'
import type { Harness } from './support/setup.js'
import { harness } from './support/setup.js'

let h: Harness<MemoryStore>
beforeAll(async () => {
  h = await harness()
})
afterAll(async () => {
  await h.close()
})

describe('property: nothing a client sends causes an exception or a 5xx', () => {
  test('arbitrary Cookie headers', async () => {
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const live = client.cookie as string
    const fragment = fc.oneof(
      fc.string(),
      fc.string({ unit: 'binary' }),
      fc.constantFrom('sid', 'sid=', '=', ';', ' ', '"', '%', '\\', '*', '?', '[', '..', '/', ','),
      fc.constantFrom(live, generateId(), live.slice(1), `${live}=`, encodeURIComponent(live)),
    )
    await fc.assert(
      fc.asyncProperty(fc.array(fragment, { maxLength: 8 }), async (parts) => {
        const header = parts.join('')
        const status = await rawCookieRequest(h.server.url, '/state?key=a', Buffer.from(header, 'utf8'))
        // 200 from the app, or 400 from node's own HTTP parser for bytes no header may hold.
        expect([200, 400]).toContain(status)
      }),
      { numRuns: 300 },
    )
    // The session that was there all along is still intact.
    expect((await client.json('/state?key=a')).body.value).toBe('1')
    expect(h.errors).toEqual([])
  })

  test('arbitrary stored payload bytes give an anonymous session, never a 5xx', async () => {
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const id = client.cookie as string
    const key = storeKeyOf(id)
    const original = await h.store.get(key)
    if (!original) throw new Error('the session was not stored')
    let version = original.version
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ unit: 'binary' }),
          fc.string({ unit: 'grapheme-ascii' }),
          // The real payload with one character changed: a flipped bit somewhere in the sealed bytes.
          fc.nat({ max: original.payload.length - 1 }).map((at) => {
            const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.'
            const current = original.payload[at] as string
            const replacement = alphabet[(alphabet.indexOf(current) + 1) % alphabet.length] as string
            return original.payload.slice(0, at) + replacement + original.payload.slice(at + 1)
          }),
        ),
        async (payload) => {
          if (payload === original.payload) return
          const tampered = { ...original, version: version + 1, payload }
          expect(await h.store.update(tampered, version)).toBe(true)
          version++
          const { response, body } = await client.json('/state?key=a', { headers: { cookie: `sid=${id}` } })
          expect(response.status).toBe(200)
          // Either the payload is rejected whole (a fresh session) or it opened intact (a change that
          // only touched base64 padding bits): never partial data.
          if (body.isNew) expect(body).toMatchObject({ userId: null, value: null })
          else expect(body.value).toBe('1')
        },
      ),
      { numRuns: 200 },
    )
    expect(h.errors).toEqual([])
  })
})
