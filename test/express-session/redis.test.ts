// The switch with a real store: users signed in under express-session 1.19 with connect-redis 9 (on
// node-redis) are still signed in after swapping in latchkey/express-session, same store class, same
// secret; and the other way round, for a rolling deploy. Keys live under a prefix unique to the run,
// deleted afterwards.
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { RedisStore } from 'connect-redis'
import express from 'express'
import realSession from 'express-session'
import { createClient } from 'redis'
import { afterAll, beforeAll, expect, test } from 'vitest'
import dropIn from '../../src/express-session/index.js'
import { describeWithService, SERVICE_URLS, service } from '../support/services.js'

const SECRET = ['new secret first', 'keyboard cat']
const redis = await service('Redis', SERVICE_URLS.redis, async () => {
  const client = createClient({ url: SERVICE_URLS.redis })
  await client.connect()
  await client.ping()
  await client.close()
})

describeWithService(redis, 'express-session and the drop-in on connect-redis', () => {
  const prefix = `latchkey-test-es-${randomBytes(6).toString('hex')}:`
  const client = createClient({ url: SERVICE_URLS.redis })
  const servers: Array<{ close(): void }> = []

  beforeAll(async () => {
    await client.connect()
  })

  afterAll(async () => {
    for (const server of servers) server.close()
    const keys: string[] = []
    for await (const batch of client.scanIterator({ MATCH: `${prefix}*` })) keys.push(...batch)
    if (keys.length > 0) await client.del(keys)
    await client.close()
  })

  /** An app on `middleware` with /login (signs in `name`) and /me (who is signed in); its base URL. */
  async function app(middleware: express.RequestHandler): Promise<string> {
    const server = express()
      .use(middleware)
      .get('/login', (req, res) => {
        ;(req.session as unknown as Record<string, unknown>).user = req.query.name
        res.send('ok')
      })
      .get('/me', (req, res) => {
        res.send(String((req.session as unknown as Record<string, unknown>).user ?? 'nobody'))
      })
      .listen(0, '127.0.0.1')
    servers.push(server)
    await new Promise((resolve) => server.once('listening', resolve))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  const options = () => ({
    secret: SECRET,
    store: new RedisStore({ client, prefix }),
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: 60_000 },
  })

  async function signIn(base: string, name: string): Promise<string> {
    const response = await fetch(`${base}/login?name=${name}`)
    expect(response.status).toBe(200)
    const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0] as string
    expect(cookie).toMatch(/^connect\.sid=s%3A/)
    return cookie
  }

  const me = async (base: string, cookie: string): Promise<string> =>
    (await fetch(`${base}/me`, { headers: { cookie } })).text()

  test('signed in under express-session, still signed in under the drop-in', async () => {
    const before = await app(realSession(options()))
    const after = await app(dropIn(options()))
    const cookie = await signIn(before, 'ada')
    expect(await me(before, cookie)).toBe('ada')
    expect(await me(after, cookie)).toBe('ada')
  })

  test('signed in under the drop-in, still signed in under express-session (a rolling deploy)', async () => {
    const after = await app(dropIn(options()))
    const before = await app(realSession(options()))
    const cookie = await signIn(after, 'grace')
    expect(await me(before, cookie)).toBe('grace')
    expect(await me(after, cookie)).toBe('grace')
    expect(await me(before, 'connect.sid=s%3Aforged.sig')).toBe('nobody')
  })
})
