import { expect, test } from 'vitest'
import { StoreError } from '../../core/errors.js'
import type { SessionRecord } from '../../core/store.js'
import { storeScenarios } from '../../testing/conformance.js'
import type { ManualClock } from '../../testing/index.js'

type E = { r: SessionRecord; t: boolean }
class Naive {
  m = new Map<string, E>()
  closed = false
  constructor(private c: ManualClock, private bugs: Set<string>) {}
  b(x: string) { return this.bugs.has(x) }
  chk(op: string) { if (this.closed && !this.b('noclose')) throw new StoreError('Naive', op, 'closed') }
  live(e: E | undefined) {
    if (!e) return false
    const exp = Math.min(e.r.idleExpiresAt, this.b('noabs') ? Infinity : e.r.absoluteExpiresAt)
    if (this.b('noexpiry')) return true
    return this.b('offbyone') ? this.c.now() <= exp : this.c.now() < exp
  }
  cp(r: SessionRecord) { return this.b('alias') ? r : { ...r, payload: this.b('mangle') ? r.payload.replace('\0', '') : r.payload } }
  async get(k: string) { this.chk('get'); const e = this.m.get(k); return e && this.live(e) && (!e.t || this.b('tombget')) ? e.r : null }
  async create(r: SessionRecord) { this.chk('create'); const e = this.m.get(r.key); if (!this.b('overwrite') && (this.live(e) || (this.b('noreborn') && e))) return false; this.m.set(r.key, { r: this.cp(r), t: false }); return true }
  async update(r: SessionRecord, v: number) { this.chk('update'); const e = this.m.get(r.key); if (!e || !this.live(e) || (e.t && !this.b('tombupdate')) || (e.r.version !== v && !this.b('nocas'))) return false; this.m.set(r.key, { r: this.cp(r), t: false }); return true }
  async touch(k: string, l: number, i: number) { this.chk('touch'); const e = this.m.get(k); if (!e || (!this.live(e) && !this.b('touchrevive')) || e.t) return; if (this.b('touchnoop')) return; this.m.set(k, { r: { ...e.r, lastSeenAt: l, idleExpiresAt: i, ...(this.b('touchpayload') ? { payload: 'x', version: e.r.version + 1 } : {}) }, t: false }) }
  async destroy(k: string) { this.chk('destroy'); const e = this.m.get(k); if (!e) return; if (this.b('notomb')) this.m.delete(k); else this.m.set(k, { r: e.r, t: true }) }
  async listByUser(u: string) { this.chk('listByUser'); return [...this.m.values()].filter((e) => e.r.userId === u && (this.b('listexpired') || this.live(e)) && (!e.t || this.b('listtomb'))).map((e) => e.r) }
  async destroyByUser(u: string, ex?: string) { this.chk('destroyByUser'); let n = 0; for (const e of this.m.values()) if (e.r.userId === u && this.live(e) && !e.t && (e.r.key !== ex || this.b('noexcept'))) { e.t = true; n++ } return this.b('dbucount') ? 0 : n }
  async prune() { this.chk('prune'); let n = 0; for (const [k, e] of this.m) if (!this.live(e) || (this.b('prunetomb') && e.t)) { this.m.delete(k); n++ } return this.b('prunecount') ? n + 1 : n }
  async count() { this.chk('count'); return [...this.m.values()].filter((e) => this.live(e) && (!e.t || this.b('counttomb'))).length }
  async *list() { this.chk('list'); for (const e of this.m.values()) if (this.live(e) && !e.t) yield e.r }
  async close() { this.closed = true }
}

const bugs = ['noclose','noabs','noexpiry','offbyone','alias','mangle','tombget','overwrite','noreborn','nocas','tombupdate','touchrevive','touchnoop','touchpayload','notomb','listexpired','listtomb','noexcept','dbucount','prunetomb','prunecount','counttomb']
test('correct naive passes', async () => {
  for (const [name, s] of Object.entries(storeScenarios)) await s({ name: 'n', createStore: (c) => new Naive(c, new Set()) }).catch((e) => { throw new Error(name + ': ' + e.message) })
})
test.each(bugs)('mutant %s is caught', async (bug) => {
  const failed: string[] = []
  for (const [name, s] of Object.entries(storeScenarios)) {
    try { await s({ name: 'n', createStore: (c) => new Naive(c, new Set([bug])) }) } catch { failed.push(name) }
  }
  console.log(bug, '->', failed.join(' | '))
  expect(failed.length).toBeGreaterThan(0)
})
