/**
 * The pieces every HTTP benchmark here shares (`bench/run.ts`, and through `bench/compare.ts`
 * `bench/peer-stores.ts` and `bench/dropin.ts`): settings from the environment, a server in its own
 * process (`bench/serve.ts` on the other side), the behaviour checks, autocannon load, the lost-write
 * count, CPU steal from /proc/stat, a group of servers measured in turns ({@link measureInTurns}) and
 * summarized as medians with their spread, a whole run announced, watched and published
 * ({@link runBenchmark}), and the markdown tables.
 */

import type { ChildProcess } from 'node:child_process'
import { execFileSync, fork } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import type { ParentMessage, ServerMessage } from './protocol.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const RESULTS_DIR = join(ROOT, 'bench', 'results')

// ---------------------------------------------------------------------------------------------------
// Settings

export function positiveInteger(name: string, fallback: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value <= 0)
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(text)}`)
  return value
}

export function subset<T extends string>(
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

/** How long and how hard each cell is loaded. */
export interface LoadSettings {
  readonly durationSeconds: number
  readonly repeats: number
  readonly warmupSeconds: number
  readonly connections: number
  readonly profile: boolean
}

/** The common settings: `--quick`, BENCH_DURATION, BENCH_REPEATS, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_PROFILE. */
export function loadSettings(): LoadSettings {
  const quick = process.argv.includes('--quick')
  return {
    durationSeconds: positiveInteger('BENCH_DURATION', quick ? 2 : 3),
    repeats: positiveInteger('BENCH_REPEATS', quick ? 2 : 5),
    warmupSeconds: positiveInteger('BENCH_WARMUP', 1),
    connections: positiveInteger('BENCH_CONNECTIONS', 50),
    profile: process.env.BENCH_PROFILE === '1',
  }
}

// ---------------------------------------------------------------------------------------------------
// Server processes

export interface RunningServer {
  readonly base: string
  /** CPU time the server process has used so far, in microseconds. */
  cpuMicros(): Promise<{ user: number; system: number }>
  stop(): Promise<void>
}

/**
 * Starts `entry` in a process of its own with `env` added, and waits for it to listen. `profileDir`:
 * the process writes .cpuprofile files there (the main thread and tsx's loader thread each one).
 */
export async function startServer(
  entry: string,
  env: Readonly<Record<string, string>>,
  name: string,
  profileDir?: string,
): Promise<RunningServer> {
  const execArgv = ['--import', 'tsx']
  if (profileDir !== undefined) {
    mkdirSync(profileDir, { recursive: true })
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`)
  }
  const child = fork(entry, [], {
    cwd: ROOT,
    execArgv,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const cpuWaiters: ((micros: { user: number; system: number }) => void)[] = []
  const port = await new Promise<number>((resolve, reject) => {
    const onExit = (code: number | null): void =>
      reject(new Error(`${name} server exited with code ${code} before listening`))
    child.once('exit', onExit)
    child.on('message', (message: ServerMessage) => {
      if (message.type === 'cpu') {
        cpuWaiters.shift()?.({ user: message.user, system: message.system })
        return
      }
      child.off('exit', onExit)
      if (message.type === 'ready') resolve(message.port)
      else reject(new Error(`${name} server failed to start:\n${message.message}`))
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

export interface Answer {
  readonly status: number
  readonly body: string
  /** The `name=value` parts of every Set-Cookie, as a Cookie header (koa-session signs in a second cookie), or null. */
  readonly cookie: string | null
}

export async function request(base: string, path: string, cookie?: string): Promise<Answer> {
  const response = await fetch(base + path, { headers: cookie ? { cookie } : {} })
  const setCookies = response.headers.getSetCookie()
  return {
    status: response.status,
    body: await response.text(),
    cookie: setCookies.length === 0 ? null : setCookies.map((line) => line.split(';')[0]).join('; '),
  }
}

export class BehaviourError extends Error {}

/** A server under check: its name for messages, and whether it keeps sessions (the bare ones do not). */
export interface Checked {
  readonly name: string
  readonly sessions: boolean
}

function expect(server: Checked, what: string, ok: boolean, got: unknown): void {
  if (!ok) throw new BehaviourError(`${server.name} misbehaves: ${what} (got ${JSON.stringify(got)})`)
}

/** Creates one session holding value='hello' and n=0; for a bare server, a look-alike cookie. */
export async function seed(server: Checked, base: string): Promise<string> {
  const answer = await request(base, '/seed')
  expect(server, '/seed answers 200', answer.status === 200, answer)
  if (!server.sessions) return `sid=${'x'.repeat(43)}` // same request size, nothing behind it
  expect(server, '/seed sets a session cookie', answer.cookie !== null, answer)
  return answer.cookie as string
}

/** R returns the stored value, W increments, N sets a cookie, and the session survives across requests. */
export async function verify(server: Checked, base: string): Promise<void> {
  const { sessions } = server
  const cookie = await seed(server, base)
  const read = await request(base, '/r', cookie)
  expect(server, 'R returns the stored value', read.status === 200 && read.body === 'hello', read)
  if (sessions) {
    const anonymous = await request(base, '/r')
    expect(server, 'R without a cookie finds no value', anonymous.status === 404, anonymous)
  }
  const first = await request(base, '/w', cookie)
  const second = await request(base, '/w', cookie)
  expect(server, 'W answers 200', first.status === 200 && second.status === 200, [first, second])
  expect(server, 'W increments', Number(second.body) === Number(first.body) + 1, [first.body, second.body])
  if (sessions) {
    expect(server, 'W starts from the seeded 0', first.body === '1', first.body)
    const count = await request(base, '/count', cookie)
    expect(server, 'W is stored in the session', count.body === '2', count.body)
  }
  const created = await request(base, '/n')
  expect(server, 'N answers 200', created.status === 200, created)
  if (sessions) {
    expect(server, 'N sets a session cookie', created.cookie !== null, created)
    const again = await request(base, '/n')
    expect(server, 'N gives each request its own session', again.cookie !== created.cookie, [
      created.cookie,
      again.cookie,
    ])
  }
}

/** The sum of the counters of the sessions `cookies` name (a bare server: its one counter). */
export async function counterTotal(
  server: Checked,
  base: string,
  cookies: readonly string[],
): Promise<number> {
  if (!server.sessions) return Number((await request(base, '/count')).body)
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
async function settled(count: () => Promise<number>): Promise<number> {
  let total = await count()
  for (let attempt = 0; attempt < 50; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    const again = await count()
    if (again === total) return total
    total = again
  }
  return total
}

// ---------------------------------------------------------------------------------------------------
// Load

/** Loads `base + path` on `connections` connections; the cookies are handed out one per connection, in turn. */
export function load(
  base: string,
  path: string,
  cookies: readonly string[],
  seconds: number,
  connections: number,
) {
  let next = 0
  return autocannon({
    url: base + path,
    connections,
    duration: seconds,
    // One user per connection: each gets its own session's cookie (N sends none); with one cookie,
    // every connection shares that one session.
    setupClient:
      cookies.length === 0
        ? undefined
        : (client) => {
            client.setHeaders({ cookie: cookies[next++ % cookies.length] as string })
          },
  })
}

/** The machine's CPU time counters (the `cpu` line of /proc/stat), in clock ticks; null without /proc. */
export function cpuTicks(): { total: number; steal: number } | null {
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

export function stealBetween(
  before: ReturnType<typeof cpuTicks>,
  after: ReturnType<typeof cpuTicks>,
): number | null {
  if (before === null || after === null || after.total <= before.total) return null
  return (100 * (after.steal - before.steal)) / (after.total - before.total)
}

/** The median of some numbers, with the smallest and the largest. */
export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
}

export function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
  return { median, min: sorted[0] ?? Number.NaN, max: sorted[sorted.length - 1] ?? Number.NaN }
}

/** The answers counted, over one run or summed over a cell's runs. */
interface Counts {
  readonly responses2xx: number
  readonly non2xx: number
  readonly errors: number
  readonly timeouts: number
  readonly statusCodes: Record<string, number>
  /** Write scenarios only: increments the server kept, against the 2xx answers counted. */
  readonly writesApplied?: number
  readonly problems: string[]
}

/** One measured load run of one server. */
export interface Run extends Counts {
  /** Mean of the per-second request counts. */
  readonly requestsPerSecond: number
  readonly latencyP50Ms: number
  readonly latencyP99Ms: number
  /** Server process CPU time per completed request, in microseconds: user (JavaScript, GC) and system (kernel). */
  readonly serverCpuMicrosPerRequest: { readonly user: number; readonly system: number }
  /** The machine's CPU steal over the run, in percent of all CPU time (null where /proc/stat is missing). */
  readonly stealPercent: number | null
}

/** What one load run is made of. */
export interface Load {
  readonly server: RunningServer
  readonly path: string
  readonly cookies: readonly string[]
  /** Write scenarios: the counters' total, read back before and after the run. */
  readonly counter?: () => Promise<number>
  /** Whether fewer writes kept than answered is a problem (false: only reported, for the peers). */
  readonly lostWritesAreProblems?: boolean
}

/** One measured run: autocannon's figures, the server's CPU per request, the steal, and the writes kept. */
export async function measureRun(run: Load, settings: LoadSettings): Promise<Run> {
  const { server, path, cookies, counter } = run
  const before = counter === undefined ? 0 : await settled(counter)
  const ticksBefore = cpuTicks()
  const cpuBefore = await server.cpuMicros()
  const result = await load(server.base, path, cookies, settings.durationSeconds, settings.connections)
  const cpuAfter = await server.cpuMicros()
  const stealPercent = stealBetween(ticksBefore, cpuTicks())
  const completed = Math.max(1, result.requests.total)
  const problems: string[] = []
  if (result.non2xx > 0) problems.push(`${result.non2xx} non-2xx responses`)
  if (result.errors > 0) problems.push(`${result.errors} errors (${result.timeouts} timeouts)`)
  let writesApplied: number | undefined
  if (counter !== undefined) {
    writesApplied = (await settled(counter)) - before
    // Requests cut off when the run stops may still have been applied: at most one per connection.
    if (writesApplied < result['2xx'] && run.lostWritesAreProblems !== false) {
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

/** A cell's runs, summed up: medians and spreads, and the counts summed over the runs. */
export interface Summary extends Counts {
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
}

export function summarize(runs: readonly Run[]): Summary {
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
 * Measures some servers in turns: one run each per round, the order rotated from round to round, so
 * that the machine's drift (other work on a shared machine, CPU steal) reaches them alike.
 */
async function interleave<T extends { readonly runs: Run[] }>(
  contenders: readonly T[],
  repeats: number,
  measure: (contender: T) => Promise<Run>,
  onRun: (contender: T, round: number) => void,
): Promise<void> {
  for (let round = 0; round < repeats; round++) {
    for (let i = 0; i < contenders.length; i++) {
      const contender = contenders[(i + round) % contenders.length] as T
      contender.runs.push(await measure(contender))
      onRun(contender, round)
    }
  }
}

/** A server to measure in a group, with the load it gets. */
export interface Entrant {
  /** Starts the server in a process of its own. */
  start(): Promise<RunningServer>
  /** What the behaviour checks call it, and whether it keeps sessions. */
  readonly checked: Checked
  /** The path loaded. */
  readonly path: string
  /** How many sessions are seeded beforehand, their cookies handed out one per connection (0: none sent). */
  readonly users: number
  /** Whether the counters are read back before and after every run (the writes kept). */
  readonly countsWrites: boolean
  /** See {@link Load}. */
  readonly lostWritesAreProblems?: boolean
  /** Its name in the progress lines. */
  readonly name: string
}

/** A server of the group being measured, started, checked, seeded and warmed up. */
interface Contender<E extends Entrant> {
  readonly entrant: E
  readonly server: RunningServer
  readonly cookies: readonly string[]
  readonly runs: Run[]
}

async function prepare<E extends Entrant>(entrant: E, settings: LoadSettings): Promise<Contender<E>> {
  const server = await entrant.start()
  try {
    await verify(entrant.checked, server.base)
    const cookies = await Promise.all(
      Array.from({ length: entrant.users }, () => seed(entrant.checked, server.base)),
    )
    await load(server.base, entrant.path, cookies, settings.warmupSeconds, settings.connections)
    return { entrant, server, cookies, runs: [] }
  } catch (error) {
    await server.stop()
    throw error
  }
}

function measureOnce<E extends Entrant>(contender: Contender<E>, settings: LoadSettings): Promise<Run> {
  const { entrant, server, cookies } = contender
  return measureRun(
    {
      server,
      path: entrant.path,
      cookies,
      ...(entrant.countsWrites ? { counter: () => counterTotal(entrant.checked, server.base, cookies) } : {}),
      ...(entrant.lostWritesAreProblems === undefined
        ? {}
        : { lostWritesAreProblems: entrant.lostWritesAreProblems }),
    },
    settings,
  )
}

/**
 * Measures a group of servers: each started, checked, seeded and warmed up in turn, then all measured
 * in turns, `settings.repeats` runs each ({@link interleave}), and stopped, also on failure. Logs every
 * run and then every summary; returns each one's summary, in the order given.
 */
export async function measureInTurns(
  entrants: readonly Entrant[],
  settings: LoadSettings,
): Promise<Summary[]> {
  const contenders: Contender<Entrant>[] = []
  let summaries: Summary[]
  try {
    for (const entrant of entrants) contenders.push(await prepare(entrant, settings))
    await interleave(
      contenders,
      settings.repeats,
      (contender) => measureOnce(contender, settings),
      ({ entrant, runs }, round) => logRun(entrant.name, runs[runs.length - 1] as Run, round),
    )
    summaries = contenders.map(({ runs }) => summarize(runs))
  } finally {
    await Promise.all(contenders.map((contender) => contender.server.stop()))
  }
  summaries.forEach((summary, i) => {
    logCell((entrants[i] as Entrant).name, summary)
  })
  return summaries
}

// ---------------------------------------------------------------------------------------------------
// Report

export function ratio(a: number | undefined, b: number | undefined): number | null {
  return a === undefined || b === undefined || b === 0 ? null : a / b
}

export function formatRatio(value: number | null): string {
  return value === null ? 'n/a' : `${value.toFixed(2)}×`
}

export function formatCpu(cell: Summary): string {
  const { median, min, max } = cell.serverCpuMicrosSpread
  return `${Math.round(median)} µs (${Math.round(min)}–${Math.round(max)})`
}

export function formatUserSystem(cell: Summary): string {
  const { user, system } = cell.serverCpuMicrosPerRequest
  return `${Math.round(user)} + ${Math.round(system)}`
}

export function formatRange({ min, max }: Spread): string {
  return `${formatRate(min)}–${formatRate(max)}`
}

export function formatSteal(steal: Spread | null): string {
  return steal === null ? 'n/a' : `${steal.median.toFixed(1)}% (max ${steal.max.toFixed(1)}%)`
}

export function formatRate(value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

export function table(
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

/** The installed version of each package (and Node's), for the report. */
export function versions(names: readonly string[]): Record<string, string> {
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

/** The machine while the benchmark ran: CPU steal over the whole run, and the load average around it. */
export interface Machine {
  readonly stealPercent: number | null
  readonly loadBefore: readonly number[]
  readonly loadAfter: readonly number[]
}

export function formatLoad(values: readonly number[]): string {
  return values.map((value) => value.toFixed(2)).join(' ')
}

/** Runs biome on a written file, so that `npm run lint` stays clean; a failure only warns. */
export function formatLikeTheRepository(file: string): void {
  try {
    execFileSync(join(ROOT, 'node_modules', '.bin', 'biome'), ['format', '--write', file], {
      stdio: 'ignore',
    })
  } catch {
    console.warn(`(could not format ${relative(process.cwd(), file)} with biome)`)
  }
}

// ---------------------------------------------------------------------------------------------------
// A whole benchmark

/** Node and the CPUs, for the report. */
export function environment(): string {
  const cpu = cpus()
  return `Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}`
}

/** Says how many cells will be measured and about how long that takes. */
function announce(title: string, cellCount: number, settings: LoadSettings): void {
  // Besides the load itself, each cell starts a process, checks it and seeds a session per connection.
  const minutes =
    ((settings.durationSeconds * settings.repeats + settings.warmupSeconds + 3) * cellCount) / 60
  console.log(title)
  console.log(
    `${cellCount} cells, ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ` +
      `${settings.repeats} interleaved runs of ${settings.durationSeconds} s each (about ${minutes.toFixed(1)} min)\n`,
  )
}

/** Runs `work`, and measures the machine around it: CPU steal over it, the load average before and after. */
async function onMachine<T>(
  work: () => Promise<T>,
): Promise<{ result: T; machine: Machine; started: number }> {
  const started = Date.now()
  const loadBefore = loadavg()
  const ticksBefore = cpuTicks()
  const result = await work()
  return {
    result,
    machine: { stealPercent: stealBetween(ticksBefore, cpuTicks()), loadBefore, loadAfter: loadavg() },
    started,
  }
}

/** One progress line for one run of the server `name`. */
function logRun(name: string, run: Run, round: number): void {
  const cpu = run.serverCpuMicrosPerRequest
  const kept = run.writesApplied === undefined ? '' : `  kept ${run.writesApplied}/${run.responses2xx}`
  const status = run.problems.length === 0 ? '' : `  PROBLEM: ${run.problems.join('; ')}`
  console.log(
    `${name} run ${round + 1}  ${formatRate(run.requestsPerSecond).padStart(8)} req/s` +
      `  p99 ${String(run.latencyP99Ms).padStart(4)} ms  CPU/req ${Math.round(cpu.user + cpu.system)} µs` +
      `  steal ${run.stealPercent === null ? 'n/a' : `${run.stealPercent.toFixed(1)}%`}${kept}${status}`,
  )
}

/** One progress line for the cell of the server `name`, once its runs are done. */
function logCell(name: string, cell: Summary): void {
  console.log(
    `${name} median ${formatRate(cell.requestsPerSecond).padStart(8)} req/s (${formatRange(cell.requestsPerSecondSpread)})` +
      `  CPU/req ${formatCpu(cell)}  steal ${formatSteal(cell.stealPercent)}`,
  )
}

/**
 * Writes the results to bench/results/`fileName`, prints the markdown, and says which cells had
 * problems; false when some had.
 */
function publish(
  fileName: string,
  json: object,
  markdown: string,
  started: number,
  cells: readonly Summary[],
): boolean {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, fileName)
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  formatLikeTheRepository(file)
  console.log(`\n${markdown}\n`)
  console.log(
    `Results written to ${relative(process.cwd(), file)} (${((Date.now() - started) / 60_000).toFixed(1)} min)`,
  )
  const problems = cells.filter((cell) => cell.problems.length > 0)
  if (problems.length > 0) console.error(`\n${problems.length} cell(s) had problems: see the checks column.`)
  return problems.length === 0
}

/**
 * A whole benchmark: `title` and what it will measure announced, its groups of cells measured one
 * after another with the machine watched over them, then `report`ed and published to
 * bench/results/`fileName`; false when a cell had problems.
 */
export async function runBenchmark<C extends Summary>(
  title: string,
  cellCount: number,
  settings: LoadSettings,
  groups: readonly (() => Promise<C[]>)[],
  report: (cells: readonly C[], environment: string, machine: Machine) => { markdown: string; json: object },
  fileName: string,
): Promise<boolean> {
  announce(title, cellCount, settings)
  const {
    result: cells,
    machine,
    started,
  } = await onMachine(async () => {
    const cells: C[] = []
    for (const group of groups) cells.push(...(await group()))
    return cells
  })
  const { markdown, json } = report(cells, environment(), machine)
  return publish(fileName, json, markdown, started, cells)
}
