/**
 * In-process HTTP driver, without autocannon: real `node:http` servers and real IncomingMessage and
 * ServerResponse objects, driven over loopback keep-alive by a minimal raw-socket client in the same
 * process (one request in flight per connection, the next written when the previous answer is read).
 * Four variants per scenario, interleaved in every repeat (their order rotates):
 *
 *   bare       node:http alone, the same route and response work (bench/server.ts's node routes)
 *   hold       bare, with its response held and released by the node adapter's `holdUntilCommitted`
 *              on a fixed commit result (the one latchkey's commit gives in that scenario): the cost
 *              of the hold and the header merge alone, without the manager
 *   latchkey   node:http with latchkey's node adapter (`withSessions`, from dist/) on MemoryStore
 *   core       the manager alone, no HTTP: loadSync/load + the route's change + commitSync/commit,
 *              as the node adapter calls them (the very manager `latchkey` uses; bench/core.ts
 *              sets other options: a manual clock, no renewal)
 *
 *   npm run bench:inproc                    5 repeats of 20 000 requests per variant and scenario
 *   npm run bench:inproc -- --quick         3 repeats of 3 000 (smoke test)
 *   npm run bench:inproc -- --profile       also a CPU profile of each variant's last repeat, in
 *                                           bench/results/profiles/inproc-<scenario>-<variant>.cpuprofile
 *
 * Environment: INPROC_REQUESTS, INPROC_REPEATS, INPROC_CONNECTIONS (default 4; R and W: one session
 * per connection), INPROC_SCENARIOS (R,W,N), INPROC_VARIANTS (bare,hold,latchkey,core).
 *
 * Per request, for each repeat: CPU time of the whole process (process.cpuUsage: user, system) and of
 * the main thread alone (/proc/thread-self/schedstat: without V8's GC helper threads); bytes allocated
 * on the V8 heap (from v8.GCProfiler: the used heap's growth between collections, summed); collections
 * and their pause time per 1000 requests. The client shares the process, so the absolute numbers
 * include the client's work and the kernel's loopback; the client does the same for every variant,
 * so differences between variants are the server side's. Medians of the repeats, with min–max.
 * Every sample goes to bench/results/inproc.json (not on a --profile run).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import { Session as InspectorSession } from 'node:inspector/promises'
import type { AddressInfo } from 'node:net'
import { connect, type Socket } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GCProfiler } from 'node:v8'
import type { CommitResult, Session, SessionManager } from '../src/index.js'
import { count, pick, profile } from './cli.js'

const DIST = new URL('../dist/', import.meta.url)
const { createSessionManager, MemoryStore }: typeof import('../src/index.js') = await import(
  new URL('index.js', DIST).href
)
const { withSessions }: typeof import('../src/adapters/node.js') = await import(
  new URL('adapters/node.js', DIST).href
)
// The hold is internal to the adapters (not a subpath of the package): loaded from dist/ directly.
const { holdUntilCommitted }: typeof import('../src/adapters/hold.js') = await import(
  new URL('adapters/hold.js', DIST).href
)

const HERE = dirname(fileURLToPath(import.meta.url))
const RESULTS = join(HERE, 'results')
const PROFILES = join(RESULTS, 'profiles')
/** The key bench/server.ts uses. */
const BENCH_KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')

const SCENARIOS = ['R', 'W', 'N'] as const
type Scenario = (typeof SCENARIOS)[number]
const VARIANTS = ['bare', 'hold', 'latchkey', 'core'] as const
type Variant = (typeof VARIANTS)[number]

const requests = count('INPROC_REQUESTS', 20_000, 3_000)
const repeats = count('INPROC_REPEATS', 5, 3)
const connections = count('INPROC_CONNECTIONS', 4)
const scenarios = pick(SCENARIOS, 'INPROC_SCENARIOS')
const variants = pick(VARIANTS, 'INPROC_VARIANTS')

// ---------------------------------------------------------------------------------------------------
// The servers: the same routes and response work as bench/server.ts's node:http servers

type BenchData = { value: string; n: number; v: string }

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  })
  res.end(body)
}

const bareState = { counter: 0 }
function bareRoute(req: IncomingMessage, res: ServerResponse): void {
  switch (req.url) {
    case '/r':
      send(res, 200, 'hello')
      break
    case '/w':
      send(res, 200, String(++bareState.counter))
      break
    case '/count':
      send(res, 200, String(bareState.counter))
      break
    default:
      send(res, 200, 'ok')
  }
}

/** What each route does to a latchkey session; the `core` variant does the same without HTTP. */
function change(path: string, session: Session<BenchData>): string {
  switch (path) {
    case '/r': {
      const value = session.get('value')
      return typeof value === 'string' ? value : 'no session value\n'
    }
    case '/w':
      return String(session.update('n', (n = 0) => n + 1))
    case '/n':
      session.set('v', 'x')
      return 'ok'
    case '/count':
      return String(session.get('n') ?? 0)
    case '/seed':
      session.set('value', 'hello')
      session.set('n', 0)
      return 'ok'
    default:
      return 'not found\n'
  }
}

function latchkeyRoute(req: IncomingMessage, res: ServerResponse, session: Session<BenchData>): void {
  const body = change(req.url ?? '/', session)
  send(res, body.endsWith('\n') ? 404 : 200, body)
}

const manager: SessionManager<BenchData> = createSessionManager<BenchData>({
  // Room for every session N creates (bench:core's bound): evictions would be measured otherwise.
  store: new MemoryStore({ maxSessions: 10_000_000 }),
  keys: [BENCH_KEY],
  cookie: { secure: false },
})
const latchkeyHandler = withSessions(manager, latchkeyRoute, {
  onError: (error) => console.error('bench:inproc:', error),
})

/** The commit result `hold` releases each response with: latchkey's, in the scenario measured. */
const holdResult: { current: CommitResult } = { current: { setCookie: null, private: true } }
const holdCommitter = {
  commit: (): CommitResult => holdResult.current,
  fail: (_res: ServerResponse, error: unknown): void => console.error('bench:inproc hold:', error),
}
function holdRoute(req: IncomingMessage, res: ServerResponse): void {
  holdUntilCommitted(res, null, holdCommitter)
  bareRoute(req, res)
}

/** The result of latchkey's commit of one request of `scenario`, done without HTTP. */
async function commitResultOf(scenario: Scenario, cookie: string): Promise<CommitResult> {
  const facts = { cookie: scenario === 'N' ? undefined : cookie }
  const session = manager.loadSync(facts) ?? (await manager.load(facts))
  change(PATHS[scenario], session)
  return manager.commitSync(session) ?? (await manager.commit(session))
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Server> {
  const server = createServer(handler)
  // No keep-alive timeout: on a busy machine a connection can sit idle for a long while between runs.
  server.keepAliveTimeout = 0
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

// ---------------------------------------------------------------------------------------------------
// The client: one keep-alive connection, one request at a time, answers parsed just enough

interface Answer {
  readonly status: number
  readonly cookie: string | null
  readonly body: string
}

const HEAD_END = Buffer.from('\r\n\r\n')
const CHUNKED_END = Buffer.from('\r\n0\r\n\r\n')

/** One keep-alive connection that sends a fixed request `count` times, each after the previous answer. */
class Connection {
  private pending: Buffer = Buffer.alloc(0)
  private remaining = 0
  private request = Buffer.alloc(0)
  private done: ((answer: Answer) => void) | null = null
  private failed: ((error: Error) => void) | null = null
  private keep = false
  /** Answers whose status was not 2xx, since the connection opened. */
  non2xx = 0

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    // A connection the server closes mid-run must fail the run, not leave it waiting for ever.
    socket.on('close', () => this.failed?.(new Error('bench:inproc: the server closed the connection')))
    socket.on('error', (error) => this.failed?.(error))
  }

  static async open(port: number): Promise<Connection> {
    const socket = connect(port, '127.0.0.1')
    socket.setNoDelay(true)
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    return new Connection(socket)
  }

  /** Sends `GET path` `count` times; resolves with the last answer (status, cookie and body kept only when `keep`). */
  run(path: string, cookie: string | null, count: number, keep = false): Promise<Answer> {
    this.request = Buffer.from(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${cookie ? `Cookie: ${cookie}\r\n` : ''}\r\n`,
    )
    this.remaining = count
    this.keep = keep
    return new Promise((resolve, reject) => {
      this.done = resolve
      this.failed = reject
      this.socket.write(this.request)
    })
  }

  private onData(chunk: Buffer): void {
    let buffer: Buffer = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    for (;;) {
      const headEnd = buffer.indexOf(HEAD_END)
      if (headEnd < 0) break
      const head = buffer.toString('latin1', 0, headEnd)
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1]
      // Every route sends a length; an answer of the adapter's own (a 503) may come chunked.
      const end =
        length !== undefined
          ? headEnd + 4 + Number(length)
          : buffer.indexOf(CHUNKED_END, headEnd) < 0
            ? Number.POSITIVE_INFINITY
            : buffer.indexOf(CHUNKED_END, headEnd) + CHUNKED_END.length
      if (buffer.length < end) break
      if (head.charCodeAt(9) !== 50) this.non2xx++
      const answer: Answer = this.keep
        ? {
            status: Number(head.slice(9, 12)),
            cookie: /\r\nset-cookie: *([^;\r]+)/i.exec(head)?.[1] ?? null,
            body: buffer.toString('utf8', headEnd + 4, end),
          }
        : NO_ANSWER
      buffer = buffer.subarray(end)
      if (--this.remaining > 0) this.socket.write(this.request)
      else this.done?.(answer)
    }
    this.pending = buffer
  }

  close(): void {
    this.failed = null
    this.socket.destroy()
  }
}

const NO_ANSWER: Answer = { status: 0, cookie: null, body: '' }

// ---------------------------------------------------------------------------------------------------
// Measurement

interface Sample {
  readonly userMicros: number
  readonly systemMicros: number
  readonly mainThreadMicros: number
  readonly wallMicros: number
  readonly allocatedBytes: number
  readonly gcCount: number
  readonly gcMicros: number
  readonly scavenges: number
}

/** CPU time of the calling (main) thread so far, in microseconds. */
function mainThreadMicros(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1000
  } catch {
    return Number.NaN
  }
}

/** The machine's CPU counters (`cpu` line of /proc/stat), in clock ticks: total and steal. */
function cpuTicks(): { total: number; steal: number } {
  try {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1)
    const numbers = fields.map(Number)
    return { total: numbers.reduce((a, b) => a + b, 0), steal: numbers[7] ?? 0 }
  } catch {
    return { total: 0, steal: 0 }
  }
}

async function sample(work: () => Promise<void>, count: number): Promise<Sample> {
  const gc = new GCProfiler()
  gc.start()
  const heapBefore = process.memoryUsage().heapUsed
  const thread = mainThreadMicros()
  const cpu = process.cpuUsage()
  const start = process.hrtime.bigint()
  await work()
  const wall = Number(process.hrtime.bigint() - start) / 1000
  const cpuUsed = process.cpuUsage(cpu)
  const threadUsed = mainThreadMicros() - thread
  const heapAfter = process.memoryUsage().heapUsed
  const { statistics } = gc.stop()
  // Allocated = the used heap's growth between collections: before each one, less after the previous.
  let allocated = 0
  let from = heapBefore
  let gcMicros = 0
  let scavenges = 0
  for (const entry of statistics) {
    allocated += entry.beforeGC.heapStatistics.usedHeapSize - from
    from = entry.afterGC.heapStatistics.usedHeapSize
    gcMicros += entry.cost
    if (entry.gcType === 'Scavenge') scavenges++
  }
  allocated += heapAfter - from
  return {
    userMicros: cpuUsed.user / count,
    systemMicros: cpuUsed.system / count,
    mainThreadMicros: threadUsed / count,
    wallMicros: wall / count,
    allocatedBytes: allocated / count,
    gcCount: (statistics.length * 1000) / count,
    gcMicros: (gcMicros * 1000) / count,
    scavenges: (scavenges * 1000) / count,
  }
}

const PATHS: Record<Scenario, string> = { R: '/r', W: '/w', N: '/n' }

interface Fixture {
  /** Sends `count` requests (or does `count` operations), spread over the connections. */
  readonly run: (count: number) => Promise<void>
  readonly close: () => void
  /** Answers that were not 2xx so far. */
  readonly non2xx: () => number
}

async function httpFixture(server: Server, scenario: Scenario, cookies: readonly string[]): Promise<Fixture> {
  const port = (server.address() as AddressInfo).port
  const open = await Promise.all(Array.from({ length: connections }, () => Connection.open(port)))
  const path = PATHS[scenario]
  return {
    run: async (count) => {
      const share = Math.ceil(count / open.length)
      await Promise.all(
        open.map((connection, i) =>
          connection.run(path, scenario === 'N' ? null : (cookies[i % cookies.length] ?? null), share),
        ),
      )
    },
    close: () => {
      for (const connection of open) connection.close()
    },
    non2xx: () => open.reduce((sum, connection) => sum + connection.non2xx, 0),
  }
}

function coreFixture(scenario: Scenario, cookies: readonly string[]): Fixture {
  const path = PATHS[scenario]
  const facts = cookies.map((cookie) => ({ cookie, userAgent: undefined as string | undefined }))
  const anonymous = { cookie: undefined, userAgent: undefined }
  const one = async (i: number): Promise<void> => {
    const f = scenario === 'N' ? anonymous : (facts[i % facts.length] as (typeof facts)[number])
    const session = manager.loadSync(f) ?? (await manager.load(f))
    change(path, session)
    const result = manager.commitSync(session) ?? (await manager.commit(session))
    if (scenario === 'N' && result.setCookie === null) throw new Error('core N: no cookie set')
  }
  return {
    run: async (count) => {
      for (let i = 0; i < count; i++) await one(i)
    },
    close: () => {},
    non2xx: () => 0,
  }
}

function check(what: string, ok: boolean, got: unknown): void {
  if (!ok) throw new Error(`bench:inproc: ${what} (got ${JSON.stringify(got)})`)
}

/** Seeds one session per connection through the latchkey server and checks R, W and N behave. */
async function seedAndVerify(latchkey: Server, bare: Server): Promise<string[]> {
  const port = (latchkey.address() as AddressInfo).port
  const client = await Connection.open(port)
  try {
    const cookies: string[] = []
    for (let i = 0; i < connections; i++) {
      const seeded = await client.run('/seed', null, 1, true)
      check('/seed sets a cookie', seeded.status === 200 && seeded.cookie !== null, seeded)
      cookies.push(seeded.cookie as string)
    }
    const read = await client.run('/r', cookies[0] as string, 1, true)
    check('R returns the stored value', read.body === 'hello', read)
    const w1 = await client.run('/w', cookies[0] as string, 1, true)
    const w2 = await client.run('/w', cookies[0] as string, 1, true)
    check('W increments', Number(w2.body) === Number(w1.body) + 1, [w1, w2])
    const n1 = await client.run('/n', null, 1, true)
    const n2 = await client.run('/n', null, 1, true)
    check('N sets a new cookie each time', n1.cookie !== null && n1.cookie !== n2.cookie, [n1, n2])
    const bareClient = await Connection.open((bare.address() as AddressInfo).port)
    const bareRead = await bareClient.run('/r', null, 1, true)
    bareClient.close()
    check('bare R answers', bareRead.body === 'hello', bareRead)
    return cookies
  } finally {
    client.close()
  }
}

interface Cell {
  readonly scenario: Scenario
  readonly variant: Variant
  readonly samples: Sample[]
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}
const stats = (values: readonly number[]) => ({
  median: median(values),
  min: Math.min(...values),
  max: Math.max(...values),
})

async function main(): Promise<void> {
  const bare = await listen(bareRoute)
  const latchkey = await listen((req, res) => void latchkeyHandler(req, res))
  const hold = await listen(holdRoute)
  const load0 = loadavg()
  const ticks0 = cpuTicks()
  const started = Date.now()
  const cells: Cell[] = []
  try {
    const cookies = await seedAndVerify(latchkey, bare)
    // A Cookie header of the same size for the bare server, as bench/run.ts sends it.
    const bareCookies = cookies.map(() => `sid=${'x'.repeat(43)}`)
    for (const scenario of scenarios) {
      holdResult.current = await commitResultOf(scenario, cookies[0] as string)
      const fixtures: Record<Variant, Fixture> = {
        bare: await httpFixture(bare, scenario, bareCookies),
        hold: await httpFixture(hold, scenario, bareCookies),
        latchkey: await httpFixture(latchkey, scenario, cookies),
        core: coreFixture(scenario, cookies),
      }
      const byVariant = new Map<Variant, Sample[]>(variants.map((v) => [v, []]))
      // Warm-up: let the JIT settle on every path before anything is measured.
      for (const variant of variants) await fixtures[variant].run(Math.min(requests, 5_000))
      for (let r = 0; r < repeats; r++) {
        // Rotate the order, so that no variant always runs right after the same other one.
        const order = variants.map((_, i) => variants[(i + r) % variants.length] as Variant)
        for (const variant of order) {
          let inspector: InspectorSession | undefined
          if (profile && r === repeats - 1) {
            inspector = new InspectorSession()
            inspector.connect()
            await inspector.post('Profiler.enable')
            await inspector.post('Profiler.start')
          }
          byVariant.get(variant)?.push(await sample(() => fixtures[variant].run(requests), requests))
          if (inspector) {
            const { profile: cpu } = await inspector.post('Profiler.stop')
            mkdirSync(PROFILES, { recursive: true })
            writeFileSync(join(PROFILES, `inproc-${scenario}-${variant}.cpuprofile`), JSON.stringify(cpu))
            inspector.disconnect()
          }
        }
      }
      for (const variant of variants) {
        const non2xx = fixtures[variant].non2xx()
        if (non2xx > 0) console.error(`PROBLEM: ${scenario} ${variant}: ${non2xx} answers were not 2xx`)
        fixtures[variant].close()
      }
      for (const variant of variants) {
        const samples = byVariant.get(variant) ?? []
        cells.push({ scenario, variant, samples })
        const cpu = stats(samples.map((s) => s.userMicros + s.systemMicros))
        console.error(
          `${scenario} ${variant.padEnd(8)} ${cpu.median.toFixed(1).padStart(6)} µs CPU/req ` +
            `(${cpu.min.toFixed(1)}–${cpu.max.toFixed(1)})  ` +
            `${Math.round(median(samples.map((s) => s.allocatedBytes)))} B/req`,
        )
      }
    }
  } finally {
    bare.close()
    hold.close()
    latchkey.close()
    await manager.close()
  }
  const ticks1 = cpuTicks()
  const load1 = loadavg()
  const steal =
    ticks1.total > ticks0.total ? (ticks1.steal - ticks0.steal) / (ticks1.total - ticks0.total) : 0

  const f1 = (n: number) => n.toFixed(1)
  const range = (values: readonly number[], digits = 1): string => {
    const s = stats(values)
    return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`
  }
  const rows = cells.map(({ scenario, variant, samples }) => [
    scenario,
    variant,
    range(samples.map((s) => s.userMicros + s.systemMicros)),
    `${f1(median(samples.map((s) => s.userMicros)))} + ${f1(median(samples.map((s) => s.systemMicros)))}`,
    range(samples.map((s) => s.mainThreadMicros)),
    range(
      samples.map((s) => s.allocatedBytes / 1024),
      2,
    ),
    f1(median(samples.map((s) => s.gcCount))),
    f1(median(samples.map((s) => s.gcMicros / 1000))),
  ])
  const cpu = cpus()
  console.log(
    `\nNode ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}. In-process ` +
      `node:http over loopback keep-alive, ${connections} connection(s), one request in flight each; ` +
      `${repeats} interleaved repeats of ${requests} requests per variant; median (min–max). CPU includes ` +
      `the in-process client and the kernel's loopback (the same for every variant); core: no HTTP.\n`,
  )
  console.log(
    '| scenario | variant | CPU µs/req (user+sys) | user + sys | main thread µs/req | KiB allocated/req | GCs/1000 req | GC ms/1000 req |',
  )
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const row of rows) console.log(`| ${row.join(' | ')} |`)
  const samplesOf = (scenario: Scenario, variant: Variant): Sample[] =>
    cells.find((c) => c.scenario === scenario && c.variant === variant)?.samples ?? []
  /** Per repeat, `of` − `minus` (the two ran back to back in that repeat), over the repeats. */
  const paired = (scenario: Scenario, of: Variant, minus: Variant, value: (s: Sample) => number) => {
    const a = samplesOf(scenario, of)
    const b = samplesOf(scenario, minus)
    const diffs = a.map((s, i) => value(s) - value(b[i] as Sample)).filter((d) => Number.isFinite(d))
    return diffs.length === 0 ? { median: Number.NaN, min: Number.NaN, max: Number.NaN } : stats(diffs)
  }
  const cpuOfSample = (s: Sample): number => s.userMicros + s.systemMicros
  const show = ({ median, min, max }: { median: number; min: number; max: number }): string =>
    `${f1(median)} (${f1(min)}–${f1(max)})`
  console.log(
    "\nWhere latchkey's extra goes: differences paired within each repeat (the variants ran back to back), " +
      'median (min–max) over the repeats. latchkey − bare splits into hold − bare (the hold and header ' +
      'merge on a fixed commit result), core (the manager alone, in a tight loop) and the rest: latchkey − ' +
      'hold − core (the rest of the adapter, and the manager costing more between requests than in a ' +
      'tight loop). Bytes: medians, which barely vary.\n',
  )
  console.log(
    '| scenario | latchkey − bare µs/req | hold − bare µs/req | core µs/req | rest µs/req | latchkey − bare B/req | hold − bare B/req | core B/req | rest B/req |',
  )
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const scenario of scenarios) {
    const bytes = (v: Variant): number => median(samplesOf(scenario, v).map((s) => s.allocatedBytes))
    const core = median(samplesOf(scenario, 'core').map(cpuOfSample))
    const rest = paired(scenario, 'latchkey', 'hold', cpuOfSample).median - core
    const extraBytes = bytes('latchkey') - bytes('bare')
    const holdBytes = bytes('hold') - bytes('bare')
    console.log(
      `| ${scenario} | ${show(paired(scenario, 'latchkey', 'bare', cpuOfSample))} | ` +
        `${show(paired(scenario, 'hold', 'bare', cpuOfSample))} | ${f1(core)} | ${f1(rest)} | ` +
        `${Math.round(extraBytes)} | ${Math.round(holdBytes)} | ${Math.round(bytes('core'))} | ` +
        `${Math.round(extraBytes - holdBytes - bytes('core'))} |`,
    )
  }
  console.log(
    `\nMachine during the run (${((Date.now() - started) / 1000).toFixed(0)} s): CPU steal ${(steal * 100).toFixed(1)}%, ` +
      `load average ${load0.map((l) => l.toFixed(2)).join(' ')} before, ${load1.map((l) => l.toFixed(2)).join(' ')} after.`,
  )
  if (profile) console.log(`CPU profiles: ${PROFILES}/inproc-<scenario>-<variant>.cpuprofile`)
  // A profiled run's numbers carry the profiler's cost: they do not replace the last clean run's.
  if (profile) return
  mkdirSync(RESULTS, { recursive: true })
  writeFileSync(
    join(RESULTS, 'inproc.json'),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        settings: { requests, repeats, connections },
        steal,
        loadavg: { before: load0, after: load1 },
        cells,
      },
      null,
      2,
    )}\n`,
  )
}

await main()
