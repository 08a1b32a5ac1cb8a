/**
 * The top self-time frames of a V8 CPU profile (`.cpuprofile`, as `node --cpu-prof` or
 * `npm run bench:inproc -- --profile` write them), by function and file, with each frame's share of
 * the sampled time; and the same time summed by where the code lives (latchkey's dist/, node's
 * internals, V8 itself: GC and the like, node_modules, the benchmark).
 *
 *   npx tsx bench/profile-top.ts <file.cpuprofile> [how many frames, default 25]
 *
 * PROFILE_REQUESTS=n: also each frame's time per request, in µs (the profile covered n requests).
 * PROFILE_BASELINE=<other.cpuprofile> (with PROFILE_REQUESTS, both profiles covering n requests): the
 * frames ranked by how much more time per request they took than in the baseline (latchkey over bare).
 */
import { readFileSync } from 'node:fs'

interface ProfileNode {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
}

interface Profile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

const [file, countText] = process.argv.slice(2)
if (file === undefined) {
  console.error('usage: tsx bench/profile-top.ts <file.cpuprofile> [frames]')
  process.exit(2)
}
const top = Number(countText ?? 25)
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile

/** Where a frame's code lives. */
function area(url: string, name: string): string {
  if (url.includes('/dist/')) return 'latchkey (dist/)'
  if (url.startsWith('node:')) return 'node internals'
  if (url.includes('/node_modules/')) return 'node_modules'
  if (url.includes('/bench/')) return 'benchmark (driver, routes)'
  if (name === '(garbage collector)') return 'garbage collector'
  if (name === '(idle)' || name === '(program)') return name
  return 'V8 / native'
}

function shortUrl(url: string): string {
  const dist = url.indexOf('/dist/')
  if (dist >= 0) return url.slice(dist + 1)
  const bench = url.indexOf('/bench/')
  if (bench >= 0) return url.slice(bench + 1)
  return url.replace(/^file:\/\/.*\/node_modules\//, '')
}

/** Self time (µs) by frame and by area, and in all. */
function selfTimes(profile: Profile): {
  frames: Map<string, number>
  areas: Map<string, number>
  total: number
} {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const frames = new Map<string, number>()
  const areas = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)
    const delta = profile.timeDeltas[i] ?? 0
    if (node === undefined) return
    const { functionName, url, lineNumber } = node.callFrame
    const name = `${functionName || '(anonymous)'}  ${shortUrl(url)}${url ? `:${lineNumber + 1}` : ''}`
    frames.set(name, (frames.get(name) ?? 0) + delta)
    const where = area(url, functionName)
    areas.set(where, (areas.get(where) ?? 0) + delta)
    total += delta
  })
  return { frames, areas, total }
}

const requests = Number(process.env.PROFILE_REQUESTS ?? 0)
const baselineFile = process.env.PROFILE_BASELINE
const { frames, areas, total } = selfTimes(profile)
const pct = (micros: number): string => `${((100 * micros) / total).toFixed(1).padStart(5)}%`
const perRequest = (micros: number): string =>
  requests > 0 ? `${(micros / requests).toFixed(2).padStart(7)} µs/req  ` : ''
console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled\n`)
for (const [where, micros] of [...areas].sort((a, b) => b[1] - a[1])) {
  console.log(`${pct(micros)}  ${perRequest(micros)}${where}`)
}
console.log('')
for (const [name, micros] of [...frames].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`${pct(micros)}  ${perRequest(micros)}${name}`)
}
if (baselineFile !== undefined && requests > 0) {
  const baseline = selfTimes(JSON.parse(readFileSync(baselineFile, 'utf8')) as Profile)
  const delta = (mine: Map<string, number>, theirs: Map<string, number>) =>
    [...new Set([...mine.keys(), ...theirs.keys()])]
      .map((name) => [name, ((mine.get(name) ?? 0) - (theirs.get(name) ?? 0)) / requests] as const)
      .sort((a, b) => b[1] - a[1])
  const show = ([name, micros]: readonly [string, number]): void =>
    console.log(`${micros >= 0 ? '+' : ''}${micros.toFixed(2).padStart(6)} µs/req  ${name}`)
  console.log(`\nOver ${baselineFile}, per request, by area (sampled time, idle included):\n`)
  for (const row of delta(areas, baseline.areas)) show(row)
  console.log('\nBy frame, the largest differences:\n')
  for (const row of delta(frames, baseline.frames).slice(0, top)) show(row)
}
