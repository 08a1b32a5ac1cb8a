/**
 * The session layer alone, in process: express-session and latchkey/express-session (from dist/) as
 * plain `(req, res, next)` middlewares on the same store, driven with minimal request and response
 * objects (no HTTP, no Express), so that the CPU per request is the middleware's and the store
 * client's, not the framework's or the load generator's. On a shared machine this resolves differences
 * that the HTTP rows of `npm run bench:dropin` cannot: both sides run in one process, in turns.
 *
 *   npm run bench:dropin:inproc                 memory and redis, R, W, W-hot, N
 *
 * Environment: DROPIN_INPROC_STORES (memory,redis), DROPIN_INPROC_SCENARIOS (R,W,W-hot,N),
 * DROPIN_INPROC_REQUESTS (per repeat and side, default 10 000), DROPIN_INPROC_REPEATS (default 7, the
 * first one a warm-up, left out), DROPIN_INPROC_CONCURRENCY (requests in flight, default 50: R and W
 * one session each), BENCH_REDIS_URL. Per repeat: process CPU time (user + system) over the requests
 * completed; medians of the repeats with min–max, and the machine's CPU steal over the run.
 * Each side gets the same options (`resave: false`, `saveUninitialized: false`, the same secret).
 */
import { randomBytes } from 'node:crypto'
import { loadavg } from 'node:os'
import type { Store } from 'express-session'
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { DROPIN_SIDE_NAMES, DROPIN_SIDES, DROPIN_STORE_NAMES, DROPIN_STORES } from './dropin-kinds.js'
import { dropInFactory, dropInStore } from './dropin-sides.js'
import { cpuTicks, formatLoad, positiveInteger, spread, stealBetween, subset, table } from './harness.js'
import { dropRedisKeys } from './peer-store-kinds.js'
import { PEER_SECRET } from './serve.js'

const SCENARIOS = ['R', 'W', 'W-hot', 'N'] as const
type Scenario = (typeof SCENARIOS)[number]

type Middleware = (req: object, res: object, next: (error?: unknown) => void) => void
type Data = Record<string, unknown>

/** A response as both middlewares use it: headers, writeHead, end (and express-session's internals). */
function response(done: (setCookie: string | undefined) => void, fail: (error: unknown) => void) {
  const headers = new Map<string, unknown>()
  return {
    statusCode: 200,
    headersSent: false,
    _header: null as string | null,
    setHeader(name: string, value: unknown) {
      headers.set(name.toLowerCase(), value)
    },
    getHeader(name: string) {
      return headers.get(name.toLowerCase())
    },
    removeHeader(name: string) {
      headers.delete(name.toLowerCase())
    },
    writeHead(code: number) {
      this.statusCode = code
      this._header = 'HTTP/1.1'
      this.headersSent = true
      return this
    },
    _implicitHeader() {
      this.writeHead(this.statusCode)
    },
    write() {
      return true
    },
    end() {
      if (!this.headersSent) this.writeHead(this.statusCode)
      const cookie = headers.get('set-cookie') as string[] | undefined
      done(cookie?.[0]?.split(';')[0])
      return this
    },
    destroy() {
      fail(new Error('response destroyed'))
    },
  }
}

/** What each route does with the session, as bench/serve.ts's RECORD operations. */
const WORK: Record<Scenario, (data: Data) => void> = {
  R: (data) => void data.value,
  W: (data) => {
    data.n = (typeof data.n === 'number' ? data.n : 0) + 1
  },
  'W-hot': (data) => {
    data.n = (typeof data.n === 'number' ? data.n : 0) + 1
  },
  N: (data) => {
    data.v = 'x'
  },
}

interface Side {
  request(cookie: string | undefined, work: (data: Data) => void): Promise<string | undefined>
  close(): Promise<void>
}

/** The store (redis: a key prefix of its own, its keys dropped on close). */
async function storeOf(kind: DropInStore): Promise<{ store: Store; close(): Promise<void> }> {
  const prefix = `lkdropininproc_${randomBytes(6).toString('hex')}:`
  const { store, close } = await dropInStore(kind, prefix)
  return {
    store,
    close: async () => {
      if (kind === 'redis') await dropRedisKeys(prefix)
      await close()
    },
  }
}

async function sideOf(kind: DropInStore, side: DropInSide): Promise<Side> {
  const { store, close } = await storeOf(kind)
  const factory = (await dropInFactory(side)) as (options: object) => Middleware
  const middleware = factory({
    secret: PEER_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { secure: false },
    store,
  })
  return {
    request: (cookie, work) =>
      new Promise((resolve, reject) => {
        const req = {
          url: '/',
          originalUrl: '/',
          method: 'GET',
          headers: cookie === undefined ? {} : { cookie },
          socket: {},
          connection: {},
        } as { session?: Data }
        const res = response(resolve, reject)
        middleware(req, res, (error) => {
          if (error) return reject(error)
          work(req.session as Data)
          res.end()
        })
      }),
    close,
  }
}

interface Settings {
  readonly stores: readonly DropInStore[]
  readonly scenarios: readonly Scenario[]
  readonly requests: number
  readonly repeats: number
  readonly concurrency: number
}

/** `requests` requests with `concurrency` in flight, each worker on its cookie; CPU µs per request. */
async function measure(side: Side, scenario: Scenario, cookies: readonly string[], settings: Settings) {
  const perWorker = Math.ceil(settings.requests / settings.concurrency)
  const before = process.cpuUsage()
  await Promise.all(
    Array.from({ length: settings.concurrency }, async (_, worker) => {
      const cookie = scenario === 'N' ? undefined : cookies[worker % cookies.length]
      for (let i = 0; i < perWorker; i++) await side.request(cookie, WORK[scenario])
    }),
  )
  const used = process.cpuUsage(before)
  return (used.user + used.system) / (perWorker * settings.concurrency)
}

async function main(): Promise<void> {
  const settings: Settings = {
    stores: subset('DROPIN_INPROC_STORES', DROPIN_STORES),
    scenarios: subset('DROPIN_INPROC_SCENARIOS', SCENARIOS),
    requests: positiveInteger('DROPIN_INPROC_REQUESTS', 10_000),
    repeats: positiveInteger('DROPIN_INPROC_REPEATS', 7),
    concurrency: positiveInteger('DROPIN_INPROC_CONCURRENCY', 50),
  }
  const loadBefore = loadavg()
  const ticksBefore = cpuTicks()
  const rows: string[][] = []
  for (const store of settings.stores) {
    for (const scenario of settings.scenarios) {
      const sides = await Promise.all(DROPIN_SIDES.map((side) => sideOf(store, side)))
      try {
        const cookies: string[][] = []
        for (const side of sides) {
          const users = scenario === 'W-hot' ? 1 : settings.concurrency
          const seeded = await Promise.all(
            Array.from({ length: users }, () =>
              side.request(undefined, (data) => {
                data.value = 'hello'
                data.n = 0
              }),
            ),
          )
          if (seeded.some((cookie) => cookie === undefined)) throw new Error('a seed got no cookie')
          cookies.push(seeded as string[])
        }
        const samples: number[][] = sides.map(() => [])
        const steals: number[] = []
        for (let round = 0; round < settings.repeats; round++) {
          const ticks = cpuTicks()
          for (let i = 0; i < sides.length; i++) {
            const at = (i + round) % sides.length
            const micros = await measure(sides[at] as Side, scenario, cookies[at] as string[], settings)
            if (round > 0) samples[at]?.push(micros)
          }
          const steal = stealBetween(ticks, cpuTicks())
          if (round > 0 && steal !== null) steals.push(steal)
        }
        const [theirs, mine] = DROPIN_SIDES.map((side) => spread(samples[DROPIN_SIDES.indexOf(side)] ?? []))
        if (theirs === undefined || mine === undefined) throw new Error('no samples')
        const format = (s: typeof mine) =>
          `${s.median.toFixed(1)} µs (${s.min.toFixed(1)}–${s.max.toFixed(1)})`
        const steal = steals.length === 0 ? null : spread(steals)
        rows.push([
          DROPIN_STORE_NAMES[store],
          scenario,
          format(mine),
          format(theirs),
          `${(mine.median / theirs.median).toFixed(2)}×`,
          steal === null ? 'n/a' : `${steal.median.toFixed(1)}% (max ${steal.max.toFixed(1)}%)`,
        ])
        console.log(rows[rows.length - 1]?.join('  '))
      } finally {
        for (const side of sides) await side.close()
      }
    }
  }
  const steal = stealBetween(ticksBefore, cpuTicks())
  console.log(
    `\nIn process, ${settings.repeats - 1} interleaved repeats (after one warm-up) of ${settings.requests} ` +
      `requests per side, ${settings.concurrency} in flight; CPU of the process per request, median ` +
      `(min–max). CPU steal over the run: ${steal === null ? 'n/a' : `${steal.toFixed(1)}%`}; load average ` +
      `${formatLoad(loadBefore)} before, ${formatLoad(loadavg())} after.\n`,
  )
  console.log(
    table(
      [
        'Store',
        'Scenario',
        `${DROPIN_SIDE_NAMES.dropin} CPU / req`,
        `${DROPIN_SIDE_NAMES['express-session']} CPU / req`,
        'CPU ×',
        'steal (median, max)',
      ],
      rows,
      ['l', 'l', 'r', 'r', 'r', 'r'],
    ),
  )
}

await main()
