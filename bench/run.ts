/**
 * HTTP load benchmark, on loopback, in one run: for node:http and each framework latchkey has an
 * adapter for (Express, Fastify, Hono, Koa), the framework alone, the framework with latchkey on
 * MemoryStore and on SqliteStore, and the framework with the session middleware its users use today
 * (the peer: see PEERS in bench/protocol.ts).
 *
 *   npm run bench                  5 interleaved runs of 3 s per cell after a 1 s warm-up, 50 connections
 *                                  (about 20 min on 2 cores)
 *   npm run bench -- --quick       2 runs of 2 s per cell after a 1 s warm-up (smoke test)
 *
 * Environment: BENCH_DURATION (s, one run), BENCH_REPEATS (runs per cell), BENCH_WARMUP (s),
 * BENCH_CONNECTIONS, and comma-separated subsets:
 * BENCH_FRAMEWORKS (node,express,fastify,hono,koa), BENCH_SERVERS (bare,latchkey-memory,
 * latchkey-sqlite,peer; `express-session` is taken for `peer`), BENCH_SCENARIOS (R,W,N).
 * BENCH_PROFILE=1: each server writes .cpuprofile files to
 * bench/results/profiles/<framework>-<server>-<scenario>/ (the largest is the main thread).
 *
 * Each cell (scenario x framework x server) gets a fresh server process, checked for correct
 * behaviour before it is measured. The servers of one framework and scenario run side by side and are
 * measured in turns: run 1 of each, then run 2 of each (in a rotated order), and so on, so that the
 * machine's drift (other work on a shared machine, CPU steal) reaches them alike. A cell reports the
 * median of its runs and their spread (min–max); ratios are of medians. Each run also records the
 * machine's CPU steal over it (from /proc/stat). In R and W every connection is one user with its own
 * session, created beforehand. Results: a table on stdout, markdown tables for the README (one per
 * framework, with ratios to the bare framework and to the peer, and the aims of issue 8), and
 * bench/results/latest.json (every run of every cell in it).
 */
import type { ChildProcess } from 'node:child_process'
import { execFileSync, fork } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import type { Framework, ParentMessage, ServerKind, ServerMessage } from './protocol.js'
import { FRAMEWORKS, PEERS, SERVER_KINDS } from './protocol.js'

const SCENARIOS = {
  R: 'read a session',
  W: 'write a session',
  N: 'new session per request',
} as const
type Scenario = keyof typeof SCENARIOS

const FRAMEWORK_NAMES: Record<Framework, string> = {
  node: 'node:http',
  express: 'Express',
  fastify: 'Fastify',
  hono: 'Hono',
  koa: 'Koa',
}

/** The npm package of each framework, for its version in the report (node:http: Node's own). */
const FRAMEWORK_PACKAGES: Record<Framework, string | null> = {
  node: null,
  express: 'express',
  fastify: 'fastify',
  hono: 'hono',
  koa: 'koa',
}

/** Where each peer keeps its sessions here (see bench/server.ts): in memory, each its own way. */
const PEER_STORES: Record<Framework, string> = {
  node: 'MemoryStore',
  express: 'MemoryStore',
  fastify: 'its memory store',
  hono: 'MemoryStore',
  koa: 'a Map as store',
}

function label(framework: Framework, server: ServerKind): string {
  switch (server) {
    case 'bare':
      return `${FRAMEWORK_NAMES[framework]} (no sessions)`
    case 'latchkey-memory':
      return 'latchkey + MemoryStore'
    case 'latchkey-sqlite':
      return 'latchkey + SqliteStore'
    case 'peer':
      return `${PEERS[framework]} (${PEER_STORES[framework]})`
  }
}

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const RESULTS_DIR = join(HERE, 'results')
const SERVER_ENTRY = join(HERE, 'server.ts')

interface Settings {
  readonly durationSeconds: number
  readonly repeats: number
  readonly warmupSeconds: number
  readonly connections: number
  readonly frameworks: readonly Framework[]
  readonly servers: readonly ServerKind[]
  readonly scenarios: readonly Scenario[]
  readonly profile: boolean
}

/** One measured load run of one server. */
interface Run {
  /** Mean of the per-second request counts. */
  readonly requestsPerSecond: number
  readonly latencyP50Ms: number
  readonly latencyP99Ms: number
  /** Server process CPU time per completed request, in microseconds: user (JavaScript, GC) and system (kernel). */
  readonly serverCpuMicrosPerRequest: { readonly user: number; readonly system: number }
  /** The machine's CPU steal over the run, in percent of all CPU time (null where /proc/stat is missing). */
  readonly stealPercent: number | null
  readonly responses2xx: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly statusCodes: Record<string, number>
  readonly writesApplied?: number
  readonly problems: string[]
}

/** The median of some numbers, with the smallest and the largest. */
interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

interface Cell {
  readonly scenario: Scenario
  readonly framework: Framework
  readonly server: ServerKind
  /** Median over the runs of each run's mean req/s. */
  readonly requestsPerSecond: number
  readonly requestsPerSecondSpread: Spread
  /** Medians over the runs. */
  readonly latencyP50Ms: number
  readonly latencyP99Ms: number
  /** Medians over the runs of the server's CPU time per request (µs), user and system apart. */
  readonly serverCpuMicrosPerRequest: { readonly user: number; readonly system: number }
  /** User + system per request (µs), over the runs. */
  readonly serverCpuMicrosSpread: Spread
  /** CPU steal over the runs, in percent (null where /proc/stat is missing). */
  readonly stealPercent: Spread | null
  readonly runs: readonly Run[]
  /** Sums over the runs. */
  readonly responses2xx: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly statusCodes: Record<string, number>
  /** W only: increments the server kept during the measured run, against the 2xx answers counted. */
  readonly writesApplied?: number
  readonly problems: string[]
}

function positiveInteger(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value <= 0)
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(text)}`)
  return value
}

function subset<T extends string>(
  name: string,
  all: readonly T[],
  aliases: Readonly<Record<string, T>> = {},
): readonly T[] {
  const text = process.env[name]
  if (!text) return all
  const chosen = text.split(',').map((item) => aliases[item.trim()] ?? item.trim())
  for (const item of chosen) {
    if (!all.includes(item as T))
      throw new Error(`${name}: unknown ${JSON.stringify(item)}; choose from ${all.join(', ')}`)
  }
  return all.filter((item) => chosen.includes(item))
}

function readSettings(): Settings {
  const quick = process.argv.includes('--quick')
  return {
    durationSeconds: positiveInteger('BENCH_DURATION', quick ? 2 : 3),
    repeats: positiveInteger('BENCH_REPEATS', quick ? 2 : 5),
    warmupSeconds: positiveInteger('BENCH_WARMUP', 1),
    connections: positiveInteger('BENCH_CONNECTIONS', 50),
    frameworks: subset('BENCH_FRAMEWORKS', FRAMEWORKS),
    // `express-session` was the peer's name when node:http was the only front door.
    servers: subset('BENCH_SERVERS', SERVER_KINDS, { 'express-session': 'peer' }),
    scenarios: subset('BENCH_SCENARIOS', Object.keys(SCENARIOS) as Scenario[]),
    profile: process.env.BENCH_PROFILE === '1',
  }
}

// ---------------------------------------------------------------------------------------------------
// Server processes

interface RunningServer {
  readonly base: string
  /** CPU time the server process has used so far, in microseconds. */
  cpuMicros(): Promise<{ user: number; system: number }>
  stop(): Promise<void>
}

/** Which server of which framework. */
interface Target {
  readonly framework: Framework
  readonly server: ServerKind
}

async function startServer(target: Target, scenario: Scenario, settings: Settings): Promise<RunningServer> {
  const { framework, server: kind } = target
  const execArgv = ['--import', 'tsx']
  if (settings.profile) {
    // One directory per cell: the main thread and tsx's loader thread each write a profile.
    const dir = join(RESULTS_DIR, 'profiles', `${framework}-${kind}-${scenario}`)
    mkdirSync(dir, { recursive: true })
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`)
  }
  const child = fork(SERVER_ENTRY, [], {
    cwd: ROOT,
    execArgv,
    env: { ...process.env, BENCH_FRAMEWORK: framework, BENCH_SERVER: kind },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const cpuWaiters: ((micros: { user: number; system: number }) => void)[] = []
  const port = await new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null): void =>
      reject(new Error(`${framework} ${kind} server exited with code ${code} before listening`))
    child.once('exit', onExit)
    child.on('message', (message: ServerMessage) => {
      if (message.type === 'cpu') {
        cpuWaiters.shift()?.({ user: message.user, system: message.system })
        return
      }
      child.off('exit', onExit)
      if (message.type === 'ready') resolve(message.port)
      else reject(new Error(`${framework} ${kind} server failed to start:\n${message.message}`))
    })
  })
  const askCpu: ParentMessage = { type: 'cpu' }
  return {
    base: `http://127.0.0.1:${port}`,
    cpuMicros: () =>
      new Promise((resolve) => {
        cpuWaiters.push(resolve)
        child.send(askCpu)
      }),
    stop: () => stopServer(child),
  }
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop: ParentMessage = { type: 'stop' }
  child.send(stop)
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

// ---------------------------------------------------------------------------------------------------
// Behaviour checks, before anything is measured

interface Answer {
  readonly status: number
  readonly body: string
  /** The `name=value` parts of every Set-Cookie, as a Cookie header (koa-session signs in a second cookie), or null. */
  readonly cookie: string | null
}

async function request(base: string, path: string, cookie?: string): Promise<Answer> {
  const response = await fetch(base + path, { headers: cookie ? { cookie } : {} })
  const setCookies = response.headers.getSetCookie()
  return {
    status: response.status,
    body: await response.text(),
    cookie: setCookies.length === 0 ? null : setCookies.map((line) => line.split(';')[0]).join('; '),
  }
}

class BehaviourError extends Error {}

function expect(target: Target, what: string, ok: boolean, got: unknown): void {
  if (!ok) {
    const name = `${FRAMEWORK_NAMES[target.framework]}: ${label(target.framework, target.server)}`
    throw new BehaviourError(`${name} misbehaves: ${what} (got ${JSON.stringify(got)})`)
  }
}

/** Creates one session holding value='hello' and n=0; for the bare server, a look-alike cookie. */
async function seed(target: Target, base: string): Promise<string> {
  const answer = await request(base, '/seed')
  expect(target, '/seed answers 200', answer.status === 200, answer)
  if (target.server === 'bare') return `sid=${'x'.repeat(43)}` // same request size, nothing behind it
  expect(target, '/seed sets a session cookie', answer.cookie !== null, answer)
  return answer.cookie as string
}

/** R returns the stored value, W increments, N sets a cookie, and the session survives across requests. */
async function verify(target: Target, base: string): Promise<void> {
  const sessions = target.server !== 'bare'
  const cookie = await seed(target, base)
  const read = await request(base, '/r', cookie)
  expect(target, 'R returns the stored value', read.status === 200 && read.body === 'hello', read)
  if (sessions) {
    const anonymous = await request(base, '/r')
    expect(target, 'R without a cookie finds no value', anonymous.status === 404, anonymous)
  }
  const first = await request(base, '/w', cookie)
  const second = await request(base, '/w', cookie)
  expect(target, 'W answers 200', first.status === 200 && second.status === 200, [first, second])
  expect(target, 'W increments', Number(second.body) === Number(first.body) + 1, [first.body, second.body])
  if (sessions) {
    expect(target, 'W starts from the seeded 0', first.body === '1', first.body)
    const count = await request(base, '/count', cookie)
    expect(target, 'W is stored in the session', count.body === '2', count.body)
  }
  const created = await request(base, '/n')
  expect(target, 'N answers 200', created.status === 200, created)
  if (sessions) {
    expect(target, 'N sets a session cookie', created.cookie !== null, created)
    const again = await request(base, '/n')
    expect(target, 'N gives each request its own session', again.cookie !== created.cookie, [
      created.cookie,
      again.cookie,
    ])
  }
}

async function counterTotal(target: Target, base: string, cookies: readonly string[]): Promise<number> {
  if (target.server === 'bare') return Number((await request(base, '/count')).body)
  const counts = await Promise.all(
    cookies.map(async (cookie) => Number((await request(base, '/count', cookie)).body)),
  )
  return counts.reduce((sum, count) => sum + count, 0)
}

/**
 * The counters' total once the server has applied every request it was sent: when a load run stops,
 * requests already sent on its connections may still be in the server's buffers (on a busy machine,
 * a good many), and are applied after the run has ended.
 */
async function settledCounterTotal(
  target: Target,
  base: string,
  cookies: readonly string[],
): Promise<number> {
  let total = await counterTotal(target, base, cookies)
  for (let attempt = 0; attempt < 50; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    const again = await counterTotal(target, base, cookies)
    if (again === total) return total
    total = again
  }
  return total
}

// ---------------------------------------------------------------------------------------------------
// Load

function load(
  base: string,
  scenario: Scenario,
  cookies: readonly string[],
  seconds: number,
  connections: number,
) {
  const path = { R: '/r', W: '/w', N: '/n' }[scenario]
  let next = 0
  return autocannon({
    url: base + path,
    connections,
    duration: seconds,
    // One user per connection: each gets its own session's cookie (N sends none).
    setupClient:
      cookies.length === 0
        ? undefined
        : (client) => {
            client.setHeaders({ cookie: cookies[next++ % cookies.length] as string })
          },
  })
}

/** The machine's CPU time counters (the `cpu` line of /proc/stat), in clock ticks; null without /proc. */
function cpuTicks(): { total: number; steal: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
    const fields = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is already in user.
    const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0)
    return { total, steal: fields[7] ?? 0 }
  } catch {
    return null
  }
}

function stealBetween(
  before: ReturnType<typeof cpuTicks>,
  after: ReturnType<typeof cpuTicks>,
): number | null {
  if (before === null || after === null || after.total <= before.total) return null
  return (100 * (after.steal - before.steal)) / (after.total - before.total)
}

function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
  return { median, min: sorted[0] ?? Number.NaN, max: sorted[sorted.length - 1] ?? Number.NaN }
}

/** A server of the group being measured, started, checked, seeded and warmed up. */
interface Contender {
  readonly target: Target
  readonly server: RunningServer
  readonly cookies: readonly string[]
  readonly runs: Run[]
}

async function prepare(target: Target, scenario: Scenario, settings: Settings): Promise<Contender> {
  const server = await startServer(target, scenario, settings)
  try {
    await verify(target, server.base)
    const cookies: string[] = []
    if (scenario !== 'N') {
      cookies.push(
        ...(await Promise.all(Array.from({ length: settings.connections }, () => seed(target, server.base)))),
      )
    }
    await load(server.base, scenario, cookies, settings.warmupSeconds, settings.connections)
    return { target, server, cookies, runs: [] }
  } catch (error) {
    await server.stop()
    throw error
  }
}

async function measureOnce(contender: Contender, scenario: Scenario, settings: Settings): Promise<Run> {
  const { target, server, cookies } = contender
  const before = scenario === 'W' ? await settledCounterTotal(target, server.base, cookies) : 0
  const ticksBefore = cpuTicks()
  const cpuBefore = await server.cpuMicros()
  const result = await load(server.base, scenario, cookies, settings.durationSeconds, settings.connections)
  const cpuAfter = await server.cpuMicros()
  const stealPercent = stealBetween(ticksBefore, cpuTicks())
  const completed = Math.max(1, result.requests.total)
  const problems: string[] = []
  if (result.non2xx > 0) problems.push(`${result.non2xx} non-2xx responses`)
  if (result.errors > 0) problems.push(`${result.errors} errors (${result.timeouts} timeouts)`)
  let writesApplied: number | undefined
  if (scenario === 'W') {
    writesApplied = (await settledCounterTotal(target, server.base, cookies)) - before
    // Requests cut off when the run stops may still have been applied: at most one per connection.
    if (writesApplied < result['2xx']) {
      problems.push(`lost writes: ${result['2xx']} answered, ${writesApplied} kept`)
    }
    if (writesApplied > result['2xx'] + settings.connections) {
      problems.push(`more writes kept (${writesApplied}) than answered (${result['2xx']})`)
    }
  }
  const statusCodes = Object.fromEntries(
    Object.entries(result.statusCodeStats).map(([code, { count }]) => [code, count] as const),
  )
  return {
    requestsPerSecond: result.requests.average,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
    serverCpuMicrosPerRequest: {
      user: (cpuAfter.user - cpuBefore.user) / completed,
      system: (cpuAfter.system - cpuBefore.system) / completed,
    },
    stealPercent,
    responses2xx: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    ...(writesApplied === undefined ? {} : { writesApplied }),
    problems,
  }
}

function summarize(scenario: Scenario, { target, runs }: Contender): Cell {
  const sum = (pick: (run: Run) => number): number => runs.reduce((total, run) => total + pick(run), 0)
  const statusCodes: Record<string, number> = {}
  for (const run of runs) {
    for (const [code, count] of Object.entries(run.statusCodes))
      statusCodes[code] = (statusCodes[code] ?? 0) + count
  }
  const steals = runs.map((run) => run.stealPercent).filter((value) => value !== null)
  const problems = runs.flatMap((run, i) => run.problems.map((problem) => `run ${i + 1}: ${problem}`))
  const writes = runs.map((run) => run.writesApplied).filter((value) => value !== undefined)
  return {
    scenario,
    framework: target.framework,
    server: target.server,
    requestsPerSecond: spread(runs.map((run) => run.requestsPerSecond)).median,
    requestsPerSecondSpread: spread(runs.map((run) => run.requestsPerSecond)),
    latencyP50Ms: spread(runs.map((run) => run.latencyP50Ms)).median,
    latencyP99Ms: spread(runs.map((run) => run.latencyP99Ms)).median,
    serverCpuMicrosPerRequest: {
      user: spread(runs.map((run) => run.serverCpuMicrosPerRequest.user)).median,
      system: spread(runs.map((run) => run.serverCpuMicrosPerRequest.system)).median,
    },
    serverCpuMicrosSpread: spread(
      runs.map((run) => run.serverCpuMicrosPerRequest.user + run.serverCpuMicrosPerRequest.system),
    ),
    stealPercent: steals.length === 0 ? null : spread(steals),
    runs,
    responses2xx: sum((run) => run.responses2xx),
    non2xx: sum((run) => run.non2xx),
    errors: sum((run) => run.errors),
    timeouts: sum((run) => run.timeouts),
    statusCodes,
    ...(writes.length === 0 ? {} : { writesApplied: writes.reduce((a, b) => a + b, 0) }),
    problems,
  }
}

/**
 * Measures every server of one framework in one scenario: all are started, checked, seeded and warmed
 * up, then measured in turns, one run each per round, the order rotated from round to round.
 */
async function measureGroup(
  framework: Framework,
  scenario: Scenario,
  settings: Settings,
  onRun: (contender: Contender, round: number) => void,
): Promise<Cell[]> {
  const contenders: Contender[] = []
  try {
    for (const server of settings.servers)
      contenders.push(await prepare({ framework, server }, scenario, settings))
    for (let round = 0; round < settings.repeats; round++) {
      for (let i = 0; i < contenders.length; i++) {
        const contender = contenders[(i + round) % contenders.length] as Contender
        contender.runs.push(await measureOnce(contender, scenario, settings))
        onRun(contender, round)
      }
    }
    return contenders.map((contender) => summarize(scenario, contender))
  } finally {
    await Promise.all(contenders.map((contender) => contender.server.stop()))
  }
}

// ---------------------------------------------------------------------------------------------------
// Report

function ratio(a: number | undefined, b: number | undefined): number | null {
  return a === undefined || b === undefined || b === 0 ? null : a / b
}

function formatRatio(value: number | null): string {
  return value === null ? 'n/a' : `${value.toFixed(2)}×`
}

function formatCpu(cell: Cell): string {
  const { median, min, max } = cell.serverCpuMicrosSpread
  return `${Math.round(median)} µs (${Math.round(min)}–${Math.round(max)})`
}

function formatUserSystem(cell: Cell): string {
  const { user, system } = cell.serverCpuMicrosPerRequest
  return `${Math.round(user)} + ${Math.round(system)}`
}

function formatRange({ min, max }: Spread): string {
  return `${formatRate(min)}–${formatRate(max)}`
}

function formatSteal(steal: Spread | null): string {
  return steal === null ? 'n/a' : `${steal.median.toFixed(1)}% (max ${steal.max.toFixed(1)}%)`
}

function formatRate(value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly ('l' | 'r')[],
): string {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => (row[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((cell, i) => (align[i] === 'r' ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0))).join(' | ')} |`
  const rule = `| ${widths.map((width, i) => (align[i] === 'r' ? `${'-'.repeat(width - 1)}:` : '-'.repeat(width))).join(' | ')} |`
  return [line(header), rule, ...rows.map(line)].join('\n')
}

/** The versions compared, read from the installed packages. */
function versions(): Record<string, string> {
  const names = [
    ...FRAMEWORKS.map((framework) => FRAMEWORK_PACKAGES[framework]).filter((name) => name !== null),
    '@hono/node-server',
    ...new Set(Object.values(PEERS)),
    '@fastify/cookie',
    'autocannon',
  ]
  const found: Record<string, string> = { node: process.version }
  for (const name of names) {
    try {
      const manifest = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'))
      found[name] = String(manifest.version)
    } catch {
      found[name] = 'unknown'
    }
  }
  return found
}

/** The aims of issue 8, each a ratio of latchkey's req/s to another server's on the same framework. */
const AIMS: readonly {
  readonly framework: Framework
  readonly scenario: Scenario
  readonly over: 'bare' | 'peer'
  readonly atLeast: number
}[] = [
  { framework: 'express', scenario: 'R', over: 'bare', atLeast: 0.85 },
  { framework: 'fastify', scenario: 'R', over: 'bare', atLeast: 0.5 },
  { framework: 'fastify', scenario: 'R', over: 'peer', atLeast: 2 },
  { framework: 'fastify', scenario: 'W', over: 'peer', atLeast: 2 },
]

/** The machine while the benchmark ran: CPU steal over the whole run, and the load average around it. */
interface Machine {
  readonly stealPercent: number | null
  readonly loadBefore: readonly number[]
  readonly loadAfter: readonly number[]
}

function report(
  cells: readonly Cell[],
  settings: Settings,
  environment: string,
  machine: Machine,
): { markdown: string; json: object } {
  const installed = versions()
  const find = (scenario: Scenario, framework: Framework, server: ServerKind): Cell | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.framework === framework && cell.server === server)
  const rate = (scenario: Scenario, framework: Framework, server: ServerKind): number | undefined =>
    find(scenario, framework, server)?.requestsPerSecond
  const toBare = (cell: Cell): number | null =>
    ratio(cell.requestsPerSecond, rate(cell.scenario, cell.framework, 'bare'))
  const toPeer = (cell: Cell): number | null =>
    ratio(cell.requestsPerSecond, rate(cell.scenario, cell.framework, 'peer'))

  const groups = settings.frameworks.map((framework) => {
    const name = FRAMEWORK_NAMES[framework]
    const pkg = FRAMEWORK_PACKAGES[framework]
    const title =
      `**${pkg === null ? `${name} (Node ${process.version})` : `${name} ${installed[pkg]}`}**, ` +
      `peer: ${PEERS[framework]} ${installed[PEERS[framework]]}` +
      (framework === 'fastify' ? ` with @fastify/cookie ${installed['@fastify/cookie']}` : '') +
      (framework === 'hono' ? `, on @hono/node-server ${installed['@hono/node-server']}` : '')
    const rows = cells
      .filter((cell) => cell.framework === framework)
      .map((cell) => [
        `${cell.scenario}: ${SCENARIOS[cell.scenario]}`,
        label(framework, cell.server),
        formatRate(cell.requestsPerSecond),
        formatRange(cell.requestsPerSecondSpread),
        `${cell.latencyP99Ms} ms`,
        formatRatio(toBare(cell)),
        formatRatio(toPeer(cell)),
        formatCpu(cell),
        formatUserSystem(cell),
        cell.problems.length === 0 ? 'ok' : cell.problems.join('; '),
      ])
    return [
      title,
      '',
      table(
        [
          'Scenario',
          'Server',
          'req/s (median)',
          'req/s min–max',
          'p99 latency',
          '× bare',
          '× peer',
          'server CPU / req (min–max)',
          'user + sys',
          'checks',
        ],
        rows,
        ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      ),
    ].join('\n')
  })

  const aims = AIMS.filter(
    (aim) => settings.frameworks.includes(aim.framework) && settings.scenarios.includes(aim.scenario),
  ).map((aim) => {
    const base = rate(aim.scenario, aim.framework, aim.over)
    const memory = ratio(rate(aim.scenario, aim.framework, 'latchkey-memory'), base)
    const sqlite = ratio(rate(aim.scenario, aim.framework, 'latchkey-sqlite'), base)
    const other = aim.over === 'bare' ? `bare ${FRAMEWORK_NAMES[aim.framework]}` : PEERS[aim.framework]
    return {
      ...aim,
      text: `${FRAMEWORK_NAMES[aim.framework]} + latchkey ${aim.scenario} ≥ ${aim.atLeast}× ${other}`,
      memory,
      sqlite,
      met: memory === null ? null : memory >= aim.atLeast,
    }
  })
  const aimsTable = table(
    ['Aim (issue 8)', 'latchkey + MemoryStore', 'latchkey + SqliteStore', 'met (MemoryStore)'],
    aims.map((aim) => [
      aim.text,
      formatRatio(aim.memory),
      formatRatio(aim.sqlite),
      aim.met === null ? 'n/a' : aim.met ? 'yes' : 'no',
    ]),
    ['l', 'r', 'r', 'l'],
  )
  const load = (values: readonly number[]): string => values.map((value) => value.toFixed(2)).join(' ')
  const markdown = [
    `${environment}. Loopback, autocannon ${settings.connections} connections, ${settings.repeats} runs of ` +
      `${settings.durationSeconds} s per cell after a ${settings.warmupSeconds} s warm-up, each server in its ` +
      'own process; the servers of a framework are measured in turns (run 1 of each, then run 2...), and ' +
      'each figure is the median of the runs, with their min–max. R and W: every connection is ' +
      'one user with its own session (value: a short string and a counter). × bare and × peer: median req/s ' +
      'over that of the same framework without sessions and with its peer. Server CPU / req: CPU time of the ' +
      'server process over a run, divided by the requests completed (user + sys: medians); "sys" is mostly ' +
      'the loopback writes, which cost more per request the less busy the load generator is. CPU steal over ' +
      `the whole benchmark: ${machine.stealPercent === null ? 'n/a' : `${machine.stealPercent.toFixed(1)}%`}; ` +
      `load average ${load(machine.loadBefore)} before, ${load(machine.loadAfter)} after.`,
    ...groups.flatMap((group) => ['', group]),
    ...(aims.length === 0 ? [] : ['', aimsTable]),
  ].join('\n')
  const json = {
    date: new Date().toISOString(),
    environment,
    versions: installed,
    settings,
    machine,
    cells: cells.map((cell) => ({
      ...cell,
      ratioToBare: toBare(cell),
      ratioToPeer: toPeer(cell),
      stealPercentMedian: cell.stealPercent?.median ?? null,
    })),
    aims: aims.map(({ text, ...aim }) => ({ aim: text, ...aim })),
  }
  return { markdown, json }
}

/** Runs biome on a written file, so that `npm run lint` stays clean; a failure only warns. */
function formatLikeTheRepository(file: string): void {
  try {
    execFileSync(join(ROOT, 'node_modules', '.bin', 'biome'), ['format', '--write', file], {
      stdio: 'ignore',
    })
  } catch {
    console.warn(`(could not format ${relative(process.cwd(), file)} with biome)`)
  }
}

async function main(): Promise<void> {
  const settings = readSettings()
  const cpu = cpus()
  const environment = `Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}`
  const cellCount = settings.scenarios.length * settings.frameworks.length * settings.servers.length
  // Besides the load itself, each cell starts a process, checks it and seeds a session per connection.
  const minutes =
    ((settings.durationSeconds * settings.repeats + settings.warmupSeconds + 3) * cellCount) / 60
  console.log(`${environment}`)
  console.log(
    `${cellCount} cells, ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ` +
      `${settings.repeats} interleaved runs of ${settings.durationSeconds} s each (about ${minutes.toFixed(1)} min)\n`,
  )
  const started = Date.now()
  const loadBefore = loadavg()
  const ticksBefore = cpuTicks()
  const cells: Cell[] = []
  // Scenario by scenario, and within a framework the servers in turns, so that any drift of the
  // machine over the run hits every server alike.
  for (const scenario of settings.scenarios) {
    for (const framework of settings.frameworks) {
      const group = await measureGroup(framework, scenario, settings, ({ target, runs }, round) => {
        const run = runs[runs.length - 1] as Run
        const cpu = run.serverCpuMicrosPerRequest
        const status = run.problems.length === 0 ? '' : `  PROBLEM: ${run.problems.join('; ')}`
        console.log(
          `${scenario}  ${framework.padEnd(7)} ${label(framework, target.server).padEnd(35)} run ${round + 1}  ` +
            `${formatRate(run.requestsPerSecond).padStart(8)} req/s` +
            `  p99 ${String(run.latencyP99Ms).padStart(4)} ms  CPU/req ${Math.round(cpu.user + cpu.system)} µs` +
            `  steal ${run.stealPercent === null ? 'n/a' : `${run.stealPercent.toFixed(1)}%`}${status}`,
        )
      })
      for (const cell of group) {
        console.log(
          `${scenario}  ${framework.padEnd(7)} ${label(framework, cell.server).padEnd(35)} median ` +
            `${formatRate(cell.requestsPerSecond).padStart(8)} req/s (${formatRange(cell.requestsPerSecondSpread)})` +
            `  CPU/req ${formatCpu(cell)}  steal ${formatSteal(cell.stealPercent)}`,
        )
      }
      cells.push(...group)
    }
  }
  const machine: Machine = {
    stealPercent: stealBetween(ticksBefore, cpuTicks()),
    loadBefore,
    loadAfter: loadavg(),
  }
  const { markdown, json } = report(cells, settings, environment, machine)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, 'latest.json')
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  formatLikeTheRepository(file)
  console.log(`\n${markdown}\n`)
  console.log(
    `Results written to ${relative(process.cwd(), file)} (${((Date.now() - started) / 60_000).toFixed(1)} min)`,
  )
  const problems = cells.filter((cell) => cell.problems.length > 0)
  if (problems.length > 0) {
    console.error(`\n${problems.length} cell(s) had problems: see the checks column.`)
    process.exitCode = 1
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof BehaviourError ? `\nBENCHMARK ABORTED: ${error.message}` : error)
  process.exit(1)
})
