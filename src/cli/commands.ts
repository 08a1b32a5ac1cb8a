/** What each `latchkey` command does, once its arguments are parsed. */
import { writeFileSync } from 'node:fs'
import { setImmediate } from 'node:timers/promises'
import { generateKey } from '../core/crypto.js'
import { isNoticeRecord } from '../core/lifecycle/notice.js'
import { isEnded } from '../core/lifecycle/record-state.js'
import { createSessionManager, type SessionManager, type UserSessionInfo } from '../core/manager.js'
import {
  isCountableStore,
  isListableStore,
  isMigratableStore,
  isPrunableStore,
  isUserIndexedStore,
  type ListableStore,
  type SessionStore,
} from '../core/store.js'
import type { RedisMigrationReport } from '../stores/redis/redis-store.js'
import type { MigrationReport } from '../stores/sql/sql-store.js'
import {
  CliError,
  EXIT,
  interrupted,
  type Output,
  printable,
  readKeys,
  type StoreCommandOptions,
  unsupported,
  withStore,
} from './context.js'
import { progress } from './progress.js'
import { emptyReport, rekey } from './rekey.js'

/**
 * The manager the CLI works through, for handles, listing and revoking exactly as the application
 * does. Its timeouts are set out of the way: which records are live is decided by the deadlines the
 * application stored in them, not by this process's defaults.
 */
function managerFor(store: SessionStore, keys: string[]): SessionManager {
  const FOREVER = 100 * 365 * 24 * 3_600_000
  return createSessionManager({ store, keys, idleTimeoutMs: FOREVER, absoluteTimeoutMs: FOREVER })
}

/** `count` and `noun`, the noun plural unless the count is 1: `1 session`, `0 sessions`, `2 users`. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`
}

/** What to say of `count` records no key given opens. */
function unopenableText(count: number): string {
  return `${plural(count, 'record')} ${count === 1 ? 'opens' : 'open'} with none of the keys given (sealed with a key not passed, or damaged)`
}

function iso(ms: number): string {
  return new Date(ms).toISOString()
}

/**
 * `latchkey keygen [--out FILE]`: a new key on stdout, or in a new file of mode 0600 (never over an
 * existing one: overwriting a key in use would sign everyone out).
 */
export function keygen(out: Output, file?: string): number {
  const key = generateKey()
  if (file === undefined) {
    out.result({ key }, key)
    return EXIT.ok
  }
  try {
    // Created 0600 at once (the umask can only take bits away), so it is never readable by others.
    writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new CliError(
      EXIT.usage,
      'ERR_LATCHKEY_USAGE',
      code === 'EEXIST'
        ? `--out ${file} exists: keygen never overwrites a key file (a key in use, lost, signs everyone out); remove it or choose another name`
        : `cannot write --out ${file}: ${(error as Error).message}`,
    )
  }
  out.result({ file }, '')
  out.note(
    `wrote a new key to ${file} (mode 0600); pass it as --keys-file ${file}, or LATCHKEY_KEYS="$(cat ${file})"`,
  )
  return EXIT.ok
}

/** `latchkey schema`: the DDL, without connecting. */
export async function schema(options: StoreCommandOptions, out: Output): Promise<number> {
  return withStore(options, 'offline', async (store) => {
    if (!isMigratableStore(store)) throw unsupported(store, 'print a schema: it has none (nothing to create)')
    const sql = store.schemaSql()
    out.result({ store: options.store, sql }, sql.trimEnd())
    return EXIT.ok
  })
}

/** A store that says what its migration did (every bundled SQL store, and RedisStore). */
function reportsMigrations(
  store: object,
): store is { runMigration(): Promise<MigrationReport | RedisMigrationReport> } {
  return typeof (store as { runMigration?: unknown }).runMigration === 'function'
}

/** What `migrate` says it did, by outcome. */
const MIGRATED = Object.freeze({
  created: 'created the table',
  upgraded: 'upgraded the table',
  current: 'the table is already up to date:',
})

/**
 * `latchkey migrate`: names the table (and for SQLite the file) and says whether it created it,
 * upgraded it or found it up to date; `migrated` is true only when it changed something. On Redis it
 * writes the prefix's marker key (which read-only commands look for), or finds it there.
 */
export async function migrate(options: StoreCommandOptions, out: Output): Promise<number> {
  return withStore(options, 'migrate', async (store) => {
    if (!reportsMigrations(store)) {
      if (!isMigratableStore(store)) throw unsupported(store, 'migrate: it has no schema (nothing to do)')
      await store.migrate()
      out.result({ store: options.store, migrated: true }, `${options.store}: migrated`)
      return EXIT.ok
    }
    const report = await store.runMigration()
    if ('prefix' in report) {
      const { prefix, key, outcome, from, to } = report
      out.result(
        { store: options.store, prefix, key, outcome, from, to, migrated: outcome !== 'current' },
        outcome === 'created'
          ? `${options.store}: set up the prefix ${prefix}: created the key ${key} (layout version ${to})`
          : `${options.store}: the prefix is already set up: ${prefix} (key ${key}, layout version ${to})`,
      )
      return EXIT.ok
    }
    const { table, file, outcome, from, to } = report
    const where = file === undefined ? '' : ` in ${file}`
    const versions =
      outcome === 'upgraded' ? ` from schema version ${from} to ${to}` : ` (schema version ${to})`
    out.result(
      {
        store: options.store,
        table,
        ...(file === undefined ? {} : { file }),
        outcome,
        from,
        to,
        migrated: outcome !== 'current',
      },
      `${options.store}: ${MIGRATED[outcome]} ${table}${where}${versions}`,
    )
    return EXIT.ok
  })
}

/**
 * `latchkey count`. Counting needs no keys; given keys (`LATCHKEY_KEYS` or `--keys-file`), it also
 * opens every live record and reports those no key opens, ending with exit code 5 when it finds any,
 * as `list` and `rekey` do: a record sealed with a key not given is never passed off as fine. The
 * notices of ended sessions (`session.endedBecause`) are records but no sessions: a store that can
 * list its records is listed to leave them out (they are told apart without keys).
 */
export async function count(options: StoreCommandOptions, out: Output): Promise<number> {
  const keys = hasKeys(options, out) ? readKeys(options, out) : null
  return withStore(options, 'existing', async (store) => {
    if (!isCountableStore(store)) throw unsupported(store, 'count its sessions')
    const sessions = (await store.count()) - (isListableStore(store) ? await noticesIn(store) : 0)
    if (keys === null) {
      out.result({ count: sessions }, String(sessions))
      return EXIT.ok
    }
    if (!isListableStore(store))
      throw unsupported(store, 'list its records to open them (count without keys)')
    const manager = managerFor(store, keys)
    let unopenable = 0
    for await (const record of store.list()) if (manager.inspect(record) === 'unopenable') unopenable++
    const found = { count: sessions, unopenable }
    if (unopenable === 0) {
      out.result(found, String(sessions))
      return EXIT.ok
    }
    if (!out.json) out.io.stdout.write(`${sessions}\n`)
    throw unopenableError(unopenable, found)
  })
}

/** How many of the records `store` lists are notices (`session.endedBecause`), not sessions. */
async function noticesIn(store: ListableStore): Promise<number> {
  let notices = 0
  for await (const record of store.list()) if (isNoticeRecord(record)) notices++
  return notices
}

/** Whether keys were given to a command that can do without them. */
function hasKeys(options: StoreCommandOptions, out: Output): boolean {
  return options.keysFile !== undefined || (out.io.env.LATCHKEY_KEYS ?? '').trim() !== ''
}

/** Exit code 5 (`ERR_LATCHKEY_UNOPENABLE`) for records no key given opens, with what was found. */
function unopenableError(unopenable: number, found: object): CliError {
  return Object.assign(
    new CliError(
      EXIT.partial,
      'ERR_LATCHKEY_UNOPENABLE',
      `${unopenableText(unopenable)}: pass every key the application uses`,
    ),
    { partial: found },
  )
}

/** `latchkey prune` */
export async function prune(options: StoreCommandOptions, out: Output): Promise<number> {
  return withStore(options, 'existing', async (store) => {
    if (!isPrunableStore(store)) throw unsupported(store, 'prune (it removes expired records by itself)')
    const bar = progress(out, 'pruning expired records', undefined, options.progress !== false)
    let removed: number
    try {
      removed = await store.prune()
    } finally {
      bar.stop()
    }
    out.result(
      { removed },
      `removed ${plural(removed, 'expired record')} (sessions and tombstones past their deadline); the tombstones of ended sessions stay until they expire, so that an ended session's cookie keeps failing`,
    )
    return EXIT.ok
  })
}

interface ListedSession extends Omit<UserSessionInfo, 'current' | 'createdAt' | 'lastSeenAt'> {
  user: string
  createdAt: string
  lastSeenAt: string
}

function listed(user: string, info: UserSessionInfo): ListedSession {
  return {
    handle: info.handle,
    user,
    createdAt: iso(info.createdAt),
    lastSeenAt: iso(info.lastSeenAt),
    userAgent: info.userAgent,
  }
}

/** The sessions as a table: user, created, last seen, device, handle (last: it is long). */
function table(sessions: readonly ListedSession[]): string {
  const rows = [
    ['USER', 'CREATED', 'LAST SEEN', 'DEVICE', 'HANDLE'],
    ...sessions.map((s) => [
      printable(s.user),
      s.createdAt,
      s.lastSeenAt,
      printable((s.userAgent ?? '-').replace(/ +/g, ' ').slice(0, 40)),
      s.handle,
    ]),
  ]
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  return rows
    .map((row) =>
      row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  '),
    )
    .join('\n')
}

/** Options of `list`. */
export type ListOptions = StoreCommandOptions & { user?: string }

/** `latchkey list [--user ID]` */
export async function list(options: ListOptions, out: Output): Promise<number> {
  const keys = readKeys(options, out)
  return withStore(options, 'existing', async (store) => {
    if (!isUserIndexedStore(store)) throw unsupported(store, 'list sessions by user (it has no user index)')
    const manager = managerFor(store, keys)
    const sessions: ListedSession[] = []
    if (options.user !== undefined) {
      for (const info of await manager.listUserSessions(options.user))
        sessions.push(listed(options.user, info))
      const unopenable = await unopenableOf(manager, store, options.user)
      out.note(`${plural(sessions.length, 'session')} of ${options.user}`)
      return listResult(out, { sessions, unopenable }, sessions)
    }
    if (!isListableStore(store)) throw unsupported(store, 'list all its sessions (try --user ID)')
    const users = new Set<string>()
    let anonymous = 0
    let unopenable = 0
    for await (const record of store.list()) {
      const kind = manager.inspect(record)
      if (kind === 'ended') continue
      if (kind === 'unopenable') unopenable++
      else if (record.userId !== null) users.add(record.userId)
      else if (kind === 'live') anonymous++
    }
    for (const user of [...users].sort()) {
      for (const info of await manager.listUserSessions(user)) sessions.push(listed(user, info))
    }
    out.note(
      `${plural(sessions.length, 'signed-in session')} of ${plural(users.size, 'user')}; ${plural(anonymous, 'anonymous session')} (no handle)`,
    )
    return listResult(out, { sessions, anonymous, unopenable }, sessions)
  })
}

/** How many records in the user index of `userId` no key given opens. */
async function unopenableOf(manager: SessionManager, store: SessionStore, userId: string): Promise<number> {
  if (!isUserIndexedStore(store)) return 0
  let count = 0
  for (const record of await store.listByUser(userId)) {
    if (record.userId === userId && manager.inspect(record) === 'unopenable') count++
  }
  return count
}

/**
 * Prints what `list` found. Records no key opens are never hidden: they are counted, and the command
 * ends with exit code 5 (`ERR_LATCHKEY_UNOPENABLE`), as `rekey` does for them.
 */
function listResult(
  out: Output,
  found: { sessions: ListedSession[]; unopenable: number; anonymous?: number },
  sessions: readonly ListedSession[],
): number {
  const text = sessions.length === 0 ? '' : table(sessions)
  if (found.unopenable === 0) {
    out.result(found, text)
    return EXIT.ok
  }
  if (!out.json && text !== '') out.io.stdout.write(`${out.io.redact(text)}\n`)
  throw unopenableError(found.unopenable, found)
}

/** The part of a revoke's report about records no key given opens (ended all the same: an end needs no key). */
function notOpened(unopenable: number): string {
  return unopenable === 0 ? '' : ` (${unopenable} of them sealed with a key not given)`
}

/** Options of `revoke`. */
export type RevokeOptions = StoreCommandOptions & { handle?: string; user?: string; all?: boolean }

/** `latchkey revoke (--handle H | --user ID | --all)` */
export async function revoke(options: RevokeOptions, out: Output): Promise<number> {
  const chosen = [options.handle !== undefined, options.user !== undefined, options.all === true]
  if (chosen.filter(Boolean).length !== 1) {
    throw new CliError(
      EXIT.usage,
      'ERR_LATCHKEY_USAGE',
      'give exactly one of --handle H, --user ID and --all',
    )
  }
  const keys = readKeys(options, out)
  return withStore(options, 'existing', async (store) => {
    if (!isUserIndexedStore(store)) throw unsupported(store, 'revoke sessions (it has no user index)')
    const manager = managerFor(store, keys)
    if (options.handle !== undefined) {
      if (!(await manager.revoke(options.handle))) {
        throw new CliError(
          EXIT.failure,
          'ERR_LATCHKEY_NOT_FOUND',
          'nothing revoked: the handle names no live session (already ended, mistyped, or made with other keys)',
        )
      }
      out.result({ revoked: 1 }, 'revoked 1 session')
      return EXIT.ok
    }
    if (options.user !== undefined) {
      const { ended: revoked, unopenable } = await manager.revokeUserRecords(options.user)
      out.result(
        { revoked, unopenable },
        `revoked ${plural(revoked, 'session')} of ${printable(options.user)}${notOpened(unopenable)}`,
      )
      return EXIT.ok
    }
    if (!isListableStore(store)) throw unsupported(store, 'list its sessions to revoke them all')
    const total = isCountableStore(store) ? await store.count() : undefined
    const bar = progress(out, 'revoking', total, options.progress !== false)
    // The bar counts records. Revoking a user ends their other sessions, which the walk then never
    // lists (or lists from a page read before): those are counted when the user is revoked, and
    // their keys kept here so that they are not counted twice.
    const counted = new Set<string>()
    const users = new Set<string>()
    let revoked = 0
    let anonymous = 0
    let unopenable = 0
    let failed = 0
    let failure: unknown
    try {
      let seen = 0
      for await (const record of store.list()) {
        if (++seen % 64 === 0) await setImmediate()
        if (out.io.signal.aborted) break
        if (!counted.delete(record.key)) bar.increment()
        if (record.userId === null) {
          // Ended as the rule ends every session (an end needs no key): not merely removed. A notice
          // of an earlier end is no session: it waits for its cookie.
          if (isEnded(record) || isNoticeRecord(record)) continue
          if (manager.inspect(record) === 'unopenable') unopenable++
          await manager.endRecord(record)
          anonymous++
        } else if (!users.has(record.userId)) {
          users.add(record.userId)
          if (bar.shown) {
            let others = 0
            for (const other of await store.listByUser(record.userId)) {
              if (other.key === record.key || isEnded(other) || counted.has(other.key)) continue
              counted.add(other.key)
              others++
            }
            bar.increment(others)
          }
          try {
            const count = await manager.revokeUserRecords(record.userId)
            revoked += count.ended
            unopenable += count.unopenable
          } catch (error) {
            // A lasting write conflict on one user's session: go on with the others, and say so.
            if ((error as { code?: unknown }).code !== 'ERR_LATCHKEY_CONFLICT') throw error
            failed++
          }
        }
      }
    } catch (error) {
      failure = error
    } finally {
      bar.stop()
    }
    const done = { revoked, users: users.size, anonymous, unopenable, failedUsers: failed }
    if (failure !== undefined) {
      out.note(
        `revoked ${plural(revoked, 'session')} before the failure; run the command again to carry on`,
        true,
      )
      throw Object.assign(failure as object, { partial: done })
    }
    if (out.io.signal.aborted) {
      throw interrupted(`after revoking ${plural(revoked, 'session')}`, done)
    }
    if (failed > 0) {
      throw Object.assign(
        new CliError(
          EXIT.partial,
          'ERR_LATCHKEY_PARTIAL',
          `revoked ${plural(revoked, 'session')}, but the sessions of ${plural(failed, 'user')} kept conflicting with the application's writes: run the command again`,
        ),
        { partial: done },
      )
    }
    out.result(
      done,
      `revoked ${plural(revoked, 'session')} of ${plural(users.size, 'user')}, and ended ${plural(anonymous, 'anonymous record')}${notOpened(unopenable)}`,
    )
    return EXIT.ok
  })
}

/** Options of `rekey`. */
export type RekeyCommandOptions = StoreCommandOptions & { concurrency?: number }

/** `latchkey rekey` */
export async function rekeyCommand(options: RekeyCommandOptions, out: Output): Promise<number> {
  const keys = readKeys(options, out)
  return withStore(options, 'existing', async (store) => {
    if (!isListableStore(store)) throw unsupported(store, 'list its sessions to re-seal them')
    // Validates the keys exactly as the application does, and re-seals as the manager's operation.
    const manager = managerFor(store, keys)
    if (keys.length === 1) {
      out.note('only one key given: records sealed with other keys cannot be opened, nor re-sealed')
    }
    const total = isCountableStore(store) ? await store.count() : undefined
    const bar = progress(out, 'rekeying', total, options.progress !== false)
    const report = emptyReport()
    try {
      await rekey(manager, store, report, {
        signal: out.io.signal,
        onRecord: () => bar.increment(),
        ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
      })
    } catch (error) {
      bar.stop()
      out.note(
        `re-sealed ${plural(report.resealed, 'record')} before the failure; run the command again to carry on`,
        true,
      )
      throw Object.assign(error as object, { partial: report })
    }
    bar.stop()
    const summary = `re-sealed ${report.resealed}, already current ${report.current}, skipped ${report.skipped} (ended or gone), conflicts retried ${report.conflicts}`
    if (out.io.signal.aborted) {
      throw interrupted(`(${summary})`, report)
    }
    const problems: string[] = []
    if (report.unopenable > 0) {
      problems.push(`${unopenableText(report.unopenable)}: they were left as they are`)
    }
    if (report.busy > 0) {
      problems.push(
        `${plural(report.busy, 'record')} kept conflicting with the application's writes: run the command again`,
      )
    }
    if (problems.length > 0) {
      throw Object.assign(
        new CliError(EXIT.partial, 'ERR_LATCHKEY_PARTIAL', `${summary}; but ${problems.join('; ')}`),
        {
          partial: report,
        },
      )
    }
    out.result({ ...report }, summary)
    return EXIT.ok
  })
}
