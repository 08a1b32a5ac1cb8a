import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import { describe, expect, test } from 'vitest'
import { generateKey } from '../core/crypto.js'
import { CsrfError, StoreError } from '../core/errors.js'
import { createSessionManager } from '../core/manager.js'
import { MemoryStore } from '../stores/memory/index.js'
import { applyCommit, asHttpError, FrontDoor, NODE_HEADERS, WEB_HEADERS } from './kernel.js'

function response(): ServerResponse {
  return new ServerResponse(new IncomingMessage(new Socket()))
}

describe("applyCommit, the one engine for a commit's headers", () => {
  const result = { setCookie: 'sid=a', csrfCookie: 'csrf=b', private: true, clearSiteData: '"cookies"' }

  test('a node response: cookies after its own (the array it was given left alone), no-store, Vary', () => {
    const res = response()
    const own = ['x=1']
    res.setHeader('Set-Cookie', own)
    res.setHeader('Cache-Control', 'public')
    res.setHeader('Vary', 'Accept')
    applyCommit(NODE_HEADERS, res, result)
    expect(res.getHeader('set-cookie')).toEqual(['x=1', 'sid=a', 'csrf=b'])
    expect(own).toEqual(['x=1'])
    expect(res.getHeader('cache-control')).toBe('no-store')
    expect(res.getHeader('vary')).toBe('Accept, Cookie')
    expect(res.getHeader('clear-site-data')).toBe('"cookies"')
  })

  test('a Vary that names Cookie or is * is left as it is; Web headers get the same', () => {
    for (const vary of ['cookie', 'Accept,  COOKIE', '*']) {
      const headers = new Headers({ vary })
      applyCommit(WEB_HEADERS, headers, { setCookie: null, private: true })
      expect(headers.get('vary')).toBe(vary)
    }
    const headers = new Headers({ 'set-cookie': 'x=1' })
    applyCommit(WEB_HEADERS, headers, result)
    expect(headers.getSetCookie()).toEqual(['x=1', 'sid=a', 'csrf=b'])
    expect(headers.get('vary')).toBe('Cookie')
  })
})

describe('asHttpError', () => {
  test('a store failure is a 503 to try again; a CSRF failure its own status; others untouched', () => {
    const down = asHttpError(new StoreError('MemoryStore', 'get', new Error('down')))
    expect(down).toMatchObject({ status: 503, statusCode: 503, expose: false })
    expect((down as unknown as { headers: object }).headers).toEqual({
      'Retry-After': '1',
      'Cache-Control': 'no-store',
    })
    const large = asHttpError(new CsrfError('body-too-large'))
    expect(large).toMatchObject({ status: 413, expose: true, headers: { Connection: 'close' } })
    expect(asHttpError(new CsrfError('bad-token'))).toMatchObject({ status: 403, headers: {} })
    const other = new Error('x')
    expect(asHttpError(other)).not.toHaveProperty('status')
  })
})

test('FrontDoor: a synchronous store loads and commits without a promise', () => {
  const manager = createSessionManager({ store: new MemoryStore(), keys: [generateKey()] })
  const door = new FrontDoor(manager, undefined)
  const session = door.load(undefined, 'test')
  expect(session).not.toBeInstanceOf(Promise)
  expect(door.commit(session as Exclude<typeof session, Promise<unknown>>)).not.toBeInstanceOf(Promise)
  expect(door.checksCsrf).toBe(true)
  expect(new FrontDoor(manager, false).checksCsrf).toBe(false)
})
