/**
 * HTTP load benchmark: latchkey against bare node:http and express-session, on loopback, in one run.
 *
 *   npm run bench                  10 s per cell after a 2 s warm-up, 50 connections
 *   npm run bench -- --quick       2 s per cell after a 1 s warm-up (smoke test)
 *
 * Environment: BENCH_DURATION (s), BENCH_WARMUP (s), BENCH_CONNECTIONS, BENCH_SERVERS and
 * BENCH_SCENARIOS (comma-separated subsets), BENCH_PROFILE=1 (each server writes .cpuprofile files to
 * bench/results/profiles/<server>-<scenario>/; the largest is the main thread).
 *
 * Each cell (scenario x server) gets a fresh server process, checked for correct behaviour before it
 * is measured. In R and W every connection is one user with its own session, created beforehand.
 * Results: a table on stdout, a markdown table for the README, and bench/results/latest.json.
 */
import type { ChildProcess } from 'node:child_process'
import { execFileSync, fork } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import type { ParentMessage, ServerKind, ServerMessage } from './protocol.js'
import { SERVER_KINDS } from './protocol.js'

const SCENARIOS = {
  R: 'read a session',
  W: 'write a session',
  N: 'new session per request',
} as const
type Scenario = keyof typeof SCENARIOS

const LABELS: Record<ServerKind, string> = {
  bare: 'node:http (no sessions)',
  'latchkey-memory': 'latchkey + MemoryStore',
  'latchkey-sqlite': 'latchkey + SqliteStore',
  'express-session': 'express-session (MemoryStore)',
}

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const RESULTS_DIR = join(HERE, 'results')
const SERVER_ENTRY = join(HERE, 'server.ts')

interface Settings {
  readonly durationSeconds: number
  readonly warmupSeconds: number
  readonly connections: number
  readonly servers: readonly ServerKind[]
  readonly scenarios: readonly Scenario[]
  readonly profile: boolean
}

interface Cell {
  readonly scenario: Scenario
  readonly server: ServerKind
  /** Mean of the per-second request counts. */
  readonly requestsPerSecond: number
  readonly latencyP50Ms: number
  readonly latencyP99Ms: number
  /** Server process CPU time per completed request, in microseconds: user (JavaScript, GC) and system (kernel). */
  readonly serverCpuMicrosPerRequest: { readonly user: number; readonly system: number }
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

function subset<T extends string>(name: string, all: readonly T[]): readonly T[] {
  const text = process.env[name]
  if (!text) return all
  const chosen = text.split(',').map((item) => item.trim())
  for (const item of chosen) {
    if (!all.includes(item as T))
      throw new Error(`${name}: unknown ${JSON.stringify(item)}; choose from ${all.join(', ')}`)
  }
  return all.filter((item) => chosen.includes(item))
}

function readSettings(): Settings {
  const quick = process.argv.includes('--quick')
  return {
    durationSeconds: positiveInteger('BENCH_DURATION', quick ? 2 : 10),
    warmupSeconds: positiveInteger('BENCH_WARMUP', quick ? 1 : 2),
    connections: positiveInteger('BENCH_CONNECTIONS', 50),
    servers: subset('BENCH_SERVERS', SERVER_KINDS),
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

async function startServer(kind: ServerKind, scenario: Scenario, settings: Settings): Promise<RunningServer> {
  const execArgv = ['--import', 'tsx']
  if (settings.profile) {
    // One directory per cell: the main thread and tsx's loader thread each write a profile.
    const dir = join(RESULTS_DIR, 'profiles', `${kind}-${scenario}`)
    mkdirSync(dir, { recursive: true })
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${dir}`)
  }
  const child = fork(SERVER_ENTRY, [], {
    cwd: ROOT,
    execArgv,
    env: { ...process.env, BENCH_SERVER: kind },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const cpuWaiters: ((micros: { user: number; system: number }) => void)[] = []
  const port = await new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null): void =>
      reject(new Error(`${kind} server exited with code ${code} before listening`))
    child.once('exit', onExit)
    child.on('message', (message: ServerMessage) => {
      if (message.type === 'cpu') {
        cpuWaiters.shift()?.({ user: message.user, system: message.system })
        return
      }
      child.off('exit', onExit)
      if (message.type === 'ready') resolve(message.port)
      else reject(new Error(`${kind} server failed to start:\n${message.message}`))
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
  /** The `name=value` part of the first Set-Cookie, or null. */
  readonly cookie: string | null
}

async function request(base: string, path: string, cookie?: string): Promise<Answer> {
  const response = await fetch(base + path, { headers: cookie ? { cookie } : {} })
  const setCookie = response.headers.getSetCookie()[0]
  return { status: response.status, body: await response.text(), cookie: setCookie?.split(';')[0] ?? null }
}

class BehaviourError extends Error {}

function expect(kind: ServerKind, what: string, ok: boolean, got: unknown): void {
  if (!ok) throw new BehaviourError(`${LABELS[kind]} misbehaves: ${what} (got ${JSON.stringify(got)})`)
}

/** Creates one session holding value='hello' and n=0; for the bare server, a look-alike cookie. */
async function seed(kind: ServerKind, base: string): Promise<string> {
  const answer = await request(base, '/seed')
  expect(kind, '/seed answers 200', answer.status === 200, answer)
  if (kind === 'bare') return `sid=${'x'.repeat(43)}` // same request size, nothing behind it
  expect(kind, '/seed sets a session cookie', answer.cookie !== null, answer)
  return answer.cookie as string
}

/** R returns the stored value, W increments, N sets a cookie, and the session survives across requests. */
async function verify(kind: ServerKind, base: string): Promise<void> {
  const sessions = kind !== 'bare'
  const cookie = await seed(kind, base)
  const read = await request(base, '/r', cookie)
  expect(kind, 'R returns the stored value', read.status === 200 && read.body === 'hello', read)
  if (sessions) {
    const anonymous = await request(base, '/r')
    expect(kind, 'R without a cookie finds no value', anonymous.status === 404, anonymous)
  }
  const first = await request(base, '/w', cookie)
  const second = await request(base, '/w', cookie)
  expect(kind, 'W answers 200', first.status === 200 && second.status === 200, [first, second])
  expect(kind, 'W increments', Number(second.body) === Number(first.body) + 1, [first.body, second.body])
  if (sessions) {
    expect(kind, 'W starts from the seeded 0', first.body === '1', first.body)
    const count = await request(base, '/count', cookie)
    expect(kind, 'W is stored in the session', count.body === '2', count.body)
  }
  const created = await request(base, '/n')
  expect(kind, 'N answers 200', created.status === 200, created)
  if (sessions) {
    expect(kind, 'N sets a session cookie', created.cookie !== null, created)
    const again = await request(base, '/n')
    expect(kind, 'N gives each request its own session', again.cookie !== created.cookie, [
      created.cookie,
      again.cookie,
    ])
  }
}

async function counterTotal(kind: ServerKind, base: string, cookies: readonly string[]): Promise<number> {
  if (kind === 'bare') return Number((await request(base, '/count')).body)
  let total = 0
  for (const cookie of cookies) total += Number((await request(base, '/count', cookie)).body)
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

async function measure(kind: ServerKind, scenario: Scenario, settings: Settings): Promise<Cell> {
  const server = await startServer(kind, scenario, settings)
  try {
    await verify(kind, server.base)
    const cookies: string[] = []
    if (scenario !== 'N') {
      for (let i = 0; i < settings.connections; i++) cookies.push(await seed(kind, server.base))
    }
    await load(server.base, scenario, cookies, settings.warmupSeconds, settings.connections)
    const before = scenario === 'W' ? await counterTotal(kind, server.base, cookies) : 0
    const cpuBefore = await server.cpuMicros()
    const result = await load(server.base, scenario, cookies, settings.durationSeconds, settings.connections)
    const cpuAfter = await server.cpuMicros()
    const completed = Math.max(1, result.requests.total)
    const problems: string[] = []
    if (result.non2xx > 0) problems.push(`${result.non2xx} non-2xx responses`)
    if (result.errors > 0) problems.push(`${result.errors} errors (${result.timeouts} timeouts)`)
    let writesApplied: number | undefined
    if (scenario === 'W') {
      writesApplied = (await counterTotal(kind, server.base, cookies)) - before
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
      scenario,
      server: kind,
      requestsPerSecond: result.requests.average,
      latencyP50Ms: result.latency.p50,
      latencyP99Ms: result.latency.p99,
      serverCpuMicrosPerRequest: {
        user: (cpuAfter.user - cpuBefore.user) / completed,
        system: (cpuAfter.system - cpuBefore.system) / completed,
      },
      responses2xx: result['2xx'],
      non2xx: result.non2xx,
      errors: result.errors,
      timeouts: result.timeouts,
      statusCodes,
      ...(writesApplied === undefined ? {} : { writesApplied }),
      problems,
    }
  } finally {
    await server.stop()
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
  const { user, system } = cell.serverCpuMicrosPerRequest
  return `${Math.round(user + system)} µs (${Math.round(user)} + ${Math.round(system)})`
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

function report(
  cells: readonly Cell[],
  settings: Settings,
  environment: string,
): { markdown: string; json: object } {
  const find = (scenario: Scenario, server: ServerKind): Cell | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.server === server)
  const rows = cells.map((cell) => [
    `${cell.scenario}: ${SCENARIOS[cell.scenario]}`,
    LABELS[cell.server],
    formatRate(cell.requestsPerSecond),
    `${cell.latencyP99Ms} ms`,
    formatRatio(ratio(cell.requestsPerSecond, find(cell.scenario, 'bare')?.requestsPerSecond)),
    formatCpu(cell),
    cell.problems.length === 0 ? 'ok' : cell.problems.join('; '),
  ])
  const main = table(
    [
      'Scenario',
      'Server',
      'req/s (mean)',
      'p99 latency',
      '× bare',
      'server CPU / req (user + sys)',
      'checks',
    ],
    rows,
    ['l', 'l', 'r', 'r', 'r', 'r', 'l'],
  )
  const versus = settings.scenarios.map((scenario) => {
    const peer = find(scenario, 'express-session')?.requestsPerSecond
    return {
      scenario,
      memory: ratio(find(scenario, 'latchkey-memory')?.requestsPerSecond, peer),
      sqlite: ratio(find(scenario, 'latchkey-sqlite')?.requestsPerSecond, peer),
    }
  })
  const peerTable = table(
    ['Scenario', 'latchkey + MemoryStore ÷ express-session', 'latchkey + SqliteStore ÷ express-session'],
    versus.map((v) => [
      `${v.scenario}: ${SCENARIOS[v.scenario]}`,
      formatRatio(v.memory),
      formatRatio(v.sqlite),
    ]),
    ['l', 'r', 'r'],
  )
  const markdown = [
    `${environment}. Loopback, autocannon ${settings.connections} connections, ${settings.durationSeconds} s per cell ` +
      `after a ${settings.warmupSeconds} s warm-up, each server in its own process. R and W: every connection is ` +
      'one user with its own session (value: a short string and a counter). Server CPU / req: CPU time of the ' +
      'server process over the measured run, divided by the requests completed; "sys" is mostly the loopback ' +
      'writes, which cost more per request the less busy the load generator is.',
    '',
    main,
    '',
    peerTable,
  ].join('\n')
  const json = {
    date: new Date().toISOString(),
    environment,
    settings,
    cells: cells.map((cell) => ({
      ...cell,
      ratioToBare: ratio(cell.requestsPerSecond, find(cell.scenario, 'bare')?.requestsPerSecond),
    })),
    latchkeyOverExpressSession: versus,
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
  const cellCount = settings.scenarios.length * settings.servers.length
  const minutes = ((settings.durationSeconds + settings.warmupSeconds + 2) * cellCount) / 60
  console.log(`${environment}`)
  console.log(
    `${cellCount} cells, ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ` +
      `${settings.durationSeconds} s each (about ${minutes.toFixed(1)} min)\n`,
  )
  const cells: Cell[] = []
  // Scenario by scenario, so that any drift of the machine over the run hits every server alike.
  for (const scenario of settings.scenarios) {
    for (const server of settings.servers) {
      const cell = await measure(server, scenario, settings)
      cells.push(cell)
      const status = cell.problems.length === 0 ? '' : `  PROBLEM: ${cell.problems.join('; ')}`
      console.log(
        `${scenario}  ${LABELS[server].padEnd(30)} ${formatRate(cell.requestsPerSecond).padStart(8)} req/s` +
          `  p99 ${String(cell.latencyP99Ms).padStart(4)} ms  CPU/req ${formatCpu(cell)}${status}`,
      )
    }
  }
  const { markdown, json } = report(cells, settings, environment)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, 'latest.json')
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  formatLikeTheRepository(file)
  console.log(`\n${markdown}\n`)
  console.log(`Results written to ${relative(process.cwd(), file)}`)
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
